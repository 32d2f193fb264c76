"""A HistogramCollector that builds its histogram where the tensor lives (CPU or GPU).

The growth rule, the result and the range methods are the numpy collector's own
(`int8kit.calib.collector.HistogramCollector`): only the per-batch work — |x|, min/max,
NaN/Inf counts and the bincount on pre-scaled |x| — runs in torch on the tensor's device.
Each batch hands back one small vector of bin counts, so `compute_amax` gets numpy
``(counts, edges)`` and calls `int8kit.calib.methods.compute_amax` like the ONNX path.
"""

from __future__ import annotations

import numpy as np
import torch

from int8kit.calib.collector import HistogramCollector


class TorchHistogramCollector(HistogramCollector):
    """Streaming |x| histogram of torch tensors; see HistogramCollector for the contract."""

    @torch.no_grad()
    def collect(self, x: torch.Tensor) -> None:  # type: ignore[override]
        if not isinstance(x, torch.Tensor):
            super().collect(np.asarray(x))
            return
        if x.numel() == 0:
            return
        x = x.detach().float().reshape(-1)
        finite = torch.isfinite(x)
        n_bad = x.numel() - int(finite.sum())
        if n_bad:
            n_nan = int(torch.isnan(x).sum())
            self.stats.nan += n_nan
            self.stats.inf += n_bad - n_nan
            x = x[finite]
            if x.numel() == 0:
                return
        xmin, xmax = torch.aminmax(x)
        xmin, xmax = float(xmin), float(xmax)
        s = self.stats
        s.count += x.numel()
        s.min = min(s.min, xmin)
        s.max = max(s.max, xmax)
        batch_amax = max(-xmin, xmax)
        self.amax = max(self.amax, batch_amax)
        if self.keep_histogram:
            self._add_torch(x.abs(), batch_amax)

    def _add_torch(self, a: torch.Tensor, batch_amax: float) -> None:
        if not self._make_room(batch_amax, a.numel()):  # the numpy collector's range rule
            return
        nbins = self.counts.size
        # Same arithmetic as the numpy collector: float32 multiply by float32(1/width), truncate.
        inv = torch.tensor(np.float32(1.0 / self.width), device=a.device)
        idx = (a * inv).to(torch.int64).clamp_(max=nbins - 1)
        self.counts += torch.bincount(idx, minlength=nbins).cpu().numpy()
