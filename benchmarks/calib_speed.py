"""Calibration cost against the floor, median of several fresh processes per method.

Each run is benchmarks/int8kit_runner.py in its own process (so numba's load and ONNX Runtime's
session creation count, as they do for a user): one plain FP32 ONNX Runtime pass over the images
before and after (the floor, session made and warmed up beforehand), and int8kit's quantize call
between them. Runs of the methods alternate, so drifting machine load hits them alike.

    .venv/bin/python benchmarks/calib_speed.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys

from common import BENCH, MODELS, RESULTS, model_path, npy_path, run_measured, save_json

METHODS = ("auto", "entropy")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--n-calib", type=int, default=128)
    a = p.parse_args(argv)
    res: dict = {"runs": a.runs, "n_calib": a.n_calib, "models": {}}
    for name in MODELS:
        samples: dict[str, list[dict]] = {m: [] for m in METHODS}
        for _ in range(a.runs):
            for method in METHODS:
                out = BENCH / "work" / "models" / f"{name}.speed-{method}.onnx"
                cmd = [sys.executable, BENCH / "int8kit_runner.py", model_path(name)]
                cmd += [npy_path(name, "calib", a.n_calib), out, method]
                r = run_measured(cmd)
                if r["rc"] or not r["result"]:
                    raise SystemExit(f"{name} {method} failed: {r['stderr_tail']}")
                samples[method].append(r["result"])
        res["models"][name] = {}
        for method, runs in samples.items():
            keys = (
                "floor_s",
                "calibration_s",
                "bias_correction_s",
                "quantize_s",
                "calib_over_floor",
            )
            med = {k: statistics.median(r[k] for r in runs) for k in keys}
            med["calib_bias_over_floor"] = statistics.median(
                (r["calibration_s"] + r["bias_correction_s"]) / r["floor_s"] for r in runs
            )
            med["calib_over_floor_min_max"] = (
                min(r["calib_over_floor"] for r in runs),
                max(r["calib_over_floor"] for r in runs),
            )
            res["models"][name][method] = med
            print(
                f"{name:20s} {method:8s} floor {med['floor_s']:.2f} s  calibration "
                f"{med['calibration_s']:.2f} s = {med['calib_over_floor']:.2f}x "
                f"(range {med['calib_over_floor_min_max'][0]:.2f}-"
                f"{med['calib_over_floor_min_max'][1]:.2f})  + bias correction "
                f"{med['bias_correction_s']:.2f} s = {med['calib_bias_over_floor']:.2f}x",
                flush=True,
            )
    save_json(RESULTS / "calib_speed.json", res)
    return res


if __name__ == "__main__":
    main()
