"""TensorRT Model Optimizer ONNX PTQ (int8, calibration on the CPU execution provider).
Runs in its own venv. Float parts stay FP32 (high_precision_dtype="fp32") so fidelity
measures INT8 alone, as for the other tools.

usage: python modelopt_runner.py MODEL CALIB.npy OUT.onnx {entropy,max}
Prints one JSON line: {"quantize_s": seconds of the quantize call}.
"""

import json
import sys
import time

import numpy as np
from modelopt.onnx.quantization import quantize


def main(model, calib, out, method):
    arr = np.load(calib)
    t0 = time.perf_counter()
    quantize(
        onnx_path=model,
        quantize_mode="int8",
        calibration_data=arr,
        calibration_method=method,
        calibration_eps=["cpu"],
        high_precision_dtype="fp32",
        output_path=out,
    )
    print(json.dumps({"quantize_s": time.perf_counter() - t0, "images": len(arr)}))


if __name__ == "__main__":
    main(*sys.argv[1:5])
