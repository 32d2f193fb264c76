"""Merging collectors of data shards (what torch.distributed calibration does across ranks)."""

import numpy as np
import pytest

from int8kit.calib import merge
from int8kit.calib.collector import HistogramCollector


def relu6(rng, scale, n=50_000):
    return np.clip(rng.normal(0, 1.5, n), 0, 6).astype(np.float32) * scale


def collectors(*shards):
    out = []
    for shard in shards:
        c = HistogramCollector()
        for x in shard:
            c.collect(x)
        out.append(c)
    return out


def test_rebin_same_width_and_integer_factor_are_exact():
    counts = np.array([5, 0, 3, 7, 1, 2], dtype=np.int64)
    same = merge.rebin(counts, 0.5, merge.Grid(0.5, 8))
    np.testing.assert_array_equal(same, [5, 0, 3, 7, 1, 2, 0, 0])
    doubled = merge.rebin(counts, 0.5, merge.Grid(1.0, 3))
    np.testing.assert_array_equal(doubled, [5, 10, 3])
    # Bin 0 (the zeros of a ReLU) stays in bin 0 on a finer grid; the total is kept.
    finer = merge.rebin(counts, 1.0, merge.Grid(0.25, 24))
    assert finer[0] == 5 and finer.sum() == counts.sum() and (finer >= 0).all()


def test_merge_of_a_coarser_shard_is_within_a_bin_of_one_collector():
    rng = np.random.default_rng(0)
    a = [relu6(rng, 1.0) for _ in range(4)]
    b = [relu6(rng, 4.0) for _ in range(4)]  # 4x larger: binned 4x coarser on its own
    (one,) = collectors(a + b)
    s0, s1 = collectors(a, b)
    assert s1.width > 3 * s0.width
    merged = HistogramCollector()
    merge.merge_into(merged, [s0, s1])
    assert merged.width == one.width and merged.counts.size == one.counts.size
    assert merged.counts.sum() == one.counts.sum()
    assert merged.stats == one.stats and merged.amax == one.amax
    for method in ("entropy", "percentile", "mse"):
        bins = abs(merged.compute_amax(method) - one.compute_amax(method)) / one.width
        assert bins <= 2, (method, bins)


def test_merge_keeps_zeros_seen_before_any_range_and_growth_rule():
    rng = np.random.default_rng(1)
    zeros = [np.zeros(1000, np.float32)]
    data = [relu6(rng, 1.0), relu6(rng, 1.0) * 100]  # grows past MAX_BINS: bins are merged
    (one,) = collectors(zeros + data)
    s0, s1 = collectors(zeros, data)
    assert s0.counts is None and s0._pending_zeros == 1000
    merged = HistogramCollector()
    merge.merge_into(merged, [s0, s1])
    np.testing.assert_array_equal(merged.counts, one.counts)
    assert merged.width == one.width and merged.stats == one.stats


@pytest.mark.parametrize("empty_first", [True, False])
def test_merge_with_a_shard_that_saw_nothing(empty_first):
    rng = np.random.default_rng(2)
    (full,) = collectors([relu6(rng, 2.0)])
    empty = HistogramCollector()
    merged = HistogramCollector()
    merge.merge_into(merged, [empty, full] if empty_first else [full, empty])
    np.testing.assert_array_equal(merged.counts, full.counts)
    assert merged.compute_amax("entropy") == full.compute_amax("entropy")
