"""The default recipe (``--method auto``), as data, and how a graph picks its row.

The rows are what ``benchmarks/choose_default.py`` selects on the benchmark zoo by leaving one
model out (benchmarks/results/zoo_loo.md): a recipe must beat the best TensorRT-deployable peer
on models it was not chosen on. ``auto`` looks at the graph first, because attention has its own
failure mode (outlier channels in the LayerNorm outputs that feed the projections) that conv nets
do not have. Bias correction and the float input layers are QuantizeConfig fields of their own
(``--no-bias-correction``, ``--quantize-input-layers``); a recipe row sets the rest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Recipe:
    """What ``auto`` stands for on one family of models."""

    method: str  # range method of the activations
    smooth_quant: float | str | None = None  # SmoothQuant alpha, "auto" (per activation) or off
    equalize: bool = False  # cross-layer equalization
    equalize_depthwise: bool = False  # per-channel ranges of depthwise inputs (gated)
    center_one_sided: bool = False  # zero point of one-sided inputs folded into the bias
    max_pool_max: bool = False  # MaxPool inputs raised to the range of the pool's output
    why: str = ""

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "why"}


DEFAULTS: dict[str, Recipe] = {
    # benchmarks/results/zoo_loo.md: mse + bias correction + depthwise equalization + centred
    # one-sided activations has the best rank on the zoo; the recipe chosen without model k (this
    # one, for every k) beats the best TensorRT-deployable peer on all 8 left-out models and every
    # peer on 7 (MiniLM: NNCF's transformer preset with zero points, 0.977 vs 0.953).
    # Depthwise equalization is gated per activation on held-out calibration samples: it acts on
    # PP-LCNet (top-1 agreement 0.68 -> 0.95-0.97) and RetinaFace (box SQNR 13 -> 18 dB) and leaves
    # EfficientNet-Lite0 and the nets without depthwise convs alone. Centring gives the 1x1 convs
    # and projections that read ReLU/GELU/HardSwish outputs half the int8 step (YOLOv8n AP 0.960
    # -> 0.972, ViT-S IoU 0.742 -> 0.761, MiniLM 0.938 -> 0.953). A transformer row of its own
    # (chosen on the zoo's two transformers) did worse on each left-out transformer than the one
    # recipe chosen on all models, so both rows are equal; SmoothQuant (+0.12 nearest-neighbour
    # agreement on MiniLM) cost ViT-S and EfficientNet-Lite0 (-0.03, -0.04) and stays opt-in.
    # MaxPool inputs reach as far as the pool's output range: a max pool passes on the largest
    # values, which mse on the input clips (benchmarks/results/sweep_peers.md: DNSMOS P.808 and
    # AECMOS, a Relu -> MaxPool -> global max, lost 6-7 dB to it; the sweep's 8 models with max
    # pools gain 0 to +7.4 dB, the zoo's are level).
    "conv": Recipe(
        "mse",
        equalize_depthwise=True,
        center_one_sided=True,
        max_pool_max=True,
        why="ranges that minimise the int8 error of each tensor's histogram, per-channel ranges "
        "for depthwise inputs where held-out samples show a clear gain, one-sided inputs of 1x1 "
        "convs and projections centred, bias correction and the stem float: the best rank on "
        "the zoo",
    ),
    "transformer": Recipe(
        "mse",
        equalize_depthwise=True,
        center_one_sided=True,
        max_pool_max=True,
        why="the same: on each left-out transformer it beat a transformer-only choice "
        "(MiniLM 0.953 vs 0.883 nearest-neighbour agreement, ViT-S IoU 0.761 vs 0.709)",
    ),
}


# Attention fused into one node (ONNX Runtime's transformer optimizer, com.microsoft).
FUSED_ATTENTION = {"Attention", "MultiHeadAttention", "PackedAttention", "GroupQueryAttention"}


def family(model) -> str:
    """``transformer`` when the graph has attention (a Softmax whose output, possibly through
    shape ops, is multiplied by another activation in a MatMul, or a fused attention node),
    else ``conv``."""
    graph = model.graph
    if any(n.op_type in FUSED_ATTENTION and n.domain == "com.microsoft" for n in graph.node):
        return "transformer"
    constants = {i.name for i in graph.initializer} | {
        o for n in graph.node if n.op_type == "Constant" for o in n.output
    }
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    passthrough = {"Cast", "Reshape", "Transpose", "Dropout", "Identity", "Where", "Mul", "Div"}
    for node in graph.node:
        if node.op_type != "Softmax":
            continue
        todo, seen = [node.output[0]], set()
        while todo:
            tensor = todo.pop()
            for reader in consumers.get(tensor, []):
                if reader.op_type == "MatMul" and not any(i in constants for i in reader.input):
                    return "transformer"
                if reader.op_type in passthrough and reader.output[0] not in seen:
                    seen.add(reader.output[0])
                    todo.append(reader.output[0])
    return "conv"


def default_recipe(model) -> tuple[str, Recipe]:
    """(family, recipe) that ``auto`` resolves to for ``model``."""
    fam = family(model)
    return fam, DEFAULTS[fam]


def describe() -> str:
    """The default recipe as text (``int8kit quantize --explain-rules``)."""
    lines = ["default recipe (--method auto), by what the graph holds:"]
    for fam, r in DEFAULTS.items():
        extra = [f"SmoothQuant {r.smooth_quant}"] if r.smooth_quant is not None else []
        extra += ["cross-layer equalization"] if r.equalize else []
        extra += ["depthwise equalization"] if r.equalize_depthwise else []
        extra += ["one-sided activations centred"] if r.center_one_sided else []
        lines.append(f"  {fam:<12} {' + '.join([r.method] + extra)}: {r.why}")
    lines.append(
        "  both: bias correction (gated per layer), layers reading the network input float"
    )
    return "\n".join(lines)
