"""FP32 vs INT8 on the same data: per-output fidelity, streamed over batches.

"As TensorRT computes it" is the Q/DQ graph run unfused (ONNX Runtime with graph optimizations
off: quantize, round, clamp, dequantize in float). ONNX Runtime's own fused integer kernels can
differ (u8s8 saturation on CPUs without VNNI) and are reported beside it, labelled.

A backend that refuses the INT8 model (ONNX Runtime's optimizer rejecting it, a run that raises)
is a result, not a crash: its entry is ``{"failed": "why"}`` and the other backends are measured.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

import numpy as np

from int8kit.analysis.detection import DetectionStats
from int8kit.analysis.metrics import ClassifyStats, OutputStats

TASKS = ("auto", "raw", "classify", "detect")
BACKENDS = {"trt-like": False, "ort-int8": True}  # label -> run the INT8 model with ORT fusions
FAILED = "failed"


def failure(metrics: dict) -> str | None:
    """Why a backend failed, when ``metrics`` (one backend's entry of a result) says it did."""
    reason = metrics.get(FAILED) if len(metrics) == 1 else None
    return reason if isinstance(reason, str) else None


def _why(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:400]}"


def open_sessions(model, backends) -> dict[str, object]:
    """{backend label: ONNX Runtime session of ``model``, or why ORT refused it (a str)}."""
    from int8kit.onnx.observe import make_session, serialized

    data = serialized(model) if len(backends) > 1 else None  # once for every backend
    sessions: dict[str, object] = {}
    for b in backends:
        try:
            sessions[b] = make_session(model if data is None else data, optimize=BACKENDS[b])
        except Exception as exc:  # ORT raises its own Fail/RuntimeException types
            sessions[b] = f"ONNX Runtime refused the model: {_why(exc)}"
    return sessions


def guess_task(output: np.ndarray, embedding: bool = False) -> str:
    """'detect' for a YOLO-style (N, 4+nc, A) or (N, A, 5+nc) tensor of DECODED detections (class
    scores within [0, 1], boxes in pixels), 'classify' for (N, C) logits, else 'raw'. The values
    are looked at too: a face detector's landmark offsets (N, A, 10) or a YOLOX head's raw logits
    (N, A, 5+nc) have the shape of detections but are no boxes and scores, and an mAP of them
    would mean nothing. (N, C) with fewer than 10 columns is 'classify' only where every row is
    a probability distribution (a softmax: a 4-way orientation classifier), since (N, 4) is as
    often a box. Integers (token ids passed through) and an ``embedding``
    (embedding_outputs) of classifier shape are 'raw': their top-1 means nothing."""
    shape = output.shape
    if not np.issubdtype(output.dtype, np.floating):
        return "raw"
    if len(shape) == 3 and min(shape[1:]) >= 5 and max(shape[1:]) >= 8 * min(shape[1:]):
        return "detect" if _decoded_detections(output) else "raw"
    if len(shape) == 2 and shape[1] >= 10 or (len(shape) == 4 and shape[2:] == (1, 1)):
        return "raw" if embedding else "classify"
    if len(shape) == 2 and shape[1] >= 2 and not embedding and _distributions(output):
        return "classify"
    return "raw"


def _distributions(x: np.ndarray, tol: float = 1e-3) -> bool:
    """Every row of the 2-D ``x`` in [0, 1] and summing to 1 (within ``tol``)."""
    if x.size == 0 or not np.all(np.isfinite(x)):
        return False
    rows = x.astype(np.float64).sum(axis=1)
    return bool(x.min() >= -tol and x.max() <= 1 + tol and np.all(np.abs(rows - 1) <= tol))


# An output computed by one of these (past the ops below) is a feature vector, not class scores:
# a sentence encoder's mean pooling and an L2 normalisation end in a Div by a computed tensor (a
# Div by a constant, a temperature, does not count), a BERT pooler in a Tanh.
NORMALISING_OPS = frozenset({"LayerNormalization", "LpNormalization", "Tanh"})
# Ops that move, pick or pool values without changing what they are: looked past, on their first
# input (a Concat only of one input). Add/Mul/Sub count only with a constant other operand (a decomposed
# LayerNorm's scale and shift); a classifier's bias Add leads on to its MatMul.
LOOKED_PAST = frozenset(
    {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Cast", "Gather",
     "Slice", "Concat", "ReduceMean", "ReduceSum", "ReduceMax", "GlobalAveragePool",
     "GlobalMaxPool"}
)  # fmt: skip
AFFINE_OPS = frozenset({"Add", "Mul", "Sub"})


def embedding_outputs(model) -> set[str]:
    """The graph outputs of ``model`` (a ModelProto) that are embeddings: the first op computing
    them, looking back past LOOKED_PAST and affine ops, normalises (NORMALISING_OPS, or a Div
    by a computed tensor). Such an output is 'raw' under task 'auto' (guess_task)."""
    from int8kit.onnx.placement import GraphIndex

    index = GraphIndex(model.graph)
    found = set()
    for out in index.outputs:
        tensor, seen = out, set()
        while tensor in index.producer and tensor not in seen:
            seen.add(tensor)
            node = index.producer[tensor]
            op, inputs = node.op_type, [i for i in node.input if i]
            if op in NORMALISING_OPS or (
                op == "Div" and len(inputs) == 2 and not index.is_constant(inputs[1])
            ):
                found.add(out)
                break
            variable = [i for i in inputs if not index.is_constant(i)]
            if (
                op in LOOKED_PAST
                and variable[:1] == inputs[:1]
                and (op != "Concat" or len(inputs) == 1)
            ):
                tensor = inputs[0]
            elif op in AFFINE_OPS and len(variable) == 1:
                tensor = variable[0]
            else:
                break
    return found


def _decoded_detections(output: np.ndarray) -> bool:
    from int8kit.analysis.detection import split_yolo_output

    try:
        boxes, scores = split_yolo_output(output)
    except Exception:
        return False
    finite = np.isfinite(scores).all() and np.isfinite(boxes).all()
    return bool(
        finite and scores.size and scores.min() >= 0.0 and scores.max() <= 1.0 and boxes.max() > 1.5
    )


def _stats_for(task: str, layout: str):
    if task == "detect":
        return DetectionStats(layout=layout)
    if task == "classify":
        return ClassifyStats()
    return None


def compare_models(
    fp32_session,
    int8_sessions: dict[str, object],
    batches: Iterable[dict[str, np.ndarray]],
    task: str = "auto",
    layout: str = "auto",
    embeddings: Collection[str] = (),
) -> dict[str, dict[str, dict]]:
    """{backend label: {output name: metrics}} over all batches.

    Every output gets SQNR/cosine/abs errors; a detector output also box/score SQNR and mAP@0.5
    against the FP32 detections; a classifier output top-1/top-5 agreement. A backend whose
    session is a str (open_sessions: why it was refused) or whose run raises gets
    ``{"failed": why}`` instead. Outputs named in ``embeddings`` (embedding_outputs of the FP32
    model) get no top-1 under task 'auto'. An output whose shape depends on the values (an
    autoregressive decoder that stops at its end token, a NonZero/Compress) may come out of the
    INT8 model another length: it is compared on the part both have, and its metrics say on how
    many of how many batches the shape differed (``shape_differs``, ``batches``).
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    names = [o.name for o in fp32_session.get_outputs()]
    inputs = {i.name for i in fp32_session.get_inputs()}
    raw = {b: {n: OutputStats() for n in names} for b in int8_sessions}
    extra: dict[str, dict[str, object]] = {b: {} for b in int8_sessions}
    tasks: dict[str, str] = {}
    differs = {b: dict.fromkeys(names, 0) for b in int8_sessions}
    failed = {b: s for b, s in int8_sessions.items() if isinstance(s, str)}
    n_batches = 0
    for batch in batches:
        n_batches += 1
        feed = {k: v for k, v in batch.items() if k in inputs}
        ref = dict(zip(names, fp32_session.run(names, feed), strict=True))
        for backend, session in int8_sessions.items():
            if backend in failed:
                continue
            try:
                test = dict(zip(names, session.run(names, feed), strict=True))
            except Exception as exc:  # a kernel ORT cannot run: that backend fails, not the run
                failed[backend] = f"ONNX Runtime could not run the model: {_why(exc)}"
                continue
            for n in names:
                if np.shape(ref[n]) != np.shape(test[n]):  # a data-dependent length
                    differs[backend][n] += 1
                    common = common_part(ref[n], test[n])
                    if common is not None:
                        raw[backend][n].update(*common)
                    continue  # top-1 and mAP need the same rows on both sides
                raw[backend][n].update(ref[n], test[n])
                guess = guess_task(ref[n], n in embeddings) if task == "auto" else task
                t = tasks.setdefault(n, guess)
                stats = extra[backend].get(n)
                if stats is None:
                    stats = _stats_for(t, layout)
                    if stats is None:
                        continue
                    extra[backend][n] = stats
                stats.update(ref[n], test[n])
    out: dict[str, dict[str, dict]] = {}
    for backend in int8_sessions:
        if backend in failed:
            out[backend] = {FAILED: failed[backend]}
            continue
        out[backend] = {}
        for n in names:
            r = raw[backend][n].result()
            r["task"] = tasks.get(n, "raw")
            if n in extra[backend]:
                r.update(extra[backend][n].result())
            if differs[backend][n]:
                r.update(shape_differs=differs[backend][n], batches=n_batches)
            out[backend][n] = r
    return out


def common_part(ref, test) -> tuple[np.ndarray, np.ndarray] | None:
    """Both arrays cut to the leading part they share (the smaller size on every axis), or None
    when their ranks differ."""
    ref, test = np.asarray(ref), np.asarray(test)
    if ref.ndim != test.ndim:
        return None
    part = tuple(slice(0, min(a, b)) for a, b in zip(ref.shape, test.shape, strict=True))
    return ref[part], test[part]
