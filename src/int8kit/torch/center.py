"""One-sided inputs of Conv/Linear layers centred before their symmetric int8 scale: the zero
point TensorRT lacks, folded into the layer's bias.

The ONNX path's algorithm (`int8kit.onnx.center`, where the why is written down) for modules: a
quantized ``nn.Linear`` or ``nn.Conv1d/2d/3d`` whose input quantizer saw a one-sided input
(calibrated min >= -MAX_NEGATIVE x amax: ReLU, ReLU6, GELU, HardSwish, SiLU outputs) reads ``x - c``, c = (amax + min) / 2, and adds c x (the sum of its weights over the
inputs) to its bias; its input quantizer's amax becomes a = (amax - min) / 2 (about half the
step, the same upper clip). The same FP32 function; centred only where a <= MAX_RATIO x amax.
The constants are the ONNX path's.

Here c is a buffer of the module (`modules.set_input_shift`) and the bias term is computed in
the module's forward from its current weights, so fine-tuning (QAT) and BN folding, which change
the weights, keep the FP32 function; the bias parameter itself is never touched. The export reads
Sub(c) -> QuantizeLinear -> DequantizeLinear -> Conv/Gemm with the term folded into the bias
constant: one scale per activation tensor, a graph TensorRT builds.

A conv that pads with zeros (`modules.zero_pad`: its own ``padding``, also "same", plus a zero
pad child like EfficientNet's ``static_padding``) would see its zeros become -c. It pads first
instead and convolves without padding: pad(x) - c is quantized, so the padded zeros read -c like
every other value and the FP32 function is the same at every output. This is what the ONNX path
does behind an explicit zero Pad (TF "same" exports: Pad -> Sub -> Q -> DQ -> Conv), and it is
what the export writes: Pad(0) -> Sub(c) -> Q -> DQ -> Conv with pads 0. The zeros are values
of the quantized tensor, so its range reaches 0 even where the input's minimum is above it
(a sigmoid): min is taken as min(min, 0), as the ONNX path, which observes the Pad's output,
does; -c then lies in [-a, a] (-c = -a, exactly on the grid, where that minimum is 0). The price
on TensorRT: the Pad stays a layer of its own (with a Sub behind it, it cannot be folded into
the conv), as in the ONNX path.

Applied after calibration on the calibrated ranges (the collector's min and the method's amax;
no extra pass of ``forward_loop``), after depthwise equalization and before bias correction, as
in the ONNX path (`int8kit.torch.calibrate` runs it when ``QuantConfig.center_one_sided``). A
ConvTranspose keeps its input as it is; a subclass with a forward of its own is probed
(`layer_reason`) and kept where it pads in a way `zero_pad` does not see. The summary names the
layers that read a one-sided input and keep it. Under torch.distributed the statistics were reduced before
(`load_amax`), so every rank makes the same choices.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict

import torch
from torch import nn
from torch.nn import functional as F

from int8kit.onnx.center import MAX_NEGATIVE, MAX_RATIO, CenterSummary
from int8kit.torch.modules import (
    CONV_FUNCTIONS,
    INPUT_SHIFT,
    QuantWeightMixin,
    set_input_shift,
    zero_pad,
)

SUMMARY_ATTR = "_int8kit_center"
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def layer_reason(module: nn.Module) -> str | None:
    """Why ``module`` cannot read a centred input (None: it can). Centring is exact where
    layer(x - c) + c x weight sums = layer(x) at every output: a Linear, a Conv whose padding
    (if any) keeps a constant input constant, or a Conv that pads with zeros (`zero_pad`), which
    then reads pad(x) - c and convolves without padding. A subclass with a forward of its own
    (TF "same" convs, weight standardization) is probed: with zero padding, its FP32 output must
    be that padded convolution's; without, its output for an input of ones minus its output for
    zeros must be the weight sums at every position."""
    base = getattr(type(module), "_int8kit_base", type(module))
    if isinstance(module, nn.Linear):
        own = base.forward is not nn.Linear.forward
        return _probe(module, base, (1, module.in_features)) if own else None
    for cls in _CONVS:
        if isinstance(module, cls):
            pad = zero_pad(module)
            own = base.forward is not cls.forward or base._conv_forward is not cls._conv_forward
            if pad is None and not own:
                return None  # no padding, or reflect / replicate / circular: c stays c
            probe = _probe if pad is None else _probe_padded
            for shape in _probe_shapes(module):
                why = probe(module, base, shape)
                if why is not None:
                    return why
            return None
    return f"a {base.__name__} is not a Linear or a Conv"


def _probe_shapes(module: nn.Module) -> list[tuple[int, ...]]:
    """Inputs with border and interior outputs in every spatial dimension, of every size modulo
    the stride: a static "same" pad on the far side is read only for some sizes (an odd size
    with stride 2 skips it), so each residue is tried."""
    k, d, s = module.kernel_size, module.dilation, module.stride
    base = [(k[i] - 1) * d[i] + 1 + 2 * s[i] for i in range(len(k))]
    return [(1, module.in_channels, *(b + j for b in base)) for j in range(max(s))]


def _probe(module: nn.Module, base: type, shape: tuple[int, ...]) -> str | None:
    w = module._parameters["weight"]
    x = torch.zeros(shape, dtype=w.dtype, device=w.device)
    try:
        with torch.no_grad():
            step = base.forward(module, x + 1) - base.forward(module, x)
    except Exception as exc:  # a forward that wants other inputs: left as it is
        return f"its class has a forward of its own ({type(exc).__name__} on a probe input)"
    sums = w.detach().flatten(1).sum(1)
    want = sums.reshape([-1] + [1] * (step.dim() - 2)) if step.dim() > 2 else sums
    tol = 1e-4 * float(w.detach().abs().flatten(1).sum(1).max()) + 1e-6
    if step.shape[1:2] != sums.shape or float((step - want).abs().max()) > tol:
        return "its class has a forward of its own that pads (or changes) a constant input"
    return None


def _probe_padded(module: nn.Module, base: type, shape: tuple[int, ...]) -> str | None:
    """Whether the FP32 forward of ``module`` is the convolution of its input padded by
    `zero_pad`, without further padding (what a centred conv that pads computes instead)."""
    w = module._parameters["weight"]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=g).to(device=w.device, dtype=w.dtype)
    m, conv = module, CONV_FUNCTIONS[len(module.kernel_size)]
    try:
        with torch.no_grad():
            y = base.forward(m, x)
            want = conv(F.pad(x, zero_pad(m)), w, m.bias, m.stride, 0, m.dilation, m.groups)
    except Exception as exc:  # a forward that wants other inputs: left as it is
        return f"its class has a forward of its own ({type(exc).__name__} on a probe input)"
    tol = 1e-4 * float(w.detach().abs().flatten(1).sum(1).max()) + 1e-6
    if y.shape != want.shape or float((y - want).abs().max()) > tol:
        return "its forward is not the convolution of its zero-padded input"
    return None


def center_one_sided(model: nn.Module) -> CenterSummary:
    """Centre the one-sided inputs of the calibrated Conv/Linear layers of ``model`` in place
    (module docstring). Call it after calibration (`load_amax`) and depthwise equalization, and
    before `bias_correct`; previous shifts are undone and chosen afresh. The summary is keyed by
    module name: ``centered`` {name: {shift, amax_before, amax, min}}, ``kept`` {name: why} for
    the layers with a one-sided input that cannot read it centred."""
    t0 = time.perf_counter()
    summary = CenterSummary()
    for name, m in model.named_modules():
        if not isinstance(m, QuantWeightMixin):
            continue
        set_input_shift(m, None)
        q = m.input_quantizer
        stats = q.collector.stats if q.collector is not None else None
        if not (q.enabled and m.weight_quantizer.enabled and q.has_amax and stats and stats.count):
            continue
        amax, lo = float(q.amax.detach()), float(stats.min)
        if not (math.isfinite(amax) and amax > 0 and math.isfinite(lo)):
            continue
        if lo < -MAX_NEGATIVE * amax:
            continue  # two-sided
        pad = zero_pad(m)
        if pad is not None:
            lo = min(lo, 0.0)  # the zeros it pads are values of its input too
        lo = max(lo, -amax)
        shift, half = (amax + lo) / 2.0, (amax - lo) / 2.0
        if half > MAX_RATIO * amax:
            continue
        why = layer_reason(m)
        if why is not None:
            summary.kept[name] = why
            continue
        set_input_shift(m, shift)
        summary.centered[name] = {
            "shift": shift,
            "amax_before": amax,
            "amax": float(q.amax.detach()),
            "min": float(stats.min),
            "zero_pad": pad,
        }
    object.__setattr__(
        model, SUMMARY_ATTR, {**asdict(summary), "seconds": time.perf_counter() - t0}
    )
    return summary


def shifts(model: nn.Module) -> dict[str, float]:
    """{module name: c} of every centred layer of ``model``."""
    return {
        n: float(m._buffers[INPUT_SHIFT])
        for n, m in model.named_modules()
        if INPUT_SHIFT in m._buffers
    }


def summary_of(model: nn.Module) -> dict:
    """The last `center_one_sided` record of ``model`` (empty when it was not run)."""
    return dict(getattr(model, SUMMARY_ATTR, {}))
