"""Module swap, modes and calibration: `quantize(model, config, forward_loop)`."""

from __future__ import annotations

import contextlib
import itertools
import warnings
from collections.abc import Callable, Iterator

import torch
from torch import nn

from int8kit.torch import batchnorm, distributed, recipe, stem
from int8kit.torch.config import QuantConfig
from int8kit.torch.modules import INPUT_SHIFT, QuantAdd, convert, match_rule
from int8kit.torch.quantizer import MODES, TensorQuantizer

CONFIG_ATTR = "_int8kit_config"
RECIPE_ATTR = "_int8kit_recipe"
SAMPLES_ATTR = "_int8kit_calib_samples"


def replace_modules(model: nn.Module, config: QuantConfig) -> list[str]:
    """Swap every module that `modules.RULES` and ``config`` select; returns their names.
    ``method="auto"`` is resolved here (`int8kit.torch.recipe`); `get_config` returns the
    resolved config and `get_recipe` what ``auto`` stood for."""
    config, record = recipe.resolve(config, model)
    default = _device_of(model, recurse=True)

    def maker(device: torch.device | None):
        def make(axis: int | None, is_weight: bool) -> TensorQuantizer:
            return TensorQuantizer(
                axis=axis if (config.per_channel or not is_weight) else None,
                is_weight=is_weight,
                method=config.method,
                percentile=config.percentile,
                num_bins=config.num_bins,
                device=device,
            )

        return make

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
                if default is not None:
                    q.to(default)
                swapped.append(name)
            continue
        if hasattr(type(module), "_int8kit_base"):
            continue  # already quantized
        rule = match_rule(module)
        if rule is None or rule.op_type not in config.op_types:
            continue
        convert(module, rule, maker(_device_of(module, recurse=False) or default))
        swapped.append(name)
    object.__setattr__(model, CONFIG_ATTR, config)
    object.__setattr__(model, RECIPE_ATTR, record)
    return swapped


def _device_of(module: nn.Module, recurse: bool) -> torch.device | None:
    """The device of ``module``'s first parameter or buffer (None: it has none)."""
    for t in itertools.chain(module.parameters(recurse=recurse), module.buffers(recurse=recurse)):
        return t.device
    return None


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

    By the model's config (`QuantConfig`): the layers reading the network input stay float
    (`int8kit.torch.stem`, found on the first forward); with ``equalize_depthwise`` the channel
    ranges of the depthwise convs' inputs are collected in the same pass, and a short pass (the
    gate) plus, where a layer is equalized, a full one for its new range follow
    (`int8kit.torch.dwequalize`); with ``center_one_sided`` the one-sided inputs of Linears
    and Convs without padding are centred on the calibrated ranges (`int8kit.torch.center`, no
    extra pass); then a shorter run of ``forward_loop`` estimates the gated bias correction
    (`int8kit.torch.bias`). Returns {quantizer name: amax}."""
    config = get_config(model) or QuantConfig()
    was_training = model.training
    model.eval()
    set_mode(model, "calibrate")
    for _, q in quantizers(model):
        q.reset()
    if not config.quantize_input_layers:
        stem.watch(model)
    seen = [0]

    def count(_module, args, kwargs):
        if not stem.probing(model):
            seen[0] += stem.batch_size(args, kwargs)

    counter = model.register_forward_pre_hook(count, with_kwargs=True)
    ranges = None
    if config.equalize_depthwise:
        from int8kit.torch.dwequalize import ChannelRanges

        ranges = ChannelRanges(model)
    try:
        with (
            torch.no_grad(),
            batchnorm.record_conv_bn_pairs(model),
            ranges or contextlib.nullcontext(),
        ):
            forward_loop(model)
    finally:
        counter.remove()
        stem.unwatch(model)
        model.train(was_training)
    object.__setattr__(model, SAMPLES_ATTR, seen[0])
    amax = load_amax(model)
    if ranges is not None:
        from int8kit.torch.dwequalize import equalize_depthwise

        equalize_depthwise(model, forward_loop, ranges=ranges, reduce=config.distributed)
        amax = {n: float(q.amax) for n, q in quantizers(model) if n in amax}
    if config.center_one_sided:
        from int8kit.torch.center import center_one_sided

        center_one_sided(model)
        amax = {n: float(q.amax) for n, q in quantizers(model) if n in amax}
    if config.bias_correction:
        from int8kit.torch.bias import bias_correct

        gate = {} if config.bias_gate else {"gate_samples": 0}
        bias_correct(model, forward_loop, num_samples=seen[0], reduce=config.distributed, **gate)
    return amax


def quantize(
    model: nn.Module,
    config: QuantConfig | None = None,
    forward_loop: Callable[[nn.Module], object] | None = None,
) -> nn.Module:
    """Swap the quantizable modules of ``model`` in place and, with ``forward_loop``, calibrate.

    ``forward_loop(model)`` runs the model over the calibration data (it owns the data;
    e.g. ``lambda m: [m(x) for x in loader]``); it is called again when bias correction is on
    (stopped after 48 samples) and for depthwise equalization (the gate, stopped after 32
    samples, and one full pass where a layer is equalized). Without it the model is left in mode
    "calibrate": run it over the data yourself, then call `load_amax` (and
    `int8kit.torch.dwequalize.equalize_depthwise(model, forward_loop)`,
    `int8kit.torch.center.center_one_sided(model)`, then
    `int8kit.torch.bias_correct(model, forward_loop)`).
    """
    config = config or QuantConfig()
    replace_modules(model, config)
    if forward_loop is not None:
        calibrate(model, forward_loop)
    else:
        set_mode(model, "calibrate")
        if not get_config(model).quantize_input_layers:
            stem.watch(model)  # load_amax removes the hook if no forward came
    return model


def load_amax(model: nn.Module) -> dict[str, float]:
    """After running a model in mode "calibrate" yourself: compute every amax, switch to quantize.

    Under torch.distributed (a process group is initialised and ``QuantConfig.distributed``),
    every rank must call this: the ranks' statistics are reduced first
    (`int8kit.torch.distributed`), so every rank gets the amax of one process that saw all data.
    """
    stem.unwatch(model)
    for m in model.modules():  # a shift was chosen on the old ranges (amax is computed afresh)
        m._buffers.pop(INPUT_SHIFT, None)
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


def get_recipe(model: nn.Module) -> dict:
    """What ``method="auto"`` resolved to for ``model`` (`int8kit.recipes`); empty otherwise."""
    return dict(getattr(model, RECIPE_ATTR, {}))
