"""A HistogramCollector that builds its histogram where the tensor lives (CPU or GPU).

The range rule (`HistogramCollector._make_room`: first non-zero batch, growth), the result and
the range methods are the numpy collector's own. A CPU tensor goes to the numpy collector as it
is (a zero-copy view). A GPU tensor costs one host read per batch — its min and max, which the
range rule needs — and the counts stay on the device (`int8kit.torch.histogram`) until they are
read: `counts` (and so `compute_amax`, `histogram`) copies them back once, and a growth of the
range folds them first. So `compute_amax` gets numpy ``(counts, edges)`` and calls
`int8kit.calib.methods.compute_amax` like the ONNX path.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from int8kit.calib.collector import HistogramCollector
from int8kit.torch import histogram


class TorchHistogramCollector(HistogramCollector):
    """Streaming |x| histogram of torch tensors; see HistogramCollector for the contract."""

    def reset(self) -> None:
        self._device_counts: torch.Tensor | None = None
        self._collecting = False
        super().reset()

    # The host counts plus whatever the device holds: reading folds the device counts in, except
    # inside `collect`, where the range rule only needs the size (and must not wait for the GPU).
    @property
    def counts(self) -> np.ndarray | None:  # type: ignore[override]
        if not self.__dict__.get("_collecting"):
            self._fold()
        return self._counts

    @counts.setter
    def counts(self, value: np.ndarray | None) -> None:
        self._fold()
        self._counts = value

    def _fold(self) -> None:
        dev = self.__dict__.get("_device_counts")
        if dev is not None:
            self._device_counts = None
            self._counts += dev.cpu().numpy()

    def _grow(self, new_amax: float) -> None:
        self._fold()  # the device counts have the old size (and width)
        super()._grow(new_amax)

    @torch.no_grad()
    def collect(self, x: torch.Tensor, *args, **kwargs) -> None:  # type: ignore[override]
        if not isinstance(x, torch.Tensor):
            super().collect(np.asarray(x), *args, **kwargs)
            return
        if x.numel() == 0:
            return
        x = x.detach()
        if x.device.type == "cpu" or args or kwargs or getattr(self, "per_sample", False):
            super().collect(x.float().cpu().numpy(), *args, **kwargs)
            return
        x = x.reshape(-1)
        if x.dtype != torch.float32:
            x = x.float()
        xmin, xmax = torch.stack(torch.aminmax(x)).tolist()  # the one host read per batch
        if not (math.isfinite(xmin) and math.isfinite(xmax)):
            x, xmin, xmax = self._drop_nonfinite(x)
            if x.numel() == 0:
                return
        s = self.stats
        s.count += x.numel()
        s.min = min(s.min, xmin)
        s.max = max(s.max, xmax)
        batch_amax = max(-xmin, xmax)
        self.amax = max(self.amax, batch_amax)
        if not self.keep_histogram:
            return
        self._collecting = True
        try:
            room = self._make_room(batch_amax, x.numel())  # the numpy collector's range rule
        finally:
            self._collecting = False
        if room:
            dev = self._device_counts
            if dev is None or dev.device != x.device:
                self._fold()
                dev = torch.zeros(self._counts.size, dtype=torch.int64, device=x.device)
                self._device_counts = dev
            histogram.add_counts(x, float(np.float32(1.0 / self.width)), dev)

    def _drop_nonfinite(self, x: torch.Tensor) -> tuple[torch.Tensor, float, float]:
        """Count NaN/Inf (rare: extra host reads), return the finite values and their range."""
        finite = torch.isfinite(x)
        n_nan, n_finite = torch.stack((torch.isnan(x).sum(), finite.sum())).tolist()
        self.stats.nan += n_nan
        self.stats.inf += x.numel() - n_finite - n_nan
        x = x[finite]
        if x.numel() == 0:
            return x, 0.0, 0.0
        xmin, xmax = torch.stack(torch.aminmax(x)).tolist()
        return x, xmin, xmax
