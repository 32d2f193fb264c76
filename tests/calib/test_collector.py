import numpy as np
import pytest

from int8kit.calib import HistogramCollector, safe_amax
from int8kit.calib import methods as M


def test_first_batch_sets_range_and_later_batches_add_bins_of_same_width():
    c = HistogramCollector(num_bins=128)
    c.collect(np.array([1.0, -2.0]))
    width = c.width
    assert width == pytest.approx(2.0 / 128)
    c.collect(np.array([5.0]))
    assert c.width == width
    assert c.counts.size == int(np.ceil(5.0 / width))
    assert c.counts.sum() == 3
    assert c.amax == 5.0
    # 1.0 lands in bin 64, 2.0 (the first max) in the last original bin, 5.0 in the last bin
    assert c.counts[64] == 1 and c.counts[127] == 1 and c.counts[-1] == 1


def test_streamed_histogram_equals_one_shot_histogram():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 1000)).astype(np.float32)
    x[0] *= 5  # first batch sets the widest range
    one, many = HistogramCollector(), HistogramCollector()
    one.collect(x)
    for row in x:
        many.collect(row)
    np.testing.assert_array_equal(one.counts, many.counts)


def test_nan_and_inf_are_counted_not_binned():
    c = HistogramCollector()
    c.collect(np.array([1.0, np.nan, np.inf, -np.inf, -3.0], np.float32))
    assert (c.stats.nan, c.stats.inf, c.stats.count) == (1, 2, 2)
    assert c.amax == 3.0 and c.counts.sum() == 2
    assert (c.stats.min, c.stats.max) == (-3.0, 1.0)


def test_zero_tensor_gives_zero_amax_and_safe_scale():
    c = HistogramCollector()
    c.collect(np.zeros(10, np.float32))
    for method in M.METHODS:
        assert c.compute_amax(method) == 0.0
    assert safe_amax(0.0) > 0 and safe_amax(float("nan")) > 0
    c.collect(np.array([0.5], np.float32))  # zeros seen before the range are kept in bin 0
    assert c.counts[0] == 10 and c.counts.sum() == 11


def test_far_outlier_coarsens_instead_of_exploding():
    c = HistogramCollector()
    c.collect(np.array([1e-6, 1.0], np.float32))
    c.collect(np.array([1e9], np.float32))
    assert c.counts.size <= (1 << 17)
    assert c.counts.sum() == 3
    assert c.edges[-1] >= 1e9


def test_uniform_minmax_and_percentile():
    x = np.random.default_rng(3).uniform(-2, 2, size=(8, 50_000)).astype(np.float32)
    c = HistogramCollector()
    for b in x:
        c.collect(b)
    assert c.compute_amax("minmax") == pytest.approx(np.abs(x).max())
    assert c.compute_amax("percentile", percentile=99.0) == pytest.approx(1.98, abs=0.01)
