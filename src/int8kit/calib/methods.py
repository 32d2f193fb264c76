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


def mse_errors(counts: np.ndarray, edges: np.ndarray, start: int = NUM_QUANT_BINS) -> np.ndarray:
    """Histogram-weighted squared error of fake-quantising the bin centres, for each candidate
    amax = centre of bin ``start .. n-1``: sum over bins of count * (min(round(c/s), 127) s - c)^2
    with s = amax / 127.

    Closed form per int8 level j instead of a sum over bins: the bins that round to j are one
    run of the (uniform) grid, so their error sum(w (j s - c)^2) = W2 - 2 j s W1 + (j s)^2 W0
    comes from prefix sums of w, w c and w c^2 (level 127 also takes every clipped bin). That is
    O(128) per candidate rather than O(bins): exact (up to float rounding) and fast enough to try
    every candidate at 16384 bins."""
    w = counts.astype(np.float64)
    n = w.size
    width = float(edges[1] - edges[0])
    c = (edges[1:] + edges[:-1]) / 2
    p0 = np.concatenate(([0.0], np.cumsum(w)))
    p1 = np.concatenate(([0.0], np.cumsum(w * c)))
    total2 = float((w * c * c).sum())
    # With b_j (j = 1..127) the first bin of level j, summation by parts turns the per-level
    # sums into sums over the boundaries: sum_j j W1_j = 127 P1[n] - sum_j P1[b_j] and
    # sum_j j^2 W0_j = 127^2 P0[n] - sum_j (2j - 1) P0[b_j]: two gathers per candidate.
    top = NUM_QUANT_BINS - 1
    j = np.arange(1, NUM_QUANT_BINS, dtype=np.float64)
    cand = np.arange(start, n)
    out = np.empty(cand.size)
    step = max(1, _CHUNK_ELEMENTS // (4 * NUM_QUANT_BINS))
    for s0 in range(0, cand.size, step):
        scale = c[cand[s0 : s0 + step]] / float(top)
        # level j starts at the first centre (k + 0.5) width >= (j - 0.5) scale
        b = np.clip(np.ceil((j[None, :] - 0.5) * (scale[:, None] / width) - 0.5), 0, n)
        b = b.astype(np.int64)
        s1 = top * p1[n] - p1[b].sum(axis=1)
        s0w = top * top * p0[n] - (p0[b] * (2 * j - 1)).sum(axis=1)
        out[s0 : s0 + step] = np.maximum(total2 - 2 * scale * s1 + scale * scale * s0w, 0.0)
    return out


def amax_mse(counts: np.ndarray, edges: np.ndarray) -> float:
    """The bin centre (from bin 128 on) minimising the fake-quantisation error."""
    _validate(counts, edges)
    if counts.sum() == 0:
        return 0.0
    counts, edges = _rebin(counts, edges, _MSE_MAX_BINS)
    if counts.size <= NUM_QUANT_BINS:
        return amax_minmax(counts, edges)
    k = int(np.argmin(mse_errors(counts, edges)))
    return float((edges[NUM_QUANT_BINS + k] + edges[NUM_QUANT_BINS + k + 1]) / 2)


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
