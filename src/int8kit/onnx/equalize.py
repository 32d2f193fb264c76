"""Cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization", section 4.1).

For Conv1 -> f -> Conv2 with f positively homogeneous (f(x / s) = f(x) / s for s > 0: Relu,
LeakyRelu, PRelu with one slope, or nothing at all), dividing output channel i of Conv1 (its
weights and bias) by s_i and multiplying input channel i of Conv2 by s_i computes the same
function. s_i = sqrt(r1_i / r2_i), with r1_i = max |W1[i]| and r2_i = max |W2[:, i]|, gives both
the same range r_i = sqrt(r1_i r2_i), so no channel is left with a range far below the tensor's
(what per-tensor weight scales and, for the depthwise conv of a MobileNet block, per-channel
scales over a few weights suffer from). Chains share convolutions, so the pairs are equalized in
turn until the scales stop changing.

Relu6 / Clip between the two is not positively homogeneous: clip(x / s, 0, 6) * s is
clip(x, 0, 6 s), a different function for s != 1; such pairs are skipped and reported (a
per-channel clip bound would need an extra Min node per pair). Depthwise and grouped convolutions
are handled on either side. The FP32 function is preserved up to float rounding.

    equalized, summary = equalize(model)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from int8kit._deps import require

HOMOGENEOUS = {"Relu", "LeakyRelu", "PRelu"}  # f(x / s) = f(x) / s for s > 0
CLIPPING = {"Clip", "HardSigmoid", "HardSwish"}  # not homogeneous: skipped, and said
MAX_ITERATIONS = 20
TOLERANCE = 1e-3  # stop when no scale moves by more than this (relative)
SCALE_LIMIT = 1e4  # s stays in [1/limit, limit]: a dead channel never blows the other side up


@dataclass
class Pair:
    """Conv1 -> (activation) -> Conv2, by node name."""

    first: str
    second: str
    activation: str | None = None  # op type between, or None


@dataclass
class EqualizeSummary:
    pairs: list[tuple[str, str]] = field(default_factory=list)  # equalized (first, second)
    skipped: dict[str, str] = field(default_factory=dict)  # "first -> second": why not
    iterations: int = 0
    # mean over pairs of max/min of the first Conv's per-output-channel weight ranges (what a
    # per-tensor scale wastes; the depthwise conv's few weights per channel suffer it most)
    range_spread_before: float = 0.0
    range_spread_after: float = 0.0


def find_pairs(model) -> tuple[list[Pair], dict[str, str]]:
    """Conv -> (homogeneous activation) -> Conv pairs whose middle tensors nothing else reads,
    and {"a -> b": why not} for the Conv -> Conv links that cannot be equalized."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    readers: dict[str, list] = {}
    for n in graph.node:
        for name in n.input:
            readers.setdefault(name, []).append(n)
    outputs = {o.name for o in graph.output}
    uses = {}
    for n in graph.node:
        for name in n.input:
            uses[name] = uses.get(name, 0) + 1

    def only_reader(tensor):
        r = readers.get(tensor, [])
        return r[0] if len(r) == 1 and tensor not in outputs else None

    pairs, skipped = [], {}
    for n in graph.node:
        if n.op_type != "Conv" or not _constant_conv(n, inits, uses):
            continue
        nxt = only_reader(n.output[0])
        act = None
        if nxt is not None and nxt.op_type != "Conv":
            act = nxt
            nxt = only_reader(act.output[0])
        if nxt is None or nxt.op_type != "Conv":
            continue
        key = f"{n.name} -> {nxt.name}"
        why = None
        if act is not None and act.op_type not in HOMOGENEOUS:
            why = (
                f"{act.op_type} between them is not scale-invariant (clip(x/s) * s != clip(x))"
                if act.op_type in CLIPPING
                else f"{act.op_type} between them"
            )
        elif act is not None and act.op_type == "PRelu" and _prelu_slopes(act, inits) != 1:
            why = "PRelu with a slope per channel"
        elif not _constant_conv(nxt, inits, uses):
            why = f"{nxt.name}'s weight is not a constant of its own"
        elif nxt.input[0] != (act.output[0] if act is not None else n.output[0]):
            why = "the tensor is not the second Conv's data input"
        if why:
            skipped[key] = why
        else:
            pairs.append(Pair(n.name, nxt.name, act.op_type if act is not None else None))
    return pairs, skipped


def _constant_conv(node, inits, uses) -> bool:
    """The Conv's weight (and bias) are FP32 constants that no other node reads."""
    w = node.input[1] if len(node.input) > 1 else ""
    if w not in inits or uses.get(w, 0) != 1 or len(inits[w].dims) < 3:
        return False
    b = node.input[2] if len(node.input) > 2 else ""
    if b and (b not in inits or uses.get(b, 0) != 1):
        return False
    float32 = 1  # onnx.TensorProto.FLOAT
    return all(inits[t].data_type == float32 for t in (w, b) if t)


def _prelu_slopes(node, inits) -> int:
    slope = inits.get(node.input[1])
    return int(np.prod(slope.dims)) if slope is not None else -1


def _input_ranges(w2: np.ndarray, group: int) -> np.ndarray:
    """max |W2[:, i]| per input channel i of a (grouped) Conv weight (out, in/group, ...)."""
    out_ch, ipg = w2.shape[0], w2.shape[1]
    a = np.abs(w2).reshape(group, out_ch // group, ipg, -1)
    return a.max(axis=(1, 3)).reshape(-1)


def _scale_inputs(w2: np.ndarray, group: int, s: np.ndarray) -> np.ndarray:
    out_ch, ipg = w2.shape[0], w2.shape[1]
    v = w2.reshape(group, out_ch // group, ipg, -1) * s.reshape(group, 1, ipg, 1)
    return v.reshape(w2.shape)


def equalize(model, max_iterations: int = MAX_ITERATIONS) -> tuple[object, EqualizeSummary]:
    """Return (an equalized copy of ``model``, EqualizeSummary). Only weights and biases change;
    node and tensor names stay, so placement and ranges apply to the copy as to the original."""
    onnx = require("onnx", "cross-layer equalization")
    from onnx import numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    pairs, skipped = find_pairs(out)
    summary = EqualizeSummary(skipped=skipped)
    if not pairs:
        return out, summary
    inits = {i.name: i for i in graph.initializer}
    nodes = {n.name: n for n in graph.node}
    arrays = {}  # initializer name -> float64 working copy
    groups = {}
    for p in pairs:
        for name in (p.first, p.second):
            node = nodes[name]
            groups[name] = int(next((a.i for a in node.attribute if a.name == "group"), 1))
            for t in node.input[1:3]:
                if t and t not in arrays:
                    arrays[t] = numpy_helper.to_array(inits[t]).astype(np.float64)

    def out_channels(name):
        return arrays[nodes[name].input[1]].shape[0]

    def in_channels(name):
        return arrays[nodes[name].input[1]].shape[1] * groups[name]

    for p in list(pairs):
        if out_channels(p.first) != in_channels(p.second):
            summary.skipped[f"{p.first} -> {p.second}"] = (
                f"{out_channels(p.first)} output channels feed {in_channels(p.second)} inputs"
            )
            pairs.remove(p)
    if not pairs:
        return out, summary

    def ratio() -> float:
        vals = []
        for p in pairs:
            w1 = arrays[nodes[p.first].input[1]]
            r = np.abs(w1).reshape(w1.shape[0], -1).max(axis=1)
            vals.append(r.max() / max(r.min(), 1e-30))
        return float(np.mean(vals))

    summary.range_spread_before = ratio()
    for it in range(max_iterations):
        moved = 0.0
        for p in pairs:
            n1, n2 = nodes[p.first], nodes[p.second]
            w1, w2 = arrays[n1.input[1]], arrays[n2.input[1]]
            r1 = np.abs(w1).reshape(w1.shape[0], -1).max(axis=1)
            r2 = _input_ranges(w2, groups[p.second])
            with np.errstate(divide="ignore", invalid="ignore"):
                s = np.sqrt(r1 / r2)
            s = np.where(np.isfinite(s) & (s > 0), s, 1.0)
            s = np.clip(s, 1.0 / SCALE_LIMIT, SCALE_LIMIT)
            arrays[n1.input[1]] = w1 / s.reshape([-1] + [1] * (w1.ndim - 1))
            if len(n1.input) > 2 and n1.input[2]:
                arrays[n1.input[2]] = arrays[n1.input[2]] / s
            arrays[n2.input[1]] = _scale_inputs(w2, groups[p.second], s)
            moved = max(moved, float(np.abs(np.log(s)).max()))
        summary.iterations = it + 1
        if moved < TOLERANCE:
            break
    summary.range_spread_after = ratio()
    summary.pairs = [(p.first, p.second) for p in pairs]
    for name, a in arrays.items():
        init = inits[name]
        init.CopyFrom(numpy_helper.from_array(a.astype(np.float32), name))
    return out, summary
