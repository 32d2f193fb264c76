"""TensorRT Model Optimizer ONNX PTQ (int8, calibration on the CPU execution provider).
Runs in its own venv. Float parts stay FP32 (high_precision_dtype="fp32") so fidelity
measures INT8 alone, as for the other tools.

usage: python modelopt_runner.py MODEL CALIB.npy|CALIB.npz OUT.onnx {entropy,max}
Prints one JSON line: {"quantize_s": seconds of the quantize call}.
"""

import json
import sys
import time

import onnx
from calib_data import count, graph_inputs, load
from modelopt.onnx.quantization import quantize


def main(model, calib, out, method):
    arrays = load(calib, graph_inputs(onnx.load(model, load_external_data=False)))
    data = next(iter(arrays.values())) if len(arrays) == 1 else arrays
    t0 = time.perf_counter()
    quantize(
        onnx_path=model,
        quantize_mode="int8",
        calibration_data=data,
        calibration_method=method,
        calibration_eps=["cpu"],
        high_precision_dtype="fp32",
        output_path=out,
    )
    print(json.dumps({"quantize_s": time.perf_counter() - t0, "images": count(arrays)}))


if __name__ == "__main__":
    main(*sys.argv[1:5])
