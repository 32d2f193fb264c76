"""``QuantConfig(method="auto")``: the ONNX path's default recipe (`int8kit.recipes`) for a module.

The ONNX path tells a transformer from a conv net by its graph (attention: a Softmax feeding a
MatMul of two activations). A module has no graph before it runs, so here the family is read from
the module tree: an ``nn.MultiheadAttention`` or a module class named ``*Attention*`` (Hugging
Face, timm) makes a transformer; anything else gets the conv row. The recipe's range method is
used, and its depthwise equalization (`int8kit.torch.dwequalize`) and centring of one-sided
inputs (`int8kit.torch.center`) unless ``QuantConfig.equalize_depthwise`` /
``QuantConfig.center_one_sided`` say otherwise; bias correction and the float stem are
QuantConfig fields of their own (on by default, as in the ONNX path). The algorithms a row may
add that the PyTorch path lacks (SmoothQuant, cross-layer equalization) are named in the record,
not silently dropped.
"""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from int8kit.recipes import DEFAULTS
from int8kit.torch.config import QuantConfig


def family(model: nn.Module) -> str:
    """``transformer`` when ``model`` holds an attention module, else ``conv``."""
    for m in model.modules():
        if isinstance(m, nn.MultiheadAttention) or "Attention" in type(m).__name__:
            return "transformer"
    return "conv"


def resolve(config: QuantConfig, model: nn.Module) -> tuple[QuantConfig, dict]:
    """(config with ``auto`` replaced by the recipe's method and ``equalize_depthwise`` /
    ``center_one_sided`` None by the recipe's choice, the recipe record). The record is empty
    when the method was given explicitly (and None means off then, as in the ONNX path)."""
    if config.method != "auto":
        return replace(
            config,
            equalize_depthwise=bool(config.equalize_depthwise),
            center_one_sided=bool(config.center_one_sided),
        ), {}
    fam = family(model)
    recipe = DEFAULTS[fam]
    dw, ctr = config.equalize_depthwise, config.center_one_sided
    record = {"family": fam, **recipe.to_dict()}
    missing = [
        name
        for name, on in (
            ("smooth_quant", recipe.smooth_quant is not None),
            ("equalize", recipe.equalize),
        )
        if on
    ]
    if missing:
        record["not_in_torch_path"] = missing
    return replace(
        config,
        method=recipe.method,
        equalize_depthwise=recipe.equalize_depthwise if dw is None else dw,
        center_one_sided=recipe.center_one_sided if ctr is None else ctr,
    ), record
