"""Fidelity (int8kit's metrics for every tool's model), CPU latency and Q/DQ node counts.
Runs in int8kit's venv.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter

import numpy as np
import onnx
from common import MODELS, model_path, npy_path

from int8kit.onnx.observe import make_session
from int8kit.workflow import fidelity


def batches(name: str, n_eval: int, batch_size: int = 8):
    arr = np.load(npy_path(name, "eval", n_eval), mmap_mode="r")
    inp = MODELS[name][0]
    return [
        {inp: np.ascontiguousarray(arr[i : i + batch_size])} for i in range(0, len(arr), batch_size)
    ]


def fidelity_of(name: str, int8_path, n_eval: int) -> dict:
    """{backend: metrics of the model's one output}, backends trt-like and ort-int8."""
    fp32 = onnx.load(model_path(name))
    int8 = onnx.load(int8_path)
    res = fidelity(fp32, int8, batches(name, n_eval), task=MODELS[name][2])
    out = {}
    for backend, outputs in res.items():
        (metrics,) = outputs.values()
        keys = (
            ("map50", "box_sqnr_db", "score_sqnr_db", "raw_sqnr_db", "n_gt", "n_pred")
            if MODELS[name][2] == "detect"
            else ("top1_agreement", "topk_overlap", "topk_agreement", "sqnr_db", "cosine")
        )
        out[backend] = {k: metrics.get(k) for k in keys}
    return out


def qdq_counts(path) -> dict:
    ops = Counter(n.op_type for n in onnx.load(path, load_external_data=False).graph.node)
    return {
        "QuantizeLinear": ops.get("QuantizeLinear", 0),
        "DequantizeLinear": ops.get("DequantizeLinear", 0),
        "nodes": sum(ops.values()),
    }


def latency(name: str, paths: dict[str, str], rounds: int = 60, warmup: int = 5) -> dict:
    """Median ms of one batch-1 run per model, runs interleaved round-robin in one process
    (ORT default options: graph optimizations on, so INT8 models use the integer kernels)."""
    x = np.load(npy_path(name, "eval", 128), mmap_mode="r")
    feed = {MODELS[name][0]: np.ascontiguousarray(x[:1])}
    sessions = {k: make_session(onnx.load(p)) for k, p in paths.items()}
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for r in range(warmup + rounds):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, feed)
            if r >= warmup:
                times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}
