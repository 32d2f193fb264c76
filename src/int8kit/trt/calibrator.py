"""int8kit's TensorRT calibrator (implicit INT8, TensorRT 8.6-10.x).

The class is created inside ``make_calibrator`` so that importing this module never needs
tensorrt. Batches are plain ``dict[str, np.ndarray]``; device buffers go through torch CUDA tensors
(``torch.from_numpy(a).cuda()`` and ``data_ptr()``), not pycuda.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from int8kit._deps import require
from int8kit.errors import DataError, Int8kitError
from int8kit.fileio import atomic_path
from int8kit.trt.commands import IMPLICIT_REMOVED
from int8kit.trt.version import installed_version

ALGORITHMS = {"entropy": "IInt8EntropyCalibrator2", "minmax": "IInt8MinMaxCalibrator"}


def make_calibrator(
    batches: Iterable[Mapping[str, np.ndarray]] | None,
    cache_path: str | os.PathLike | None = None,
    algorithm: str = "entropy",
    dtypes: Mapping[str, np.dtype] | None = None,
):
    """A TensorRT calibrator object that feeds ``batches`` and reads/writes ``cache_path``.

    If ``cache_path`` holds a cache, TensorRT uses it and asks for no batches. A cache TensorRT
    writes is saved atomically to ``cache_path`` (bytes as TensorRT gives them). ``dtypes`` casts
    each input to the network's input type. An error while feeding stops calibration and is kept
    in ``.error`` for the caller to raise (exceptions cannot cross TensorRT's C++ callback).
    """
    if algorithm not in ALGORITHMS:
        raise Int8kitError(
            f"unknown calibration algorithm {algorithm!r}: use {' or '.join(ALGORITHMS)}"
        )
    trt = require("tensorrt", "INT8 calibration in TensorRT")
    version = installed_version(trt)
    if not version.implicit_int8:
        raise Int8kitError(IMPLICIT_REMOVED.format(v=version))
    torch = require("torch", "device buffers for TensorRT calibration")
    if not torch.cuda.is_available():
        raise Int8kitError("TensorRT calibration needs a CUDA GPU, and torch sees none")
    base = getattr(trt, ALGORITHMS[algorithm])
    cache_file = Path(cache_path) if cache_path is not None else None

    class Int8kitCalibrator(base):
        def __init__(self) -> None:
            base.__init__(self)  # the pybind11 trampoline must be initialised explicitly
            self._batches = iter(batches if batches is not None else ())
            self._device: dict[str, object] = {}  # keeps the current batch alive on the GPU
            self.num_batches = 0
            self.error: BaseException | None = None
            self.cache_bytes: bytes | None = None

        def get_batch_size(self) -> int:
            # Explicit-batch networks take the batch from the input shapes; TensorRT asks anyway.
            return 1

        def get_batch(self, names, *unused):
            try:
                feed = next(self._batches, None)
                if feed is None:
                    self._device.clear()
                    return None
                missing = [n for n in names if n not in feed]
                if missing:
                    raise DataError(
                        f"calibration batch {self.num_batches} lacks input(s) {missing}; "
                        f"it has {sorted(feed)}"
                    )
                pointers = []
                for name in names:
                    array = np.asarray(feed[name])
                    if dtypes and name in dtypes:
                        array = array.astype(dtypes[name], copy=False)
                    tensor = torch.from_numpy(np.ascontiguousarray(array)).cuda()
                    self._device[name] = tensor
                    pointers.append(int(tensor.data_ptr()))
                torch.cuda.synchronize()
                self.num_batches += 1
                return pointers
            except BaseException as exc:  # noqa: BLE001 - handed back to build_engine
                self.error = exc
                self._device.clear()
                return None

        def read_calibration_cache(self, *unused):
            if cache_file is not None and cache_file.is_file() and cache_file.stat().st_size:
                return cache_file.read_bytes()
            return None

        def write_calibration_cache(self, cache, *unused) -> None:
            data = cache.tobytes() if hasattr(cache, "tobytes") else bytes(memoryview(cache))
            self.cache_bytes = data
            if cache_file is not None:
                with atomic_path(cache_file) as tmp:
                    tmp.write_bytes(data)

    return Int8kitCalibrator()
