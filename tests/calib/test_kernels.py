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
    monkeypatch.setattr(kernels, "_compiled", {})
    monkeypatch.setenv("INT8KIT_NUMBA", "0")
    assert kernels.numba_kernel() is None
    with pytest.raises(RuntimeError, match="numba"):
        kernels.add_counts(np.ones(4, np.float32), np.float32(1), np.zeros(2, np.int64), True)


# -- per-channel sums of x and of its int8 values (bias correction) ----------------------------

needs_sums_numba = pytest.mark.skipif(
    kernels.channel_sums_kernel() is None, reason="numba not installed"
)


def sums_reference(x3: np.ndarray, scale):
    """The definition, value by value: float64 sums of x, and integer sums of
    q = round-half-even(clamp(float32(x / scale), -128, 127)) as ONNX QuantizeLinear stores it."""
    p, c, r = x3.shape
    sums, qsums = np.zeros(c), np.zeros(c, np.int64)
    for ch in range(c):
        for v in x3[:, ch, :].ravel():
            sums[ch] += float(v)
            if scale is not None:
                y = float(np.float32(v) / np.float32(scale))
                qsums[ch] += int(round(min(max(y, -128.0), 127.0)))  # round(): half to even
    return sums, qsums


def sums_samples():
    rng = np.random.default_rng(5)
    scale = np.float32(0.05)
    # exact halves of the step (round to even, both signs), values past the clamp on both sides
    halves = (np.arange(-300, 301, dtype=np.float32) + np.float32(0.5)) * scale
    conv = (rng.normal(0.7, 3.0, (3, 5, 67)) * np.linspace(0.2, 2, 5)[None, :, None]).astype(
        np.float32
    )
    return [
        (conv, scale),  # NCHW-like, rows long enough for the vector loop plus a tail
        (np.repeat(halves[None, None], 2, axis=1), scale),
        (rng.normal(0.3, 1.0, (40, 6, 1)).astype(np.float32), np.float32(0.01)),  # channels last
        (rng.normal(-0.2, 1.0, (4, 3, 7)).astype(np.float32), np.float32(0.02)),  # short rows
        (conv, None),  # sums only
    ]


@pytest.mark.parametrize("use_numba", [pytest.param(True, marks=needs_sums_numba), False])
def test_channel_sums_equal_the_definition(use_numba):
    for x3, scale in sums_samples():
        c = x3.shape[1]
        sums, qsums = np.zeros(c), np.zeros(c)
        kernels.add_channel_sums(x3, scale, sums, qsums, use_numba=use_numba)
        ref, qref = sums_reference(x3, scale)
        np.testing.assert_allclose(sums, ref, rtol=1e-12, atol=1e-9)
        np.testing.assert_array_equal(qsums, qref)  # integers: exact


def test_half_steps_round_to_even_and_clamp():
    # 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -0.5 -> 0, -1.5 -> -2 steps; 200 -> 127, -200 -> -128
    steps = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 200.0, -200.0], np.float32)
    x3 = (steps * np.float32(0.25)).reshape(1, 7, 1)
    for use_numba in (False, None):
        q = np.zeros(7)
        kernels.add_channel_sums(x3, np.float32(0.25), np.zeros(7), q, use_numba=use_numba)
        np.testing.assert_array_equal(q, [0, 2, 2, 0, -2, 127, -128])


@needs_sums_numba
def test_channel_sums_numba_equals_numpy_and_accumulates():
    rng = np.random.default_rng(8)
    acc = {flag: (np.zeros(16), np.zeros(16)) for flag in (True, False)}
    for step in range(3):
        x = rng.normal(step, 2.0, (2, 16, 9, 11)).astype(np.float32)
        x3 = kernels.as_channel_view(x, 1)
        assert x3.shape == (2, 16, 99) and np.shares_memory(x3, x)
        for flag, (s, q) in acc.items():
            kernels.add_channel_sums(x3, np.float32(0.03), s, q, use_numba=flag)
    np.testing.assert_allclose(acc[True][0], acc[False][0], rtol=1e-12)
    np.testing.assert_array_equal(acc[True][1], acc[False][1])
    assert np.abs(acc[True][1]).max() > 1000  # the sums really accumulated over the steps


def test_channel_view_of_any_axis():
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    v = kernels.as_channel_view(x, -1)
    assert v.shape == (6, 4, 1)
    s = np.zeros(4)
    kernels.add_channel_sums(v, None, s, use_numba=False)
    np.testing.assert_array_equal(s, x.sum(axis=(0, 1)))


def test_channel_sums_numba_can_be_switched_off(monkeypatch):
    monkeypatch.setattr(kernels, "_compiled", {})
    monkeypatch.setenv("INT8KIT_NUMBA", "0")
    assert not kernels.numba_wanted()
    assert kernels.channel_sums_kernel() is None
    kernels.warm_channel_sums()  # nothing to warm: no error
    with pytest.raises(RuntimeError, match="numba"):
        kernels.add_channel_sums(np.ones((1, 1, 4), np.float32), None, np.zeros(1), None, True)


def test_numpy_bins_values_past_the_range_into_the_last_bin():
    # |x| * inv_width overflows float32 to inf: still the last bin, never an undefined cast
    x = np.array([3e38, -3e38, 1e30, 5.5e-10, np.finfo(np.float32).tiny], np.float32)
    counts = np.zeros(16, np.int64)
    with np.errstate(over="ignore"):
        kernels.add_counts(x, np.float32(1e10), counts, use_numba=False)
    assert counts[-1] == 3 and counts[5] == 1 and counts[0] == 1


@pytest.fixture
def fresh_plan(monkeypatch):
    """A process that has loaded no kernel and announced nothing yet."""
    monkeypatch.setattr(kernels, "_compiled", {})
    monkeypatch.setattr(kernels, "_planned", None)
    monkeypatch.delenv("INT8KIT_NUMBA", raising=False)


def test_a_small_plan_keeps_numba_unloaded_and_counts_exactly(fresh_plan):
    x, nbins, top = samples()[0]
    inv = np.float32(nbins / top)
    kernels.plan(int(kernels.NUMBA_FROM) // 2)
    assert not kernels.numba_wanted()
    counts, sums, qsums = np.zeros(nbins, np.int64), np.zeros(1), np.zeros(1)
    kernels.add_counts(x, inv, counts)
    kernels.add_channel_sums(x.reshape(1, 1, -1), np.float32(0.1), sums, qsums)
    assert kernels._compiled == {}  # neither kernel was loaded
    np.testing.assert_array_equal(counts, reference(x, inv, nbins))
    kernels.plan(int(kernels.NUMBA_FROM) // 2)  # the process's plans add up
    assert kernels._numba_pays()


@needs_numba
def test_without_a_plan_or_once_numba_is_loaded_it_is_used(fresh_plan):
    assert kernels.numba_wanted()  # no plan: numba where installed, as before plans existed
    kernels.plan(1)
    assert not kernels.numba_wanted()
    kernels.numba_kernel()  # loaded anyway (use_numba=True somewhere): it is used from now on
    assert kernels.numba_wanted()
    counts = np.zeros(8, np.int64)
    kernels.add_counts(np.ones(5, np.float32), np.float32(1), counts)
    assert counts[1] == 5
