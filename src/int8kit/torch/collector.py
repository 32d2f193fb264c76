"""A HistogramCollector that builds its histogram where the tensor lives (CPU or GPU).

The range rule (`HistogramCollector._make_room`: first non-zero batch, growth), the result and
the range methods are the numpy collector's own. A CPU tensor goes to the numpy collector as it
is (a zero-copy view). A GPU tensor goes to `int8kit.torch.histogram.DeviceHistogram`, which
keeps the statistics, the range and the counts on the device and applies the same range rule
there: no host read per batch. Reading any result (``stats``, ``amax``, ``width``, ``counts``,
and so `compute_amax`, `histogram`, the cross-rank merge) copies the device state back once and
makes the host state current; a later GPU batch starts from it. So `compute_amax` gets numpy
``(counts, edges)`` and calls `int8kit.calib.methods.compute_amax` like the ONNX path.

Where the CUDA kernels cannot be compiled (or ``INT8KIT_TORCH_HIST`` names a host-rule binning),
the range rule runs on the host: one host read (min and max) per batch, the counts on the device.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from int8kit.calib.collector import HistogramCollector
from int8kit.torch import histogram

# The state the device may hold: reading one of these makes the host copy current first.
_SHARED_FIELDS = ("stats", "amax", "width", "counts", "_pending_zeros")


def _field(name: str) -> property:
    key = "_host" + name

    def get(self):
        self._fold()
        return self.__dict__[key]

    def set(self, value):
        # The host-rule path keeps only counts of the host's grid on the device: setting the
        # statistics needs no fold there (and must not wait for the GPU every batch).
        dev = self.__dict__.get("_device")
        if isinstance(dev, histogram.DeviceHistogram) or name in ("counts", "width"):
            self._fold(force=True)
        self.__dict__[key] = value

    return property(get, set)


class TorchHistogramCollector(HistogramCollector):
    """Streaming |x| histogram of torch tensors; see HistogramCollector for the contract."""

    stats = _field("stats")
    amax = _field("amax")
    width = _field("width")
    counts = _field("counts")
    _pending_zeros = _field("_pending_zeros")

    def reset(self) -> None:
        # The device state (a DeviceHistogram, or device counts of the host-rule path) is dropped.
        self.__dict__["_device"] = None
        self.__dict__["_collecting"] = False
        super().reset()

    def _fold(self, force: bool = False) -> None:
        """Make the host state current. Inside the host-rule `collect` only ``force`` folds (the
        range rule needs the size of the counts there, and must not wait for the GPU)."""
        dev = self.__dict__.get("_device")
        if dev is None or (self.__dict__.get("_collecting") and not force):
            return
        self.__dict__["_device"] = None
        d = self.__dict__
        if isinstance(dev, histogram.DeviceHistogram):
            stats, amax, width, counts, pending = dev.read()
            d["_hoststats"], d["_hostamax"], d["_hostwidth"] = stats, amax, width
            d["_hostcounts"], d["_host_pending_zeros"] = counts, pending
        else:  # host-rule path: device counts of the host's grid
            d["_hostcounts"] += dev.cpu().numpy()

    def _grow(self, new_amax: float) -> None:
        self._fold(force=True)  # the device counts have the old size (and width)
        super()._grow(new_amax)

    @torch.no_grad()
    def collect(self, x: torch.Tensor, *args, **kwargs) -> None:  # type: ignore[override]
        if not isinstance(x, torch.Tensor):
            super().collect(np.asarray(x), *args, **kwargs)
            return
        if x.numel() == 0:
            return
        x = x.detach()
        if x.device.type == "cpu" or args or kwargs or self.per_sample:
            super().collect(x.float().cpu().numpy(), *args, **kwargs)
            return
        x = x.reshape(-1)
        if x.dtype != torch.float32:
            x = x.float()
        if histogram.device_rule(x) and self._device_histogram(x.device) is not None:
            self.__dict__["_device"].update(x)
            return
        self._collect_host_rule(x)

    def _device_histogram(self, device: torch.device) -> histogram.DeviceHistogram | None:
        """This collector's DeviceHistogram on ``device``, made from the host state if needed."""
        dev = self.__dict__.get("_device")
        if isinstance(dev, histogram.DeviceHistogram) and dev.device == device:
            return dev
        self._fold(force=True)
        d = self.__dict__
        counts = d["_hostcounts"]
        if counts is not None and counts.size > max(histogram.MAX_BINS, self.num_bins):
            return None  # a histogram set by hand past the device's room: host rule
        dev = histogram.DeviceHistogram(device, self.num_bins, self.keep_histogram)
        dev.load(d["_hoststats"], d["_hostamax"], d["_hostwidth"], counts, d["_host_pending_zeros"])
        d["_device"] = dev
        return dev

    def _collect_host_rule(self, x: torch.Tensor) -> None:
        """One host read per batch (min and max) for the range rule; counts on the device."""
        if isinstance(self.__dict__.get("_device"), histogram.DeviceHistogram):
            self._fold(force=True)
        self.__dict__["_collecting"] = True
        try:
            xmin, xmax = torch.stack(torch.aminmax(x)).tolist()
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
            room = self._make_room(batch_amax, x.numel())  # the numpy collector's range rule
            if room:
                dev = self.__dict__.get("_device")
                if dev is None or dev.device != x.device:
                    self._fold(force=True)
                    dev = torch.zeros(self.counts.size, dtype=torch.int64, device=x.device)
                    self.__dict__["_device"] = dev
                histogram.add_counts(x, float(np.float32(1.0 / self.width)), dev)
        finally:
            self.__dict__["_collecting"] = False

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
