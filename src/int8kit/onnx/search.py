"""Range search: per quantized tensor, the candidate amax (one per range method) that keeps the
quantized model's outputs closest to FP32.

No single method suits every tensor: entropy clips an early-layer tensor whose rare outliers do
not matter downstream (good) but also clips a head tensor whose rare large values are exactly the
confident detections (bad). The search runs the real Q/DQ model — every tensor quantized, as
TensorRT would run it — with the scales fed as inputs, and improves one tensor at a time in graph
order (coordinate descent): each choice sees the error of everything quantized before it.
Nothing is left in float; this is calibration, not fallback.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from int8kit._deps import require
from int8kit.analysis.detection import split_yolo_output
from int8kit.analysis.fidelity import guess_task
from int8kit.calib.collector import safe_amax


def output_error(reference: dict[str, np.ndarray], test: dict[str, np.ndarray]) -> float:
    """Mean noise-to-signal ratio over outputs. A detector output counts its box and score parts
    separately, so box coordinates (0..640) cannot drown the class scores (0..1)."""
    errs = []
    for name, ref in reference.items():
        out = test[name]
        parts = [(ref, out)]
        if guess_task(ref) == "detect":
            parts = list(zip(split_yolo_output(ref), split_yolo_output(out), strict=True))
        for r, t in parts:
            r = r.astype(np.float64)
            signal = float((r * r).sum()) or 1e-30
            errs.append(float(((r - t) ** 2).sum()) / signal)
    return float(np.mean(errs))


def salience(outputs: dict[str, np.ndarray]) -> float:
    """How much a sample tells the search: for a detector, its most confident class score (the
    detections are what the scores' fidelity is about); otherwise 0 (no preference)."""
    best = 0.0
    for out in outputs.values():
        if guess_task(out) == "detect":
            best = max(best, float(split_yolo_output(out)[1].max()))
    return best


def select_samples(model, batches, n: int) -> list[dict[str, np.ndarray]]:
    """The ``n`` most salient batches (ties keep calibration order, spread over the set)."""
    import heapq

    from int8kit.onnx.observe import make_session

    session = make_session(model)
    inputs = {i.name for i in session.get_inputs()}
    items = []
    for k, batch in enumerate(batches):
        feed = {name: v for name, v in batch.items() if name in inputs}
        outputs = dict(
            zip([o.name for o in session.get_outputs()], session.run(None, feed), strict=True)
        )
        items.append((salience(outputs), k, batch))
    if all(score == 0.0 for score, _, _ in items):
        step = max(1, len(items) // max(1, n))
        return [b for _, k, b in items if k % step == 0][:n]
    top = heapq.nlargest(n, items, key=lambda item: (item[0], -item[1]))
    return [b for _, _, b in sorted(top, key=lambda item: item[1])]


def _scales_as_inputs(qdq_model, tensors: list[str]):
    """Turn the scale initializers of ``tensors``' Q/DQ into scalar graph inputs."""
    require("onnx")
    from onnx import TensorProto, helper

    wanted = {f"{t}_scale" for t in tensors}
    g = qdq_model.graph
    keep = [i for i in g.initializer if i.name not in wanted]
    del g.initializer[:]
    g.initializer.extend(keep)
    for name in sorted(wanted):
        g.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, []))
    return qdq_model


def _merge(feeds: list[dict[str, np.ndarray]], session, max_batch: int = 16) -> list[dict]:
    """Concatenate single samples into batches of up to ``max_batch`` where every input's batch
    dimension is dynamic and the samples' shapes agree; fewer runs, same numbers."""
    dynamic = all(not isinstance(i.shape[0], int) for i in session.get_inputs())
    if not dynamic or len(feeds) < 2:
        return feeds
    merged, group = [], []
    for feed in feeds + [None]:
        same = (
            group
            and feed is not None
            and all(feed[k].shape[1:] == group[0][k].shape[1:] for k in feed)
        )
        if group and (feed is None or not same or len(group) == max_batch):
            merged.append({k: np.concatenate([g[k] for g in group]) for k in group[0]})
            group = []
        if feed is not None:
            group.append(feed)
    return merged


def search_ranges(
    model,
    placement,
    base_amax: dict[str, float],
    candidates: dict[str, dict[str, float]],
    batches: list[dict[str, np.ndarray]],
    progress: Callable = lambda it, **_: it,
) -> tuple[dict[str, float], dict[str, str], float, float]:
    """Choose, per tensor of ``candidates`` ({tensor: {method: amax}}), the amax with the
    smallest ``output_error`` over ``batches``.

    Returns (amax for every tensor, chosen method per searched tensor, error before, error after).
    """
    from int8kit.onnx.observe import make_session
    from int8kit.onnx.qdq import insert_qdq

    amax = dict(base_amax)
    searched = [t for t in placement.activations if t in candidates]
    qdq, _ = insert_qdq(model, placement, amax)
    session = make_session(_scales_as_inputs(qdq, searched), optimize=False)
    fp32 = make_session(model)
    names = [o.name for o in fp32.get_outputs()]
    inputs = {i.name for i in fp32.get_inputs()}
    feeds = _merge([{k: v for k, v in b.items() if k in inputs} for b in batches], fp32)
    refs = [dict(zip(names, fp32.run(names, f), strict=True)) for f in feeds]

    def error(current: dict[str, float]) -> float:
        scales = {
            f"{t}_scale": np.array(safe_amax(current[t]) / 127.0, np.float32) for t in searched
        }
        total = 0.0
        for feed, ref in zip(feeds, refs, strict=True):
            out = dict(zip(names, session.run(names, {**feed, **scales}), strict=True))
            total += output_error(ref, out) * len(next(iter(feed.values())))
        return total / max(1, sum(len(next(iter(f.values()))) for f in feeds))

    start = dict(amax)
    amax, changed, before, best = descend(searched, candidates, amax, error, progress)
    chosen = {
        t: changed.get(t) or next((m for m, v in candidates[t].items() if v == start[t]), "base")
        for t in searched
    }
    return amax, chosen, before, best


def descend(
    tensors: list[str],
    candidates: dict[str, dict[str, float]],
    amax: dict[str, float],
    error: Callable[[dict[str, float]], float],
    progress: Callable = lambda it, **_: it,
    desc: str = "range search",
) -> tuple[dict[str, float], dict[str, str], float, float]:
    """Coordinate descent over ranges: per tensor in order, each distinct finite candidate amax
    ({method: amax}) is tried with every earlier choice applied, and kept where ``error`` drops.
    Returns (amax, {tensor: method} for the tensors that changed, error before, error after)."""
    amax = dict(amax)
    changed: dict[str, str] = {}
    before = best = error(amax)
    for t in progress(tensors, desc=desc, total=len(tensors)):
        tried = [amax[t]]
        for method, value in candidates[t].items():
            if not math.isfinite(value) or any(np.isclose(value, v, rtol=1e-6) for v in tried):
                continue
            tried.append(value)
            trial = {**amax, t: value}
            e = error(trial)
            if e < best:
                best, amax, changed[t] = e, trial, method
    return amax, changed, before, best
