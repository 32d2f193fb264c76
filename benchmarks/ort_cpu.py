"""The ort-cpu target (issue 12) on the zoo's conv nets: speed and fidelity on ONNX Runtime's
integer kernels, against FP32 and against ORT's own quantize_static (u8 activations,
reduce_range, per-channel int8 weights, after ORT's quant_pre_process; MinMax), the mode ORT
recommends for x86 CPUs. int8kit also runs with its TensorRT target for reference (its fidelity
"as TensorRT computes": trt-like).

Latency: batch 1, ORT 2 threads, runs interleaved between the models (FP32, int8kit, ORT, FP32,
...) so that the load of the machine (shared with other jobs) hits every model alike; medians.
Fidelity: the zoo's task metric of each INT8 model vs FP32 on the zoo's eval set, run on ORT's
integer kernels ("ort-int8", default session options).

    .venv/bin/python benchmarks/ort_cpu.py [--models yolov8n efficientnet_lite0 ...] [--runs 60]
writes benchmarks/results/ort_cpu.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from zoo import data_path, get, model_path, relative  # noqa: E402
from zoo.evaluate import evaluate  # noqa: E402

from int8kit.analysis.bench import BenchConfig, bench, cpu_features  # noqa: E402
from int8kit.data import DataConfig  # noqa: E402
from int8kit.fileio import write_json  # noqa: E402
from int8kit.onnx.targets import cpu_has_vnni  # noqa: E402
from int8kit.onnx.targets_ort import integer_ops  # noqa: E402
from int8kit.workflow import QuantizeConfig, quantize_onnx  # noqa: E402

CONV_NETS = ("yolov8n", "efficientnet_lite0", "pplcnet", "retinaface", "u2netp", "yolox_ddddocr")
WORK = BENCH / "work" / "ort_cpu"
ORT_PY = BENCH / "work" / "venvs" / "ort" / "bin" / "python"
RESULT = BENCH / "results" / "ort_cpu.json"


def int8kit_model(name: str, target: str, reuse: bool) -> tuple[Path, dict]:
    out = WORK / f"{name}.{target}.onnx"
    if reuse and out.is_file():
        return out, {"reused": True}
    t0 = time.perf_counter()
    r = quantize_onnx(
        QuantizeConfig(
            str(model_path(name)),
            str(out),
            data=DataConfig(str(data_path(name, "calib"))),
            holdout=0,
            target=target,
        )
    )
    return out, {"quantize_s": round(time.perf_counter() - t0, 1), "target": r.target}


def ort_model(name: str, reuse: bool) -> tuple[Path, dict]:
    out = WORK / f"{name}.ort-u8-rr.onnx"
    if reuse and out.is_file():
        return out, {"reused": True}
    cmd = [
        str(ORT_PY),
        "ort_u8_runner.py",
        str(model_path(name)),
        str(data_path(name, "calib")),
        str(out),
        "MinMax",
    ]
    p = subprocess.run(cmd, cwd=BENCH / "peers", capture_output=True, text=True, timeout=1800)
    if p.returncode:
        raise RuntimeError(f"ORT quantize_static failed: {p.stderr.strip()[-400:]}")
    return out, json.loads(p.stdout.strip().splitlines()[-1])


def latency(name: str, paths: dict[str, Path], runs: int, warmup: int) -> dict:
    import numpy as np

    labels = list(paths)
    with np.load(data_path(name, "calib")) as z:  # fixes dynamic dims (YOLO's H, W)
        shapes = {k: (1, *z[k].shape[1:]) for k in z.files}
    r = bench(
        BenchConfig(
            models=[str(paths[k]) for k in labels],
            threads=2,
            runs=runs,
            warmup=warmup,
            shapes=shapes,
        )
    )
    by_path = {x["model"]: x for x in r["results"]}
    out = {}
    for label in labels:
        m = by_path[str(paths[label])]
        out[label] = {
            "median_ms": round(m["median_ms"], 2),
            "p90_ms": round(m["p90_ms"], 2),
            "speedup": round(r["speedup"]["1"][str(paths[label])], 3),
        }
    return out


def run_model(name: str, args) -> dict:
    primary = get(name).PRIMARY
    entry: dict = {"primary_metric": primary}
    paths = {"fp32": model_path(name)}
    paths["int8kit-ort-cpu"], entry["int8kit-ort-cpu"] = int8kit_model(name, "ort-cpu", args.reuse)
    try:
        paths["ort-u8-rr"], entry["ort-u8-rr"] = ort_model(name, args.reuse)
    except Exception as exc:  # a peer that fails is a result
        entry["ort-u8-rr"] = {"failed": str(exc)[:400]}
    for label in [k for k in paths if k != "fp32"]:
        entry[label]["integer_ops"] = integer_ops(paths[label], threads=2)
        entry[label]["fidelity"] = evaluate(name, paths[label], ("ort-int8",))["ort-int8"]
    if args.tensorrt_ref:
        trt, info = int8kit_model(name, "tensorrt", args.reuse)
        info["fidelity"] = evaluate(name, trt, ("trt-like",))["trt-like"]
        entry["int8kit-tensorrt (reference)"] = info
    entry["latency"] = latency(name, paths, args.runs, args.warmup)
    entry["paths"] = {k: relative(v) for k, v in paths.items()}
    return entry


def table(results: dict) -> str:
    rows = [
        "| model | metric | FP32 ms | int8kit ort-cpu: ms, speedup, metric | ORT u8/rr: ms, "
        "speedup, metric | int8kit TensorRT target (trt-like) metric |",
        "|---|---|---|---|---|---|",
    ]

    def cell(e: dict, lat: dict, key: str) -> str:
        if "failed" in e or key not in lat:
            return "failed"
        m = e["fidelity"].get(metric, float("nan"))
        return f"{lat[key]['median_ms']:.1f}, {lat[key]['speedup']:.2f}x, {m:.4f}"

    for name, e in results["models"].items():
        metric, lat = e["primary_metric"], e["latency"]
        ref = e.get("int8kit-tensorrt (reference)", {}).get("fidelity", {}).get(metric)
        rows.append(
            f"| {name} | {metric} | {lat['fp32']['median_ms']:.1f} | "
            f"{cell(e['int8kit-ort-cpu'], lat, 'int8kit-ort-cpu')} | "
            f"{cell(e['ort-u8-rr'], lat, 'ort-u8-rr')} | "
            f"{'-' if ref is None else f'{ref:.4f}'} |"
        )
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(CONV_NETS), choices=CONV_NETS)
    ap.add_argument("--runs", type=int, default=60, help="timed runs per model (interleaved)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--reuse", action="store_true", help="reuse INT8 models already written")
    ap.add_argument(
        "--tensorrt-ref", action="store_true", help="also int8kit's TensorRT target (trt-like)"
    )
    ap.add_argument("--result", type=Path, default=RESULT, help="JSON to update")
    args = ap.parse_args(argv)
    result_path = args.result
    WORK.mkdir(parents=True, exist_ok=True)
    results = json.loads(result_path.read_text()) if result_path.is_file() else {"models": {}}
    cpu = cpu_features()
    results.update(
        {
            "cpu": cpu["model"],
            "vnni": cpu_has_vnni(cpu),
            "ort_threads": 2,
            "batch": 1,
            "note": "machine shared with other jobs: runs interleaved, medians; "
            "speedup = FP32 median / model median in the same interleaved run",
            "command": "python benchmarks/ort_cpu.py " + " ".join(argv or sys.argv[1:]),
        }
    )
    for name in args.models:
        t0 = time.perf_counter()
        results["models"][name] = run_model(name, args)
        results["models"][name]["seconds"] = round(time.perf_counter() - t0, 1)
        write_json(result_path, results)  # after every model: a long run keeps what it measured
        print(table({"models": {name: results["models"][name]}}).splitlines()[-1], flush=True)
    print(table(results))
    print(f"wrote {relative(result_path)}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("INT8KIT_NO_PROGRESS", "1")
    sys.exit(main())
