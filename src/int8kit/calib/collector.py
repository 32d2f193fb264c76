"""Streaming statistics of one tensor: running |max|, a histogram of |x| that grows in range.

Memory is bounded by the number of bins, never by the number of batches. The collector follows
the Model Optimizer calibrator contract: ``collect(x)``, ``reset()``, ``compute_amax(method)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from int8kit.calib import kernels, methods

DEFAULT_BINS = 2048
# A histogram that would grow past this many bins (a far outlier) merges neighbouring bins by an
# integer factor instead: the counts stay exact, only the resolution coarsens.
MAX_BINS = 1 << 17


@dataclass
class TensorStats:
    """What a collector saw: counts over finite values, and the NaN/Inf it left out."""

    count: int = 0
    min: float = math.inf
    max: float = -math.inf
    nan: int = 0
    inf: int = 0

    def to_dict(self) -> dict:
        return {
            "count": self.count,
            "min": self.min if self.count else None,
            "max": self.max if self.count else None,
            "nan": self.nan,
            "inf": self.inf,
        }


class HistogramCollector:
    """Histogram of |x| with ``num_bins`` bins over [0, first non-zero batch max].

    When a later batch exceeds the range, the bin width stays and bins are appended, so earlier
    counts never move (TensorRT's and pytorch-quantization's behaviour).
    """

    def __init__(self, num_bins: int = DEFAULT_BINS, keep_histogram: bool = True):
        if num_bins < 128:
            raise ValueError(f"num_bins must be at least 128 (got {num_bins})")
        self.num_bins = num_bins
        self.keep_histogram = keep_histogram
        self.reset()

    def reset(self) -> None:
        self.stats = TensorStats()
        self.amax = 0.0
        self.width = 0.0
        self.counts: np.ndarray | None = None
        self._pending_zeros = 0  # zeros seen before the range was known

    # --- collect -------------------------------------------------------------------------
    def collect(self, x: np.ndarray) -> None:
        x = np.asarray(x)
        if x.size == 0:
            return
        if x.dtype != np.float32:
            x = x.astype(np.float32)
        x = x.reshape(-1)
        xmin, xmax = float(x.min()), float(x.max())
        if not (math.isfinite(xmin) and math.isfinite(xmax)):
            finite = np.isfinite(x)
            n_nan = int(np.isnan(x).sum())
            self.stats.nan += n_nan
            self.stats.inf += int(x.size - finite.sum()) - n_nan
            x = x[finite]
            if x.size == 0:
                return
            xmin, xmax = float(x.min()), float(x.max())
        s = self.stats
        s.count += x.size
        s.min = min(s.min, xmin)
        s.max = max(s.max, xmax)
        batch_amax = max(-xmin, xmax)
        self.amax = max(self.amax, batch_amax)
        if self.keep_histogram:
            self._add_to_histogram(x, batch_amax)

    def add_zeros(self, n: int) -> None:
        """Count ``n`` more exact zeros (the padding a zero Pad adds around a tensor)."""
        if n <= 0:
            return
        s = self.stats
        s.count += n
        s.min = min(s.min, 0.0)
        s.max = max(s.max, 0.0)
        if not self.keep_histogram:
            return
        if self.counts is None:
            self._pending_zeros += n
        else:
            self.counts[0] += n

    def _make_room(self, batch_amax: float, size: int) -> bool:
        """Set the range on the first non-zero batch and grow it for a larger one; False when
        the batch (``size`` values, all zero before any range exists) is counted already."""
        if self.counts is None:
            if batch_amax == 0.0:
                self._pending_zeros += size
                return False
            self.width = batch_amax / self.num_bins
            self.counts = np.zeros(self.num_bins, dtype=np.int64)
            self.counts[0] += self._pending_zeros
            self._pending_zeros = 0
        if batch_amax > self.counts.size * self.width:
            self._grow(batch_amax)
        return True

    def _add_to_histogram(self, x: np.ndarray, batch_amax: float) -> None:
        """Bin |x| (x finite, flat float32). Index = trunc(|x| * (1/width)) in float32, the last
        bin also takes anything at or past its upper edge."""
        if self._make_room(batch_amax, x.size):
            kernels.add_counts(x, np.float32(1.0 / self.width), self.counts)

    def _grow(self, new_amax: float) -> None:
        assert self.counts is not None
        needed = math.ceil(new_amax / self.width)
        factor = 1
        while needed > MAX_BINS * factor:
            factor *= 2
        if factor > 1:
            # Sums of each run of `factor` bins (the last run may be short). reduceat instead
            # of padding to a multiple of `factor`, which can be astronomically large.
            starts = np.arange(0, self.counts.size, factor)
            self.counts = np.add.reduceat(self.counts, starts).astype(np.int64, copy=False)
            self.width *= factor
            needed = math.ceil(new_amax / self.width)
        if needed > self.counts.size:
            self.counts = np.pad(self.counts, (0, needed - self.counts.size))

    # --- results -------------------------------------------------------------------------
    @property
    def edges(self) -> np.ndarray:
        """Bin edges, ``len(counts) + 1`` of them, starting at 0."""
        n = 0 if self.counts is None else self.counts.size
        return np.arange(n + 1, dtype=np.float64) * self.width

    @property
    def histogram(self) -> tuple[np.ndarray, np.ndarray]:
        if self.counts is None:
            return np.zeros(0, dtype=np.int64), np.zeros(1)
        return self.counts, self.edges

    def compute_amax(self, method: str = "entropy", percentile: float = 99.99) -> float:
        """amax by ``method``; 0.0 when the tensor was never non-zero (see ``safe_amax``)."""
        if method == "minmax" or self.counts is None:
            return self.amax
        counts, edges = self.histogram
        return methods.compute_amax(method, counts, edges, percentile=percentile)


def safe_amax(amax: float) -> float:
    """A usable amax for a tensor whose range is zero or not finite: scale must be positive."""
    if not math.isfinite(amax) or amax <= 0.0:
        return 1.0
    return float(amax)
