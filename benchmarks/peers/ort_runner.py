"""ONNX Runtime quantize_static (QDQ, per-channel, symmetric int8). Runs in its own venv.

usage: python ort_runner.py MODEL CALIB.npy|CALIB.npz OUT.onnx {MinMax,Entropy,Percentile}
Prints one JSON line: {"quantize_s": seconds of the quantize_static call}.
"""

import json
import sys
import time

import onnx
from calib_data import count, feed, graph_inputs, load
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)


class Reader(CalibrationDataReader):
    def __init__(self, arrays):
        self.arrays, self.i = arrays, 0

    def get_next(self):
        if self.i >= count(self.arrays):
            return None
        self.i += 1
        return feed(self.arrays, self.i - 1)

    def rewind(self):
        self.i = 0


def main(model, calib, out, method):
    arrays = load(calib, graph_inputs(onnx.load(model, load_external_data=False)))
    t0 = time.perf_counter()
    quantize_static(
        model,
        out,
        Reader(arrays),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=getattr(CalibrationMethod, method),
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
    )
    print(json.dumps({"quantize_s": time.perf_counter() - t0, "images": count(arrays)}))


if __name__ == "__main__":
    main(*sys.argv[1:5])
