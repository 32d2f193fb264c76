"""`int8kit lint MODEL.int8.onnx`: Q/DQ placements that stop TensorRT fusing or cost accuracy."""

from __future__ import annotations

import argparse

from int8kit.fileio import check_outputs


def register(sub) -> None:
    p = sub.add_parser(
        "lint",
        help="check a Q/DQ model for placements TensorRT cannot fuse or that cost accuracy",
        description="Exit code 1 when there is an error-level finding.",
    )
    p.add_argument("model", help="Q/DQ ONNX model")
    p.add_argument("--json", metavar="FILE", help="also write the findings as JSON")
    p.add_argument("--explain", action="store_true", help="list the checks and exit")
    p.set_defaults(func=run)


def print_findings(findings, out=None) -> None:
    for f in findings:
        print(str(f), file=out)
        print(f"    fix: {f.fix}", file=out)
    n_err = sum(f.severity == "error" for f in findings)
    n_warn = sum(f.severity == "warning" for f in findings)
    print(f"{n_err} errors, {n_warn} warnings", file=out)


def run(args: argparse.Namespace) -> int:
    from int8kit.analysis.lint import CHECKS, has_errors, lint

    if args.explain:
        for code, what in CHECKS.items():
            print(f"{code:<18} {what}")
        return 0
    check_outputs({"the model": args.model}, {"--json": args.json})
    findings = lint(args.model)
    print_findings(findings)
    if args.json:
        from int8kit.fileio import write_json

        write_json(args.json, {"model": args.model, "findings": [f.to_dict() for f in findings]})
    return 1 if has_errors(findings) else 0
