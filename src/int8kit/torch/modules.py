"""Quantized modules, made by explicit swap of a module instance's class (no patching of torch.nn).

`RULES` is the policy in one place: which module kinds get which quantizers. A matching module
(also a subclass, e.g. a Conv2d with "same" padding in its own forward) gets the class
``Quant<Name>(mixin, <its class>)`` and child quantizers ``input_quantizer`` (and
``weight_quantizer``); its own forward still runs, with the quantized input and, for the length
of the call, the fake-quantized weight in place of ``self.weight``.

Residual adds are Python ``+`` and cannot be found by module swap: write ``self.add =
QuantAdd()`` in the model and ``x = self.add(x, identity)`` in place of ``x = x + identity``;
the identity input gets a quantizer, which lets TensorRT fuse the add into the conv before it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from int8kit.torch.quantizer import TensorQuantizer

BIAS_SHIFT = "bias_shift"  # buffer of a bias-corrected module: added to its bias when quantized
# Buffer of a depthwise conv with per-channel input ranges (`int8kit.torch.dwequalize`): 1/s per
# input channel, shape (C, 1, ...), multiplied into the input before its quantizer.
INPUT_INV_SCALE = "input_inv_scale"
# Buffer of a Conv/Linear whose one-sided input is centred (`int8kit.torch.center`): the scalar c
# subtracted from the input before its quantizer; c x (sum of the weights over the inputs) goes
# back in through the bias, so the FP32 function is unchanged. A conv that pads with zeros
# (`zero_pad`) pads first and subtracts c after, so its zeros read -c like the rest (Pad -> Sub).
INPUT_SHIFT = "input_shift"
CONV_FUNCTIONS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


@dataclass(frozen=True)
class Rule:
    op_type: str  # the name used in QuantConfig.op_types
    classes: tuple[type[nn.Module], ...]
    weight_axis: int | None  # per-channel axis of the weight; None: input quantizer only


RULES: tuple[Rule, ...] = (
    Rule("Conv1d", (nn.Conv1d,), 0),
    Rule("Conv2d", (nn.Conv2d,), 0),
    Rule("Conv3d", (nn.Conv3d,), 0),
    Rule("ConvTranspose1d", (nn.ConvTranspose1d,), 1),
    Rule("ConvTranspose2d", (nn.ConvTranspose2d,), 1),
    Rule("ConvTranspose3d", (nn.ConvTranspose3d,), 1),
    Rule("Linear", (nn.Linear,), 0),
    Rule("MaxPool", (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d), None),
    Rule("AvgPool", (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d), None),
    Rule(
        "AdaptiveAvgPool",
        (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d),
        None,
    ),
)


def match_rule(module: nn.Module) -> Rule | None:
    for rule in RULES:
        if isinstance(module, rule.classes):
            return rule
    return None


class QuantAdd(nn.Module):
    """``x + identity`` with the identity input quantized (TensorRT's residual-add pattern).

    Until `quantize` configures it the quantizer is off and this is a plain add.
    """

    def __init__(self) -> None:
        super().__init__()
        self.input_quantizer = TensorQuantizer()
        self.input_quantizer.enabled = False

    def forward(self, x: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        return x + self.input_quantizer(identity)


class QuantInputMixin:
    """Quantizes the first input, then runs the module's own forward."""

    input_quantizer: TensorQuantizer

    def forward(self, input, *args, **kwargs):
        return super().forward(self.input_quantizer(input), *args, **kwargs)


class QuantWeightMixin:
    """Quantizes the first input and, for this call only, the weight the module's forward reads.

    With a bias correction (buffer ``BIAS_SHIFT``, set by `int8kit.torch.bias`) the bias it reads
    in mode "quantize" is ``bias + shift``; in modes "off" and "calibrate" the module computes
    its FP32 function unchanged. With input scales (buffer ``INPUT_INV_SCALE``, set by
    `set_input_scale`) the input is multiplied by it first, in every mode (the weight carries the
    inverse). With an input shift (buffer ``INPUT_SHIFT``, set by `set_input_shift`) the layer
    reads ``input - c`` and its bias gains ``c`` times the sum of its current weights over the
    inputs, in every mode but "calibrate" (where the quantizer records the uncentred input that
    c is computed from): weights that change in QAT carry the term with them. A centred conv
    that pads with zeros (`zero_pad`) reads ``pad(input) - c`` and runs the convolution itself,
    without padding: the class's forward is then not called (`int8kit.torch.center` checks
    that it computes that padded convolution before it centres the layer)."""

    input_quantizer: TensorQuantizer
    weight_quantizer: TensorQuantizer

    def forward(self, input, *args, **kwargs):
        inv = self._buffers.get(INPUT_INV_SCALE)
        if inv is not None:
            input = input * inv
        w = self._parameters["weight"]
        bias = self._parameters.get("bias")
        plus = []  # terms added to the bias for this call
        c = self._buffers.get(INPUT_SHIFT)
        pad = None
        if c is not None and self.input_quantizer.mode != "calibrate":
            pad = zero_pad(self)
            if pad is not None:  # its zeros are shifted too; the conv below pads nothing
                input = F.pad(input, pad)
            input = input - c
            plus.append(c * w.flatten(1).sum(1))  # the float weights: what X = X' + c reads
        input = self.input_quantizer(input)
        # An instance attribute shadows the parameter (nn.Module.__getattr__ is only the
        # fallback), so the class's own forward — padding and all — reads the quantized weight.
        self.__dict__["weight"] = self.weight_quantizer(w)
        shift = self._buffers.get(BIAS_SHIFT)
        if shift is not None and self.weight_quantizer.mode == "quantize":
            plus.append(shift)
        for term in plus:
            bias = term if bias is None else bias + term
        if plus:
            self.__dict__["bias"] = bias
        try:
            if pad is not None:
                conv = CONV_FUNCTIONS[len(self.kernel_size)]
                w = self.__dict__["weight"]
                return conv(input, w, bias, self.stride, 0, self.dilation, self.groups)
            return super().forward(input, *args, **kwargs)
        finally:
            del self.__dict__["weight"]
            self.__dict__.pop("bias", None)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in (BIAS_SHIFT, INPUT_INV_SCALE, INPUT_SHIFT):
            key = prefix + name
            if key in state_dict and self._buffers.get(name) is None:
                device = self._parameters["weight"].device  # not the state dict's (often the CPU)
                self.register_buffer(name, torch.zeros_like(state_dict[key], device=device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def set_input_scale(module: nn.Module, s: torch.Tensor | None) -> None:
    """Divide input channel c of the depthwise conv ``module`` by s[c] (buffer
    ``INPUT_INV_SCALE``, applied before its input quantizer) and multiply the weights of the
    output channels that read it by s[c]: the same FP32 function. A previous scale is undone
    first; ``s=None`` only undoes it. A centred input (`set_input_shift`) is uncentred: its
    shift was computed on the inputs of the old scale."""
    set_input_shift(module, None)
    w = module._parameters["weight"]
    shape = [-1] + [1] * (w.dim() - 1)
    with torch.no_grad():
        old = module._buffers.pop(INPUT_INV_SCALE, None)
        if old is not None:
            inv = old.reshape(-1).to(w.dtype)
            w.mul_(inv.repeat_interleave(w.shape[0] // inv.numel()).reshape(shape))
        if s is None:
            return
        s = torch.as_tensor(s).to(device=w.device, dtype=w.dtype).reshape(-1)
        w.mul_(s.repeat_interleave(w.shape[0] // s.numel()).reshape(shape))
        module.register_buffer(INPUT_INV_SCALE, (1.0 / s).reshape([-1] + [1] * (w.dim() - 2)))


def set_input_shift(module: nn.Module, c: float | None) -> None:
    """Centre the input of the Conv/Linear ``module`` on ``c`` (buffer ``INPUT_SHIFT``): the
    layer reads ``x - c`` and adds ``c`` x its weight sums to its bias. The input quantizer keeps
    its upper clip: its amax ``A`` becomes ``A - c`` (for c = (A + min) / 2: (A - min) / 2). A
    previous shift is undone first (amax back to ``A``); ``c=None`` only undoes it."""
    old = module._buffers.pop(INPUT_SHIFT, None)
    if old is None and c is None:
        return
    q = module.input_quantizer
    if old is not None and q.has_amax:
        q.set_amax(q.amax.detach() + old.to(q.amax.device))
    if c is None:
        return
    w = module._parameters["weight"]
    module.register_buffer(INPUT_SHIFT, torch.tensor(float(c), dtype=w.dtype, device=w.device))
    q.set_amax(q.amax.detach() - float(c))


def zero_pad(module: nn.Module) -> list[int] | None:
    """The zeros a Conv puts around its input, in ``F.pad``'s order (last dimension first,
    (before, after) each): its own zero ``padding`` (also "same") plus those of a constant-zero
    pad child (TF "same" convs with a fixed pad, like EfficientNet's ``static_padding``); None
    when it adds none, or is not a Conv, or pads by copying (reflect / replicate / circular)."""
    convs = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
    if not isinstance(module, convs) or module.padding_mode != "zeros":
        return None
    total = [int(p) for p in module._reversed_padding_repeated_twice]
    pads = [
        m
        for m in module._modules.values()
        if isinstance(m, nn.modules.padding._ConstantPadNd) and m.value == 0
    ]
    if len(pads) == 1 and len(pads[0].padding) == len(total):
        total = [a + int(b) for a, b in zip(total, pads[0].padding, strict=True)]
    return total if any(total) else None


_CLASSES: dict[tuple[type, type], type] = {}


def quant_class(cls: type[nn.Module], mixin: type) -> type[nn.Module]:
    """The quantized class for ``cls`` (made once per class and cached)."""
    key = (cls, mixin)
    if key not in _CLASSES:
        _CLASSES[key] = type(f"Quant{cls.__name__}", (mixin, cls), {"_int8kit_base": cls})
    return _CLASSES[key]


def is_quantized(module: nn.Module) -> bool:
    return isinstance(module, (QuantInputMixin, QuantWeightMixin, QuantAdd))


def convert(module: nn.Module, rule: Rule, make_quantizer) -> None:
    """Swap ``module``'s class for its quantized class and attach its quantizers, in place."""
    if rule.weight_axis is None:
        module.__class__ = quant_class(type(module), QuantInputMixin)
    else:
        module.__class__ = quant_class(type(module), QuantWeightMixin)
        module.weight_quantizer = make_quantizer(rule.weight_axis, True)
    module.input_quantizer = make_quantizer(None, False)


def unconvert(module: nn.Module) -> None:
    """Undo `convert`: the original class, no quantizers."""
    base = getattr(type(module), "_int8kit_base", None)
    if base is None:
        return
    for name in ("input_quantizer", "weight_quantizer"):
        if name in module._modules:
            del module._modules[name]
    module._buffers.pop(BIAS_SHIFT, None)
    module._buffers.pop(INPUT_SHIFT, None)
    if INPUT_INV_SCALE in module._buffers:
        set_input_scale(module, None)  # the weight back to the one of the plain module
    module.__class__ = base
