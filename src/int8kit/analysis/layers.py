"""Per-layer error: where INT8 error starts and where it grows.

Every intermediate tensor the FP32 and the INT8 model share (same name) is compared over the data,
streamed (one ``OutputStats`` per tensor). Where the INT8 model quantizes a tensor, its consumers
read the DequantizeLinear output, so that value is compared too, as its own row ("Q/DQ of t"):
the error a badly chosen scale adds shows up there, not at the tensor itself.

The error a layer *adds* is measured in relative noise power, ``10**(-SQNR/10)``: the output's
relative noise minus the worst relative noise among the inputs it reads. ``added_sqnr_db`` is that
difference in dB (what SQNR the layer would have alone; lower is worse, +inf for none). Unlike a
plain SQNR drop it stays finite for the first quantized layer, whose input SQNR is +inf.
``sqnr_drop_db`` (input SQNR minus output SQNR) is reported beside it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

from int8kit.analysis.metrics import OutputStats

__all__ = [
    "LayerError",
    "analyze_layers",
    "by_added_error",
    "compare_layers",
    "dequantized_names",
    "layer_rows",
]


@dataclass
class LayerError:
    """One compared tensor: FP32 ``tensor`` against the INT8 model's ``int8_tensor``."""

    tensor: str
    int8_tensor: str
    op: str  # the FP32 op that made it ("input" for graph inputs, "Q/DQ" for a DQ'd value)
    node: str
    sqnr_db: float
    cosine: float
    max_abs: float
    mean_abs: float
    input_sqnr_db: float  # worst SQNR among what this op reads in the INT8 model
    sqnr_drop_db: float
    added_sqnr_db: float
    order: int  # position in graph order

    def to_dict(self) -> dict:
        return asdict(self)


def _noise(sqnr: float) -> float:
    if math.isnan(sqnr):
        return math.nan
    return 0.0 if sqnr == math.inf else 10.0 ** (-sqnr / 10.0)


def _to_db(noise: float) -> float:
    if math.isnan(noise):
        return math.nan
    return math.inf if noise <= 0 else -10.0 * math.log10(noise)


def _drop(before: float, after: float) -> float:
    if math.isinf(before) and math.isinf(after) and before == after:
        return 0.0
    return before - after


def dequantized_names(model) -> dict[str, str]:
    """{tensor: its DequantizeLinear output} for every activation the Q/DQ model quantizes
    (found by structure, Q -> DQ, so any tool's naming works)."""
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for t in n.input:
            consumers.setdefault(t, []).append(n)
    out = {}
    for q in model.graph.node:
        if q.op_type != "QuantizeLinear":
            continue
        dq = next(
            (n for n in consumers.get(q.output[0], []) if n.op_type == "DequantizeLinear"), None
        )
        if dq is not None:
            out.setdefault(q.input[0], dq.output[0])
    return out


def _plan(fp32, int8) -> tuple[list[str], dict[str, str], dict[str, tuple[str, str, list[str]]]]:
    """(shared tensors in FP32 graph order, {tensor: DQ'd name}, {tensor: (op, node, inputs)}),
    where the inputs are the names the INT8 model's node of that name reads."""
    from int8kit.onnx.observe import activation_tensors

    int8_names = {i.name for i in int8.graph.input} | {o for n in int8.graph.node for o in n.output}
    shared = [t for t in activation_tensors(fp32) if t in int8_names]
    dq = {t: d for t, d in dequantized_names(int8).items() if t in set(shared)}
    int8_nodes = {n.name: n for n in int8.graph.node if n.name}
    made_by: dict[str, tuple[str, str, list[str]]] = {
        t.name: ("input", "", []) for t in fp32.graph.input
    }
    for n in fp32.graph.node:
        twin = int8_nodes.get(n.name) if n.name else None
        reads = (
            list(twin.input) if twin is not None and twin.op_type == n.op_type else list(n.input)
        )
        for o in n.output:
            made_by[o] = (n.op_type, n.name, [r for r in reads if r])
    return shared, dq, made_by


def compare_layers(
    fp32, int8, batches: Iterable[dict[str, np.ndarray]], optimize: bool = False
) -> list[LayerError]:
    """Every shared tensor (and DQ'd value) of ``fp32`` vs ``int8`` over ``batches``, in graph
    order. ``optimize=False`` runs the INT8 model unfused: what TensorRT computes."""
    from int8kit.onnx.observe import expose, make_session

    shared, dq, made_by = _plan(fp32, int8)
    int8_names = shared + [dq[t] for t in shared if t in dq]
    ref_sess = make_session(expose(fp32, shared))
    test_sess = make_session(expose(int8, int8_names), optimize=optimize)
    inputs = {i.name for i in ref_sess.get_inputs()}
    stats = {n: OutputStats() for n in int8_names}
    for batch in batches:
        feed = {k: v for k, v in batch.items() if k in inputs}
        ref = dict(zip(shared, ref_sess.run(shared, feed), strict=True))
        test = dict(zip(int8_names, test_sess.run(int8_names, feed), strict=True))
        for t in shared:
            if ref[t].dtype.kind != "f":
                continue
            stats[t].update(ref[t], test[t])
            if t in dq:
                stats[dq[t]].update(ref[t], test[dq[t]])
    return layer_rows(shared, dq, made_by, {n: s.result() for n, s in stats.items() if s.count})


def layer_rows(
    shared: list[str],
    dq: dict[str, str],
    made_by: dict[str, tuple[str, str, list[str]]],
    results: dict[str, dict],
) -> list[LayerError]:
    """Rows in graph order from per-tensor metrics (keyed by INT8 tensor name), with each row's
    input SQNR taken from what the INT8 model's node really reads."""
    sqnr = {n: r["sqnr_db"] for n, r in results.items()}
    rows: list[LayerError] = []

    def add(tensor: str, int8_name: str, op: str, node: str, reads: list[str]) -> None:
        r = results[int8_name]
        known = [sqnr[x] for x in reads if x in sqnr]
        before = min(known) if known else math.inf
        after = r["sqnr_db"]
        added = math.inf if op == "input" else _to_db(_noise(after) - _noise(before))
        rows.append(
            LayerError(
                tensor,
                int8_name,
                op,
                node,
                after,
                r["cosine"],
                r["max_abs"],
                r["mean_abs"],
                before,
                _drop(before, after),
                added,
                len(rows),
            )
        )

    for t in shared:
        if t not in results:
            continue
        op, node, reads = made_by.get(t, ("?", "", []))
        add(t, t, op, node, reads)
        if t in dq and dq[t] in results:
            add(t, dq[t], "Q/DQ", "", [t])
    return rows


def by_added_error(rows: list[LayerError]) -> list[LayerError]:
    """Rows sorted by the error each adds, worst (lowest added SQNR) first; NaN last."""
    return sorted(rows, key=lambda r: (math.isnan(r.added_sqnr_db), r.added_sqnr_db, r.order))


def analyze_layers(fp32_path, int8_path, data, backend: str = "trt-like") -> dict:
    """Load both models, build the data source, compare every layer; a JSON-ready dict with
    ``graph_order`` and ``by_added_error`` lists."""
    from int8kit.analysis.fidelity import BACKENDS
    from int8kit.data import DataConfig, make_source
    from int8kit.onnx.model_io import input_specs, load_model

    fp32, int8 = load_model(fp32_path), load_model(int8_path)
    batches = make_source(data, input_specs(fp32)) if isinstance(data, DataConfig) else data
    rows = compare_layers(fp32, int8, batches, optimize=BACKENDS[backend])
    return {
        "fp32_model": str(fp32_path),
        "int8_model": str(int8_path),
        "backend": backend,
        "samples": getattr(getattr(batches, "stats", None), "used", None),
        "graph_order": [r.to_dict() for r in rows],
        "by_added_error": [r.to_dict() for r in by_added_error(rows)],
    }
