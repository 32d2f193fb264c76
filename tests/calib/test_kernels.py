"""The numba histogram kernel bins exactly like the NumPy path and like the definition."""

import numpy as np
import pytest

from int8kit.calib import kernels

needs_numba = pytest.mark.skipif(kernels.numba_kernel() is None, reason="numba not installed")


def reference(x: np.ndarray, inv_width: np.float32, nbins: int) -> np.ndarray:
    """The definition, element by element in float32: trunc(|x| * inv_width), clamped."""
    idx = [min(int(np.float32(abs(v)) * inv_width), nbins - 1) for v in x.astype(np.float32)]
    return np.bincount(np.array(idx, dtype=np.int64), minlength=nbins)


def samples():
    rng = np.random.default_rng(3)
    relu6 = np.clip(rng.normal(2, 3, 10_001), 0, 6).astype(np.float32)  # runs of 0 and 6
    normal = rng.standard_normal(4_099).astype(np.float32)
    edges = (np.arange(-300, 300) / 64).astype(np.float32)  # values on bin edges
    return [(relu6, 2048, 6.0), (normal, 512, 2.0), (edges, 300, 300 / 64), (normal[:3], 128, 1.0)]


@pytest.mark.parametrize("use_numba", [pytest.param(True, marks=needs_numba), False])
def test_kernel_counts_equal_the_definition(use_numba):
    for x, nbins, top in samples():
        inv = np.float32(nbins / top)
        counts = np.zeros(nbins, np.int64)
        kernels.add_counts(x, inv, counts, use_numba=use_numba)
        np.testing.assert_array_equal(counts, reference(x, inv, nbins))
        assert counts.sum() == x.size


@needs_numba
def test_repeated_calls_of_different_sizes_accumulate_exactly():
    # the kernel's scratch sub-histograms must be clean between calls of any bin count
    counts = {n: np.zeros(n, np.int64) for n in (128, 2048, 700)}
    expected = {n: np.zeros(n, np.int64) for n in counts}
    rng = np.random.default_rng(0)
    for step in range(9):
        n = (128, 2048, 700)[step % 3]
        x = np.abs(rng.normal(size=1000 + step)).astype(np.float32)
        inv = np.float32(n / 3.0)
        kernels.add_counts(x, inv, counts[n], use_numba=True)
        kernels.add_counts(x, inv, expected[n], use_numba=False)
    for n in counts:
        np.testing.assert_array_equal(counts[n], expected[n])


def test_numba_can_be_switched_off(monkeypatch):
    monkeypatch.setattr(kernels, "_kernel", None)
    monkeypatch.setenv("INT8KIT_NUMBA", "0")
    assert kernels.numba_kernel() is None
    with pytest.raises(RuntimeError, match="numba"):
        kernels.add_counts(np.ones(4, np.float32), np.float32(1), np.zeros(2, np.int64), True)
