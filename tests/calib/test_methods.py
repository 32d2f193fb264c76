import numpy as np
import pytest
import reference

from int8kit.calib import methods as M


def hist(x, n=2048):
    top = float(np.abs(x).max())
    counts = np.bincount(np.minimum((np.abs(x) / (top / n)).astype(int), n - 1), minlength=n)
    return counts, np.arange(n + 1) * (top / n)


@pytest.mark.parametrize("seed", range(4))
def test_entropy_matches_direct_definition(seed):
    rng = np.random.default_rng(seed)
    n = [200, 256, 333, 512][seed]
    counts = rng.integers(0, 50, size=n) * (rng.random(n) < 0.7)
    counts[-3:] = rng.integers(1, 3, size=3)  # a thin tail
    edges = np.arange(n + 1) * 0.01
    expected, _ = reference.entropy_amax(counts, edges)
    assert M.amax_entropy(counts, edges) == expected


def test_entropy_hand_case_all_mass_in_first_bins_picks_largest_tie():
    # Mass only in bins 0..3 of 256: for every i >= 128, P and Q are identical (each group of
    # width <= 2 holds one non-empty bin or equal neighbours), KL = 0 everywhere, ties -> n.
    counts = np.zeros(256, dtype=np.int64)
    counts[:4] = [5, 5, 5, 5]
    edges = np.arange(257) * 0.5
    assert M.amax_entropy(counts, edges) == edges[256]


def test_entropy_clips_laplace_tail_below_max():
    x = np.random.default_rng(0).laplace(size=200_000)
    counts, edges = hist(x)
    amax = M.amax_entropy(counts, edges)
    assert amax < 0.8 * np.abs(x).max()
    assert amax > np.percentile(np.abs(x), 99)  # clips the tail, not the body


def test_mse_matches_direct_definition_and_clips_laplace():
    x = np.random.default_rng(1).laplace(size=100_000)
    counts, edges = hist(x, 512)
    assert np.isclose(M.amax_mse(counts, edges), reference.mse_amax(counts, edges))
    assert M.amax_mse(counts, edges) < 0.8 * np.abs(x).max()


@pytest.mark.parametrize("shape", ["t3", "relu", "outliers", "laplace"])
def test_mse_closed_form_equals_the_sum_over_bins(shape):
    # Every candidate's error by levels (prefix sums) = the direct sum over 1024 bins.
    rng = np.random.default_rng(7)
    x = {
        "t3": lambda: rng.standard_t(3, 200_000),
        "relu": lambda: np.maximum(rng.standard_normal(200_000), 0),
        "outliers": lambda: np.concatenate([rng.standard_normal(200_000), [40.0, -55.0]]),
        "laplace": lambda: rng.laplace(size=200_000),
    }[shape]()
    counts, edges = hist(x, 1024)
    centres = (edges[1:] + edges[:-1]) / 2
    direct = []
    for a in centres[128:]:
        s = a / 127
        q = np.minimum(np.round(centres / s), 127) * s
        direct.append(((q - centres) ** 2 * counts).sum())
    np.testing.assert_allclose(M.mse_errors(counts, edges), direct, rtol=1e-6)


def test_percentile_on_uniform_is_p_percent_of_max():
    x = np.random.default_rng(2).uniform(-1, 1, size=1_000_000)
    counts, edges = hist(x)
    for p in (90.0, 99.0, 99.99):
        assert M.amax_percentile(counts, edges, p) == pytest.approx(p / 100, abs=2e-3)


def test_percentile_hand_case_interpolates_inside_bin():
    counts = np.array([2, 2, 4, 2])  # total 10
    edges = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    # 60% of 10 = 6 samples: bins 0-1 hold 4, then 2 of the 4 in bin 2 -> 2.5
    assert M.amax_percentile(counts, edges, 60.0) == pytest.approx(2.5)
    assert M.amax_percentile(counts, edges, 100.0) == pytest.approx(4.0)


def test_minmax_of_histogram_is_upper_edge_of_last_nonempty_bin():
    counts = np.array([1, 0, 3, 0, 0])
    assert M.amax_minmax(counts, np.arange(6.0)) == 3.0


def test_unknown_method_is_rejected_with_choices():
    with pytest.raises(ValueError, match="entropy, minmax, percentile, mse"):
        M.compute_amax("kl", np.ones(200), np.arange(201.0))


def test_weight_amax_per_channel():
    w = np.zeros((3, 2, 1, 1), np.float32)
    w[0, 1] = -4.0
    w[1, 0] = 2.0
    np.testing.assert_array_equal(M.weight_amax(w, axis=0), [4.0, 2.0, 0.0])
    np.testing.assert_array_equal(M.weight_amax(w, axis=1), [2.0, 4.0])
