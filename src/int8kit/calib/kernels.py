"""The histogram update, the hot loop of calibration: one pass over the values with numba when
it is installed, a few vectorised NumPy passes otherwise. Both bin exactly alike:

    index = trunc(|x| * inv_width)   (float32 product), clamped to the last bin.

numba's loop (~0.5 ns per value) keeps four sub-histograms so that runs of equal values (the
zeros after a ReLU, the sixes after a ReLU6) do not serialise on one counter; NumPy's path
(``np.add.at`` on pre-scaled indices) costs ~3-4x as much. The kernel releases the GIL, so it runs
beside ONNX Runtime's forward pass of the next batch (onnx/observe.py).
"""

from __future__ import annotations

import os
import threading

import numpy as np

_scratch = threading.local()  # per-thread buffers, grown to the largest need
_kernel = None  # the compiled numba kernel, False when numba is unavailable or disabled
_lock = threading.Lock()


def _compile():
    from numba import njit  # imported on first use: numba's import costs ~0.3 s

    @njit(nogil=True, cache=True)
    def add_counts(x, inv_width, counts, sub):  # pragma: no cover - compiled by numba
        last = counts.size - 1
        n = x.size
        n4 = n - n % 4
        for j in range(0, n4, 4):
            a = min(int(abs(x[j]) * inv_width), last)
            b = min(int(abs(x[j + 1]) * inv_width), last)
            c = min(int(abs(x[j + 2]) * inv_width), last)
            d = min(int(abs(x[j + 3]) * inv_width), last)
            sub[0, a] += 1
            sub[1, b] += 1
            sub[2, c] += 1
            sub[3, d] += 1
        for j in range(n4, n):
            counts[min(int(abs(x[j]) * inv_width), last)] += 1
        for k in range(last + 1):
            counts[k] += sub[0, k] + sub[1, k] + sub[2, k] + sub[3, k]
            sub[0, k] = 0
            sub[1, k] = 0
            sub[2, k] = 0
            sub[3, k] = 0

    return add_counts


def numba_kernel():
    """The compiled kernel, or None where numba is missing or ``INT8KIT_NUMBA=0``."""
    global _kernel
    if _kernel is None:
        with _lock:
            if _kernel is None:
                if os.environ.get("INT8KIT_NUMBA", "1") == "0":
                    _kernel = False
                else:
                    try:
                        _kernel = _compile()
                    except ImportError:
                        _kernel = False
    return _kernel or None


def _buffer(name: str, shape, dtype) -> np.ndarray:
    buf = getattr(_scratch, name, None)
    size = int(np.prod(shape))
    if buf is None or buf.size < size:
        buf = np.zeros(size, dtype=dtype)
        setattr(_scratch, name, buf)
    return buf[:size].reshape(shape)


def add_counts(x: np.ndarray, inv_width: np.float32, counts: np.ndarray, use_numba=None) -> None:
    """Add the binned |x| (flat, finite float32) into ``counts`` (int64), in place.

    ``use_numba``: None picks numba when available; False forces the NumPy path."""
    kernel = numba_kernel() if use_numba is not False else None
    if use_numba and kernel is None:
        raise RuntimeError("numba is not available (pip install numba)")
    if kernel is not None:
        # The sub-histograms are zero between calls (the kernel clears what it folds in).
        kernel(x, inv_width, counts, _buffer("sub", (4, counts.size), np.int64))
        return
    idx = _buffer("index", (x.size,), np.intp)
    np.multiply(x, inv_width, out=idx, casting="unsafe")
    np.abs(idx, out=idx)
    np.minimum(idx, counts.size - 1, out=idx)
    np.add.at(counts, idx, 1)
