"""`int8kit eval FP32.onnx INT8.onnx --data DIR`: where did accuracy go, per output and backend."""

from __future__ import annotations

import argparse
import math

from int8kit.analysis.fidelity import failure
from int8kit.cli.dataargs import add_data_args, required_data_config
from int8kit.fileio import check_outputs


def register(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="compare an INT8 model with its FP32 model on data (SQNR, top-1, mAP@0.5)",
        description="Run both models on the same data and report, per output: SQNR, cosine, "
        "max/mean abs error; classifiers: top-1 agreement and top-5 overlap; YOLO detectors: "
        "mAP@0.5 of the INT8 detections against the FP32 ones, box and score SQNR apart. "
        "Backends: trt-like (Q/DQ unfused: what TensorRT computes) and ort-int8 "
        "(ONNX Runtime's integer kernels).",
    )
    p.add_argument("fp32", help="FP32 ONNX model")
    p.add_argument("int8", help="INT8 (Q/DQ) ONNX model made from it")
    add_data_args(p, flag="--data", required=False)
    p.add_argument("--task", default="auto", choices=["auto", "raw", "classify", "detect"])
    p.add_argument(
        "--detect-layout", default="auto", choices=["auto", "v8", "v5"], help="YOLO output layout"
    )
    p.add_argument(
        "--backend",
        action="append",
        choices=["trt-like", "ort-int8"],
        help="backend(s) to run the INT8 model on (default: both)",
    )
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--report", metavar="DIR", help="write a Markdown/HTML report with plots here")
    p.set_defaults(func=run)


def fmt(x, digits: int = 3) -> str:
    if isinstance(x, float):
        if math.isnan(x):
            return "n/a"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return f"{x:.{digits}f}"
    return str(x)


def print_eval(result: dict, out=None) -> None:
    p = lambda *a: print(*a, file=out)  # noqa: E731
    p(f"INT8 vs FP32 on {result['samples']} samples")
    skipped = result.get("skipped_files") or []
    if skipped:
        p(f"  skipped {len(skipped)} unreadable files, e.g. {skipped[0][0]}: {skipped[0][1]}")
    for backend, outputs in result["outputs"].items():
        p(f"{backend} ({result['backends'][backend]}):")
        if failure(outputs):
            p(f"  FAILED: {failure(outputs)}")
            continue
        for name, m in outputs.items():
            p(
                f"  {name} [{m.get('task', 'raw')}]: SQNR {fmt(m['sqnr_db'], 2)} dB, "
                f"cos {fmt(m['cosine'], 5)}, max|err| {fmt(m['max_abs'], 4)}, "
                f"mean|err| {fmt(m['mean_abs'], 5)}"
            )
            if m.get("task") == "classify":
                p(
                    f"      top-1 agreement {fmt(m['top1_agreement'])}, "
                    f"top-{m['k']} overlap {fmt(m['topk_overlap'])}, logits SQNR "
                    f"{fmt(m['sqnr_db'], 2)} dB"
                )
            if m.get("task") == "detect":
                p(
                    f"      mAP@0.5 {fmt(m['map50'])} (INT8 vs FP32 detections: {m['n_pred']} "
                    f"predicted, {m['n_gt']} FP32), box SQNR {fmt(m['box_sqnr_db'], 2)} dB, "
                    f"score SQNR {fmt(m['score_sqnr_db'], 2)} dB"
                )
    th = result.get("detection_thresholds")
    if th:
        p(
            f"detection: FP32 boxes with score > {th['conf_fp32_ground_truth']} are the ground "
            f"truth; INT8 boxes with score > {th['conf_int8_predictions']} are scored; NMS IoU "
            f"{th['nms_iou']}, at most {th['max_det']} per image; a match needs IoU >= "
            f"{th['match_iou']}"
        )


def run(args: argparse.Namespace) -> int:
    from int8kit.analysis.evaluate import evaluate

    data = required_data_config(args, "evaluation data")
    check_outputs(
        {"the FP32 model": args.fp32, "the INT8 model": args.int8, "the data": data.source},
        {"--json": args.json, "--report": args.report},
    )
    backends = tuple(dict.fromkeys(args.backend or ["trt-like", "ort-int8"]))
    result = evaluate(
        args.fp32, args.int8, data, task=args.task, layout=args.detect_layout, backends=backends
    )
    print_eval(result)
    if args.json:
        from int8kit.fileio import write_json

        write_json(args.json, result)
    if args.report:
        from int8kit.data import make_source
        from int8kit.onnx.model_io import input_specs, load_model
        from int8kit.report.quantize import eval_report

        specs = input_specs(load_model(args.fp32, load_weights=False))
        path = eval_report(
            args.report, result, args.fp32, args.int8, lambda: make_source(data, specs)
        )
        print(f"report: {path}")
    return 0
