"""Where INT8 error comes from, and what bias correction (int8kit.onnx.bias) does about it.

    .venv/bin/python benchmarks/bias_correction.py [--models efficientnet_lite0 yolov8n]

For each model: calibrate once on the 128 calibration inputs (every range method's amax from the
same histograms), then build Q/DQ models with int8kit's placement and measure them trt-like
(unfused Q/DQ, ORT optimizations off) against FP32 on the 128 evaluation inputs:
  - weights only / activations only / both (where the error comes from);
  - {minmax, entropy, percentile, mse} x bias correction {none, fp32 (FP32 input means),
    q1 (input means measured in the uncorrected Q/DQ model), q2 (measured again in the q1 model)};
  - placement variants (what else closes the gap to NNCF within TensorRT's constraints).
Prints a table and writes benchmarks/results/bias_correction.json.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import MODELS, RESULTS, model_path, npy_path, save_json  # noqa: E402

from int8kit.analysis.fidelity import compare_models  # noqa: E402
from int8kit.calib.methods import METHODS  # noqa: E402
from int8kit.onnx.bias import bias_correct, bias_layers, correct_biases, input_means  # noqa: E402
from int8kit.onnx.observe import make_session  # noqa: E402
from int8kit.onnx.placement import Placement, PlacementConfig, node_names_unique, plan  # noqa: E402
from int8kit.onnx.qdq import insert_qdq  # noqa: E402
from int8kit.workflow import CalibConfig, calibrate  # noqa: E402

BATCH = 16


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def batches_of(name: str, split: str, n: int = 128) -> list[dict]:
    arr = np.load(npy_path(name, split, n))
    inp = MODELS[name][0]
    return [{inp: np.ascontiguousarray(arr[i : i + BATCH])} for i in range(0, len(arr), BATCH)]


class Evaluator:
    """trt-like fidelity of Q/DQ models against FP32 outputs computed once."""

    def __init__(self, name: str, model, batches):
        self.task = MODELS[name][2]
        self.fp32 = make_session(model)
        self.batches = batches
        self.refs = [self.fp32.run(None, b) for b in batches]

    def __call__(self, qdq_model) -> dict:
        refs, fp32 = iter(self.refs), self.fp32

        class Cached:  # the FP32 session, answering from the stored outputs
            def get_outputs(self):
                return fp32.get_outputs()

            def get_inputs(self):
                return fp32.get_inputs()

            def run(self, names, feed):
                return next(refs)

        session = make_session(qdq_model, optimize=False)
        res = compare_models(Cached(), {"trt-like": session}, self.batches, task=self.task)
        (m,) = res["trt-like"].values()
        keys = (
            ("map50", "box_sqnr_db", "score_sqnr_db")
            if self.task == "detect"
            else ("top1_agreement", "topk_overlap", "sqnr_db")
        )
        return {k: float(m[k]) for k in keys}


def corrected(model, placement, amax, calib, mode: str):
    """(model with corrected biases or the model itself, summary) for bias mode ``mode``:
    none; fp32 (FP32 input means: the weights' rounding only); local (and each layer's own input
    quantization, clipping included: means of the fake-quantized FP32 input); q1, q2 (input
    means measured in the whole Q/DQ model, uncorrected / once corrected: upstream error too)."""
    if mode == "none":
        return model, None
    if mode == "fp32":
        return bias_correct(model, placement, calib, max_samples=None)
    if mode == "local":
        return bias_correct(model, placement, calib, amax, max_samples=None)
    layers, _ = bias_layers(model, placement)
    means = input_means(model, layers, calib)
    current = model
    for _ in range(int(mode[1:])):
        qdq, _ = insert_qdq(current, placement, amax)
        qmeans = input_means(qdq, layers, calib)
        current, summary = correct_biases(model, placement, means, qmeans)
    return current, summary


def run_model(name: str, modes: list[str], methods: list[str], variants: bool) -> dict:
    model = onnx.load(model_path(name))
    node_names_unique(model)
    placement = plan(model, PlacementConfig())
    calib = batches_of(name, "calib")
    log(f"{name}: calibrating (all methods from one pass)")
    ranges = calibrate(
        model, calib, CalibConfig(method="entropy"), candidates_for=set(placement.activations)
    )
    amax_of = {
        m: {n: (r.candidates or {}).get(m, r.amax) for n, r in ranges.tensors.items()}
        for m in METHODS
    }
    ev = Evaluator(name, model, batches_of(name, "eval"))
    rows: dict[str, dict] = {}

    def record(label: str, qdq, extra=None) -> None:
        rows[label] = {**ev(qdq), **(extra or {})}
        log(
            f"{name}: {label:<34} "
            + "  ".join(f"{k} {v:.3f}" for k, v in rows[label].items() if isinstance(v, float))
        )

    weights_only = Placement(activations={}, weights=placement.weights)
    record("weights only", insert_qdq(model, weights_only, {})[0])
    bc_w, _ = corrected(model, weights_only, {}, calib, "fp32")
    record("weights only + bias corr", insert_qdq(bc_w, weights_only, {})[0])
    acts_only = Placement(activations=placement.activations, weights={})
    for method in methods:
        amax = amax_of[method]
        record(f"{method} activations only", insert_qdq(model, acts_only, amax)[0])
        for mode in modes:
            m, summary = corrected(model, placement, amax, calib, mode)
            extra = {"layers_corrected": len(summary.corrected)} if summary else {}
            record(f"{method} both, bias {mode}", insert_qdq(m, placement, amax)[0], extra)
    if variants:
        run_variants(name, model, placement, amax_of, calib, record, modes)
    return rows


BOUNDED = ("Clip", "Relu", "Sigmoid")  # outputs with a hard bound: minmax loses nothing to tails


def bounded_tensors(model, tensors) -> set[str]:
    """Tensors produced by a bounded activation, also through Pad/Reshape-like ops."""
    producer = {o: n for n in model.graph.node for o in n.output}
    out = set()
    for t in tensors:
        node = producer.get(t)
        while node is not None and node.op_type in ("Pad", "Reshape", "Flatten", "Transpose"):
            node = producer.get(node.input[0])
        if node is not None and node.op_type in BOUNDED:
            out.add(t)
    return out


def mean_max_amax(model, tensors, calib) -> dict[str, float]:
    """NNCF's activation range (MEAN_MINMAX, symmetric): the mean over samples of max|x|."""
    from int8kit.onnx.observe import expose

    names = list(tensors)
    session = make_session(expose(model, names))
    sums = dict.fromkeys(names, 0.0)
    count = 0
    for batch in calib:
        values = session.run(names, batch)
        for n, v in zip(names, values, strict=True):
            sums[n] += float(np.abs(v.reshape(v.shape[0], -1)).max(axis=1).sum())
        count += next(iter(batch.values())).shape[0]
    return {n: s / count for n, s in sums.items()}


def first_layers(model) -> list[str]:
    """Names of the compute nodes that read a graph input (through Pad/Cast-like ops)."""
    inputs = {i.name for i in model.graph.input}
    reach, names = set(inputs), []
    for node in model.graph.node:
        if not any(i in reach for i in node.input[:1]):
            continue
        if node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            names.append(node.name)
        elif node.op_type in ("Pad", "Cast", "Reshape", "Transpose", "Identity"):
            reach.update(node.output)
    return names


def run_variants(name, model, placement, amax_of, calib, record, modes) -> None:
    """Within TensorRT's constraints: range method per tensor type, and the placement."""
    acts = set(placement.activations)
    bounded = bounded_tensors(model, acts)
    log(f"{name}: {len(bounded)} of {len(acts)} quantized activations are bounded")
    mm = mean_max_amax(model, acts, calib)
    candidates = {
        "minmax bounded + entropy other": {
            **amax_of["entropy"],
            **{t: amax_of["minmax"][t] for t in bounded},
        },
        "mean-max (NNCF-like)": {**amax_of["minmax"], **mm},
        "minmax bounded + mean-max other": {
            **amax_of["minmax"],
            **mm,
            **{t: amax_of["minmax"][t] for t in bounded},
        },
    }
    for label, amax in candidates.items():
        for mode in modes:
            m, _ = corrected(model, placement, amax, calib, mode)
            record(f"{label}, bias {mode}", insert_qdq(m, placement, amax)[0])
    # The first layer (reads the image) left to TensorRT's float path: input and weight float
    # (a Conv with only its weight quantized would not run in INT8 in TensorRT either).
    first = first_layers(model)
    log(f"{name}: first layers {first}")
    pc = PlacementConfig(exclude=[f"^{re.escape(n)}$" for n in first])
    p_first = plan(model, pc)
    candidates = {m: amax_of[m] for m in METHODS} | {
        "minmax bounded + mean-max other": candidates["minmax bounded + mean-max other"]
    }
    for label, amax in candidates.items():
        for mode in modes:
            m, _ = corrected(model, p_first, amax, calib, mode)
            record(f"first conv float, {label}, bias {mode}", insert_qdq(m, p_first, amax)[0])


def run_samples(name: str, counts: list[int], repeats: int = 2) -> dict:
    """The recommended configuration (minmax ranges, local bias correction, the first conv
    float) with the means taken over the first n calibration samples: fidelity and the time of
    bias_correct (best of ``repeats``), beside the FP32 pass and the calibration it follows."""
    model = onnx.load(model_path(name))
    node_names_unique(model)
    first = first_layers(model)
    placement = plan(model, PlacementConfig(exclude=[f"^{re.escape(n)}$" for n in first]))
    calib = batches_of(name, "calib")
    fp32 = make_session(model)
    fp32.run(None, calib[0])
    t = time.perf_counter()
    for b in calib:
        fp32.run(None, b)
    fp32_s = time.perf_counter() - t
    t = time.perf_counter()
    ranges = calibrate(
        model, calib, CalibConfig(method="minmax"), names=list(placement.activations)
    )
    calib_s = time.perf_counter() - t
    amax = {n: r.amax for n, r in ranges.tensors.items()}
    log(f"{name}: FP32 pass {fp32_s:.2f}s, minmax calibration {calib_s:.2f}s")
    ev = Evaluator(name, model, batches_of(name, "eval"))
    rows = {"none": {**ev(insert_qdq(model, placement, amax)[0]), "time_s": 0.0}}
    bias_correct(model, placement, calib[:1], amax, max_samples=1)  # numba's first call
    for n in counts:
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            m, _ = bias_correct(model, placement, calib, amax, max_samples=n)
            times.append(time.perf_counter() - t)
        rows[str(n)] = {**ev(insert_qdq(m, placement, amax)[0]), "time_s": min(times)}
        log(
            f"{name}: {n:>4} samples  " + "  ".join(f"{k} {v:.3f}" for k, v in rows[str(n)].items())
        )
        if n < len(calib) * BATCH:  # another draw: the last n samples instead of the first
            m, _ = bias_correct(model, placement, calib[::-1], amax, max_samples=n)
            last = rows[f"{n} (last)"] = ev(insert_qdq(m, placement, amax)[0])
            log(f"{name}: {n:>4} last     " + "  ".join(f"{k} {v:.3f}" for k, v in last.items()))
    return {"fp32_pass_s": fp32_s, "calibration_s": calib_s, "batch": BATCH, "rows": rows}


def run_timing(name: str, batch: int = 8, repeats: int = 3) -> dict:
    """Seconds of bias_correct (local, the recommended placement) beside the FP32 pass over the
    same 128 calibration samples; runs on older int8kit too (PYTHONPATH=<checkout>/src)."""
    import inspect

    model = onnx.load(model_path(name))
    node_names_unique(model)
    first = first_layers(model)
    placement = plan(model, PlacementConfig(exclude=[f"^{re.escape(n)}$" for n in first]))
    arr = np.load(npy_path(name, "calib", 128))
    inp = MODELS[name][0]
    calib = [{inp: np.ascontiguousarray(arr[i : i + batch])} for i in range(0, len(arr), batch)]
    ranges = calibrate(
        model, calib, CalibConfig(method="minmax"), names=list(placement.activations)
    )
    amax = {n: r.amax for n, r in ranges.tensors.items()}
    fp32 = make_session(model)
    fp32.run(None, calib[0])

    def best(fn) -> float:
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    out = {"fp32_pass_s": best(lambda: [fp32.run(None, b) for b in calib])}
    has_max = "max_samples" in inspect.signature(bias_correct).parameters
    bias_correct(model, placement, calib[:1], amax)  # numba's first call
    for n in [None, 32] if has_max else [None]:
        kw = {"max_samples": n} if has_max else {}
        out[f"bias_correct_{n or 'all'}_s"] = best(
            lambda kw=kw: bias_correct(model, placement, calib, amax, **kw)
        )
    log(f"{name} (batches of {batch}): " + "  ".join(f"{k} {v:.2f}" for k, v in out.items()))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["efficientnet_lite0", "yolov8n"])
    p.add_argument("--modes", nargs="+", default=["none", "fp32", "local"])
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--no-variants", action="store_true", help="skip the per-type range variants")
    p.add_argument(
        "--samples",
        nargs="+",
        type=int,
        help="only: the recommended configuration with means over this many calibration samples "
        "(writes results/bias_samples.json)",
    )
    p.add_argument("--time", action="store_true", help="only: time bias_correct (128 samples)")
    a = p.parse_args(argv)
    import json

    if a.time:
        for name in a.models:
            run_timing(name)
        return 0

    if a.samples:
        out_path = RESULTS / "bias_samples.json"
        results = json.loads(out_path.read_text()) if out_path.exists() else {}
        for name in a.models:
            results[name] = run_samples(name, a.samples)
            save_json(out_path, results)
        for name, r in results.items():
            print(
                f"\n{name} (FP32 pass {r['fp32_pass_s']:.2f}s, calibration {r['calibration_s']:.2f}s)"
            )
            keys = list(next(iter(r["rows"].values())).keys())
            print("| samples | " + " | ".join(keys) + " |")
            print("|---" * (len(keys) + 1) + "|")
            for label, row in r["rows"].items():
                print(f"| {label} | " + " | ".join(_fmt(row.get(k)) for k in keys) + " |")
        return 0
    out_path = RESULTS / "bias_correction.json"

    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    for name in a.models:
        results.setdefault(name, {}).update(run_model(name, a.modes, a.methods, not a.no_variants))
        save_json(out_path, results)
    for name, rows in results.items():
        print(f"\n{name}")
        keys = list(next(iter(rows.values())).keys())
        print("| variant | " + " | ".join(keys) + " |")
        print("|---" * (len(keys) + 1) + "|")
        for label, r in rows.items():
            print(f"| {label} | " + " | ".join(_fmt(r.get(k)) for k in keys) + " |")
    return 0


def _fmt(v) -> str:
    return "—" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


if __name__ == "__main__":
    sys.exit(main())
