"""ONNX Runtime quantize_static, the u8 mode ORT recommends on x86 CPUs: QDQ, uint8 activations
(asymmetric), int8 per-channel weights, reduce_range (7-bit weights). Runs in its own venv.

usage: python ort_u8_runner.py MODEL CALIB.npy|CALIB.npz OUT.onnx {MinMax,Entropy,Percentile}
       [--no-reduce-range] [--no-preprocess]
The model first goes through ORT's quant_pre_process (shape inference and ORT's own graph
optimisation, e.g. Pads folded into Convs), as ORT's documentation recommends before
quantize_static; --no-preprocess quantizes the model as it is.
Prints one JSON line: {"quantize_s": seconds of the pre-processing and quantize_static}.
"""

import json
import os
import sys
import time

import onnx
from calib_data import count, graph_inputs, load
from onnxruntime.quantization import (
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from ort_runner import Reader


def main(model, calib, out, method, reduce_range=True, preprocess=True):
    arrays = load(calib, graph_inputs(onnx.load(model, load_external_data=False)))
    t0 = time.perf_counter()
    if preprocess:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        pre = out + ".pre.onnx"
        quant_pre_process(model, pre, skip_symbolic_shape=True)  # no sympy in the venv
        model = pre
    quantize_static(
        model,
        out,
        Reader(arrays),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        reduce_range=reduce_range,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=getattr(CalibrationMethod, method),
    )
    if preprocess:
        os.remove(model)
    print(json.dumps({"quantize_s": time.perf_counter() - t0, "images": count(arrays)}))


if __name__ == "__main__":
    flags = sys.argv[5:]
    main(
        *sys.argv[1:5],
        reduce_range="--no-reduce-range" not in flags,
        preprocess="--no-preprocess" not in flags,
    )
