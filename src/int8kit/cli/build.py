"""`int8kit build`: a TensorRT engine from a Q/DQ model, or from an FP32 model plus calibration.

Without TensorRT it stops (exit code 1) and prints the equivalent trtexec command for the
TensorRT version given by --trt-version, so the outputs can be built on the user's own machine.
"""

from __future__ import annotations

import argparse
import os
import sys

from int8kit._deps import available
from int8kit.fileio import check_outputs
from int8kit.trt.build import BuildConfig, build_engine, equivalent_commands, load_model, plan_build
from int8kit.trt.commands import shell
from int8kit.trt.profiles import format_shape, model_inputs
from int8kit.trt.version import DEFAULT_VERSION, installed_version, parse_version


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "build",
        help="build a TensorRT engine (Q/DQ model, or FP32 model + calibration)",
        description=(
            "Build a TensorRT engine. A Q/DQ model (model.int8.onnx) builds as explicit INT8: "
            "strongly typed on TensorRT >= 10.12 and 11, with the INT8 flag before. An FP32 model "
            "with --int8 --calib DIR (or --cache FILE) builds as implicit INT8 (TensorRT 8.6-10.x)."
        ),
    )
    p.add_argument("model", help="ONNX model (FP32, or with QuantizeLinear/DequantizeLinear)")
    p.add_argument("-o", "--output", required=True, help="engine file to write")
    p.add_argument("--int8", action="store_true", help="implicit INT8 with calibration")
    p.add_argument("--fp16", action="store_true", help="allow FP16 kernels (TensorRT < 11)")
    p.add_argument(
        "--calib",
        metavar="SRC",
        help="calibration data: image folder, .npy/.npz, or loader.py[:func]",
    )
    p.add_argument("--num-images", type=int, default=None, help="calibrate on at most N samples")
    p.add_argument(
        "--method", choices=("entropy", "minmax"), default="entropy", help="TensorRT calibrator"
    )
    p.add_argument(
        "--cache", metavar="FILE", help="calibration cache to read, or to write after calibrating"
    )
    p.add_argument(
        "--shapes",
        nargs="+",
        action="extend",
        metavar="NAME:MIN/OPT/MAX",
        help="shapes for dynamic inputs, e.g. images:1x3x640x640/4x3x640x640/8x3x640x640",
    )
    p.add_argument("--workspace", type=int, metavar="MIB", help="builder workspace limit in MiB")
    p.add_argument("--timing-cache", metavar="FILE", help="timing cache to read and update")
    typing = p.add_mutually_exclusive_group()
    typing.add_argument(
        "--strongly-typed", dest="strongly_typed", action="store_true", default=None
    )
    typing.add_argument("--no-strongly-typed", dest="strongly_typed", action="store_false")
    p.add_argument(
        "--trt-version",
        default=DEFAULT_VERSION,
        help="TensorRT version for the printed trtexec command when TensorRT is not installed "
        "(8.6, 10.x, 10.12, 11; default %(default)s)",
    )
    p.set_defaults(func=run)


def _config(args: argparse.Namespace, calib_batches=None) -> BuildConfig:
    return BuildConfig(
        onnx_path=args.model,
        output=args.output,
        int8=bool(args.int8 or args.calib),
        fp16=args.fp16,
        calib_batches=calib_batches,
        cache_path=args.cache,
        algorithm=args.method,
        shapes=args.shapes,
        workspace_mib=args.workspace,
        timing_cache=args.timing_cache,
        strongly_typed=args.strongly_typed,
    )


def _print_commands(args: argparse.Namespace, model) -> int:
    version = parse_version(args.trt_version)
    # Stand-in batches: without TensorRT nothing is calibrated, only the command is planned.
    config = _config(args, calib_batches=() if args.calib else None)
    plan = plan_build(config, model, version)
    print(
        "int8kit: error: TensorRT is not installed here, so no engine was built. "
        "Install it with `pip install 'int8kit[tensorrt]'` on a machine with an NVIDIA GPU, "
        f"or build on your TensorRT {version.major}.x machine with:",
        file=sys.stderr,
    )
    if plan.mode == "implicit" and not (config.cache_path and config.cache_path.is_file()):
        print(
            f"# first write the calibration cache: int8kit calibrate {shell([args.model])} "
            f"--calib {shell([args.calib or 'DIR'])} (trtexec reads EntropyCalibration2 caches)"
        )
    for label, argv in equivalent_commands(config, plan):
        print(f"# {label}")
        print(shell(argv))
    return 1


def _calibration_source(args: argparse.Namespace, model, profiles):
    from onnx import helper

    from int8kit.data import DataConfig, InputSpec, make_source  # lazy: a colleague's module

    inputs = [
        InputSpec(i.name, i.dims, helper.tensor_dtype_to_np_dtype(i.elem_type).name)
        for i in model_inputs(model)
    ]
    # Calibration runs at the calibration profile's opt shapes.
    shapes = {p.name: p.opt for p in profiles if p.dynamic}
    batch = next((p.opt[0] for p in profiles if p.dynamic and p.opt), 1)
    kind = "script" if args.calib.endswith(".py") or ".py:" in args.calib else "auto"
    config = DataConfig(
        source=args.calib, kind=kind, num_samples=args.num_images, batch_size=batch, shapes=shapes
    )
    return make_source(config, inputs)


def _default_batch_one(args: argparse.Namespace, model) -> None:
    """Without --shapes, an input whose only dynamic dimension is the batch is built for batch 1,
    as trtexec does, and a notice says so (other dynamic dimensions still need --shapes)."""
    if args.shapes:
        return
    fixed = []
    for inp in model_inputs(model):
        if inp.is_dynamic and all(d is not None for d in inp.dims[1:]):
            fixed.append((inp, (1, *inp.dims[1:])))
    for inp, shape in fixed:
        print(
            f"int8kit: note: input {inp.name!r} has a dynamic batch ({inp.describe()}) and no "
            f"--shapes: building for batch 1 ({format_shape(shape)}), as trtexec does. For "
            f"larger batches give --shapes {inp.name}:MIN/OPT/MAX, e.g. "
            f"{inp.name}:{format_shape(shape)}/{format_shape((4, *shape[1:]))}/"
            f"{format_shape((8, *shape[1:]))}",
            file=sys.stderr,
        )
    args.shapes = [f"{inp.name}:{format_shape(shape)}" for inp, shape in fixed] or None


def _check_cache(path: str | None) -> None:
    """Warn about what TensorRT would refuse in an existing --cache (unusable scales, an
    algorithm trtexec does not read) before a build spends minutes on it."""
    from int8kit.calib.cache import CalibrationCache
    from int8kit.errors import CacheFormatError

    if not path or not os.path.isfile(path):
        return
    try:
        problems = CalibrationCache.read(path).problems(path)
    except CacheFormatError as exc:
        problems = [str(exc)]
    for text in problems:
        print(f"int8kit: warning: {text}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    check_outputs(
        {"the model": args.model, "--calib": args.calib},
        {"-o": args.output, "--cache": args.cache, "--timing-cache": args.timing_cache},
    )
    model = load_model(_config(args).onnx_path)
    _default_batch_one(args, model)
    _check_cache(args.cache)
    if not available("tensorrt"):
        return _print_commands(args, model)
    import tensorrt

    batches = None
    if args.calib:
        # Check the request before reading any data.
        plan = plan_build(_config(args, calib_batches=()), model, installed_version(tensorrt))
        batches = _calibration_source(args, model, plan.profiles)
    engine = build_engine(_config(args, calib_batches=batches))
    print(f"wrote {engine}")
    return 0
