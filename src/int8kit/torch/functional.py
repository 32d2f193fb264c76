"""Fake quantization as one autograd Function: symmetric int8, scale = amax / 127, zero point 0.

Forward: ``clamp(round(x / s), -128, 127) * s`` (round half to even, like QuantizeLinear).
Backward: straight-through estimator with clipping — the gradient passes unchanged where
``|x| <= amax`` and is zero outside. With ``learn_amax`` the gradient with respect to amax is
LSQ's: ``(q - x/s) / 127`` inside the range and ``q / 127`` (about ±1, PACT) outside.
Exported by ``symbolic`` as ONNX QuantizeLinear + DequantizeLinear (opset >= 13 for ``axis``).
"""

from __future__ import annotations

import torch

QMIN, QMAX = -128, 127
AMAX_STEPS = 127.0  # scale = amax / 127


def _shape_for(amax: torch.Tensor, x: torch.Tensor, axis: int | None) -> torch.Tensor:
    if axis is None or amax.dim() == 0:
        return amax
    shape = [1] * x.dim()
    shape[axis] = amax.numel()
    return amax.reshape(shape)


class FakeQuantFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, amax, axis, learn_amax):  # type: ignore[override]
        a = _shape_for(amax.to(x.dtype), x, axis)
        scale = a / AMAX_STEPS
        q = torch.clamp(torch.round(x / scale), QMIN, QMAX)
        ctx.save_for_backward(x, a)
        ctx.axis, ctx.learn_amax, ctx.amax_shape = axis, learn_amax, amax.shape
        return q * scale

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, a = ctx.saved_tensors
        inside = x.abs() <= a
        grad_x = grad * inside
        grad_amax = None
        if ctx.learn_amax and ctx.needs_input_grad[1]:
            scale = a / AMAX_STEPS
            xs = x / scale
            q = torch.clamp(torch.round(xs), QMIN, QMAX)
            d = torch.where(inside, q - xs, q) / AMAX_STEPS
            g = grad * d
            if ctx.axis is None or len(ctx.amax_shape) == 0:
                grad_amax = g.sum().reshape(ctx.amax_shape)
            else:
                dims = [i for i in range(g.dim()) if i != ctx.axis % g.dim()]
                grad_amax = g.sum(dim=dims).reshape(ctx.amax_shape)
        return grad_x, grad_amax, None, None

    @staticmethod
    def symbolic(g, x, amax, axis, learn_amax):
        sizes = amax.type().sizes() or []
        scale = g.op("Div", amax, g.op("Constant", value_t=torch.tensor(AMAX_STEPS)))
        zero = g.op("Constant", value_t=torch.zeros(sizes, dtype=torch.int8))
        kw = {} if axis is None or not sizes else {"axis_i": axis}
        q = g.op("QuantizeLinear", x, scale, zero, **kw)
        return g.op("DequantizeLinear", q, scale, zero, **kw)


def fake_quant(
    x: torch.Tensor, amax: torch.Tensor, axis: int | None = None, learn_amax: bool = False
) -> torch.Tensor:
    """Fake-quantize ``x`` with ``amax`` (0-d per tensor, or 1-d along ``axis``)."""
    return FakeQuantFunction.apply(x, amax, axis, learn_amax)
