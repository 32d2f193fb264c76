"""Lint a Q/DQ ONNX model for placements that stop TensorRT from fusing or that cost accuracy.

Each check reads the graph only (no data): which inputs of the arithmetic ops come from a
DequantizeLinear, what the scales and zero points hold, and what a tensor's range is known to be
from the op that made it (a Sigmoid is within 0..1). The checks, as one list, are ``CHECKS``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import numpy as np

from int8kit._deps import require
from int8kit.onnx import rules as R
from int8kit.onnx.model_io import GraphIndex
from int8kit.onnx.placement import mask_path, residual_identity_input

SEVERITIES = ("error", "warning", "info")

# What each finding code means; the lint's policy in one place.
CHECKS: dict[str, str] = {
    "half-quantized": "a Conv/ConvTranspose/Gemm/MatMul with some inputs quantized and others not: "
    "TensorRT runs it in float, and the Q/DQ that is there only adds error",
    "float-compute": "a Conv/ConvTranspose/Gemm/MatMul with no quantized input: runs in float "
    "(fine for a deliberate fallback layer)",
    "qdq-on-output": "a graph output produced by QuantizeLinear/DequantizeLinear: the output "
    "is rounded to int8 steps and TensorRT cannot fuse the pair away",
    "residual-one-side": "a residual Add quantized on one side only while the other side is not "
    "a conv output: TensorRT cannot fuse the Add into a convolution",
    "concat-scales": "a Concat whose quantized inputs have scales that differ by more than "
    "CONCAT_SCALE_RATIO: TensorRT must requantize before it can join them",
    "concat-range": "a Concat under one Q/DQ joining tensors of very different ranges (a "
    "detector's boxes 0..640 and scores 0..1): the small one loses all precision",
    "qdq-on-mask": "a Q/DQ on the additive attention mask (a -1e4 or -3.4e38 constant added to "
    "the scores): one scale over that range rounds every attention score to zero",
    "bad-scale": "a scale that is zero, negative or not finite",
    "bad-zero-point": "a non-zero or unsigned zero point: TensorRT supports symmetric int8 only",
}

CONCAT_SCALE_RATIO = 4.0
CONCAT_LEVELS_ERROR = 8  # an input that gets fewer int8 steps than this is ruined
CONCAT_LEVELS_WARNING = 32

# Ops whose output is bounded whatever their input: |y| <= bound.
_BOUNDED = {"Sigmoid": 1.0, "HardSigmoid": 1.0, "Tanh": 1.0, "Softmax": 1.0, "Softsign": 1.0}
# Ops whose output range is at most their first input's.
_PASS = (
    "Reshape",
    "Transpose",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Slice",
    "Split",
    "Identity",
    "Relu",
    "MaxPool",
    "Gather",
)
_SHAPE_ONLY = ("Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity")


@dataclass
class Finding:
    """One problem: how bad, which check, which nodes, what is wrong and what to do."""

    severity: str
    code: str
    nodes: list[str]
    message: str
    fix: str
    tensors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.severity.upper()} [{self.code}] {', '.join(self.nodes)}: {self.message}"


class _Graph:
    """GraphIndex plus the constant values Q/DQ parameters are read from."""

    def __init__(self, model):
        onnx = require("onnx", "linting ONNX models")
        self.index = GraphIndex(model.graph)
        self.values: dict[str, np.ndarray] = {
            i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer
        }
        for n in self.index.nodes:
            if n.op_type == "Constant":
                for a in n.attribute:
                    if a.name == "value":
                        self.values[n.output[0]] = onnx.numpy_helper.to_array(a.t)

    def producer(self, tensor: str):
        return self.index.producer.get(tensor)

    def dq_of(self, tensor: str):
        """The DequantizeLinear node that produced ``tensor``, if any."""
        node = self.producer(tensor)
        return node if node is not None and node.op_type == "DequantizeLinear" else None

    def scale(self, node) -> np.ndarray | None:
        """The scale of a Q/DQ node (None when it is not a constant)."""
        if len(node.input) < 2:
            return None
        v = self.values.get(node.input[1])
        return None if v is None else np.asarray(v, np.float64)

    def amax(self, node) -> float | None:
        s = self.scale(node)
        return None if s is None or s.size == 0 else float(np.max(np.abs(s))) * 127.0

    def bound(self, tensor: str, depth: int = 8) -> float | None:
        """An upper bound of |tensor| known from the graph alone, or None."""
        if depth == 0:
            return None
        if tensor in self.values:
            v = self.values[tensor]
            return float(np.max(np.abs(v))) if v.size and v.dtype.kind == "f" else None
        node = self.producer(tensor)
        if node is None:
            return None
        if node.op_type in _BOUNDED:
            return _BOUNDED[node.op_type]
        if node.op_type == "DequantizeLinear":
            return self.amax(node)
        if node.op_type == "QuantizeLinear":
            return None
        if node.op_type == "Clip" and len(node.input) >= 3:
            lo, hi = (self.values.get(n) for n in node.input[1:3])
            if lo is not None and hi is not None:
                return float(max(abs(float(lo)), abs(float(hi))))
        if node.op_type in _PASS and node.input:
            return self.bound(node.input[0], depth - 1)
        if node.op_type == "Concat":
            parts = [self.bound(i, depth - 1) for i in node.input]
            return None if any(p is None for p in parts) else max(parts)
        return None

    def quantizer_after(self, tensor: str, depth: int = 4):
        """A QuantizeLinear reading ``tensor``, directly or through shape-only ops."""
        for _ in range(depth):
            consumers = self.index.consumers.get(tensor, [])
            q = next((n for n, _ in consumers if n.op_type == "QuantizeLinear"), None)
            if q is not None:
                return q
            shaping = [n for n, _ in consumers if n.op_type in _SHAPE_ONLY]
            if len(shaping) != 1:
                return None
            tensor = shaping[0].output[0]
        return None


def _name(node) -> str:
    return node.name or f"<{node.op_type} -> {node.output[0]}>"


def _compute_ops(g: _Graph) -> list[Finding]:
    out = []
    for node in g.index.nodes:
        if node.op_type not in R.COMPUTE_OPS:
            continue
        rule = R.rule_for(node.op_type)
        idx = [i for i in (*rule.activations, rule.weight) if i is not None]
        idx = sorted({i for i in idx if i < len(node.input) and node.input[i]})
        quantized = {i: g.dq_of(node.input[i]) is not None for i in idx}
        if all(quantized.values()):
            continue
        floats = [node.input[i] for i in idx if not quantized[i]]
        if not any(quantized.values()):
            out.append(
                Finding(
                    "warning",
                    "float-compute",
                    [_name(node)],
                    f"{node.op_type} has no quantized input; it runs in float",
                    "if this layer is not a deliberate float fallback, quantize its input and "
                    "weight (int8kit quantize places both)",
                    floats,
                )
            )
            continue
        kinds = ["weight" if g.index.is_constant(t) else "activation" for t in floats]
        out.append(
            Finding(
                "error",
                "half-quantized",
                [_name(node)],
                f"{node.op_type} reads unquantized "
                + ", ".join(f"{k} '{t}'" for k, t in zip(kinds, floats, strict=True))
                + " next to quantized ones; TensorRT cannot run it in INT8",
                "give every activation input a Q/DQ and the weight a per-channel DQ, or remove "
                "the Q/DQ from all its inputs to keep the layer in float",
                floats,
            )
        )
    return out


def _outputs(g: _Graph) -> list[Finding]:
    out = []
    for name in g.index.outputs:
        node = g.producer(name)
        if node is not None and node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            out.append(
                Finding(
                    "error",
                    "qdq-on-output",
                    [_name(node)],
                    f"graph output '{name}' is produced by {node.op_type}",
                    "remove the Q/DQ pair on the output; outputs stay in float",
                    [name],
                )
            )
    return out


def _residuals(g: _Graph) -> list[Finding]:
    out = []
    for node in g.index.nodes:
        if node.op_type != "Add" or len(node.input) != 2:
            continue
        if any(g.index.is_constant(t) for t in node.input):
            continue
        dq = [g.dq_of(t) is not None for t in node.input]
        if sum(dq) != 1 or residual_identity_input(g.index, node) is not None:
            continue
        other = node.input[dq.index(False)]
        out.append(
            Finding(
                "warning",
                "residual-one-side",
                [_name(node)],
                f"Add is quantized on one side only and its other input '{other}' is not a "
                "conv output, so TensorRT cannot fuse it into a convolution",
                "quantize both inputs of this Add, or neither",
                [other],
            )
        )
    return out


def _concats(g: _Graph) -> list[Finding]:
    out = []
    for node in g.index.nodes:
        if node.op_type != "Concat":
            continue
        dqs = [(t, g.dq_of(t)) for t in node.input]
        amaxes = {t: g.amax(d) for t, d in dqs if d is not None}
        amaxes = {t: a for t, a in amaxes.items() if a}
        if len(amaxes) >= 2:
            lo, hi = min(amaxes.values()), max(amaxes.values())
            if hi / lo > CONCAT_SCALE_RATIO:
                out.append(
                    Finding(
                        "warning",
                        "concat-scales",
                        [_name(node)],
                        f"Concat inputs are quantized with scales {hi / lo:.0f}x apart "
                        f"({lo / 127:.3g} .. {hi / 127:.3g})",
                        "give the Concat inputs one shared scale, or leave them in float and "
                        "quantize after the Concat only if their ranges match",
                        list(amaxes),
                    )
                )
        q = g.quantizer_after(node.output[0])
        if q is None:
            continue
        amax = g.amax(q)
        if not amax:
            continue
        worst = None
        for t in node.input:
            b = g.bound(t)
            if b is None:
                continue
            levels = 127.0 * b / amax
            if worst is None or levels < worst[1]:
                worst = (t, levels, b)
        if worst is None or worst[1] >= CONCAT_LEVELS_WARNING:
            continue
        t, levels, b = worst
        severity = "error" if levels < CONCAT_LEVELS_ERROR else "warning"
        out.append(
            Finding(
                severity,
                "concat-range",
                [_name(node), _name(q)],
                f"one int8 scale (range ±{amax:.4g}) covers the Concat, but input '{t}' spans "
                f"only ±{b:.4g}: it gets {levels:.1f} of 127 steps"
                + (" and is mostly rounded to zero" if levels < 1 else ""),
                "do not quantize this Concat's output (leave the detector head in float), or "
                "quantize its inputs separately before the Concat",
                [t],
            )
        )
    return out


def _masks(g: _Graph) -> list[Finding]:
    out = []
    for node in g.index.nodes:
        if node.op_type == "QuantizeLinear":
            tensor = node.input[0]
        elif node.op_type == "DequantizeLinear" and g.index.is_constant(node.input[0]):
            tensor = node.output[0]  # a mask constant stored as int8 (not a layer's weight)
            if any(n.op_type in R.COMPUTE_OPS for n, _ in g.index.consumers.get(tensor, [])):
                continue
        else:
            continue
        if not mask_path(g.index, tensor):
            continue
        amax = g.amax(node)
        out.append(
            Finding(
                "error",
                "qdq-on-mask",
                [_name(node)],
                f"{node.op_type} on the attention mask '{tensor}'"
                + (f" (range ±{amax:.3g})" if amax else "")
                + ": its scale covers the huge mask constant, so the scores it is added to "
                "round to zero",
                "leave the attention mask float (int8kit quantize never puts a Q/DQ there); "
                "with another tool, exclude the mask's Add/Mul nodes from quantization",
                [tensor],
            )
        )
    return out


def _parameters(g: _Graph) -> list[Finding]:
    out = []
    for node in g.index.nodes:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        s = g.scale(node)
        if s is not None and (s.size == 0 or not np.all(np.isfinite(s)) or np.any(s <= 0)):
            out.append(
                Finding(
                    "error",
                    "bad-scale",
                    [_name(node)],
                    f"scale '{node.input[1]}' has a zero, negative or non-finite value "
                    f"(min {np.min(s) if s.size else 'empty'})",
                    "recalibrate; an all-zero or non-finite range must get a positive scale",
                    [node.input[1]],
                )
            )
        zp_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
        zp = g.values.get(zp_name) if zp_name else None
        if zp is None:
            continue
        if zp.dtype != np.int8 or np.any(zp != 0):
            out.append(
                Finding(
                    "error",
                    "bad-zero-point",
                    [_name(node)],
                    f"zero point '{zp_name}' is {zp.dtype.name} with values "
                    f"{np.unique(zp)[:4].tolist()}; TensorRT needs int8 zero points of 0",
                    "quantize symmetrically: int8 zero point 0, scale = amax / 127",
                    [zp_name],
                )
            )
    return out


_ORDER = {s: k for k, s in enumerate(SEVERITIES)}


def lint(model) -> list[Finding]:
    """Every finding for ``model`` (a ModelProto or a path), errors first, in graph order."""
    if isinstance(model, (str, os.PathLike)):
        from int8kit.onnx.model_io import load_model

        model = load_model(model)
    g = _Graph(model)
    findings = _compute_ops(g) + _outputs(g) + _residuals(g) + _concats(g) + _masks(g)
    findings += _parameters(g)
    return sorted(findings, key=lambda f: _ORDER[f.severity])


def has_errors(findings: list[Finding]) -> bool:
    return any(f.severity == "error" for f in findings)
