"""The stem: quantized layers that read the network input stay float by default.

The ONNX path keeps the Conv/Gemm/MatMul nodes that read a float graph input — directly or through
ops without weights (a Pad, a Div by 255) — in float (``quantize_input_layers=False``): the pixel
grid of an image quantizes badly and those layers cost little. The same rule here: on the first
forward of calibration the model runs once more on one sample with autograd recording, and a
layer with int8 weights (Conv*, Linear) is an input layer when its input's autograd graph reaches
a floating-point model input without passing through the output of another such layer (nor a
LayerNorm, Softmax or embedding, where the ONNX walk stops too). Its input and weight quantizers
are disabled before the real forward runs, so they never collect statistics.

A model that detaches its input, or runs its forward under ``torch.no_grad()``, shows no graph:
then no layer is found and the stem is quantized (a warning says so).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn

from int8kit.torch.modules import QuantWeightMixin

LAYERS_ATTR = "_int8kit_input_layers"  # names of the layers kept float, set on the model
_HOOK_ATTR = "_int8kit_stem_hook"
_PROBING_ATTR = "_int8kit_stem_probing"
# Autograd nodes where the walk stops, as the ONNX walk stops at rules.TRANSFORMER_FLOAT ops.
_STOP_NODES = ("LayerNorm", "Softmax", "Embedding")


def _map(obj, fn: Callable):
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map(o, fn) for o in obj)
    if isinstance(obj, dict):
        return {k: _map(v, fn) for k, v in obj.items()}
    return obj


def _tensors(obj) -> list[torch.Tensor]:
    found: list[torch.Tensor] = []
    _map(obj, lambda t: found.append(t) or t)
    return found


def batch_size(args, kwargs) -> int:
    """Samples in one model call: the first dimension of its first tensor argument."""
    tensors = _tensors((args, kwargs))
    return int(tensors[0].shape[0]) if tensors and tensors[0].dim() else 1


def _first_sample(args, kwargs):
    sizes = {int(t.shape[0]) for t in _tensors((args, kwargs)) if t.dim()}
    if len(sizes) != 1 or sizes.pop() < 2:
        return args, kwargs
    return _map((args, kwargs), lambda t: t[:1] if t.dim() else t)


def find_input_layers(model: nn.Module, args: tuple, kwargs: dict) -> list[str]:
    """Names of the modules with a weight quantizer whose input derives from a floating-point
    model input (``args``/``kwargs``) through no other such layer. Runs ``model`` once (eval
    mode, quantizers as they are set), with autograd recording."""
    leaves: list[torch.Tensor] = []

    def mark(t: torch.Tensor) -> torch.Tensor:
        if not t.is_floating_point():
            return t
        leaf = t.detach().requires_grad_(True)
        leaves.append(leaf)
        return leaf.clone()  # not a leaf: the model may change its input in place

    names = {m: n for n, m in model.named_modules()}
    layers = [m for m in model.modules() if isinstance(m, QuantWeightMixin)]
    inputs: dict[str, list] = {}
    outputs: set = set()  # autograd nodes of the layers' outputs: the walk stops there

    def pre(module, margs):
        if margs and isinstance(margs[0], torch.Tensor) and margs[0].grad_fn is not None:
            inputs.setdefault(names[module], []).append(margs[0].grad_fn)

    def post(module, _margs, out):
        for t in _tensors(out):
            if t.grad_fn is not None:
                outputs.add(t.grad_fn)

    handles = [m.register_forward_pre_hook(pre) for m in layers]
    handles += [m.register_forward_hook(post) for m in layers]
    try:
        with torch.enable_grad():
            args, kwargs = _map(_first_sample(args, kwargs), mark)
            model(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    if not leaves:
        return []

    def reaches_input(start) -> bool:
        todo, seen = [start], {start}
        while todo:
            node = todo.pop()
            if any(getattr(node, "variable", None) is leaf for leaf in leaves):
                return True
            if node in outputs or any(s in type(node).__name__ for s in _STOP_NODES):
                continue
            for nxt, _ in node.next_functions:
                if nxt is not None and nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return False

    return [n for n, fns in inputs.items() if any(reaches_input(f) for f in fns)]


def keep_float(model: nn.Module, names: list[str]) -> None:
    """Disable the quantizers of the modules ``names`` (they run in float from now on)."""
    modules = dict(model.named_modules())
    for name in names:
        for attr in ("input_quantizer", "weight_quantizer"):
            q = getattr(modules[name], attr, None)
            if q is not None:
                q.set_mode("off")
                q.enabled = False
    object.__setattr__(model, LAYERS_ATTR, list(names))


def watch(model: nn.Module) -> None:
    """On the next forward of ``model``, find its input layers and keep them float (once)."""
    unwatch(model)

    def hook(module, args, kwargs):
        unwatch(model)  # first: the probe below calls the model again
        from int8kit.torch.quantize import quantizers

        saved = [(q, q.mode) for _, q in quantizers(model)]
        for q, _ in saved:
            q.set_mode("off")
        was_training = model.training
        model.eval()
        model.__dict__[_PROBING_ATTR] = True
        try:
            names = find_input_layers(model, args, kwargs)
        finally:
            del model.__dict__[_PROBING_ATTR]
            model.train(was_training)
            for q, mode in saved:
                q.set_mode(mode)
        if not names and any(t.is_floating_point() for t in _tensors((args, kwargs))):
            warnings.warn(
                "no layer reading the network input was found (the model's forward shows no "
                "autograd graph from its input); the first layers are quantized",
                stacklevel=2,
            )
        keep_float(model, names)

    object.__setattr__(model, _HOOK_ATTR, model.register_forward_pre_hook(hook, with_kwargs=True))


def probing(model: nn.Module) -> bool:
    """True during `watch`'s own extra forward (a hook counting samples should skip it)."""
    return bool(model.__dict__.get(_PROBING_ATTR))


def unwatch(model: nn.Module) -> None:
    handle = model.__dict__.pop(_HOOK_ATTR, None)
    if handle is not None:
        handle.remove()


def input_layers(model: nn.Module) -> list[str]:
    """The layers `watch` kept float on ``model`` (empty before calibration)."""
    return list(getattr(model, LAYERS_ATTR, []))
