"""Evaluate an INT8 zoo model against its FP32 model on the zoo's evaluation set.

Backends: "fp32" (ONNX Runtime, default options), "trt-like" (ORT with graph optimizations off:
the Q/DQ graph unfused, what TensorRT computes), "ort-int8" (ORT default options: its fused
integer kernels). Samples are fed one at a time (batch 1). FP32 outputs are computed once per
model and kept in memory and in benchmarks/work/zoo_cache/<name>_fp32.npz. A backend that refuses
the INT8 model (session creation or run raises) is reported as {"failed": why}, never a crash.

    .venv/bin/python benchmarks/zoo/evaluate.py u2netp path/to/u2netp.int8.onnx [--backends ...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zoo import CACHE, data_path, get, model_path  # noqa: E402

BACKENDS = {"fp32": True, "trt-like": False, "ort-int8": True}  # label -> ORT optimizations on
_MEMORY: dict[str, tuple[str, list[list[np.ndarray]]]] = {}


def session(model, backend: str):
    """An ORT CPU session of ``model`` (path or ModelProto) for ``backend``."""
    import onnxruntime as ort

    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    # No spin-waiting: on a shared 2-core machine spinning threads burn the CPU the others need
    # (EfficientNet-Lite0, 32 samples under load: 27 s without spinning, 47 s with).
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not BACKENDS[backend]:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    src = str(model) if isinstance(model, (str, Path)) else model.SerializeToString()
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def load_inputs(npz_path) -> dict[str, np.ndarray]:
    with np.load(npz_path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _run(sess, inputs: dict[str, np.ndarray], outputs: list[str] | None) -> list[list[np.ndarray]]:
    names = {i.name for i in sess.get_inputs()}
    missing = names - set(inputs)
    if missing:
        raise ValueError(f"the data has no array for input(s) {sorted(missing)}")
    n = len(next(iter(inputs.values())))
    return [sess.run(outputs, {k: inputs[k][i : i + 1] for k in names}) for i in range(n)]


def run_outputs(
    model_path_or_proto, npz_path, backend: str, outputs=None
) -> list[list[np.ndarray]]:
    """Per sample (batch 1), the model's outputs in graph order (or only ``outputs``, names)."""
    return _run(session(model_path_or_proto, backend), load_inputs(npz_path), outputs)


def output_names(name: str) -> list[str] | None:
    """Names of the graph outputs score() reads (module OUTPUTS: indices), None for all."""
    idx = getattr(get(name), "OUTPUTS", None)
    if idx is None:
        return None
    import onnx

    graph = onnx.load(model_path(name), load_external_data=False).graph
    return [graph.output[i].name for i in idx]


def _key(name: str, outputs) -> str:
    h = hashlib.sha1()
    for p in (model_path(name), data_path(name, "eval")):
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    h.update(repr(outputs).encode())
    return h.hexdigest()


def fp32_outputs(name: str, samples: int | None = None) -> list[list[np.ndarray]]:
    """FP32 outputs on the eval set, cached in memory and on disk (keyed by file sizes/mtimes).
    With ``samples`` and no cache yet, only the first ``samples`` are run (and not cached)."""
    outputs = output_names(name)
    key = _key(name, outputs)
    if name in _MEMORY and _MEMORY[name][0] == key:
        return _MEMORY[name][1]
    path = CACHE / f"{name}_fp32.npz"
    result = None
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) == key:
                n, k = (int(v) for v in z["shape"])
                result = [[z[f"s{i}_o{j}"] for j in range(k)] for i in range(n)]
    if result is None and samples is not None:
        inputs = {k: v[:samples] for k, v in load_inputs(data_path(name, "eval")).items()}
        return _run(session(model_path(name), "fp32"), inputs, outputs)
    if result is None:
        result = run_outputs(model_path(name), data_path(name, "eval"), "fp32", outputs)
        arrays = {f"s{i}_o{j}": o for i, outs in enumerate(result) for j, o in enumerate(outs)}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            np.savez(f, key=np.array(key), shape=np.array([len(result), len(result[0])]), **arrays)
        tmp.replace(path)
    _MEMORY[name] = (key, result)
    return result


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:400] if str(exc).strip() else ''}"


def evaluate(
    name: str, int8_model_path, backends=("trt-like",), samples: int | None = None
) -> dict:
    """{backend: score() metrics + "seconds" | {"failed": why}} of the INT8 model vs FP32
    (on the first ``samples`` evaluation samples; all by default)."""
    mod = get(name)
    ref = fp32_outputs(name, samples)[:samples]
    outputs = output_names(name)
    inputs = {k: v[:samples] for k, v in load_inputs(data_path(name, "eval")).items()}
    result = {}
    for backend in backends:
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            test = _run(session(int8_model_path, backend), inputs, outputs)
        except Exception as exc:  # a backend that refuses the model is a result, not a crash
            result[backend] = {"failed": _why(exc)}
            continue
        metrics = {k: float(v) for k, v in mod.score(ref, test).items()}
        metrics["seconds"] = round(time.perf_counter() - t0, 2)
        metrics["cpu_seconds"] = round(time.process_time() - c0, 2)  # all threads; load-proof
        metrics["samples"] = len(test)
        result[backend] = metrics
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name")
    ap.add_argument("int8_model")
    ap.add_argument("--backends", nargs="+", default=["trt-like"], choices=list(BACKENDS))
    ap.add_argument("--samples", type=int, default=None, help="first N eval samples (all)")
    args = ap.parse_args(argv)
    res = evaluate(args.name, Path(args.int8_model), tuple(args.backends), args.samples)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
