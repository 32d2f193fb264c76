"""Module swap, modes and calibration: `quantize(model, config, forward_loop)`."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator

import torch
from torch import nn

from int8kit.torch import batchnorm, distributed
from int8kit.torch.config import QuantConfig
from int8kit.torch.modules import QuantAdd, convert, match_rule
from int8kit.torch.quantizer import MODES, TensorQuantizer

CONFIG_ATTR = "_int8kit_config"


def replace_modules(model: nn.Module, config: QuantConfig) -> list[str]:
    """Swap every module that `modules.RULES` and ``config`` select; returns their names."""

    def make(axis: int | None, is_weight: bool) -> TensorQuantizer:
        return TensorQuantizer(
            axis=axis if (config.per_channel or not is_weight) else None,
            is_weight=is_weight,
            method=config.method,
            percentile=config.percentile,
            num_bins=config.num_bins,
        )

    swapped = []
    for name, module in list(model.named_modules()):
        if isinstance(module, TensorQuantizer) or config.excluded(name):
            continue
        if isinstance(module, QuantAdd):
            if "QuantAdd" in config.op_types:
                q = module.input_quantizer
                q.method, q.percentile, q.num_bins = (
                    config.method,
                    config.percentile,
                    config.num_bins,
                )
                q.enabled = True
                swapped.append(name)
            continue
        if hasattr(type(module), "_int8kit_base"):
            continue  # already quantized
        rule = match_rule(module)
        if rule is None or rule.op_type not in config.op_types:
            continue
        convert(module, rule, make)
        swapped.append(name)
    object.__setattr__(model, CONFIG_ATTR, config)
    return swapped


def quantizers(model: nn.Module) -> Iterator[tuple[str, TensorQuantizer]]:
    """(qualified name, quantizer) for every active quantizer in ``model``."""
    for name, m in model.named_modules():
        if isinstance(m, TensorQuantizer) and m.enabled:
            yield name, m


def set_mode(model: nn.Module, mode: str) -> None:
    """Switch every fake-quant point of ``model`` to "calibrate", "quantize" or "off"."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is unknown; choose one of {', '.join(MODES)}")
    for _, q in quantizers(model):
        q.set_mode(mode)


def calibrate(model: nn.Module, forward_loop: Callable[[nn.Module], object]) -> dict[str, float]:
    """Run ``forward_loop(model)`` with every activation quantizer collecting a histogram,
    then set each amax by its method. The model runs in eval mode without gradients.
    Returns {quantizer name: amax}."""
    was_training = model.training
    model.eval()
    set_mode(model, "calibrate")
    for _, q in quantizers(model):
        q.reset()
    try:
        with torch.no_grad(), batchnorm.record_conv_bn_pairs(model):
            forward_loop(model)
    finally:
        model.train(was_training)
    return load_amax(model)


def quantize(
    model: nn.Module,
    config: QuantConfig | None = None,
    forward_loop: Callable[[nn.Module], object] | None = None,
) -> nn.Module:
    """Swap the quantizable modules of ``model`` in place and, with ``forward_loop``, calibrate.

    ``forward_loop(model)`` runs the model over the calibration data (it owns the data;
    e.g. ``lambda m: [m(x) for x in loader]``). Without it the model is left in mode
    "calibrate": run it over the data yourself, then call `load_amax`.
    """
    config = config or QuantConfig()
    replace_modules(model, config)
    if forward_loop is not None:
        calibrate(model, forward_loop)
    else:
        set_mode(model, "calibrate")
    return model


def load_amax(model: nn.Module) -> dict[str, float]:
    """After running a model in mode "calibrate" yourself: compute every amax, switch to quantize.

    Under torch.distributed (a process group is initialised and ``QuantConfig.distributed``),
    every rank must call this: the ranks' statistics are reduced first
    (`int8kit.torch.distributed`), so every rank gets the amax of one process that saw all data.
    """
    config = get_config(model)
    if distributed.active() and (config is None or config.distributed):
        distributed.reduce_collectors(
            (n, q.collector)
            for n, q in quantizers(model)
            if not q.is_weight and q.collector is not None
        )
    active = [(n, q) for n, q in quantizers(model) if not q.is_weight]
    unused = [(n, q) for n, q in active if q.collector is None or q.collector.stats.count == 0]
    if active and len(unused) == len(active):
        raise RuntimeError(
            "no quantizer saw data during calibration; check that forward_loop runs the model "
            "over the calibration batches"
        )
    for _, q in unused:  # modules the forward never reached: leave them in float
        q.set_mode("off")
        q.enabled = False
    if unused:
        warnings.warn(
            f"{len(unused)} quantizers saw no calibration data and stay in float "
            f"(unused modules?): {', '.join(n for n, _ in unused[:5])}"
            + (" ..." if len(unused) > 5 else ""),
            stacklevel=2,
        )
    amax = {name: q.load_calib_amax() for name, q in active if q.enabled}
    set_mode(model, "quantize")
    return amax


def get_config(model: nn.Module) -> QuantConfig | None:
    return getattr(model, CONFIG_ATTR, None)
