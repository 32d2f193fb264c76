"""int8kit quantize_onnx in its own process, plus the floor: one plain FP32 ONNX Runtime pass
over the same inputs (default session options), timed before and after calibration.

usage: python int8kit_runner.py MODEL SOURCE OUT.onnx METHOD [--preset NAME] [--no-floor] [--plain]
SOURCE is a .npy of preprocessed inputs, or an image folder with --preset yolov8n|...
METHOD auto is int8kit's default; --plain turns off what the default recipe adds to the ranges
(bias correction, the input layer kept float): every layer INT8, as TensorRT's calibrator would.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

from int8kit.data import DataConfig, make_source
from int8kit.onnx.model_io import input_specs, load_model
from int8kit.onnx.observe import make_session
from int8kit.workflow import CalibConfig, QuantizeConfig, quantize_onnx


def floor_seconds(model_path: str, data: DataConfig) -> tuple[float, float]:
    model = load_model(model_path)
    session = make_session(model)
    batches = list(make_source(data, input_specs(model)))
    session.run(None, batches[0])  # warm-up, as calibration's session also pays its creation
    t0, c0 = time.perf_counter(), time.process_time()
    for b in batches:
        session.run(None, b)
    return time.perf_counter() - t0, time.process_time() - c0


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("source")
    p.add_argument("out")
    p.add_argument("method")
    p.add_argument("--preset", default=None, help="image preprocessing of this model name")
    p.add_argument("--no-floor", action="store_true")
    p.add_argument("--plain", action="store_true")
    a = p.parse_args(argv)
    if a.preset:
        from prepare import data_config

        data = data_config(a.preset, a.source)
    else:
        data = DataConfig(source=a.source)
    import int8kit

    out = {"int8kit": int8kit.__file__}
    if not a.no_floor:
        out["floor_before_s"], out["floor_before_cpu_s"] = floor_seconds(a.model, data)
    config = QuantizeConfig(
        model=a.model, output=a.out, data=data, calib=CalibConfig(method=a.method), holdout=0
    )
    if a.plain:
        config.bias_correction = False
        config.placement.quantize_input_layers = True
    t0, c0 = time.perf_counter(), time.process_time()
    r = quantize_onnx(config)
    out["quantize_s"] = time.perf_counter() - t0
    out["quantize_cpu_s"] = time.process_time() - c0
    out["calibration_s"] = r.calibration_seconds
    out["bias_correction_s"] = r.bias_correction.get("seconds", 0.0)
    out["method"] = r.method
    out["images"] = r.images_used
    if not a.no_floor:
        out["floor_after_s"], out["floor_after_cpu_s"] = floor_seconds(a.model, data)
        out["floor_s"] = (out["floor_before_s"] + out["floor_after_s"]) / 2
        out["floor_cpu_s"] = (out["floor_before_cpu_s"] + out["floor_after_cpu_s"]) / 2
        out["calib_over_floor"] = r.calibration_seconds / out["floor_s"]
        out["calib_bias_over_floor"] = (r.calibration_seconds + out["bias_correction_s"]) / out[
            "floor_s"
        ]
        # CPU seconds of the whole quantize call (calibration + Q/DQ insertion + writing) over
        # the floor's: the work done, less sensitive to other jobs on a shared machine.
        out["quantize_cpu_over_floor_cpu"] = out["quantize_cpu_s"] / out["floor_cpu_s"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
