"""`int8kit layers FP32.onnx INT8.onnx --data DIR`: per-tensor error, where it starts and grows."""

from __future__ import annotations

import argparse

from int8kit.cli.dataargs import add_data_args, required_data_config
from int8kit.cli.eval import fmt
from int8kit.errors import Int8kitError
from int8kit.fileio import check_outputs


def register(sub) -> None:
    p = sub.add_parser(
        "layers",
        help="per-layer INT8 error: every shared tensor, and the layers that add the most",
        description="Compare every intermediate tensor the FP32 and INT8 models share, over the "
        "data, in graph order; then list the layers by the error each adds (relative noise "
        "beyond its inputs'). A quantized tensor also gets a 'Q/DQ' row: the value its "
        "consumers read after the Q/DQ.",
    )
    p.add_argument("fp32", help="FP32 ONNX model")
    p.add_argument("int8", help="INT8 (Q/DQ) ONNX model made from it")
    add_data_args(p, flag="--data", required=False)
    p.add_argument(
        "--backend",
        default="trt-like",
        choices=["trt-like", "ort-int8"],
        help="how the INT8 model runs (default trt-like: Q/DQ unfused, what TensorRT computes)",
    )
    p.add_argument("--top", type=int, default=15, metavar="N", help="rows in the sorted view")
    p.add_argument("--json", metavar="FILE", help="also write every row as JSON")
    p.set_defaults(func=run)


def _row(r: dict) -> str:
    name = r["tensor"] + (" (Q/DQ)" if r["op"] == "Q/DQ" else "")
    return (
        f"  {r['order']:>4} {name[:48]:<48} {r['op'][:16]:<16} {fmt(r['sqnr_db'], 2):>8} "
        f"{fmt(r['input_sqnr_db'], 2):>8} {fmt(r['added_sqnr_db'], 2):>8} "
        f"{fmt(r['cosine'], 5):>8}"
    )


def print_layers(result: dict, top: int, out=None) -> None:
    p = lambda *a: print(*a, file=out)  # noqa: E731
    header = (
        f"  {'#':>4} {'tensor':<48} {'op':<16} {'SQNR dB':>8} {'in dB':>8} {'added':>8} {'cos':>8}"
    )
    p(f"per-tensor INT8 vs FP32 ({result['backend']}), {result['samples']} samples, graph order:")
    p(header)
    for r in result["graph_order"]:
        p(_row(r))
    p(f"layers adding the most error (added = SQNR of the noise the layer adds; top {top}):")
    p(header)
    for r in result["by_added_error"][:top]:
        p(_row(r))


def run(args: argparse.Namespace) -> int:
    from int8kit.analysis.layers import analyze_layers

    data = required_data_config(args, "data")
    check_outputs(
        {"the FP32 model": args.fp32, "the INT8 model": args.int8, "the data": data.source},
        {"--json": args.json},
    )
    if args.top < 1:
        raise Int8kitError(f"--top must be >= 1, got {args.top}")
    result = analyze_layers(args.fp32, args.int8, data, backend=args.backend)
    print_layers(result, args.top)
    if args.json:
        from int8kit.fileio import write_json

        write_json(args.json, result)
    return 0
