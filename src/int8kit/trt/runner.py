"""Run a TensorRT engine on numpy feeds, with buffers in torch CUDA tensors.

Uses the name-based tensor API (``set_input_shape``, ``set_tensor_address``,
``execute_async_v3``), which TensorRT has since 8.5, so one code path serves 8.6, 10.x and 11.x.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from int8kit._deps import require
from int8kit.errors import DataError, Int8kitError, ModelError


class TrtRunner:
    """Load a serialized engine once; ``run(feeds)`` returns ``{output_name: np.ndarray}``."""

    def __init__(self, engine_path: str | os.PathLike) -> None:
        self._trt = trt = require("tensorrt", "running TensorRT engines")
        self._torch = torch = require("torch", "device buffers for TensorRT")
        if not torch.cuda.is_available():
            raise Int8kitError("running a TensorRT engine needs a CUDA GPU, and torch sees none")
        path = Path(engine_path)
        if not path.is_file():
            raise ModelError(f"engine {path} does not exist: build it with `int8kit build`")
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise ModelError(
                f"TensorRT could not load {path}: an engine only runs on the TensorRT version "
                "and GPU it was built with; rebuild it here"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = [n for n in names if is_input[n]]
        self.output_names = [n for n in names if not is_input[n]]

    def _np_dtype(self, name: str) -> np.dtype:
        return np.dtype(self._trt.nptype(self.engine.get_tensor_dtype(name)))

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise DataError(f"engine inputs {missing} are missing from the feed {sorted(feeds)}")
        keep = []
        for name in self.input_names:
            array = np.ascontiguousarray(np.asarray(feeds[name]), dtype=self._np_dtype(name))
            tensor = torch.from_numpy(array).cuda()
            keep.append(tensor)
            if not self.context.set_input_shape(name, tuple(array.shape)):
                raise DataError(
                    f"input {name!r} of shape {array.shape} is outside the engine's optimization "
                    f"profile {tuple(self.engine.get_tensor_profile_shape(name, 0))} (min/opt/max)"
                )
            self.context.set_tensor_address(name, int(tensor.data_ptr()))
        outputs = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            torch_dtype = torch.from_numpy(np.empty(0, self._np_dtype(name))).dtype
            tensor = torch.empty(shape, dtype=torch_dtype, device="cuda")
            outputs[name] = tensor
            self.context.set_tensor_address(name, int(tensor.data_ptr()))
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise Int8kitError("TensorRT execution failed; see the TensorRT log above")
        stream.synchronize()
        return {name: tensor.cpu().numpy() for name, tensor in outputs.items()}
