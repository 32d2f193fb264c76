"""BatchNorm for QAT: find conv -> BN pairs, fold BN into the conv, or freeze BN statistics.

Folding gives the weights TensorRT quantizes: it folds BN into the conv before it applies the
per-channel weight scales, so QAT on the folded weights trains what the engine will run.
Pairs are found by running the model once with hooks: a BN whose input tensor *is* the output
of a conv (same object). Limit: if that conv output also feeds another op, folding changes what
the other op sees — such models should fold by hand or use ``freeze_bn``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from int8kit.torch.modules import BIAS_SHIFT

PAIRS_ATTR = "_int8kit_conv_bn"
_CONVS = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)
_BNS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@contextlib.contextmanager
def record_conv_bn_pairs(model: nn.Module) -> Iterator[None]:
    """During the first forward of ``model`` inside this block, record (conv, bn) name pairs
    in ``model._int8kit_conv_bn``."""
    names = {m: n for n, m in model.named_modules()}
    outputs: dict[int, tuple[str, torch.Tensor]] = {}
    pairs: list[tuple[str, str]] = []
    handles = []

    def on_conv(module, _inputs, output):
        if isinstance(output, torch.Tensor):
            outputs[id(output)] = (names[module], output)

    def on_bn(module, inputs):
        x = inputs[0] if inputs else None
        hit = outputs.get(id(x))
        if hit is not None and hit[1] is x:
            pairs.append((hit[0], names[module]))

    def done(*_):
        for h in handles:
            h.remove()
        outputs.clear()
        object.__setattr__(model, PAIRS_ATTR, pairs)

    for m in model.modules():
        if isinstance(m, _CONVS):
            handles.append(m.register_forward_hook(on_conv))
        elif isinstance(m, _BNS):
            handles.append(m.register_forward_pre_hook(on_bn))
    handles.append(model.register_forward_hook(done))
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        outputs.clear()


def find_conv_bn_pairs(model: nn.Module, example_input: torch.Tensor) -> list[tuple[str, str]]:
    with torch.no_grad(), record_conv_bn_pairs(model):
        was = model.training
        model.eval()
        model(example_input)
        model.train(was)
    return list(getattr(model, PAIRS_ATTR, []))


@torch.no_grad()
def fold_into(conv: nn.Module, bn: nn.Module) -> None:
    """w' = w * gamma / sqrt(var + eps) per output channel; b' = (b - mean) * k + beta."""
    if bn.running_mean is None:
        raise ValueError("cannot fold a BatchNorm without running statistics")
    k = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else None
    if k is None:
        k = 1.0 / torch.sqrt(bn.running_var + bn.eps)
    beta = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
    w = conv.weight
    transposed = isinstance(conv, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d))
    if transposed:
        if conv.groups != 1:
            raise ValueError("folding BatchNorm into a grouped ConvTranspose is not supported")
        shape = [1, -1] + [1] * (w.dim() - 2)
    else:
        shape = [-1] + [1] * (w.dim() - 1)
    w.mul_(k.reshape(shape).to(w.dtype))
    shift = conv._buffers.get(BIAS_SHIFT)  # a bias correction moves with the output channel
    if shift is not None:
        shift.mul_(k.to(shift.dtype))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    new_bias = (bias - bn.running_mean) * k + beta
    if conv.bias is None:
        conv.bias = nn.Parameter(new_bias.to(w.dtype))
    else:
        conv.bias.copy_(new_bias)


def fold_bn(model: nn.Module, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Fold each (conv, bn) pair and put nn.Identity where the BN was. Returns the folded pairs."""
    modules = dict(model.named_modules())
    folded = []
    for conv_name, bn_name in pairs:
        conv, bn = modules.get(conv_name), modules.get(bn_name)
        if conv is None or not isinstance(bn, _BNS):
            continue
        fold_into(conv, bn)
        parent_name, _, attr = bn_name.rpartition(".")
        parent = modules[parent_name] if parent_name else model
        setattr(parent, attr, nn.Identity())
        folded.append((conv_name, bn_name))
    return folded


class _FrozenBatchNormMixin:
    """A BN that stays in eval mode (running statistics, no updates) whatever train() says."""

    def train(self, mode: bool = True):
        return super().train(False)


_FROZEN: dict[type, type] = {}


def freeze_bn(model: nn.Module) -> int:
    """Keep every BatchNorm of ``model`` on its running statistics during QAT. Returns the count."""
    n = 0
    for m in model.modules():
        if isinstance(m, _BNS) and not isinstance(m, _FrozenBatchNormMixin):
            cls = type(m)
            if cls not in _FROZEN:
                _FROZEN[cls] = type(f"Frozen{cls.__name__}", (_FrozenBatchNormMixin, cls), {})
            m.__class__ = _FROZEN[cls]
            m.train(False)
            n += 1
    return n
