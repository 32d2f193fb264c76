"""Apply the placement rules (rules.py) to a graph: which tensors get a Q/DQ, on which edges."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from int8kit.errors import ModelError
from int8kit.onnx import rules as R
from int8kit.onnx.model_io import GraphIndex


@dataclass
class PlacementConfig:
    """Which ops are quantized. ``op_types`` None means the default rules (rules.RULES)."""

    op_types: list[str] | None = None
    exclude: list[str] = field(default_factory=list)  # regexes matched against node names
    # False: the layers that read the network input (the stem conv) stay float. The input is a
    # fine grid of pixel levels that an int8 step cuts across, and the layer is a tiny share of
    # the compute (benchmarks/results/bias_correction.json). The rules quantize them; the
    # quantize workflow's default (workflow.QuantizeConfig) keeps them float.
    quantize_input_layers: bool = True

    def __post_init__(self):
        for pattern in self.exclude:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"--exclude {pattern!r} is not a valid regular expression: {exc}"
                ) from exc
        if self.op_types is not None:
            unknown = [t for t in self.op_types if R.rule_for(t) is None or t in R.NEVER]
            if unknown:
                raise ValueError(
                    f"cannot quantize op types {unknown}; choose from "
                    f"{', '.join(R.DEFAULT_OP_TYPES + R.OPTIONAL_OP_TYPES)}"
                )

    def to_dict(self) -> dict:
        return {
            "op_types": self.op_types,
            "exclude": list(self.exclude),
            "quantize_input_layers": self.quantize_input_layers,
        }

    @classmethod
    def from_dict(cls, d: dict) -> PlacementConfig:
        return cls(
            op_types=d.get("op_types"),
            exclude=list(d.get("exclude", [])),
            quantize_input_layers=d.get("quantize_input_layers", True),
        )


@dataclass
class WeightQ:
    initializer: str
    axis: int
    qmax: int = 127  # symmetric int8 [-qmax, qmax]; 64: 7-bit ("reduce range", onnx/targets.py)


@dataclass
class Placement:
    """Activation tensors to quantize, each with the (node, input index) edges that read the
    dequantized value, and constant weights to quantize per channel."""

    activations: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    weights: dict[tuple[str, int], WeightQ] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)  # tensor -> why (first rule that hit)
    kept_float: dict[str, str] = field(default_factory=dict)  # node -> why it is not quantized
    # tensor -> tensor whose quantization parameters it shares (the output of an op that only
    # moves values, so ONNX Runtime drops its DQ/Q: onnx/targets_ort.py)
    tied: dict[str, str] = field(default_factory=dict)


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _conv_chain(index: GraphIndex, tensor: str, depth: int = 4) -> bool:
    """True when ``tensor`` is a Conv/Gemm/MatMul output, possibly through BN and activations
    (SiLU as x*sigmoid(x) included): the main branch of a residual Add."""
    for _ in range(depth):
        node = index.producer.get(tensor)
        if node is None:
            return False
        if node.op_type in R.COMPUTE_OPS:
            return True
        if node.op_type == "Mul" and len(node.input) == 2:
            a, b = node.input
            pa, pb = index.producer.get(a), index.producer.get(b)
            if pb is not None and pb.op_type == "Sigmoid" and pb.input[0] == a:
                tensor = a
                continue
            if pa is not None and pa.op_type == "Sigmoid" and pa.input[0] == b:
                tensor = b
                continue
            return False
        if node.op_type in R.CONV_EPILOGUE:
            tensor = node.input[0]
            continue
        return False
    return False


def _huge(v) -> bool:
    """A float constant with some |value| >= rules.MASK_MIN_MAGNITUDE (-inf and -3.4e38 too)."""
    if v is None or not hasattr(v, "dtype") or v.dtype.kind != "f" or v.size == 0:
        return False
    with np.errstate(invalid="ignore"):
        return bool(np.nanmax(np.abs(v.astype(np.float64))) >= R.MASK_MIN_MAGNITUDE)


def mask_path(index: GraphIndex, tensor: str, limit: int = 64) -> bool:
    """True when ``tensor`` is an additive attention mask: computed from graph inputs and
    constants through rules.MASK_OPS only (Cast, Sub, Mul, Unsqueeze, Where, ...), with some
    float constant of huge magnitude among them (-3.4e38, -1e4, ``(1 - mask) * -10000``)."""
    todo, seen, huge = [tensor], set(), False
    while todo:
        t = todo.pop()
        if t in seen:
            continue
        seen.add(t)
        if len(seen) > limit:
            return False
        if index.is_constant(t):
            huge = huge or _huge(index.value(t))
            continue
        if t in index.inputs:
            continue
        node = index.producer.get(t)
        if node is None or node.op_type not in R.MASK_OPS:
            return False
        if node.op_type == "ConstantOfShape":
            huge = huge or any(_huge(_constant_of_shape(a)) for a in node.attribute)
        if node.op_type == "DequantizeLinear" and all(index.is_constant(i) for i in node.input):
            q, s = index.value(node.input[0]), index.value(node.input[1])
            huge = huge or _huge(np.asarray(q, np.float64) * np.max(np.abs(s)))
        keep = R.MASK_OPS[node.op_type]
        todo += [i for k, i in enumerate(node.input) if i and (keep is None or k in keep)]
    return huge


def _constant_of_shape(attr):
    from onnx import numpy_helper

    return numpy_helper.to_array(attr.t) if attr.name == "value" else None


def not_a_residual(index: GraphIndex, node) -> str | None:
    """Why an Add of two activations in a transformer is no conv residual (its inputs get no
    Q/DQ), or None: it adds the attention mask, it adds to the scores of a Softmax, or it is the
    residual Add in front of a LayerNorm (also a decomposed one: x - ReduceMean(x))."""
    if any(mask_path(index, t) for t in node.input):
        return "adds the attention mask"
    consumers = {n.op_type for n, _ in index.consumers.get(node.output[0], [])}
    if "Softmax" in consumers:
        return "adds to the attention scores"
    if "LayerNormalization" in consumers or {"ReduceMean", "Sub"} <= consumers:
        return "residual Add in front of a LayerNorm"
    return None


def residual_identity_input(index: GraphIndex, node) -> int | None:
    """For an Add of two activations where one is a conv chain's output, the other input's index.
    When both are conv chains, input 1 is taken as the identity (``out + identity``)."""
    if node.op_type != "Add" or len(node.input) != 2:
        return None
    a, b = node.input
    if index.is_constant(a) or index.is_constant(b) or not_a_residual(index, node):
        return None
    ca, cb = _conv_chain(index, a), _conv_chain(index, b)
    if ca and cb:
        return 1
    if ca:
        return 1
    if cb:
        return 0
    return None


_FLOAT_TYPES = (1, 10, 11, 16)  # TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16


def input_layers(index: GraphIndex) -> list[str]:
    """Names of the Conv/Gemm/MatMul nodes that read the network input, directly or through
    ops without weights (a Transpose, a Div by 255, a Pad): the first layers of every path.
    Only float inputs count (token ids and attention masks are no grid of signal levels), and the
    walk stops at Shape and at rules.TRANSFORMER_FLOAT ops (an embedding Gather, a LayerNorm, a
    Softmax)."""
    graph_inputs = [
        i.name
        for i in index.graph.input
        if i.name not in index.initializers and i.type.tensor_type.elem_type in _FLOAT_TYPES
    ]
    found: list[str] = []
    seen = set(graph_inputs)
    todo = list(graph_inputs)
    while todo:
        tensor = todo.pop()
        for node, _ in index.consumers.get(tensor, []):
            if node.op_type in R.COMPUTE_OPS:
                if node.name not in found:
                    found.append(node.name)
                continue
            if node.op_type in R.TRANSFORMER_FLOAT or node.op_type in ("Shape", "Size"):
                continue  # a shape carries no input levels: a Reshape it sizes is no input layer
            for o in node.output:
                if o and o not in seen:
                    seen.add(o)
                    todo.append(o)
    return found


def plan(model, config: PlacementConfig | None = None) -> Placement:
    """Decide every Q/DQ of ``model`` by the rules; nothing is changed yet."""
    config = config or PlacementConfig()
    index = GraphIndex(model.graph)
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in index.nodes):
        raise ModelError(
            "the model already has QuantizeLinear/DequantizeLinear nodes; pass the FP32 model"
        )
    op_types = set(config.op_types if config.op_types is not None else R.DEFAULT_OP_TYPES)
    excluded = [re.compile(p) for p in config.exclude]
    placement = Placement()
    if not config.quantize_input_layers:
        for name in input_layers(index):
            placement.kept_float[name] = "reads the network input (quantize_input_layers=False)"

    def add_activation(tensor: str, node, i: int, why: str) -> None:
        if index.is_constant(tensor) or not tensor or mask_path(index, tensor):
            return  # the attention mask never gets a scale, whatever --op-types asks
        placement.activations.setdefault(tensor, []).append((node.name, i))
        placement.reasons.setdefault(tensor, why)

    for node in index.nodes:
        if node.op_type not in op_types or any(p.search(node.name) for p in excluded):
            continue
        if node.name in placement.kept_float:
            continue
        rule = R.rule_for(node.op_type)
        if rule is None:
            continue
        if node.op_type == "Add" and rule in R.RULES:
            k = residual_identity_input(index, node)
            if k is not None:
                add_activation(node.input[k], node, k, "identity branch of a residual Add")
            continue
        indices = rule.activations if rule in R.RULES else range(len(node.input))
        for i in indices:
            if i >= len(node.input):
                continue
            name = node.input[i]
            if i == rule.weight and name in index.initializers:
                dims = index.initializers[name].dims
                axis = R.weight_axis(node.op_type, len(dims), _attrs(node))
                placement.weights[(node.name, i)] = WeightQ(name, axis)
            else:
                add_activation(name, node, i, f"input {i} of {node.op_type}")
        if rule.weight is not None and rule.weight not in rule.activations:
            i = rule.weight
            if i < len(node.input) and node.input[i] in index.initializers:
                dims = index.initializers[node.input[i]].dims
                placement.weights[(node.name, i)] = WeightQ(
                    node.input[i], R.weight_axis(node.op_type, len(dims), _attrs(node))
                )
    return placement


def node_names_unique(model) -> None:
    """Give every unnamed node a stable name: placement and --exclude address nodes by name."""
    seen: dict[str, int] = {}
    for k, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{k}"
        if node.name in seen:
            seen[node.name] += 1
            node.name = f"{node.name}__{seen[node.name]}"
        else:
            seen[node.name] = 0
