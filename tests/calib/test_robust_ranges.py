"""Robust activation ranges from per-sample maxima (mean-max, quantile-max)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from int8kit.calib.collector import HistogramCollector
from int8kit.workflow import CalibConfig, QuantizeConfig, calibrate
from tests.models import model, value


def planted(n=16, outlier=100.0, at=5, seed=0):
    """n samples uniform in [-1, 1] (each reaching |x| = 1 exactly), one with a far outlier."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, 2, 4, 4)).astype(np.float32)
    x[:, 0, 0, 0] = 1.0
    x[at, 1, 2, 2] = -outlier
    return x


def test_mean_and_quantile_of_sample_maxima_ignore_one_outlier_sample():
    x = planted()
    c = HistogramCollector(keep_histogram=False, per_sample=True, keep_sample_maxima=True)
    for i in range(0, 16, 4):
        c.collect(x[i : i + 4], samples=4)
    assert c.compute_amax("minmax") == 100.0
    assert c.compute_amax("mean-max") == pytest.approx((15 * 1.0 + 100.0) / 16)
    assert c.compute_amax("quantile-max", sample_quantile=0.9) == pytest.approx(1.0)
    assert c.compute_amax("quantile-max", sample_quantile=1.0) == 100.0
    np.testing.assert_array_equal(c.sample_maxima, [1.0] * 5 + [100.0] + [1.0] * 10)


def test_batch_major_groups_and_non_dividing_axis():
    c = HistogramCollector(keep_histogram=False, per_sample=True, keep_sample_maxima=True)
    # (samples*heads, ...) with 2 samples of 3 heads: one max per sample, not per head
    c.collect(np.array([[1.0], [2.0], [3.0], [4.0], [5.0], [-9.0]], np.float32), samples=2)
    np.testing.assert_array_equal(c.sample_maxima, [3.0, 9.0])
    # axis 0 unrelated to the samples (broadcast constant): each sample gets the batch max
    c.collect(np.array([[0.5, -7.0]], np.float32), samples=2)
    np.testing.assert_array_equal(c.sample_maxima, [3.0, 9.0, 7.0, 7.0])
    assert c.compute_amax("mean-max") == pytest.approx(26.0 / 4)


def test_nonfinite_values_are_left_out_of_sample_maxima():
    c = HistogramCollector(keep_histogram=False, per_sample=True)
    c.collect(np.array([[1.0, np.nan], [np.inf, -3.0]], np.float32), samples=2)
    assert c.stats.nan == 1 and c.stats.inf == 1
    assert c.compute_amax("mean-max") == pytest.approx(2.0)


def test_collector_without_sample_statistics_says_how_to_get_them():
    c = HistogramCollector()
    c.collect(np.ones(4, np.float32))
    with pytest.raises(ValueError, match="per_sample=True"):
        c.compute_amax("mean-max")


def identity_model():
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu")]
    return model(nodes, [value("x", ("N", 2, 4, 4))], [value("y", ("N", 2, 4, 4))], [])


@pytest.mark.parametrize("method", ["mean-max", "quantile-max"])
def test_calibrated_range_does_not_depend_on_batch_size(method):
    m, x = identity_model(), planted()
    found = []
    for bs in (1, 3, 16):  # 3 does not divide 16: the last batch is short
        batches = [{"x": x[i : i + bs]} for i in range(0, 16, bs)]
        ranges = calibrate(m, batches, CalibConfig(method=method))
        found.append(ranges.amax()["x"])
        assert ranges.tensors["x"].method == method
    assert found[0] == found[1] == found[2]
    want = (15 + 100.0) / 16 if method == "mean-max" else 1.0
    assert found[0] == pytest.approx(want)
    # the Relu output never sees the negative outlier: every sample's max is 1
    assert ranges.amax()["y"] == pytest.approx(1.0)


def test_config_accepts_and_serialises_the_new_methods(tmp_path):
    cfg = QuantizeConfig(
        model="m.onnx",
        output=str(tmp_path / "o.onnx"),
        ranges="r.json",
        calib=CalibConfig(method="quantile-max", sample_quantile=0.5),
    )
    back = QuantizeConfig.from_dict(cfg.to_dict())
    assert back.calib.method == "quantile-max" and back.calib.sample_quantile == 0.5
    with pytest.raises(ValueError, match="sample_quantile"):
        CalibConfig(sample_quantile=1.5)
