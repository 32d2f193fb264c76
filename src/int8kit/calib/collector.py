"""Streaming statistics of one tensor: running |max|, a histogram of |x| that grows in range,
and (``per_sample``) the |max| of every calibration sample for the robust range methods.

Memory is bounded by the number of bins, never by the number of batches; ``quantile-max`` keeps
one float per calibration sample, never the data. The collector follows
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
# Robust ranges from per-sample maxima (NNCF's default activation estimator takes per-batch
# min/max and averages them; NNCF calibrates one sample per batch, and so do these, whatever the
# data loader's batch size): "mean-max" = mean over samples of max|x|, "quantile-max" = the
# ``sample_quantile`` quantile of those maxima.
SAMPLE_METHODS = ("mean-max", "quantile-max")
DEFAULT_SAMPLE_QUANTILE = 0.9


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

    def __init__(
        self,
        num_bins: int = DEFAULT_BINS,
        keep_histogram: bool = True,
        per_sample: bool = False,
        keep_sample_maxima: bool = False,
    ):
        if num_bins < 128:
            raise ValueError(f"num_bins must be at least 128 (got {num_bins})")
        self.num_bins = num_bins
        self.keep_histogram = keep_histogram
        # per_sample: also a running sum/count of per-sample max|x| (a "sample" is one slice
        # along axis 0, or one of ``samples`` equal groups of it; see ``collect``).
        self.per_sample = per_sample or keep_sample_maxima
        self.keep_sample_maxima = keep_sample_maxima
        self.reset()

    def reset(self) -> None:
        self.stats = TensorStats()
        self.amax = 0.0
        self.width = 0.0
        self.counts: np.ndarray | None = None
        self._pending_zeros = 0  # zeros seen before the range was known
        self.sample_sum = 0.0  # sum over samples of max|x| (per_sample)
        self.sample_count = 0
        self._sample_maxima: list[np.ndarray] = []

    # --- collect -------------------------------------------------------------------------
    def collect(self, x: np.ndarray, samples: int | None = None) -> None:
        """Add a batch. ``samples``: how many calibration samples it holds (per_sample only);
        the tensor's axis 0 is split into that many equal groups (batch-major layouts such as
        (batch*heads, ...) included); when axis 0 does not divide, each of the ``samples`` gets
        the batch's max. None: every slice along axis 0 is a sample."""
        x = np.asarray(x)
        if x.size == 0:
            return
        if x.dtype != np.float32:
            x = x.astype(np.float32)
        if self.per_sample:
            # Row-wise min/max cost what the global ones cost; the global ones follow from them.
            rows = _sample_rows(x, samples)
            rmin, rmax = rows.min(axis=1), rows.max(axis=1)
            xmin, xmax = float(rmin.min()), float(rmax.max())
            if math.isfinite(xmin) and math.isfinite(xmax):
                self._add_sample_maxima(np.maximum(-rmin, rmax), x.shape, samples)
        x = x.reshape(-1)
        if not self.per_sample:
            xmin, xmax = float(x.min()), float(x.max())
        if not (math.isfinite(xmin) and math.isfinite(xmax)):
            finite = np.isfinite(x)
            n_nan = int(np.isnan(x).sum())
            self.stats.nan += n_nan
            self.stats.inf += int(x.size - finite.sum()) - n_nan
            if self.per_sample:  # per-sample maxima of the finite values (NaN/Inf left out)
                rows = _sample_rows(x, samples)
                rows = np.where(np.isfinite(rows), rows, np.float32(0))
                self._add_sample_maxima(np.abs(rows).max(axis=1), x.shape, samples)
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

    def _add_sample_maxima(self, maxima: np.ndarray, shape, samples: int | None) -> None:
        maxima = maxima.astype(np.float64)
        if samples and maxima.size != samples:  # axis 0 does not hold the samples
            maxima = np.full(samples, maxima.max())
        self.sample_sum += float(maxima.sum())
        self.sample_count += maxima.size
        if self.keep_sample_maxima:
            self._sample_maxima.append(maxima.astype(np.float32))

    @property
    def sample_maxima(self) -> np.ndarray:
        """max|x| of every sample seen (``keep_sample_maxima``), in order."""
        if not self._sample_maxima:
            return np.zeros(0, np.float32)
        return np.concatenate(self._sample_maxima)

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

    def compute_amax(
        self,
        method: str = "entropy",
        percentile: float = 99.99,
        sample_quantile: float = DEFAULT_SAMPLE_QUANTILE,
    ) -> float:
        """amax by ``method``; 0.0 when the tensor was never non-zero (see ``safe_amax``)."""
        if method in SAMPLE_METHODS:
            return self._sample_amax(method, sample_quantile)
        if method == "minmax" or self.counts is None:
            return self.amax
        counts, edges = self.histogram
        return methods.compute_amax(method, counts, edges, percentile=percentile)

    def _sample_amax(self, method: str, q: float) -> float:
        if not self.per_sample or (method == "quantile-max" and not self.keep_sample_maxima):
            raise ValueError(
                f"method {method!r} needs per-sample maxima: make the collector with "
                f"per_sample=True{' and keep_sample_maxima=True' if method != 'mean-max' else ''}"
            )
        if not self.sample_count:
            return self.amax  # only NaN/Inf or nothing seen
        if method == "mean-max":
            return min(self.sample_sum / self.sample_count, self.amax)
        return float(np.quantile(self.sample_maxima.astype(np.float64), q))


def _sample_rows(x: np.ndarray, samples: int | None) -> np.ndarray:
    """``x`` as (samples, -1) when axis 0 splits into ``samples`` equal groups, else one row
    per slice along axis 0 (a 0-d tensor: one row)."""
    if x.ndim == 0:
        return x.reshape(1, 1)
    n = samples if samples and x.shape[0] % samples == 0 else x.shape[0]
    return x.reshape(n, -1)


def safe_amax(amax: float) -> float:
    """A usable amax for a tensor whose range is zero or not finite: scale must be positive."""
    if not math.isfinite(amax) or amax <= 0.0:
        return 1.0
    return float(amax)
