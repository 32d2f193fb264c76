"""The ort-cpu target (issue 12) on the zoo's conv nets: speed and fidelity on ONNX Runtime's
integer kernels, against FP32 and against ORT's own quantize_static (u8 activations,
reduce_range, per-channel int8 weights, after ORT's quant_pre_process; MinMax), the mode ORT
recommends for x86 CPUs. int8kit also runs with its TensorRT target for reference (its fidelity
"as TensorRT computes": trt-like).

Latency: batch 1, ORT 2 threads, runs interleaved between the models (FP32, int8kit, ORT, FP32,
...) so that the load of the machine (shared with other jobs) hits every model alike; medians,
the whole interleaved measurement repeated (--repeats) and the median speedup kept with its
range and the machine's load average.
Fidelity: the zoo's task metric of each INT8 model vs FP32 on the zoo's eval set, run on ORT's
integer kernels ("ort-int8", default session options).

    .venv/bin/python benchmarks/ort_cpu.py [--models yolov8n ...] [--runs 40] [--repeats 5]
        [--latency-only]
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

from zoo import ROOT, data_path, get, model_path, relative  # noqa: E402
from zoo.evaluate import evaluate  # noqa: E402

from int8kit.analysis.bench import BenchConfig, bench, cpu_features  # noqa: E402
from int8kit.data import DataConfig  # noqa: E402
from int8kit.fileio import write_json  # noqa: E402
from int8kit.onnx.placement import PlacementConfig  # noqa: E402
from int8kit.onnx.targets import cpu_has_vnni  # noqa: E402
from int8kit.onnx.targets_ort import integer_ops  # noqa: E402
from int8kit.workflow import QuantizeConfig, quantize_onnx  # noqa: E402

CONV_NETS = ("yolov8n", "efficientnet_lite0", "pplcnet", "retinaface", "u2netp", "yolox_ddddocr")
WORK = BENCH / "work" / "ort_cpu"
ORT_PY = BENCH / "work" / "venvs" / "ort" / "bin" / "python"
RESULT = BENCH / "results" / "ort_cpu.json"


def int8kit_model(
    name: str, target: str, reuse: bool, input_layers: bool = False
) -> tuple[Path, dict]:
    """int8kit's default recipe for ``target``; ``input_layers``: --quantize-input-layers."""
    out = WORK / f"{name}.{target}{'.input-layers' if input_layers else ''}.onnx"
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
            placement=PlacementConfig(quantize_input_layers=input_layers),
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


def latency(name: str, paths: dict[str, Path], runs: int, warmup: int, repeats: int) -> dict:
    """Interleaved medians, ``repeats`` times (each a fresh set of sessions, ``runs`` rounds):
    on the shared machine one interleaved median still moves by +-30% between repeats. The
    speedup is the median of the repeats' speedups; its spread is kept."""
    import numpy as np

    labels = list(paths)
    with np.load(data_path(name, "calib")) as z:  # fixes dynamic dims (YOLO's H, W)
        shapes = {k: (1, *z[k].shape[1:]) for k in z.files}
    per: dict[str, dict[str, list[float]]] = {k: {"ms": [], "speedup": []} for k in labels}
    loads = []
    for _ in range(repeats):
        loads.append(os.getloadavg()[0])
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
        for label in labels:
            per[label]["ms"].append(by_path[str(paths[label])]["median_ms"])
            per[label]["speedup"].append(r["speedup"]["1"][str(paths[label])])
    loads.append(os.getloadavg()[0])
    # The machine's 1-minute load average (2 cores) before each repeat and after the last.
    out: dict = {"load_1min": [round(v, 2) for v in loads], "repeats": repeats, "runs": runs}
    for label in labels:
        sp = per[label]["speedup"]
        out[label] = {
            "median_ms": round(float(np.median(per[label]["ms"])), 2),
            "speedup": round(float(np.median(sp)), 3),
            "speedup_range": [round(min(sp), 3), round(max(sp), 3)],
        }
    return out


def retime(name: str, entry: dict, args) -> dict:
    """--latency-only: time the models an earlier run wrote again; the rest of ``entry`` stays."""
    paths = {k: ROOT / v for k, v in entry["paths"].items()}
    entry["latency"] = latency(name, paths, args.runs, args.warmup, args.repeats)
    return entry


def run_model(name: str, args) -> dict:
    primary = get(name).PRIMARY
    entry: dict = {"primary_metric": primary}
    paths = {"fp32": model_path(name)}
    paths["int8kit-ort-cpu"], entry["int8kit-ort-cpu"] = int8kit_model(name, "ort-cpu", args.reuse)
    if args.input_layers:
        label = "int8kit-ort-cpu --quantize-input-layers"
        paths[label], entry[label] = int8kit_model(name, "ort-cpu", args.reuse, True)
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
    entry["latency"] = latency(name, paths, args.runs, args.warmup, args.repeats)
    entry["paths"] = {k: relative(v) for k, v in paths.items()}
    return entry


def zoo_peers_on_ort(name: str, metric: str) -> dict:
    """Every peer of the zoo run (benchmarks/zoo_bench.py: ORT quantize_static s8, NNCF,
    ModelOpt) scored on ORT's integer kernels on the same eval set: {label: metric}, the best
    and its label. Empty where the zoo run has not been made."""
    path = BENCH / "results" / "zoo" / f"{name}.peers.json"
    if not path.is_file():
        return {}
    scores = {
        label: e["metrics"]["ort-int8"][metric]
        for label, e in json.loads(path.read_text()).get("entries", {}).items()
        if e.get("ok") and metric in e.get("metrics", {}).get("ort-int8", {})
    }
    if not scores:
        return {}
    best = max(scores, key=scores.get)
    return {"metric": metric, "scores": scores, "best": best, "best_value": scores[best]}


def table(results: dict) -> str:
    rows = [
        "| model | metric | FP32 ms | int8kit ort-cpu: ms, speedup, metric | ORT u8/rr: ms, "
        "speedup, metric | best zoo peer on ORT's kernels: metric | int8kit TensorRT target "
        "(trt-like) metric | load (1 min) |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def cell(e: dict, lat: dict, key: str) -> str:
        if "failed" in e or key not in lat:
            return "failed"
        m = e["fidelity"].get(metric, float("nan"))
        lo, hi = lat[key].get("speedup_range", [lat[key]["speedup"]] * 2)
        return (
            f"{lat[key]['median_ms']:.1f}, {lat[key]['speedup']:.2f}x ({lo:.2f}-{hi:.2f}), {m:.4f}"
        )

    for name, e in results["models"].items():
        metric, lat = e["primary_metric"], e["latency"]
        ref = e.get("int8kit-tensorrt (reference)", {}).get("fidelity", {}).get(metric)
        peer = e.get("zoo_peers_ort_int8", {})
        peer_cell = f"{peer['best_value']:.4f} ({peer['best']})" if peer else "-"
        rows.append(
            f"| {name} | {metric} | {lat['fp32']['median_ms']:.1f} | "
            f"{cell(e['int8kit-ort-cpu'], lat, 'int8kit-ort-cpu')} | "
            f"{cell(e['ort-u8-rr'], lat, 'ort-u8-rr')} | {peer_cell} | "
            f"{'-' if ref is None else f'{ref:.4f}'} | "
            f"{min(lat['load_1min']):.1f}-{max(lat['load_1min']):.1f} |"
        )
        qil = "int8kit-ort-cpu --quantize-input-layers"
        if qil in e:
            rows.append(f"| {name}, {qil} | {metric} | | {cell(e[qil], lat, qil)} | | | | |")
    return "\n".join(rows)


def ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(CONV_NETS), choices=CONV_NETS)
    ap.add_argument("--runs", type=int, default=40, help="timed rounds per repeat (interleaved)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument(
        "--repeats", type=int, default=5, help="interleaved measurements per model (median)"
    )
    ap.add_argument(
        "--latency-only",
        action="store_true",
        help="time again the models of the result file (no quantization, no fidelity)",
    )
    ap.add_argument("--reuse", action="store_true", help="reuse INT8 models already written")
    ap.add_argument(
        "--tensorrt-ref", action="store_true", help="also int8kit's TensorRT target (trt-like)"
    )
    ap.add_argument(
        "--input-layers",
        action="store_true",
        help="also int8kit ort-cpu with --quantize-input-layers (the stem in int8 too)",
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
            "onnxruntime": ort_version(),
            "note": "machine shared with other jobs: runs interleaved, medians; "
            "speedup = FP32 median / model median in the same interleaved run; "
            "latency.load_1min = the 1-minute load average before and after the timed runs",
            "command": "python benchmarks/ort_cpu.py " + " ".join(argv or sys.argv[1:]),
        }
    )
    for name in args.models:
        t0 = time.perf_counter()
        if args.latency_only:
            results["models"][name] = retime(name, results["models"][name], args)
        else:
            results["models"][name] = run_model(name, args)
        entry = results["models"][name]
        entry["zoo_peers_ort_int8"] = zoo_peers_on_ort(name, entry["primary_metric"])
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        write_json(result_path, results)  # after every model: a long run keeps what it measured
        print(table({"models": {name: results["models"][name]}}).splitlines()[-1], flush=True)
    print(table(results))
    print(f"wrote {relative(result_path)}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("INT8KIT_NO_PROGRESS", "1")
    sys.exit(main())
