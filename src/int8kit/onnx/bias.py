"""Bias correction: shift the float bias of every layer with int8 weights so that the layer's
expected output in the Q/DQ model equals its expected FP32 output.

Rounding a weight to int8 changes what a layer computes on average, not only its noise: for an
output channel o, E[y_q - y][o] = sum (Wq - W)[o, i, k] * E[x][i] (Nagel et al., "Data-Free
Quantization", empirical bias correction; NNCF's FastBiasCorrection). That mean error is largest
where channels have few weights (depthwise convolutions) and it accumulates through the network.
Subtracting it from the bias costs nothing at inference time and stays inside what TensorRT runs
(biases are float; the weight's Q/DQ is unchanged).

With ``quantized_means`` (the mean of the layer's input as the Q/DQ model sees it) the shift also
removes the mean error that activation quantization and upstream layers bring in:
delta[o] = sum W[o] * E[x] - sum Wq[o] * E[x_q]. Measure E[x_q] per layer on the FP32 input
fake-quantized with that layer's own range (``input_means(..., amax=)``): means taken in the whole
Q/DQ model also carry upstream error, and correcting it at every layer at once over-corrects
(EfficientNet-Lite0: logit SQNR 13.0 dB -> 0.6 dB; benchmarks/bias_correction.py).

    corrected, summary = bias_correct(model, placement, batches, amax)  # FP32 pass, 32 samples
    qdq_model, _ = insert_qdq(corrected, placement, amax)  # same placement, same weights

or in steps: ``layers, _ = bias_layers(model, placement)``, ``means = input_means(model, layers,
batches)``, ``correct_biases(model, placement, means)``.

Cost: one ONNX Runtime pass with the layers' inputs exposed, over the first ``max_samples``
calibration samples (default 32: on EfficientNet-Lite0 and YOLOv8n, means from 8 to 128 samples
give the same fidelity within the evaluation's noise; ``python benchmarks/bias_correction.py
--samples 8 16 32 64 128``). Each exposed tensor is read once, by a fused kernel that adds up x
and its int8 values per channel (calib.kernels.add_channel_sums), while ONNX Runtime computes
the next part of the batch. EfficientNet-Lite0 / YOLOv8n, 2 cores: ~0.3 s for 32 samples,
~0.9 / 1.1 s for 128 (FP32 pass over 128: 0.36 / 0.8 s).

Per-channel means ignore zero padding at the borders (as both references do). Supported: Conv
(any group count), Gemm (alpha, beta, transA, transB), MatMul with a 2-D constant weight (its
bias is the constant of the Add that follows, or a new Add). A layer without a bias gets one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from int8kit._deps import require
from int8kit.calib.collector import safe_amax
from int8kit.onnx.model_io import drop_unused_initializers
from int8kit.onnx.placement import Placement, _attrs
from int8kit.onnx.qdq import dequantized_weight

DEFAULT_MAX_SAMPLES = 32  # bias_correct's means: enough samples (see above)


@dataclass
class BiasLayer:
    """A layer whose bias can be corrected: its node, weight, input and where its bias lives."""

    node: str
    op_type: str
    weight: str  # initializer name
    weight_axis: int  # the per-channel quantization axis (placement's)
    input: str  # the activation the layer reads in the FP32 model
    input_axis: int  # channel axis of that input (Conv 1, Gemm 1 or 0 with transA, MatMul -1)
    bias_add: str | None = None  # MatMul: name of the Add node holding its bias, if any
    weight_qmax: int = 127  # placement's WeightQ.qmax (64: 7-bit weights)


@dataclass
class BiasSummary:
    corrected: list[str] = field(default_factory=list)  # node names
    bias_added: list[str] = field(default_factory=list)  # nodes that had no bias before
    skipped: dict[str, str] = field(default_factory=dict)  # node -> why
    mean_abs_shift: float = 0.0  # mean |delta| over every corrected channel


def _bias_add_after(graph, node, consumers, inits) -> str | None:
    """The Add node that adds a constant to ``node``'s output and is its only reader."""
    readers = consumers.get(node.output[0], [])
    if len(readers) != 1 or readers[0].op_type != "Add":
        return None
    add = readers[0]
    other = add.input[1] if add.input[0] == node.output[0] else add.input[0]
    return add.name if other in inits else None


def bias_layers(model, placement: Placement) -> tuple[list[BiasLayer], dict[str, str]]:
    """The layers of ``model`` whose weight ``placement`` quantizes and whose bias can be shifted,
    and {node: why not} for the other weight-quantized layers."""
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    nodes = {n.name: n for n in graph.node}
    layers, skipped = [], {}
    for (name, idx), wq in placement.weights.items():
        node = nodes.get(name)
        if node is None or idx != 1:
            skipped[name] = "weight is not input 1"
            continue
        a = _attrs(node)
        x = node.input[0]
        if node.op_type == "Conv" and len(node.input) > 2 and node.input[2] not in inits | {""}:
            skipped[name] = "Conv bias is not a constant"
        elif node.op_type == "Conv":
            layers.append(BiasLayer(name, "Conv", wq.initializer, wq.axis, x, 1, None, wq.qmax))
        elif node.op_type == "Gemm":
            if len(node.input) > 2 and node.input[2] and node.input[2] not in inits:
                skipped[name] = "Gemm bias C is not a constant"
            elif a.get("beta", 1.0) == 0.0 and len(node.input) > 2 and node.input[2]:
                skipped[name] = "Gemm with beta 0"
            else:
                axis = 0 if a.get("transA", 0) else 1
                layers.append(
                    BiasLayer(name, "Gemm", wq.initializer, wq.axis, x, axis, None, wq.qmax)
                )
        elif node.op_type == "MatMul":
            w = next(i for i in graph.initializer if i.name == wq.initializer)
            if len(w.dims) != 2:
                skipped[name] = f"MatMul weight of rank {len(w.dims)}"
                continue
            add = _bias_add_after(graph, node, consumers, inits)
            layers.append(BiasLayer(name, "MatMul", wq.initializer, wq.axis, x, -1, add, wq.qmax))
        else:
            skipped[name] = f"{node.op_type} is not corrected"
    return layers, skipped


def input_means(
    model,
    layers: list[BiasLayer],
    batches: Iterable[dict[str, np.ndarray]],
    amax: dict[str, float] | None = None,
    max_samples: int | None = None,
) -> dict[str, np.ndarray]:
    """Per-channel mean of each layer's input over ``batches``, keyed by the FP32 input name.

    ``model`` is the FP32 model (FP32 means) or a Q/DQ model made from it with the same node
    names (the value the layer really reads, after its DequantizeLinear). With ``amax``, an input
    that has a range is fake-quantized (int8, scale amax/127) before it is averaged: the mean the
    layer reads when only its own input is quantized — clipping included, upstream error not.
    ``max_samples``: use only the first that many samples of ``batches`` (None: all)."""
    plain, quantized = _means(model, layers, batches, amax, max_samples)
    return quantized if amax else plain


def take_samples(
    batches: Iterable[dict[str, np.ndarray]], max_samples: int | None
) -> Iterator[dict[str, np.ndarray]]:
    """The first ``max_samples`` samples of ``batches`` (the last batch cut short), without
    reading a batch more than needed. None: every batch."""
    if max_samples is None:
        yield from batches
        return
    if max_samples < 1:
        raise ValueError(f"max_samples must be positive, got {max_samples}")
    left = max_samples
    for batch in batches:
        n = len(next(iter(batch.values())))
        if n > left:
            batch = {k: v[:left] if np.ndim(v) and len(v) == n else v for k, v in batch.items()}
            n = left
        yield batch
        left -= n
        if left <= 0:
            return


_QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
_RUN_BYTES = 64 << 20


def _padding(x: np.ndarray, pads: np.ndarray, value: float, axis: int) -> tuple[np.ndarray, int]:
    """(values to sum, number of ``value`` entries per channel to add) for Pad(x, pads, value).
    Padding that crops or touches the channel axis is applied for real."""
    pads = np.asarray(pads, np.int64).ravel()
    begin, end = pads[: x.ndim], pads[x.ndim :]
    if (pads < 0).any() or begin[axis] or end[axis]:
        x = x[
            tuple(
                slice(max(-b, 0), n - max(-e, 0))
                for b, e, n in zip(begin, end, x.shape, strict=True)
            )
        ]
        widths = [(max(b, 0), max(e, 0)) for b, e in zip(begin, end, strict=True)]
        return np.pad(x, widths, constant_values=np.float32(value)), 0
    padded = int(np.prod([n + b + e for n, b, e in zip(x.shape, begin, end, strict=True)]))
    return x, (padded - x.size) // x.shape[axis]


def _means(model, layers, batches, amax, max_samples=None):
    """(plain means, fake-quantized means or None) of every layer input, in one pass."""
    return _means_parts(model, layers, batches, amax, [max_samples])[0]


def _split_samples(batches, sizes):
    """(batch, part) for consecutive runs of ``sizes`` samples of ``batches`` (None: the rest);
    a batch across a boundary is cut there. Nothing past the last part is read."""
    total = None if None in sizes else sum(sizes)
    bounds = np.cumsum([s or 0 for s in sizes])
    seen = 0
    for batch in take_samples(batches, total):
        n = len(next(iter(batch.values())))
        start = 0
        while start < n:
            part = int(np.searchsorted(bounds, seen + start, side="right"))
            part = min(part, len(sizes) - 1)
            stop = n if sizes[part] is None else min(n, int(bounds[part]) - seen)
            piece = batch
            if start or stop < n:
                piece = {
                    k: v[start:stop] if np.ndim(v) and len(v) == n else v for k, v in batch.items()
                }
            yield piece, part
            start = stop
        seen += n


def _means_parts(model, layers, batches, amax, sizes):
    """[(plain means, fake-quantized means or None)] of every layer input over consecutive runs
    of ``sizes`` samples (None: every remaining sample), all in one pass.

    ONNX Runtime runs the next batch in a worker thread while this one adds up the current
    batch's exposed inputs (calib.kernels.add_channel_sums: one pass per tensor, numba)."""
    from int8kit.calib.kernels import (
        add_channel_sums,
        as_channel_view,
        numba_wanted,
        warm_channel_sums,
    )
    from int8kit.onnx.observe import _ort_threads, _prefetch, make_session, pad_source

    nodes = {n.name: n for n in model.graph.node}
    producer = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: i for i in model.graph.initializer}
    read = {}  # tensor read in ``model`` -> (FP32 name, channel axis)
    for layer in layers:
        node = nodes.get(layer.node)
        if node is not None:
            read.setdefault(node.input[0], (layer.input, layer.input_axis))
    names = list(read)
    pad_of = {t: p for t in names if (p := pad_source(producer.get(t), inits)) is not None}
    exposed: list[str] = []
    for t in names:
        src = pad_of.get(t)
        for n in (src.x, src.pads, src.value) if src else (t,):
            if isinstance(n, str) and n not in exposed:
                exposed.append(n)
    # An FP32 model may be optimized (fusions keep every exposed value); a Q/DQ model may not:
    # ONNX Runtime would fold its Q/DQ pairs into integer kernels.
    has_qdq = any(n.op_type in _QDQ_OPS for n in model.graph.node)
    # numba's sums (~0.1-0.4 ns a value) leave ONNX Runtime every core; NumPy's (~1 ns) run
    # beside it on a core of their own. numba loads (~0.3 s when nothing imported it yet)
    # while ONNX Runtime builds the session and runs the first batch; the sums wait for it.
    fast = numba_wanted()
    if fast:
        threading.Thread(target=warm_channel_sums, name="int8kit-numba", daemon=True).start()
    threads = 0 if fast else _ort_threads()
    session = make_session(model, optimize=not has_qdq, threads=threads, outputs=exposed)
    feeds = {i.name for i in session.get_inputs()}
    # amax values: a float (int8, symmetric) or an onnx.targets.ActQuant (uint8, zero point)
    quantizer = {
        name: _quantizer(amax[fp32]) if amax and fp32 in amax else (None, None)
        for name, (fp32, _) in read.items()
    }
    scales = {name: q[0] for name, q in quantizer.items()}
    sums: list[dict[str, np.ndarray]] = [{} for _ in sizes]
    qsums: list[dict[str, np.ndarray]] = [{} for _ in sizes]
    counts = [dict.fromkeys(names, 0) for _ in sizes]

    # A batch is run in parts of about _RUN_BYTES of exposed values when every input's first
    # dimension is dynamic: memory that stays in use between runs is far cheaper than fresh
    # memory (EfficientNet-Lite0, batches of 16: 1.14 s -> 0.83 s for 128 samples).
    inputs = session.get_inputs()
    split = all(i.shape and not isinstance(i.shape[0], int) for i in inputs)

    def outputs():
        per_run = 1  # samples per run: one at first, then what fits _RUN_BYTES
        for batch, part in _split_samples(batches, sizes):
            feed = {k: v for k, v in batch.items() if k in feeds}
            n = len(next(iter(feed.values()))) if feed else 0
            if not split or n <= 1 or any(np.ndim(v) == 0 or len(v) != n for v in feed.values()):
                yield session.run(exposed, feed), part
                continue
            start = 0
            while start < n:
                stop = min(n, start + per_run)
                values = session.run(exposed, {k: v[start:stop] for k, v in feed.items()})
                yield values, part
                size = sum(v.nbytes for v in values) // (stop - start)
                per_run = max(1, _RUN_BYTES // max(1, size))
                start = stop

    for values, part in _prefetch(outputs()):
        got = dict(zip(exposed, values, strict=True))
        sums_p, qsums_p, counts_p = sums[part], qsums[part], counts[part]
        for name in names:
            axis, scale, src = read[name][1], scales[name], pad_of.get(name)
            if src is None:
                v, extra, c = got[name], 0, np.float32(0)
            else:
                c = got[src.value] if isinstance(src.value, str) else src.value
                c = np.asarray(0 if c is None else c, np.float32).ravel()
                c = c[0] if c.size else np.float32(0)
                pads = got[src.pads] if isinstance(src.pads, str) else src.pads
                v, extra = _padding(got[src.x], pads, c, axis % got[src.x].ndim)
            x = as_channel_view(v, axis)
            if name not in sums_p:
                sums_p[name] = np.zeros(x.shape[1])
                qsums_p[name] = np.zeros(x.shape[1])
            bounds = quantizer[name][1] or (-128.0, 127.0)
            add_channel_sums(x, scale, sums_p[name], qsums_p[name], bounds=bounds)
            counts_p[name] += x.shape[0] * x.shape[2] + extra
            if extra and c:  # the padding's constant, ``extra`` times in every channel
                sums_p[name] += float(c) * extra
                if scale is not None:
                    qsums_p[name] += float(np.rint(np.clip(c / scale, *bounds))) * extra
    results = []
    for sums_p, qsums_p, counts_p in zip(sums, qsums, counts, strict=True):
        plain = {read[n][0]: sums_p[n] / counts_p[n] for n in sums_p}
        quantized = None
        if amax:
            quantized = {
                read[n][0]: (qsums_p[n] * np.float64(scales[n]) / counts_p[n])
                if scales[n]
                else plain[read[n][0]]
                for n in sums_p
            }
        results.append((plain, quantized))
    return results


def _quantizer(value) -> tuple[np.float32, tuple[float, float]]:
    """(scale, clamp bounds of rint(x / scale)) of an activation's quantizer: an amax (int8,
    symmetric) or an onnx.targets.ActQuant (uint8: bounds -zp .. 255 - zp)."""
    if isinstance(value, (int, float, np.floating)):
        return np.float32(safe_amax(float(value)) / 127.0), (-128.0, 127.0)
    return np.float32(value.scale), (float(value.qmin), float(value.qmax))


def _expected(op: BiasLayer, w: np.ndarray, m: np.ndarray, attrs: dict) -> np.ndarray:
    """E[layer(x)] per output channel, without bias, for inputs of per-channel mean ``m``."""
    if op.op_type == "Conv":
        groups = int(attrs.get("group", 1))
        out_ch, in_per_group = w.shape[0], w.shape[1]
        if m.size != groups * in_per_group:
            raise ValueError(f"{op.node}: {m.size} input channel means for {groups}x{in_per_group}")
        wsum = w.reshape(out_ch, in_per_group, -1).sum(axis=2)
        m_of = m.reshape(groups, in_per_group)[np.arange(out_ch) // (out_ch // groups)]
        return (wsum * m_of).sum(axis=1)
    if op.op_type == "Gemm":
        b = w.T if attrs.get("transB", 0) else w  # (K, N)
        return float(attrs.get("alpha", 1.0)) * (m @ b)
    return m @ w  # MatMul, w (K, N)


def correct_biases(
    model,
    placement: Placement,
    means: dict[str, np.ndarray],
    quantized_means: dict[str, np.ndarray] | None = None,
    shifts: dict[str, np.ndarray] | None = None,
):
    """Return (a copy of ``model`` with corrected float biases, BiasSummary).

    ``means``: per-channel FP32 mean of each layer's input (``input_means`` of the FP32 model).
    ``quantized_means``: the same measured in the Q/DQ model; when given, the shift also cancels
    the mean error of activation quantization and of the layers before. Weights are rounded
    exactly as ``insert_qdq`` rounds them; call it afterwards with the same placement.
    ``shifts``: {node: E[W x] - E[Wq x_q]} already computed from these means (bias_safe's
    ``layer_shifts``), used as they are instead of rounding the weight again."""
    onnx = require("onnx", "bias correction")
    from onnx import helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    layers, skipped = bias_layers(out, placement)
    summary = BiasSummary(skipped=dict(skipped))
    inits = {i.name: i for i in graph.initializer}
    nodes = {n.name: n for n in graph.node}
    abs_shifts = []
    new_nodes: dict[str, object] = {}  # MatMul name -> Add inserted after it
    for layer in layers:
        m = means.get(layer.input)
        if m is None:
            summary.skipped[layer.node] = f"no mean for input {layer.input}"
            continue
        node = nodes[layer.node]
        attrs = _attrs(node)
        delta = shifts.get(layer.node) if shifts else None
        if delta is None:
            m = np.asarray(m, np.float64)
            mq = quantized_means.get(layer.input, m) if quantized_means else m
            w = numpy_helper.to_array(inits[layer.weight]).astype(np.float32)
            wq = dequantized_weight(w, layer.weight_axis, qmax=layer.weight_qmax)
            try:
                delta = _expected(layer, w.astype(np.float64), m, attrs) - _expected(
                    layer, wq.astype(np.float64), np.asarray(mq, np.float64), attrs
                )
            except ValueError as exc:
                summary.skipped[layer.node] = str(exc)
                continue
        if layer.op_type == "Gemm":
            beta = float(attrs.get("beta", 1.0))
            delta = delta / beta
        name = f"{layer.node}_bias_corrected"
        add = nodes[layer.bias_add] if layer.bias_add else None
        if add is not None:
            k = 1 if add.input[0] == node.output[0] else 0
            old_name = add.input[k]
        else:
            old_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
            if layer.op_type == "MatMul":
                old_name = None
        old = (
            numpy_helper.to_array(inits[old_name]).astype(np.float32)
            if old_name
            else np.zeros(0, np.float32)
        )
        if old.size > 1 and (old.size != delta.size or old.shape[-1] != delta.size):
            summary.skipped[layer.node] = f"bias of shape {old.shape} for {delta.size} channels"
            continue
        if add is not None:
            add.input[k] = name
        elif layer.op_type == "MatMul":
            y = node.output[0]
            node.output[0] = f"{y}_before_bias"
            new_nodes[layer.node] = helper.make_node(
                "Add", [node.output[0], name], [y], name=f"{layer.node}_bias"
            )
            summary.bias_added.append(layer.node)
        elif old_name:
            node.input[2] = name
        else:
            while len(node.input) < 2:
                node.input.append("")
            if len(node.input) == 2:
                node.input.append(name)
            else:
                node.input[2] = name
            summary.bias_added.append(layer.node)
        bias = (old.reshape(-1) if old.size else np.float32(0)) + delta.astype(np.float32)
        graph.initializer.append(numpy_helper.from_array(bias.astype(np.float32), name))
        abs_shifts.append(np.abs(delta))
        summary.corrected.append(layer.node)
    if new_nodes:
        ordered = []
        for n in graph.node:
            ordered.append(n)
            if n.name in new_nodes:
                ordered.append(new_nodes[n.name])
        del graph.node[:]
        graph.node.extend(ordered)
    drop_unused_initializers(graph)
    summary.mean_abs_shift = float(np.concatenate(abs_shifts).mean()) if abs_shifts else 0.0
    return out, summary


def bias_correct(
    model,
    placement: Placement,
    batches: Iterable[dict[str, np.ndarray]],
    amax: dict[str, float] | None = None,
    max_samples: int | None = DEFAULT_MAX_SAMPLES,
):
    """One call: FP32 input means over ``batches`` (one FP32 pass), then ``correct_biases``.

    With ``amax`` (the ranges insert_qdq will use) each layer's own input quantization is
    included (means of the fake-quantized input, from the same pass); upstream error is not,
    which keeps the corrections independent of each other. ``max_samples``: the means use the
    first that many samples of ``batches`` (None: all of them); no batch past them is read."""
    layers, _ = bias_layers(model, placement)
    if not layers:
        return correct_biases(model, placement, {})
    means, quantized = _means(model, layers, batches, amax, max_samples)
    return correct_biases(model, placement, means, quantized)
