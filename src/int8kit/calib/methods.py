"""Range methods: amax of a tensor from the histogram of its |x| values.

Each method is a numpy function of ``(counts, edges)`` — the one implementation that the ONNX
path and the PyTorch path both call. ``edges`` has ``len(counts) + 1`` uniformly spaced entries
starting at 0. Semantics follow TensorRT / pytorch-quantization (see DESIGN.md).
"""

from __future__ import annotations

import numpy as np

METHODS = ("entropy", "minmax", "percentile", "mse")
NUM_QUANT_BINS = 128  # int8 levels on one side of zero
_CHUNK_ELEMENTS = 1 << 22  # bound on temporary array sizes in the vectorised searches
_MSE_MAX_BINS = 16384
_MSE_COARSE = 256  # candidates of the first, coarse pass of the MSE search


def _validate(counts: np.ndarray, edges: np.ndarray) -> None:
    if counts.ndim != 1 or edges.shape != (counts.size + 1,):
        raise ValueError(
            f"histogram needs len(edges) == len(counts) + 1 (got {counts.shape}, {edges.shape})"
        )


def amax_minmax(counts: np.ndarray, edges: np.ndarray) -> float:
    """Upper edge of the last non-empty bin (collectors use their exact running max instead)."""
    _validate(counts, edges)
    nz = np.flatnonzero(counts)
    return float(edges[nz[-1] + 1]) if nz.size else 0.0


def amax_percentile(counts: np.ndarray, edges: np.ndarray, percentile: float = 99.99) -> float:
    """The ``percentile``-th percentile of |x|, interpolated linearly inside its bin."""
    _validate(counts, edges)
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (0, 100] (got {percentile})")
    counts = counts.astype(np.float64)
    total = counts.sum()
    if total == 0:
        return 0.0
    cdf = np.cumsum(counts)
    target = total * percentile / 100.0
    idx = min(int(np.searchsorted(cdf, target, side="left")), counts.size - 1)
    before = cdf[idx - 1] if idx > 0 else 0.0
    frac = (target - before) / counts[idx] if counts[idx] > 0 else 1.0
    return float(edges[idx] + frac * (edges[idx + 1] - edges[idx]))


def entropy_divergences(counts: np.ndarray, start: int = NUM_QUANT_BINS) -> np.ndarray:
    """KL(P||Q) of EntropyCalibration2 for every threshold index i in ``start .. len(counts)``.

    P is counts[:i] with all mass beyond i folded into its last bin; Q merges counts[:i] into 128
    groups (the grouping of ``np.digitize(range(i), np.linspace(0, i, 129))``), spreads each
    group's mass evenly over its non-empty bins and keeps empty bins empty. Bin 0 first takes the
    value of bin 1. Computed in closed form from prefix sums: per group, sum(b log b), sum(b) and
    the count of non-empty bins, which avoids an O(n) loop per candidate.
    """
    b = counts.astype(np.float64).copy()
    n = b.size
    if n < start:
        raise ValueError(f"entropy needs at least {start} bins (got {n})")
    b[0] = b[1]
    total = b.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        blogb = np.where(b > 0, b * np.log(np.where(b > 0, b, 1.0)), 0.0)
    cb = np.concatenate(([0.0], np.cumsum(b)))
    cbl = np.concatenate(([0.0], np.cumsum(blogb)))
    cnz = np.concatenate(([0], np.cumsum(b > 0)))
    log_total = np.log(total) if total > 0 else 0.0

    candidates = np.arange(start, n + 1)
    out = np.empty(candidates.size, dtype=np.float64)
    step = max(1, _CHUNK_ELEMENTS // (NUM_QUANT_BINS + 1))
    for s in range(0, candidates.size, step):
        i = candidates[s : s + step]
        space = np.linspace(0, i, NUM_QUANT_BINS + 1, axis=1)
        bounds = np.ceil(space).astype(np.int64)
        lo, hi = bounds[:, :-1], bounds[:, 1:]
        g_sum = cb[hi] - cb[lo]
        g_blogb = cbl[hi] - cbl[lo]
        g_nz = cnz[hi] - cnz[lo]
        with np.errstate(divide="ignore", invalid="ignore"):
            g_term = np.where(g_sum > 0, g_blogb - g_sum * np.log(g_sum / np.maximum(g_nz, 1)), 0.0)
            kept = cb[i]
            log_kept = np.log(np.where(kept > 0, kept, 1.0))
            kl = g_term.sum(axis=1) + kept * (log_kept - log_total)
            # Fold the tail into the last bin of P (its Q value is the mean of the last group).
            tail = total - kept
            last = b[i - 1]
            q_last = np.log(g_sum[:, -1] / np.maximum(g_nz[:, -1], 1))
            base = log_kept - log_total - q_last
            folded = last + tail
            kl_fix = folded * (np.log(np.where(folded > 0, folded, 1.0)) + base) - np.where(
                last > 0, last * (np.log(np.where(last > 0, last, 1.0)) + base), 0.0
            )
            kl = np.where(tail > 0, kl + np.where(last > 0, kl_fix, np.inf), kl)
            kl = np.where(kept > 0, kl / total, np.inf)
        out[s : s + step] = kl
    return out


def amax_entropy(counts: np.ndarray, edges: np.ndarray) -> float:
    """TensorRT EntropyCalibration2: the threshold with the smallest KL divergence."""
    _validate(counts, edges)
    if counts.sum() == 0:
        return 0.0
    if counts.size < NUM_QUANT_BINS:
        return amax_minmax(counts, edges)
    kl = entropy_divergences(counts)
    best = np.nanmin(kl)
    # Ties go to the larger threshold; the closed form differs from a direct sum only by
    # rounding, so "equal" allows a few ulps of the divergence.
    ties = np.flatnonzero(kl <= best + 1e-9 * abs(best) + 1e-15)
    i = NUM_QUANT_BINS + int(ties[-1])
    return float(edges[i])


def _rebin(counts: np.ndarray, edges: np.ndarray, max_bins: int) -> tuple[np.ndarray, np.ndarray]:
    factor = -(-counts.size // max_bins)
    if factor <= 1:
        return counts, edges
    pad = (-counts.size) % factor
    merged = np.pad(counts, (0, pad)).reshape(-1, factor).sum(axis=1)
    width = (edges[1] - edges[0]) * factor
    return merged, np.arange(merged.size + 1) * width


def mse_errors(
    counts: np.ndarray, edges: np.ndarray, start: int = NUM_QUANT_BINS, which=None
) -> np.ndarray:
    """Histogram-weighted squared error of fake-quantising the bin centres, for each candidate
    amax = centre of bin ``start .. n-1`` (or only the candidates of index array ``which``)."""
    centres = (edges[1:] + edges[:-1]) / 2
    nz = counts > 0
    c, w = centres[nz], counts[nz].astype(np.float64)
    cand = centres[start:] if which is None else centres[start:][which]
    out = np.empty(cand.size)
    step = max(1, _CHUNK_ELEMENTS // max(1, c.size))
    for s in range(0, cand.size, step):
        scale = cand[s : s + step, None] / 127.0
        q = np.minimum(np.round(c[None, :] / scale), 127.0) * scale
        out[s : s + step] = ((q - c[None, :]) ** 2 * w[None, :]).sum(axis=1)
    return out


def amax_mse(counts: np.ndarray, edges: np.ndarray) -> float:
    """The bin centre (from bin 128 on) minimising the fake-quantisation error."""
    _validate(counts, edges)
    if counts.sum() == 0:
        return 0.0
    counts, edges = _rebin(counts, edges, _MSE_MAX_BINS)
    if counts.size <= NUM_QUANT_BINS:
        return amax_minmax(counts, edges)
    k = _mse_argmin(counts, edges)
    return float((edges[NUM_QUANT_BINS + k] + edges[NUM_QUANT_BINS + k + 1]) / 2)


def _mse_argmin(counts: np.ndarray, edges: np.ndarray, coarse: int = _MSE_COARSE) -> int:
    """Index (from bin 128) of the candidate with the smallest ``mse_errors``, coarse to fine:
    every ``stride``-th candidate first (``coarse`` of them), then every candidate within one
    stride of the best. The error is smooth in amax at the scale of a stride (a sum over
    thousands of bins), so this finds the exhaustive search's minimum (tested) at a fraction of
    its cost: the exhaustive search is O(bins^2), about 1 s a tensor at 8192 bins."""
    n = counts.size - NUM_QUANT_BINS
    stride = max(1, n // coarse)
    if stride == 1:
        return int(np.argmin(mse_errors(counts, edges)))
    grid = np.arange(0, n, stride)
    best = int(grid[np.argmin(mse_errors(counts, edges, which=grid))])
    window = np.arange(max(0, best - stride), min(n, best + stride + 1))
    return int(window[np.argmin(mse_errors(counts, edges, which=window))])


def compute_amax(
    method: str, counts: np.ndarray, edges: np.ndarray, percentile: float = 99.99
) -> float:
    """Dispatch to the range method ``method`` (one of METHODS)."""
    if method == "entropy":
        return amax_entropy(counts, edges)
    if method == "percentile":
        return amax_percentile(counts, edges, percentile)
    if method == "mse":
        return amax_mse(counts, edges)
    if method == "minmax":
        return amax_minmax(counts, edges)
    raise ValueError(f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}")


def weight_amax(w: np.ndarray, axis: int = 0) -> np.ndarray:
    """Per-channel amax = max |w| over every axis but ``axis``."""
    w = np.asarray(w)
    axes = tuple(a for a in range(w.ndim) if a != axis % w.ndim)
    return np.abs(w).max(axis=axes).astype(np.float32) if axes else np.abs(w).astype(np.float32)
