"""TensorQuantizer: one fake-quantization point with three modes.

- ``calibrate``: the tensor passes unchanged; activations are streamed into a histogram
  collector (on the tensor's device); weights need no statistics.
- ``quantize``: fake quantization with the calibrated amax (activations) or max |w| per output
  channel (weights).
- ``off``: the tensor passes unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from int8kit.calib.collector import safe_amax
from int8kit.torch.collector import TorchHistogramCollector
from int8kit.torch.functional import fake_quant

MODES = ("calibrate", "quantize", "off")


class TensorQuantizer(nn.Module):
    """Symmetric int8 fake quantizer; per tensor (``axis=None``) or per channel (weights)."""

    def __init__(
        self,
        axis: int | None = None,
        is_weight: bool = False,
        method: str = "entropy",
        percentile: float = 99.99,
        num_bins: int = 2048,
        mode: str = "off",
        device: torch.device | str | None = None,
    ):
        super().__init__()
        self.axis = axis
        self.is_weight = is_weight
        self.method = method
        self.percentile = percentile
        self.num_bins = num_bins
        self.learn_amax = False
        self.enabled = True  # False: not configured by quantize() (a QuantAdd left alone)
        self.collector: TorchHistogramCollector | None = None
        # On the device of the module it serves: a quantizer that never runs (float stem, unused
        # module) is never moved by forward, and DDP broadcasts every buffer from its device.
        self.register_buffer("amax", torch.tensor(1.0, device=device))
        self.has_amax = False
        self.set_mode(mode)

    # --- state ---------------------------------------------------------------------------
    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(
                f"quantizer mode {mode!r} is unknown; choose one of {', '.join(MODES)}"
            )
        if mode == "calibrate" and not self.is_weight and self.collector is None:
            self.collector = TorchHistogramCollector(self.num_bins)
        self.mode = mode

    def reset(self) -> None:
        if self.collector is not None:
            self.collector.reset()

    def load_calib_amax(self) -> float:
        """Compute amax from the collected histogram by ``self.method`` and use it."""
        if self.collector is None or self.collector.stats.count == 0:
            raise RuntimeError(
                "this quantizer saw no data during calibration; check that forward_loop runs the "
                "model over the calibration batches, or exclude the module"
            )
        amax = safe_amax(self.collector.compute_amax(self.method, self.percentile))
        self.set_amax(amax)
        return amax

    def set_amax(self, amax: float | torch.Tensor) -> None:
        value = torch.as_tensor(amax, dtype=torch.float32, device=self.amax.device).detach()
        if isinstance(self.amax, nn.Parameter) or value.shape == self.amax.shape:
            with torch.no_grad():
                self.amax.copy_(value)
        else:
            self.amax = value.clone()
        self.has_amax = True

    def enable_learned_amax(self) -> None:
        """Make amax a trainable parameter (activations only)."""
        if self.is_weight:
            raise ValueError("weight amax is max |w| per channel; it is not learned")
        if not isinstance(self.amax, nn.Parameter):
            value = self.amax.detach().clone()
            del self._buffers["amax"]
            self.amax = nn.Parameter(value)
        self.learn_amax = True

    def weight_amax(self, w: torch.Tensor) -> torch.Tensor:
        """max |w| over every axis but the channel axis (or over all of w), never zero."""
        a = w.detach().abs()
        if self.axis is None:
            a = a.amax()
        else:
            dims = [i for i in range(w.dim()) if i != self.axis % w.dim()]
            a = a.amax(dim=dims)
        return torch.where(a > 0, a, torch.ones_like(a)).float()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "amax"
        if key in state_dict:  # amax may be per channel: take the saved shape
            self.set_amax(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # --- forward -------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "off":
            return x
        if self.amax.device != x.device:
            # A quantizer made apart from its module (a QuantAdd built after model.cuda()), or
            # model parallel: follow the data (parameters and buffers alike).
            self.to(x.device)
        if self.mode == "calibrate":
            if self.is_weight:
                self.set_amax(self.weight_amax(x))
            else:
                self.collector.collect(x)  # type: ignore[union-attr]
            return x
        if self.is_weight and not torch.onnx.is_in_onnx_export():
            # Weights change during QAT; export reads the buffer so the scale is a constant.
            self.set_amax(self.weight_amax(x))
        if not self.has_amax:
            raise RuntimeError(
                "quantizer has no amax: run int8kit.torch.quantize(..., forward_loop=...) "
                "(or calibrate) before switching to mode 'quantize'"
            )
        return fake_quant(x, self.amax, self.axis, self.learn_amax)

    def extra_repr(self) -> str:
        kind = "weight" if self.is_weight else "input"
        axis = "per-tensor" if self.axis is None else f"axis={self.axis}"
        amax = ""
        if self.has_amax and self.amax.numel() == 1:
            amax = f", amax={float(self.amax):.4g}"
        elif self.has_amax:
            amax = f", amax=[{self.amax.numel()} channels]"
        return f"{kind}, {axis}, mode={self.mode}, method={self.method}{amax}"
