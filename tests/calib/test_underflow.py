import numpy as np
import pytest

from int8kit.calib import HistogramCollector
from int8kit.calib.underflow import WARN_SHARE, warning, zero_share


def exact_share(x: np.ndarray, amax: float) -> float:
    """Share of the non-zero values of x that int8 QuantizeLinear at amax maps to 0."""
    scale = np.float32(amax / 127)
    q = np.clip(np.rint(x / scale), -128, 127)
    nonzero = x != 0
    return float((q[nonzero] == 0).mean())


def share_of(x: np.ndarray, method: str = "minmax") -> tuple[float, float]:
    c = HistogramCollector()
    for batch in np.array_split(x, 4):
        c.collect(batch)
    amax = c.compute_amax(method)
    return zero_share(c.counts, c.width, amax, c.stats.to_dict()), amax


def test_heavy_tailed_positive_tensor_matches_the_exact_share():
    # a power spectrum's kind of range: exp of a wide normal, never 0, spans ~12 decades
    x = np.exp(np.random.default_rng(0).normal(8.0, 4.0, 200_000)).astype(np.float32)
    share, amax = share_of(x)
    want = exact_share(x, amax)
    assert want > 0.9  # almost everything rounds to 0
    assert share == pytest.approx(want, abs=0.01)
    assert share >= WARN_SHARE


def test_relu_zeros_do_not_count_and_a_normal_tensor_stays_quiet():
    x = np.maximum(np.random.default_rng(1).normal(size=200_000), 0).astype(np.float32)
    share, amax = share_of(x)
    assert (x == 0).mean() > 0.45  # half the values are exact zeros: not counted
    assert share == pytest.approx(exact_share(x, amax), abs=0.005)
    assert share < 0.05


def test_signed_tensor_leaves_bin_zero_out_as_a_lower_bound():
    x = np.random.default_rng(2).standard_t(2, 200_000).astype(np.float32)
    share, amax = share_of(x)
    exact = exact_share(x, amax)
    assert 0.5 < exact and share <= exact + 1e-9  # min < 0 < max: bin 0 may hold zeros
    assert share > exact - 0.2


def test_share_uses_the_chosen_range_not_the_max():
    x = np.exp(np.random.default_rng(3).normal(0.0, 1.0, 100_000)).astype(np.float32)
    share_max, _ = share_of(x, "minmax")
    share_pct, amax_pct = share_of(x, "percentile")
    assert share_pct < share_max  # a smaller amax, a smaller step
    assert share_pct == pytest.approx(exact_share(x, amax_pct), abs=0.01)


def test_no_histogram_or_no_nonzero_value_gives_none():
    c = HistogramCollector()
    assert zero_share(c.counts, c.width, 1.0, c.stats.to_dict()) is None
    c.collect(np.zeros(10, np.float32))
    assert zero_share(c.counts, c.width, 1.0, c.stats.to_dict()) is None


def test_warning_names_tensor_share_range_and_the_remedy():
    text = warning(
        {"spec": {"share": 0.945, "min": 2.5, "max": 8e11, "amax": 8e11, "readers": ["mm.0"]}}
    )
    assert "spec: 94.5% of its non-zero values round to 0" in text
    assert "2.5 .. 8e+11" in text and "--exclude '^mm\\.0$'" in text
    assert "--target-sqnr" in text
