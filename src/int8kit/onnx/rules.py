"""Where Q/DQ goes: the placement policy as data, read as one list.

The code that applies it lives in ``placement.py``; the code that inserts nodes in ``qdq.py``.
The aim is explicit quantization that TensorRT fuses: quantize the inputs of the ops that do the
arithmetic, and of the ops that gain from running in INT8 next to them; leave alone what TensorRT
keeps in float anyway or what only moves or shapes data.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    """Quantize some inputs of every node of ``op_type``."""

    op_type: str
    activations: tuple[int, ...]  # input indices that get a per-tensor activation Q/DQ
    weight: int | None = None  # input index of a constant weight that gets per-channel Q/DQ
    why: str = ""


# The default policy (DESIGN.md, "Where Q/DQ goes").
RULES: tuple[Rule, ...] = (
    Rule(
        "Conv",
        (0,),
        weight=1,
        why="INT8 convolution: input per tensor, weight per output channel (axis 0)",
    ),
    Rule(
        "ConvTranspose",
        (0,),
        weight=1,
        why="INT8 deconvolution: weight per output channel (axis 1)",
    ),
    Rule("Gemm", (0,), weight=1, why="INT8 fully connected: weight per output feature"),
    Rule(
        "MatMul",
        (0, 1),
        weight=1,
        why="INT8 matrix product: both activations, or activation + per-column weight",
    ),
    Rule("MaxPool", (0,), why="pooling runs in INT8 next to INT8 convolutions"),
    Rule("AveragePool", (0,), why="pooling runs in INT8 next to INT8 convolutions"),
    Rule("GlobalAveragePool", (0,), why="pooling runs in INT8 next to INT8 convolutions"),
    Rule(
        "Add", (), why="residual Add: only the identity branch, so TensorRT fuses Conv+Add in INT8"
    ),
)

# Ops a user may add with --op-types: every floating-point activation input is quantized.
OPTIONAL_OP_TYPES: tuple[str, ...] = (
    "Concat",
    "Resize",
    "Mul",
    "Sigmoid",
    "Relu",
    "Sub",
    "Div",
    "Softmax",
    "Upsample",
    "Pad",
    "ReduceMean",
    "Transpose",
    "Reshape",
    "Split",
    "Slice",
    "Clip",
    "LeakyRelu",
    "HardSwish",
)

# Never quantized, even when asked: they move or shape data, or TensorRT keeps them in float.
NEVER: tuple[str, ...] = (
    "Shape",
    "Gather",
    "Cast",
    "Range",
    "ConstantOfShape",
    "Constant",
    "QuantizeLinear",
    "DequantizeLinear",
    "NonMaxSuppression",
    "TopK",
    "LayerNormalization",
)

# Ops that may sit between a Conv and the Add it feeds while TensorRT still fuses them
# (batch norm, pointwise activations); used to tell a residual Add's main branch from its identity.
CONV_EPILOGUE: tuple[str, ...] = (
    "BatchNormalization",
    "Relu",
    "Clip",
    "LeakyRelu",
    "HardSwish",
    "HardSigmoid",
    "Elu",
    "Selu",
    "PRelu",
    "Sigmoid",
    "Tanh",
)
COMPUTE_OPS: tuple[str, ...] = ("Conv", "ConvTranspose", "Gemm", "MatMul")

# Transformers (DESIGN.md, "Where Q/DQ goes"). The MatMuls of attention (Q·K^T, softmax·V: both
# activations) and the projections (MatMul/Gemm: activation + per-channel weight) are quantized
# by the rules above; these stay float by default (none is in RULES): Softmax, LayerNormalization
# and its decomposition, GELU/Erf, embedding Gathers.
TRANSFORMER_FLOAT: tuple[str, ...] = ("Softmax", "LayerNormalization", "Erf", "Gelu", "Gather")
# A decomposed LayerNorm: ReduceMean -> Sub -> Pow -> ReduceMean -> Add(eps) -> Sqrt -> Div ->
# Mul(gamma) -> Add(beta). An Add whose output feeds a ReduceMean and a Sub (x - mean(x)) is the
# residual Add in front of a LayerNorm, never a conv residual.
LAYERNORM_OPS: tuple[str, ...] = ("ReduceMean", "Sub", "Pow", "Sqrt", "Div", "Mul", "Add")

# The additive attention mask: a huge negative constant (-3.4e38, -1e4, (1 - mask) * -10000)
# added to the attention scores. One scale over that range turns every score into zero, so the
# mask path never gets a Q/DQ, and lint reports one there as an error. A tensor is on the mask
# path when it is computed from graph inputs and constants through MASK_OPS only (each op: the
# input indices that carry values; None: all), with some float constant of |value| >= this.
MASK_MIN_MAGNITUDE = 1e4
MASK_OPS: dict[str, tuple[int, ...] | None] = {
    "Cast": (0,),
    "Sub": None,
    "Mul": None,
    "Add": None,
    "Div": None,
    "Neg": (0,),
    "Min": None,
    "Max": None,
    "Where": None,
    "Not": None,
    "And": None,
    "Or": None,
    "Equal": None,
    "Less": None,
    "Greater": None,
    "Unsqueeze": (0,),
    "Squeeze": (0,),
    "Reshape": (0,),
    "Expand": (0,),
    "Slice": (0,),
    "Transpose": (0,),
    "Tile": (0,),
    "Identity": (0,),
    "ConstantOfShape": (),  # its value attribute is the constant
    "QuantizeLinear": (0,),  # a Q/DQ another tool put on the path (lint)
    "DequantizeLinear": (0, 1),
}

DEFAULT_OP_TYPES: tuple[str, ...] = tuple(r.op_type for r in RULES)


def weight_axis(op_type: str, weight_rank: int, attrs: dict) -> int:
    """The output-channel axis of a weight: per-channel scales run along it."""
    if op_type == "ConvTranspose":
        return 1
    if op_type == "Gemm":
        return 0 if attrs.get("transB", 0) else 1
    if op_type == "MatMul":
        return weight_rank - 1
    return 0


def rule_for(op_type: str) -> Rule | None:
    for rule in RULES:
        if rule.op_type == op_type:
            return rule
    if op_type in OPTIONAL_OP_TYPES:
        return Rule(op_type, (), why="asked for with --op-types: every float activation input")
    return None


def describe() -> str:
    """The policy as text, for `int8kit quantize --explain-rules` and the docs."""
    lines = ["Q/DQ placement rules:"]
    for r in RULES:
        lines.append(f"  {r.op_type:<18} {r.why}")
    lines.append("  never: graph outputs; biases stay float; " + ", ".join(NEVER))
    lines.append(
        "  transformers: float " + ", ".join(TRANSFORMER_FLOAT) + ", decomposed LayerNorm; "
        f"never the attention mask (a constant of |value| >= {MASK_MIN_MAGNITUDE:g} added to "
        "the scores)"
    )
    lines.append("  on request (--op-types): " + ", ".join(OPTIONAL_OP_TYPES))
    lines.append(
        "  `quantize` keeps the layers that read the network input float "
        "(--quantize-input-layers quantizes them too)"
    )
    return "\n".join(lines)
