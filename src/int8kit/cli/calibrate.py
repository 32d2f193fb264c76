"""`int8kit calibrate MODEL --calib DATA -o model.calib.cache`: the TensorRT cache and ranges only
(the seed workflow of `trtexec --int8 --calib=`)."""

from __future__ import annotations

import argparse

from int8kit.cli.dataargs import add_data_args
from int8kit.cli.quantize import add_calib_args, build_config, print_summary


def register(sub) -> None:
    p = sub.add_parser(
        "calibrate",
        help="calibrate only: TensorRT calibration cache + ranges.json",
        description="Calibrate MODEL on DATA; write the TensorRT cache OUT and OUT-stem.ranges.json.",
    )
    p.add_argument("model", help="FP32 ONNX model (never modified)")
    p.add_argument("-o", "--output", required=True, help="cache to write, e.g. model.calib.cache")
    add_data_args(p, required=False)
    add_calib_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from int8kit.workflow import calibrate_onnx

    print_summary(calibrate_onnx(build_config(args, write_qdq=False)))
    return 0
