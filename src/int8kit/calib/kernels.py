"""The histogram update, the hot loop of calibration: one pass over the values with numba when
it is installed, a few vectorised NumPy passes otherwise. Both bin exactly alike:

    index = trunc(|x| * inv_width)   (float32 product), clamped to the last bin.

numba's kernel computes the bin indices of a block of 4096 values first (vector instructions),
then counts them into four sub-histograms so that runs of equal values (the zeros after a ReLU,
the sixes after a ReLU6) do not serialise on one counter: ~1.0 ns a value on this 2-core machine,
where one loop doing both took ~1.4 ns (ReLU outputs, 1.6M values a call, minima of 60
alternated calls). NumPy's path (pre-scaled indices into ``np.bincount``) costs ~2x as much. The kernel releases the GIL, so it
runs beside ONNX Runtime's forward pass of the next batch (onnx/observe.py).

numba's first kernel in a process costs ~0.5-0.9 s (its import, the SciPy import it makes,
loading the cached machine code), more than NumPy's extra time on a small job. A caller that
knows how much work is coming says so (``plan``); below ``NUMBA_FROM`` planned values the kernels
run on NumPy unless numba is loaded already (benchmarks/fixed_cost.py measures both).
"""

from __future__ import annotations

import math
import os
import threading

import numpy as np

_scratch = threading.local()  # per-thread buffers, grown to the largest need
# compiled numba kernels by name; False where numba is unavailable or INT8KIT_NUMBA=0
_compiled: dict[str, object] = {}
_lock = threading.Lock()
# Values a process must plan to push through the kernels before loading numba pays: its load
# (~0.5 s on an idle machine, 0.9 s on a busy one) over what it saves (~2 ns a value: histogram
# and channel sums), less where the histograms wait for ONNX Runtime anyway. Default recipe on 2
# cores, NumPy over numba, medians of 6 (wall): MiniLM (1.1e8 values) x0.86, PP-LCNet (3.3e8)
# x0.94-1.0; whole default call, medians of 3 alternated: RetinaFace (4.3e8) 3.36 vs 3.75 s,
# YOLOv8n (5.7e8) level, EfficientNet-Lite0 (8.6e8) 9.5 vs 8.6 s. numba gains where ONNX Runtime
# gets more cores. The other zoo models plan 5.7e8 to 9.5e9.
NUMBA_FROM = 5e8
_planned: int | None = None  # values announced by plan() in this process (None: no plan)
_BLOCK = 4096  # values whose bin indices numba's kernel computes at once (16 KB of int32)


def _compile():
    from numba import njit  # imported on first use: numba's import costs ~0.3 s

    @njit(nogil=True, cache=True)
    def add_counts(x, inv_width, counts, sub, index):  # pragma: no cover - compiled by numba
        last = counts.size - 1
        top = np.float32(last)
        n = x.size
        block = index.size
        for start in range(0, n, block):
            m = min(block, n - start)
            # the bin indices of a block first: a loop without stores to memory that depends on
            # its own results, which the compiler turns into vector instructions ...
            for j in range(m):
                index[j] = np.int32(min(abs(x[start + j]) * inv_width, top))
            # ... then the counting, spread over four sub-histograms
            m4 = m - m % 4
            for j in range(0, m4, 4):
                sub[0, index[j]] += 1
                sub[1, index[j + 1]] += 1
                sub[2, index[j + 2]] += 1
                sub[3, index[j + 3]] += 1
            for j in range(m4, m):
                sub[0, index[j]] += 1
        for k in range(last + 1):
            counts[k] += sub[0, k] + sub[1, k] + sub[2, k] + sub[3, k]
            sub[0, k] = 0
            sub[1, k] = 0
            sub[2, k] = 0
            sub[3, k] = 0

    return add_counts


def _numba_off() -> bool:
    return os.environ.get("INT8KIT_NUMBA", "1") == "0"


def _kernel(name: str, compile_fn):
    """The kernel ``name``, compiled once per process (thread-safe), or None without numba."""
    kernel = _compiled.get(name)
    if kernel is None:
        with _lock:
            kernel = _compiled.get(name)
            if kernel is None:
                try:
                    kernel = False if _numba_off() else compile_fn()
                except ImportError:
                    kernel = False
                _compiled[name] = kernel
    return kernel or None


def numba_kernel():
    """The compiled histogram kernel, or None where numba is missing or ``INT8KIT_NUMBA=0``."""
    return _kernel("counts", _compile)


def plan(values: int) -> None:
    """Announce about ``values`` more values for the kernels (a calibration pass: its first
    batch's values times the number of batches). While numba is not loaded and the values a
    process announced stay below ``NUMBA_FROM``, ``use_numba=None`` means NumPy; a process that
    never announces anything gets numba wherever it is installed."""
    global _planned
    with _lock:
        _planned = (_planned or 0) + int(values)


def _numba_pays() -> bool:
    """What ``use_numba=None`` stands for now (numba may still turn out to be missing)."""
    if any(_compiled.values()):  # loaded: the other kernel costs ~10 ms more
        return True
    return _planned is None or _planned >= NUMBA_FROM


def _buffer(name: str, shape, dtype) -> np.ndarray:
    buf = getattr(_scratch, name, None)
    size = math.prod(shape)
    if buf is None or buf.size < size:
        buf = np.zeros(size, dtype=dtype)
        setattr(_scratch, name, buf)
    return buf[:size].reshape(shape)


def add_counts(x: np.ndarray, inv_width: np.float32, counts: np.ndarray, use_numba=None) -> None:
    """Add the binned |x| (flat, finite float32) into ``counts`` (int64), in place.

    ``use_numba``: None picks numba when available and worth loading (``plan``); False forces
    the NumPy path."""
    if use_numba is None:
        use_numba = None if _numba_pays() else False
    kernel = numba_kernel() if use_numba is not False else None
    if use_numba and kernel is None:
        raise RuntimeError("numba is not available (pip install numba)")
    if kernel is not None:
        # The sub-histograms are zero between calls (the kernel clears what it folds in).
        sub = _buffer("sub", (4, counts.size), np.int64)
        kernel(x, inv_width, counts, sub, _buffer("bins", (_BLOCK,), np.int32))
        return
    # float32 |x| * inv_width clamped to the last bin, truncated: the index above
    scaled = _buffer("scaled", (x.size,), np.float32)
    np.multiply(x, inv_width, out=scaled)
    np.abs(scaled, out=scaled)
    np.minimum(scaled, np.float32(counts.size - 1), out=scaled)
    idx = _buffer("index", (x.size,), np.intp)
    np.copyto(idx, scaled, casting="unsafe")
    counts += np.bincount(idx, minlength=counts.size)


# -- per-channel sums of a tensor and of its int8 fake-quantized values (bias correction) ------
#
# For a float32 tensor viewed as (P, C, R) (channel axis in the middle) and a scale s:
#     sums[c]  += sum over p, r of x[p, c, r]                              (float64 accumulators)
#     qsums[c] += sum over p, r of q[p, c, r],  q = rint(clamp(x / s, -128, 127))   (integers)
# q is what ONNX QuantizeLinear stores (float32 division, round half to even, saturate to int8);
# the fake-quantized sum is s * qsums. qsums holds integers, so it is exact and both paths give
# the same value; sums differ only by float64 rounding (order of the additions).


def _compile_sums():
    import numba
    from numba import njit

    # reassoc only: the float64 sum may be split into vector lanes. The division stays a
    # division (no reciprocal), rint/min/max keep their exact meaning, q sums are integers.
    @njit(nogil=True, cache=True, fastmath={"reassoc"})
    def channel_sums(x, scale, quantize, sums, qsums, lo, hi):  # pragma: no cover - numba
        p_len, c_len, r_len = x.shape
        if r_len >= 16:
            for p in range(p_len):
                for c in range(c_len):
                    row = x[p, c]
                    s = 0.0
                    if quantize:
                        q = 0
                        for j in range(r_len):
                            a = row[j]
                            s += a
                            q += numba.int32(np.rint(min(max(a / scale, lo), hi)))
                        qsums[c] += q
                    else:
                        for j in range(r_len):
                            s += row[j]
                    sums[c] += s
        else:  # channels last (or nearly): the additions run across channels
            for p in range(p_len):
                for c in range(c_len):
                    for j in range(r_len):
                        a = x[p, c, j]
                        sums[c] += a
                        if quantize:
                            qsums[c] += np.rint(min(max(a / scale, lo), hi))

    return channel_sums


def numba_wanted() -> bool:
    """Whether ``use_numba=None`` kernels will be numba's (numba installed, not switched off,
    worth loading: ``plan``), without importing it."""
    if "sums" in _compiled:
        return bool(_compiled["sums"])
    if _numba_off() or not _numba_pays():
        return False
    import importlib.util

    return importlib.util.find_spec("numba") is not None


def channel_sums_kernel():
    """The compiled channel-sums kernel, or None where numba is missing or ``INT8KIT_NUMBA=0``."""
    return _kernel("sums", _compile_sums)


def warm_channel_sums() -> None:
    """Import numba and load (or compile) the channel-sums kernel now, e.g. in a thread while
    ONNX Runtime works: the first call otherwise pays it (~0.3 s when numba is not imported)."""
    kernel = channel_sums_kernel()
    if kernel is not None:
        one = np.zeros(1)
        kernel(np.zeros((1, 1, 16), np.float32), np.float32(1), True, one, one, *_BOUNDS)


_BOUNDS = (np.float32(-128.0), np.float32(127.0))


def as_channel_view(x: np.ndarray, axis: int) -> np.ndarray:
    """``x`` as a C-contiguous float32 (P, C, R) array with ``axis`` as C (no copy when it can)."""
    axis = axis % x.ndim
    shape = x.shape
    p = math.prod(shape[:axis])
    r = math.prod(shape[axis + 1 :])
    return np.ascontiguousarray(x, dtype=np.float32).reshape(p, shape[axis], r)


def add_channel_sums(
    x: np.ndarray,
    scale: np.float32 | None,
    sums: np.ndarray,
    qsums: np.ndarray | None = None,
    use_numba=None,
    bounds: tuple[float, float] = (-128.0, 127.0),
) -> None:
    """Add the per-channel sums of ``x`` (float32, (P, C, R), see ``as_channel_view``) into
    ``sums`` (float64, (C,)) and, with a ``scale``, the sums of its int8 values
    rint(clamp(x / scale, -128, 127)) into ``qsums`` (float64, (C,)), in place.

    ``bounds``: the clamp of rint(x / scale): int8 (-128, 127), or (-zp, 255 - zp) for a uint8
    quantizer with zero point zp. ``use_numba``: None picks numba when available and worth
    loading (``plan``); False forces the NumPy path."""
    lo, hi = np.float32(bounds[0]), np.float32(bounds[1])
    quantize = scale is not None
    if quantize and qsums is None:
        raise ValueError("a scale needs qsums")
    if use_numba is None:
        use_numba = None if _numba_pays() else False
    kernel = channel_sums_kernel() if use_numba is not False else None
    if use_numba and kernel is None:
        raise RuntimeError("numba is not available (pip install numba)")
    if kernel is not None:
        scale32 = np.float32(scale if quantize else 1.0)
        kernel(x, scale32, quantize, sums, qsums if quantize else sums, lo, hi)
        return
    # NumPy: blocks of ~1M values along P bound the temporary.
    step = max(1, (1 << 20) // max(1, x.shape[1] * x.shape[2]))
    for start in range(0, x.shape[0], step):
        block = x[start : start + step]
        sums += block.sum(axis=(0, 2), dtype=np.float64)
        if quantize:
            q = _buffer("quantized", block.shape, np.float32)
            np.divide(block, np.float32(scale), out=q)
            np.clip(q, lo, hi, out=q)
            np.rint(q, out=q)
            # integers: a float32 sum is exact while every partial sum stays below 2**24
            exact = q.shape[0] * q.shape[2] * max(abs(lo), abs(hi)) < 2**24
            qsums += q.sum(axis=(0, 2), dtype=np.float32 if exact else np.float64)
