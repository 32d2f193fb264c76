"""`int8kit sensitivity MODEL --calib DATA`: which quantized layers cost the most fidelity."""

from __future__ import annotations

import argparse
import sys

from int8kit.cli.dataargs import add_data_args, flag_error, required_data_config
from int8kit.cli.eval import fmt
from int8kit.cli.quantize import add_calib_args
from int8kit.errors import Int8kitError
from int8kit.fileio import check_outputs
from int8kit.onnx.placement import PlacementConfig


def register(sub) -> None:
    p = sub.add_parser(
        "sensitivity",
        help="rank the quantized layers by how much fidelity each one costs",
        description="Calibrate MODEL (or reuse --ranges), then for each quantized layer (a node "
        "with Q/DQ on its inputs) measure the output fidelity with only that layer quantized "
        "('only') and with every layer but that one quantized ('skip'); rank, most sensitive "
        "first. Fidelity: worst output part's SQNR vs FP32 (a detector's box and score apart), "
        "a classifier's top-1 agreement. One ONNX Runtime session serves every layer.",
    )
    p.add_argument("model", help="FP32 ONNX model")
    add_data_args(p, required=False)
    add_calib_args(p)
    p.add_argument(
        "--exclude", action="append", default=[], metavar="REGEX", help="as for quantize"
    )
    p.add_argument("--op-types", help="comma-separated op types to quantize (default: the rules)")
    p.add_argument(
        "--quantize-input-layers",
        action="store_true",
        help="also rank the layers that read the network input (quantize keeps them float "
        "unless given the same flag)",
    )
    p.add_argument(
        "--mode",
        default="both",
        choices=["both", "only", "skip"],
        help="which view to measure (default both; each costs one pass per layer)",
    )
    p.add_argument("--samples", type=int, default=8, metavar="N", help="samples scored (default 8)")
    p.add_argument("--task", default="auto", choices=["auto", "raw", "classify", "detect"])
    p.add_argument("--top", type=int, default=20, metavar="N", help="rows printed")
    p.add_argument("--plot", metavar="OUT.png", help="save a bar chart of the top layers")
    p.add_argument("--json", metavar="FILE", help="also write every row as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from int8kit.analysis.fallback import spread_samples
    from int8kit.analysis.sensitivity import rows_to_dicts, sensitivity
    from int8kit.data import make_source, progress
    from int8kit.onnx.model_io import load_model
    from int8kit.onnx.placement import plan
    from int8kit.ranges import Ranges
    from int8kit.workflow import CalibConfig, calibrate, check_qdq_covered, normalize_model

    if args.samples < 1 or args.top < 1:
        raise Int8kitError("--samples and --top must be >= 1")
    data = required_data_config(args, "data", "--calib")
    check_outputs(
        {"the model": args.model, "--ranges": args.ranges, "the data": data.source},
        {"--json": args.json, "--plot": args.plot},
    )
    try:
        calib = CalibConfig(
            method="entropy" if args.method == "search" else args.method,
            percentile=args.percentile,
            num_bins=args.num_bins,
        ).resolve(qdq=True)
        placement_cfg = PlacementConfig(
            op_types=args.op_types.split(",") if args.op_types else None,
            exclude=args.exclude,
            quantize_input_layers=args.quantize_input_layers,
        )
    except ValueError as exc:
        raise flag_error(exc) from exc
    model, specs, _ = normalize_model(load_model(args.model), args.model)  # as quantize reads it
    # The layers `quantize` would quantize with the same flags: by default not those that read
    # the network input.
    placement = plan(model, placement_cfg)
    if args.ranges:
        ranges = Ranges.read(args.ranges)
        check_qdq_covered(ranges, placement, args.ranges)
        amax = ranges.amax()
    else:
        src = make_source(data, specs)
        names = list(placement.activations)
        amax = calibrate(model, src, calib, total=len(src), names=names).amax()
    samples = spread_samples(make_source(data, specs), args.samples)
    modes = ("only", "skip") if args.mode == "both" else (args.mode,)
    result = rows_to_dicts(
        sensitivity(model, amax, placement, samples, args.task, modes, progress=progress)
    )
    result["left_out"] = dict(placement.kept_float)
    print_sensitivity(result, args.top)
    if args.plot:
        from int8kit.report.plots import sensitivity_plot

        sensitivity_plot(args.plot, result["rows"], top=args.top)
        print(f"wrote {args.plot}")
    if args.json:
        from int8kit.fileio import write_json

        write_json(args.json, {"model": args.model, **result})
    return 0


def print_sensitivity(result: dict, top: int, out=None) -> None:
    out = out or sys.stdout
    p = lambda *a: print(*a, file=out)  # noqa: E731
    base = result["all_quantized"]
    top1 = f", top-1 {fmt(base['top1'])}" if base.get("top1") is not None else ""
    p(
        f"{result['layers']} quantized layers, {result['samples']} samples; every layer "
        f"quantized: worst-part SQNR {fmt(base['sqnr_db'], 2)} dB{top1}"
    )
    p(f"  {'#':>3} {'layer':<48} {'op':<10} {'skip dB':>8} {'gain dB':>8} {'only dB':>8}")
    for r in result["rows"][:top]:
        p(
            f"  {r['rank']:>3} {r['node'][-48:]:<48} {r['op'][:10]:<10} "
            f"{_n(r['skip_sqnr_db']):>8} {_n(r['gain_db']):>8} {_n(r['only_sqnr_db']):>8}"
        )
    p("skip = SQNR with every layer but this one quantized; only = with only this one quantized")
    left_out = result.get("left_out") or {}
    if left_out:
        p(
            f"not ranked: {len(left_out)} layer(s) that `int8kit quantize` keeps float by default "
            "(--quantize-input-layers ranks them too):"
        )
        for node, why in list(left_out.items())[:top]:
            p(f"  {node}: {why}")


def _n(x) -> str:
    return "-" if x is None else fmt(x, 2)
