"""One-sided activations centred before a symmetric int8 scale: the zero point TensorRT lacks,
folded into the next layer's bias.

The output of ReLU, ReLU6, HardSwish, GELU or SiLU hardly goes below zero, so TensorRT's signed
symmetric int8 (zero point 0) spends half of its 255 levels on values that never come: a uint8
quantizer with a zero point would use all of them (NNCF and ONNX Runtime do, TensorRT cannot).
For a tensor X read by linear layers that do not pad (Conv without padding, i.e. the 1x1
pointwise convs of MobileNet-style blocks; Gemm; MatMul with a constant weight), the same
resolution fits TensorRT: those layers read X' = X - c instead, c = (amax + min) / 2, and each
adds c times the sum of its weights over its inputs to its bias (Conv: per output channel; Gemm /
MatMul: per output column), so the FP32 function is unchanged. X' spans [min - c, amax - c] =
[-a, a], a = (amax - min) / 2: one signed scale a/127 per tensor, about half the step of amax/127
(+6 dB on a ReLU output), with the same upper clip the range method chose. The Sub by c is a
pointwise op TensorRT runs with the producer's activation.

Applied after calibration, on the calibrated ranges (no second pass): ``center(model, placement,
ranges)`` returns the rewritten model, placement (the centred tensor's readers moved to X') and
ranges (X' added, method ``<method>+centered``). A layer that pads (a 3x3 Conv: its zeros would
become -c) keeps reading X with the old scale; a Conv behind an explicit zero Pad (TF-style "same"
exports) reads the Pad's output, so the Sub lands after the Pad and the padded zeros are shifted
with everything else: exact, though TensorRT can then no longer fold that Pad into the conv.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from int8kit._deps import require
from int8kit.onnx.model_io import FreshNames, GraphIndex, insert_before_readers

# A tensor is one-sided when its calibrated minimum is at least -MAX_NEGATIVE x its amax (GELU's
# -0.17, HardSwish's -0.375 and SiLU's -0.28 are a small fraction of the positive range).
MAX_NEGATIVE = 0.25
# ... and it is centred only when the step shrinks at least this much (a / amax).
MAX_RATIO = 0.75


@dataclass
class CenterSummary:
    # tensor -> {"shift", "amax_before", "amax", "layers"}
    centered: dict[str, dict] = field(default_factory=dict)
    # tensor -> why its readers, or some of them, keep the old scale
    kept: dict[str, str] = field(default_factory=dict)


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _weight_sum(node, inits, to_array) -> np.ndarray | None:
    """Per output of ``node``: the sum of its weights over the inputs it reads from X (what a
    shift of X by 1 adds to that output); None when ``node`` pads, or its weight is not a
    constant."""
    if len(node.input) < 2 or node.input[1] not in inits or inits[node.input[1]].data_type != 1:
        return None  # a weight computed at run time, or not FP32 (the Sub and bias are FP32)
    if node.op_type in ("Conv", "Gemm") and len(node.input) > 2 and node.input[2]:
        if node.input[2] not in inits:
            return None  # a bias computed at run time: nothing to fold the shift into
    w = to_array(inits[node.input[1]]).astype(np.float64)
    a = _attrs(node)
    if node.op_type == "Conv":
        pads = a.get("pads", [])
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if any(pads) or auto not in ("NOTSET", "VALID") or w.ndim < 3:
            return None
        return w.reshape(w.shape[0], -1).sum(axis=1)
    if node.op_type == "Gemm":
        if a.get("transA", 0) or w.ndim != 2 or float(a.get("beta", 1.0)) == 0.0:
            return None
        return float(a.get("alpha", 1.0)) * (w.sum(axis=1) if a.get("transB", 0) else w.sum(axis=0))
    if node.op_type == "MatMul":
        return w.sum(axis=0) if w.ndim == 2 else None
    return None


class _Rewrite(GraphIndex):
    """Graph edits of centring (only ``inits`` of the index is kept up to date)."""

    def __init__(self, model):
        super().__init__(model)
        self.fresh = FreshNames(self.graph)

    def const(self, base: str, value: np.ndarray) -> str:
        name = self.fresh(base)
        init = self.from_array(np.ascontiguousarray(value.astype(np.float32)), name)
        self.graph.initializer.append(init)
        self.inits[name] = init
        return name

    def node(self, name: str):
        """The live node called ``name`` (the node list is rebuilt on every insertion, which
        copies the messages: references taken before it are stale)."""
        return next(n for n in self.graph.node if n.name == name)

    def add_bias(self, node_name: str, delta: np.ndarray) -> None:
        """Make node ``node_name`` add ``delta`` (per output channel / column) to its output."""
        from onnx import helper

        node = self.node(node_name)
        if node.op_type in ("Conv", "Gemm"):  # input 2: Conv's bias, Gemm's C (times beta)
            has_bias = len(node.input) > 2 and node.input[2]
            b = self.to_array(self.inits[node.input[2]]) if has_bias else 0.0
            if node.op_type == "Gemm":
                delta = delta / float(_attrs(node).get("beta", 1.0))
            name = self.const(f"{node.name}_centered_bias", b + delta)
            if len(node.input) > 2:
                node.input[2] = name
            else:
                node.input.append(name)
            return
        # MatMul: an Add after it, under the MatMul's output name
        out = node.output[0]
        inner = self.fresh(f"{out}_uncentered")
        node.output[0] = inner
        bias = self.const(f"{node.name}_centered_bias", delta)
        add = helper.make_node(
            "Add", [inner, bias], [out], name=self.fresh(f"{node.name}_center_bias")
        )
        nodes = list(self.graph.node)
        nodes.insert(nodes.index(node) + 1, add)
        del self.graph.node[:]
        self.graph.node.extend(nodes)

    def insert_sub(self, tensor: str, shift: float, reader_names: list[str]) -> str:
        from onnx import helper

        c = self.const(f"{tensor}_center", np.array(shift, np.float32))
        out = self.fresh(f"{tensor}_centered")
        sub = helper.make_node("Sub", [tensor, c], [out], name=self.fresh(f"{tensor}_Center"))
        insert_before_readers(self.graph, sub, tensor, reader_names, first_input_only=True)
        return out


def center(model, placement, ranges):
    """(model, placement, ranges, CenterSummary) with the one-sided activations read by linear,
    non-padding layers centred (module docstring). ``model`` and ``placement`` are copied;
    ``ranges`` gains the centred tensors."""
    onnx = require("onnx", "centring one-sided activations")
    from int8kit.ranges import TensorRange

    out = onnx.ModelProto()
    out.CopyFrom(model)
    placement = copy.deepcopy(placement)
    summary = CenterSummary()
    rw = _Rewrite(out)
    nodes = {n.name: n for n in out.graph.node}
    for tensor, edges in list(placement.activations.items()):
        r = ranges.tensors.get(tensor)
        if r is None or r.amax <= 0 or not np.isfinite(r.amax):
            continue
        lo = r.stats.get("min")
        if lo is None or not np.isfinite(lo) or lo < -MAX_NEGATIVE * r.amax:
            continue
        lo = max(float(lo), -float(r.amax))
        shift = (float(r.amax) + lo) / 2.0
        half = (float(r.amax) - lo) / 2.0
        if half > MAX_RATIO * r.amax:
            continue
        movable, deltas = [], []
        for node_name, idx in edges:
            node = nodes.get(node_name)
            ws = _weight_sum(node, rw.inits, rw.to_array) if node is not None and idx == 0 else None
            if ws is not None:
                movable.append((node_name, idx))
                deltas.append((node, shift * ws))
        if not movable:
            summary.kept[tensor] = "no reader is a linear layer without padding"
            continue
        if len(movable) < len(edges):
            summary.kept[tensor] = f"{len(edges) - len(movable)} readers pad or are not linear"
        for node, delta in deltas:
            rw.add_bias(node.name, delta)
        new = rw.insert_sub(tensor, shift, [node.name for node, _ in deltas])
        nodes = {n.name: n for n in out.graph.node}
        rest = [e for e in edges if e not in movable]
        if rest:
            placement.activations[tensor] = rest
        else:
            del placement.activations[tensor]
        placement.activations[new] = movable
        if tensor in placement.reasons:
            placement.reasons[new] = placement.reasons[tensor]
        stats = {"min": lo - shift, "max": float(r.amax) - shift, "shift": shift, "of": tensor}
        ranges.tensors[new] = TensorRange(amax=half, method=f"{r.method}+centered", stats=stats)
        summary.centered[tensor] = {
            "shift": shift,
            "amax_before": float(r.amax),
            "amax": half,
            "layers": [n for n, _ in movable],
        }
    return out, placement, ranges, summary
