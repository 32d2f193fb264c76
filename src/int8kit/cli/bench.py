"""`int8kit bench MODEL.onnx [MODEL.int8.onnx ...]`: latency side by side on ONNX Runtime."""

from __future__ import annotations

import argparse

from int8kit.cli.dataargs import flag_error, parse_shape
from int8kit.fileio import check_outputs


def _batches(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--batch wants sizes like 1,8; got {text!r}") from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"--batch wants positive sizes like 1,8; got {text!r}")
    return values


def register(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="latency and throughput of models on ONNX Runtime, side by side",
        description="Random inputs of each model's input shapes; runs interleaved between the "
        "models; median/p90/p99 after warm-up. Names the CPU's INT8 features (AVX2, VNNI, AMX).",
    )
    p.add_argument("models", nargs="+", help="ONNX models; the first is the speedup baseline")
    p.add_argument("--batch", type=_batches, default=[1], metavar="B[,B..]", help="batch sizes")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: ORT default)")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs per model first")
    p.add_argument("--runs", type=int, default=50, help="timed runs per model")
    p.add_argument(
        "--shape",
        type=parse_shape,
        action="append",
        default=[],
        metavar="NAME:DxD..",
        help="shape of a dynamic input, e.g. images:1x3x320x320 (its batch dim follows --batch)",
    )
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.set_defaults(func=run)


def print_bench(result: dict, out=None) -> None:
    p = lambda *a: print(*a, file=out)  # noqa: E731
    cpu = result["cpu"]
    have = [f for f, on in cpu["flags"].items() if on] or ["none"]
    p(f"CPU: {cpu['model']}; integer features: {', '.join(have)}")
    p(f"  {cpu['int8_note']}")
    from int8kit.onnx.targets import cpu_has_vnni

    p(
        "  VNNI: "
        + (
            "yes (int8 dot products: --target ort-cpu needs no reduce range)"
            if cpu_has_vnni(cpu)
            else "no (--target ort-cpu uses reduce range: 7-bit weights)"
        )
    )
    p(f"ONNX Runtime {result['onnxruntime']}, threads {result['config']['threads'] or 'default'}")
    p(
        f"  {'model':<40} {'batch':>5} {'median ms':>10} {'p90 ms':>9} {'p99 ms':>9} "
        f"{'samples/s':>10} {'speedup':>8}"
    )
    for r in result["results"]:
        name = r["model"][-40:]
        if "skipped" in r:
            p(f"  {name:<40} {r['batch']:>5} skipped: {r['skipped']}")
            continue
        x = result["speedup"].get(str(r["batch"]), {}).get(r["model"])
        p(
            f"  {name:<40} {r['batch']:>5} {r['median_ms']:>10.3f} {r['p90_ms']:>9.3f} "
            f"{r['p99_ms']:>9.3f} {r['throughput']:>10.1f} "
            + (f"{x:>7.2f}x" if x is not None else f"{'':>8}")
        )
    first = result["config"]["models"][0]
    for batch, by_model in result["speedup"].items():
        for model, x in by_model.items():
            if model != first:
                p(f"speedup of {model} over {first} at batch {batch}: {x:.2f}x")


def run(args: argparse.Namespace) -> int:
    from int8kit.analysis.bench import BenchConfig, bench

    try:
        config = BenchConfig(
            models=args.models,
            batches=args.batch,
            threads=args.threads,
            warmup=args.warmup,
            runs=args.runs,
            shapes=dict(args.shape),
        )
    except ValueError as exc:
        raise flag_error(exc, {"runs": "--runs", "batch sizes": "--batch"}) from exc
    check_outputs({f"model {m}": m for m in args.models}, {"--json": args.json})
    result = bench(config)
    print_bench(result)
    if args.json:
        from int8kit.fileio import write_json

        write_json(args.json, result)
    return 0
