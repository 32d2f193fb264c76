"""Merge histogram collectors that saw different data (shards of one calibration set).

The result is what one collector that saw the shards one after the other would hold: the
running max and the counts exactly; the histogram on the grid that collector would have — the
bin width of the first shard with a non-zero value, grown by `HistogramCollector`'s own range
rule to cover the largest value of all shards. A shard binned at another width is moved onto
that grid by its cumulative counts, linear inside each of its bins; its bin 0 stays in bin 0
(it holds the exact zeros of a ReLU, which are not spread evenly over the bin). So the merged
histogram equals the one-collector histogram bin for bin when the widths agree, and is within
one source bin of it otherwise.

`int8kit.torch.distributed` uses this with the shards on different ranks (only these statistics
travel); it works as well for shards collected in one process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from int8kit.calib.collector import HistogramCollector, TensorStats


@dataclass
class Grid:
    """A histogram grid: ``size`` bins of ``width`` from 0; width 0 means no range yet."""

    width: float
    size: int


def grid_of(c: HistogramCollector) -> Grid:
    counts = c.counts
    return Grid(0.0, 0) if counts is None else Grid(float(c.width), int(counts.size))


def common_grid(grids: list[Grid], amax: float, num_bins: int) -> Grid:
    """The grid of one collector that saw the shards in order (see the module docstring)."""
    first = next((g for g in grids if g.width > 0), None)
    if first is None:
        return Grid(0.0, 0)
    probe = HistogramCollector(num_bins)  # the range rule, applied to an empty histogram
    probe.width = first.width
    probe.counts = np.zeros(first.size, dtype=np.int64)
    if amax > first.size * first.width:
        probe._grow(amax)
    return Grid(float(probe.width), int(probe.counts.size))


def rebin(counts: np.ndarray, width: float, grid: Grid) -> np.ndarray:
    """``counts`` (bins of ``width`` from 0) on ``grid``; the total is kept exactly."""
    out = np.zeros(grid.size, dtype=np.int64)
    total = int(counts.sum())
    if total == 0 or grid.size == 0:
        return out
    if width == grid.width and counts.size <= grid.size:
        out[: counts.size] = counts
        return out
    # Cumulative counts at the source edges, with bin 0's mass placed at 0.
    cum = np.concatenate(([0], np.cumsum(counts, dtype=np.int64))).astype(np.float64)
    cum[0] = counts[0]
    src_edges = np.arange(counts.size + 1, dtype=np.float64)
    ratio = grid.width / width
    at = np.interp(np.arange(grid.size + 1, dtype=np.float64) * ratio, src_edges, cum)
    cut = np.floor(at + 0.5).astype(np.int64)
    cut[0], cut[-1] = 0, total  # everything past the last edge goes to the last bin
    np.maximum.accumulate(cut, out=cut)
    return np.diff(cut)


def merged_stats(stats: list[TensorStats]) -> TensorStats:
    return TensorStats(
        count=sum(s.count for s in stats),
        min=min((s.min for s in stats), default=math.inf),
        max=max((s.max for s in stats), default=-math.inf),
        nan=sum(s.nan for s in stats),
        inf=sum(s.inf for s in stats),
    )


def merge_into(target: HistogramCollector, shards: list[HistogramCollector]) -> None:
    """Set ``target`` to the merge of ``shards`` (in order); ``target`` may be one of them."""
    grids = [grid_of(c) for c in shards]
    amax = max(c.amax for c in shards)
    grid = common_grid(grids, amax, target.num_bins)
    counts = None
    if grid.width > 0:
        counts = np.zeros(grid.size, dtype=np.int64)
        for c, g in zip(shards, grids, strict=True):
            if g.width > 0:
                counts += rebin(c.counts, g.width, grid)
            counts[0] += c._pending_zeros
    pending = 0 if counts is not None else sum(c._pending_zeros for c in shards)
    stats = merged_stats([c.stats for c in shards])
    target.stats, target.amax, target._pending_zeros = stats, amax, pending
    target.width = grid.width
    target.counts = counts
