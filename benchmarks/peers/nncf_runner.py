"""NNCF post-training quantization of the ONNX model (default preset: symmetric int8).
Runs in its own venv.

usage: python nncf_runner.py MODEL CALIB.npy OUT.onnx
Prints one JSON line: {"quantize_s": seconds of the nncf.quantize call}.
"""

import json
import sys
import time

import nncf
import numpy as np
import onnx


def main(model_path, calib, out):
    model = onnx.load(model_path)
    name = model.graph.input[0].name
    arr = np.load(calib, mmap_mode="r")
    items = range(len(arr))
    dataset = nncf.Dataset(items, lambda i: {name: np.ascontiguousarray(arr[i : i + 1])})
    t0 = time.perf_counter()
    q = nncf.quantize(model, dataset, subset_size=len(arr))
    seconds = time.perf_counter() - t0
    onnx.save(q, out)
    print(json.dumps({"quantize_s": seconds, "images": len(arr)}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
