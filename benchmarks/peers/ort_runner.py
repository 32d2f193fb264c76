"""ONNX Runtime quantize_static (QDQ, per-channel, symmetric int8). Runs in its own venv.

usage: python ort_runner.py MODEL CALIB.npy OUT.onnx {MinMax,Entropy,Percentile}
Prints one JSON line: {"quantize_s": seconds of the quantize_static call}.
"""

import json
import sys
import time

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)


class Reader(CalibrationDataReader):
    def __init__(self, name, arr):
        self.name, self.arr, self.i = name, arr, 0

    def get_next(self):
        if self.i >= len(self.arr):
            return None
        self.i += 1
        return {self.name: np.ascontiguousarray(self.arr[self.i - 1 : self.i])}

    def rewind(self):
        self.i = 0


def main(model, calib, out, method):
    name = onnx.load(model, load_external_data=False).graph.input[0].name
    arr = np.load(calib, mmap_mode="r")
    t0 = time.perf_counter()
    quantize_static(
        model,
        out,
        Reader(name, arr),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=getattr(CalibrationMethod, method),
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
    )
    print(json.dumps({"quantize_s": time.perf_counter() - t0, "images": len(arr)}))


if __name__ == "__main__":
    main(*sys.argv[1:5])
