"""Where the INT8 model will run: a target is a quantization scheme plus placement rules plus
the backend that measures fidelity (DESIGN.md, "Two targets").

``tensorrt``: int8 activations, symmetric, zero point 0; weights int8 per channel; placement of
rules.RULES (what TensorRT fuses); fidelity "trt-like" (the Q/DQ graph unfused).

``ort-cpu``: uint8 activations with zero points from the min/max of each range; weights int8 per
channel, symmetric, 7-bit ([-64, 64]) where the CPU has no VNNI ("reduce range": on AVX2 ONNX
Runtime multiplies u8 x s8 pairs with VPMADDUBSW, whose 16-bit sums of two products saturate at
255*127*2 > 32767; 255*64*2 does not); biases int32 (scale s_x*s_w) so that ONNX Runtime's Q/DQ
fusions fire; placement of ORT_RULES below; fidelity "ort-int8" (ONNX Runtime's integer kernels).

ORT_RULES follow ONNX Runtime's own Q/DQ selectors (onnxruntime/core/optimizer/qdq_transformer/
selectors_actions/qdq_selector_action_transformer.cc and qdq_selectors.cc): a node becomes an
integer kernel only when EVERY input is a DequantizeLinear (a Conv's bias an int32 one), its only
consumer is a QuantizeLinear of the same type as its inputs (u8 in, u8 out), and its output is no
graph output; a Relu/Clip between the node and that Q is dropped when the Q's range lies inside
it. Ops that only move data (Reshape, Transpose, MaxPool, Resize, ...) lose their DQ/Q when both
have the same scale and zero point, so their outputs share their input's parameters here.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from int8kit.onnx import rules as R

log = logging.getLogger(__name__)

# ONNX Runtime CPU: ops with an integer kernel behind a DQ -> op -> Q group.
ORT_COMPUTE = ("Conv", "MatMul", "Gemm")  # QLinearConv, QLinearMatMul/MatMulIntegerToFloat, QGemm
# QLinearAdd/Mul (BinaryOpQDQRules), QLinearConcat (VariadicOpQDQRules), QLinearAveragePool,
# QLinearGlobalAveragePool, QLinearSigmoid, QLinearLeakyRelu (UnaryOpQDQRules). Softmax has a
# QLinear version too but stays float: its output range is data dependent (attention, DFL heads).
ORT_CHAIN = ("Add", "Mul", "Concat", "AveragePool", "GlobalAveragePool", "Sigmoid", "LeakyRelu")
# DropQDQNodesRules (+ SplitQDQRules): the op runs on the u8 values when the DQ before and the Q
# after it have equal parameters.
ORT_PASS = (
    "MaxPool",
    "Resize",
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Flatten",
    "Slice",
    "Expand",
    "Tile",
    "Split",
    "Identity",  # removed by ORT itself; the Q/DQ pairs around it then collapse
)
# Relu/Clip right after a fused node: dropped when the Q's range is inside it (u8 zero point 0).
ORT_FUSED_EPILOGUE = ("Relu", "Clip")
# Activations with no integer kernel in ONNX Runtime that its float Conv fuses (FusedConv,
# NCHWc): a Conv whose only reader is one stays float; as an int8 Conv it would pay a DQ, the
# float activation and a Q around it (PPLCNet's HardSwish: 0.80x FP32 speed that way). An
# integer HardSwish as QLinearAdd (clip by the Q) + QLinearMul was tried: two passes cost what
# the int8 Convs save on this CPU (PPLCNet 1.02x FP32, top-1 agreement 0.74 vs 0.98).
ORT_FLOAT_EPILOGUE = ("HardSwish", "HardSigmoid", "Tanh", "Elu", "Selu", "Softplus", "Gelu")
TARGETS = ("tensorrt", "ort-cpu")


@dataclass(frozen=True)
class ActQuant:
    """An asymmetric activation quantizer: uint8 q = clip(rint(x / scale) + zero_point, 0, 255).
    (lo, hi) is the float range it was made from; ``qmin``/``qmax`` are the integer bounds of
    rint(x / scale) it allows (what bias correction clamps to)."""

    scale: float
    zero_point: int
    lo: float
    hi: float

    @property
    def qmin(self) -> int:
        return -self.zero_point

    @property
    def qmax(self) -> int:
        return 255 - self.zero_point

    def to_dict(self) -> dict:
        return {
            "dtype": "uint8",
            "scale": self.scale,
            "zero_point": self.zero_point,
            "min": self.lo,
            "max": self.hi,
        }


def u8_quant(lo: float, hi: float) -> ActQuant:
    """uint8 parameters of the range [lo, hi] (widened to hold 0, as ONNX requires: zero must be
    exact); an empty or non-finite range gets scale 1, zero point 0."""
    lo = min(float(lo), 0.0) if math.isfinite(lo) else 0.0
    hi = max(float(hi), 0.0) if math.isfinite(hi) else 0.0
    if hi - lo <= 0:
        return ActQuant(1.0, 0, 0.0, 0.0)
    scale = float(np.float32((hi - lo) / 255.0))
    zp = int(np.clip(round(-lo / scale), 0, 255))
    return ActQuant(scale, zp, lo, hi)


def u8_range(amax: float, stats: dict) -> tuple[float, float]:
    """The u8 range of a tensor: its observed [min, max], each side clipped at the method's
    threshold ``amax`` (computed on |x|: minmax leaves [min, max] as it is; entropy, percentile,
    mse and the robust methods clip both tails at +-amax, each only where it reaches that far)."""
    lo, hi = stats.get("min"), stats.get("max")
    if lo is None or hi is None:  # an old ranges file without statistics: symmetric
        return -amax, amax
    return max(float(lo), -amax), min(float(hi), amax)


def cpu_has_vnni(features: dict | None = None) -> bool:
    """True on CPUs with an int8 dot product (AVX-512 VNNI, AVX-VNNI, AMX) (analysis/bench.py)."""
    if features is None:
        from int8kit.analysis.bench import cpu_features

        features = cpu_features()
    flags = features.get("flags", {})
    return bool(flags.get("avx512_vnni") or flags.get("avx_vnni") or flags.get("amx_int8"))


@dataclass(frozen=True)
class Target:
    """A deployment target: scheme, placement rules and the fidelity backends (first: primary)."""

    name: str
    activations: str  # "int8-symmetric" | "uint8-asymmetric"
    weight_qmax: int  # 127, or 64 with reduce range
    placement: str  # "tensorrt" (rules.RULES) | "ort" (ORT_* above)
    backends: tuple[str, ...]
    int32_bias: bool = False
    reduce_range: bool = False

    def describe(self) -> str:
        if self.name == "tensorrt":
            return "tensorrt: int8 activations (symmetric), int8 per-channel weights"
        rr = " (reduce range: 7-bit weights, CPU without VNNI)" if self.reduce_range else ""
        return (
            f"ort-cpu: uint8 activations with zero points, int8 per-channel weights{rr}, "
            "int32 biases"
        )

    def prepare(self, model):
        """The FP32 model rewritten for this target, same function (ort: BatchNormalizations,
        zero Pads and bias Adds folded into the Conv before / after them). Returns (model,
        {what: count})."""
        if self.placement != "ort":
            return model, {}
        from int8kit.onnx.targets_ort_prepare import prepare_ort

        return prepare_ort(model)

    def plan(self, model, config):
        """The placement of ``model`` for this target (placement.PlacementConfig ``config``)."""
        if self.placement == "ort":
            from int8kit.onnx.targets_ort import plan_ort

            placement = plan_ort(model, config)
        else:
            from int8kit.onnx.placement import plan

            placement = plan(model, config)
        for wq in placement.weights.values():
            wq.qmax = self.weight_qmax
        return placement

    def quantizers(self, ranges, placement) -> dict:
        """{tensor: what insert_qdq and bias correction quantize it with}: amax (a float) for a
        symmetric int8 target, an ActQuant for uint8; tensors tied to another share its."""
        amax = ranges.amax()
        if self.activations == "int8-symmetric":
            return amax
        out = {}
        for name, r in ranges.tensors.items():
            out[name] = u8_quant(*u8_range(r.amax, r.stats))
        for name, root in getattr(placement, "tied", {}).items():
            if root in out:
                out[name] = out[root]
        return out

    def finish(self, model):
        """Last rewrites of the written Q/DQ model (int32 biases for ONNX Runtime's fusions)."""
        if not self.int32_bias:
            return model
        from int8kit.onnx.targets_ort import quantize_biases

        return quantize_biases(model)


def get_target(name: str, reduce_range: bool | None = None) -> Target:
    """The target called ``name``; ``reduce_range`` None: on where the CPU lacks VNNI."""
    if name == "tensorrt":
        if reduce_range:
            raise ValueError("--reduce-range is for --target ort-cpu (TensorRT has no such mode)")
        return Target("tensorrt", "int8-symmetric", 127, "tensorrt", ("trt-like", "ort-int8"))
    if name == "ort-cpu":
        rr = (not cpu_has_vnni()) if reduce_range is None else bool(reduce_range)
        return Target(
            "ort-cpu",
            "uint8-asymmetric",
            64 if rr else 127,
            "ort",
            ("ort-int8",),
            int32_bias=True,
            reduce_range=rr,
        )
    raise ValueError(f"unknown target {name!r}; known targets: {', '.join(TARGETS)}")


def describe_rules() -> str:
    """The ort-cpu placement rules as text (for --explain-rules --target ort-cpu)."""
    return "\n".join(
        [
            "ort-cpu placement rules (ONNX Runtime's Q/DQ fusions):",
            f"  integer compute: {', '.join(ORT_COMPUTE)} (u8 input, int8 per-channel weight, "
            "int32 bias, u8 output)",
            f"  kept in int8 between them: {', '.join(ORT_CHAIN)} (when every input is int8)",
            f"  int8 pass-through (same scale as their input): {', '.join(ORT_PASS)}",
            f"  fused into the layer before: {', '.join(ORT_FUSED_EPILOGUE)} (the Q goes after)",
            "  never: graph outputs, the attention mask, " + ", ".join(R.TRANSFORMER_FLOAT[:3]),
        ]
    )
