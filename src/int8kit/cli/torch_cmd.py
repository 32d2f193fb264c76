"""`int8kit torch quantize pkg.module:factory --weights w.pth --calib images/ -o m.int8.onnx`."""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys

from int8kit.calib.methods import METHODS
from int8kit.cli.dataargs import flag_error
from int8kit.cli.quantize import add_bias_gate_arg, add_holdout_args
from int8kit.errors import Int8kitError, ModelError
from int8kit.fileio import check_outputs

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


TORCH_FLAGS = {
    "QuantConfig.percentile": "--percentile",
    "QuantConfig.num_bins": "--num-bins",
    "num_samples": "--num-samples",
    "batch_size": "--batch-size",
    "std values": "--std",
    "mean": "--mean",
}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "torch", help="quantize a PyTorch model (PTQ, QAT) to a Q/DQ ONNX model"
    )
    sub = parser.add_subparsers(dest="torch_command", metavar="COMMAND")
    parser.set_defaults(func=lambda args: parser.print_help() or 2)
    q = sub.add_parser(
        "quantize",
        help="calibrate (and optionally fine-tune) a model and export Q/DQ ONNX",
        description="Build the model with FACTORY (pkg.module:function; imported because you "
        "named it), load --weights with torch.load(weights_only=True), calibrate on --calib "
        "images, optionally fine-tune by distillation, and write the Q/DQ ONNX, the FP32 ONNX, "
        "a TensorRT calibration cache and ranges.json.",
    )
    q.add_argument("factory", help="pkg.module:function returning an nn.Module")
    q.add_argument("--weights", help="state dict file (.pth/.pt), loaded with weights_only=True")
    q.add_argument("--calib", required=True, help="folder of calibration images")
    q.add_argument("-o", "--output", required=True, help="Q/DQ ONNX path, e.g. model.int8.onnx")
    q.add_argument(
        "--method",
        default="auto",
        choices=("auto", *METHODS),
        help="activation range method. auto (default): the default recipe of `int8kit "
        "quantize` (int8kit.recipes; the summary says what it resolved to)",
    )
    q.add_argument("--percentile", type=float, default=99.99)
    q.add_argument("--exclude", action="append", default=[], help="module-name regex (repeat)")
    q.add_argument(
        "--quantize-input-layers",
        action="store_true",
        help="also quantize the layers that read the network input (the stem conv); by default "
        "they stay float, as in `int8kit quantize`",
    )
    q.add_argument(
        "--bias-correction",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="shift the biases of Conv/Linear layers with int8 weights so their mean output "
        "matches FP32 (default on; in the Q/DQ model only)",
    )
    add_bias_gate_arg(q)
    q.add_argument(
        "--equalize-depthwise",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="give each input channel of a depthwise conv its own range through one scale per "
        "tensor (same FP32 function), where held-out calibration samples show a clear gain; "
        "--method auto does it when the default recipe says so (int8kit.recipes)",
    )
    q.add_argument(
        "--center-one-sided",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="one-sided inputs (ReLU/GELU/HardSwish outputs) of Linears and Convs without "
        "padding: subtract the middle of their range and add it back in those layers' biases, so "
        "the signed int8 scale covers only the values that occur (half the step; same FP32 "
        "function); --method auto does it when the default recipe says so (int8kit.recipes)",
    )
    add_holdout_args(q)
    q.add_argument("--input-shape", default="1x3x224x224", help="NxCxHxW (default 1x3x224x224)")
    q.add_argument("--num-samples", type=int, default=256, help="calibration images to use")
    q.add_argument("--batch-size", type=int, default=16)
    q.add_argument("--qat-epochs", type=int, default=0, help="distillation epochs (default 0)")
    q.add_argument("--lr", type=float, default=1e-5, help="fine-tuning learning rate")
    q.add_argument("--recipe", default="center-crop", help="image preprocessing recipe")
    q.add_argument("--mean", default=",".join(map(str, IMAGENET_MEAN)))
    q.add_argument("--std", default=",".join(map(str, IMAGENET_STD)))
    q.add_argument("--opset", type=int, default=17)
    q.add_argument(
        "--device",
        default="auto",
        help="auto (GPU LOCAL_RANK if CUDA is available, else CPU) | cpu | cuda | cuda:N; "
        "under torchrun every rank calibrates its share of the images, rank 0 writes",
    )
    q.set_defaults(func=run)


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 4 or min(shape) < 1:
        raise Int8kitError(f"--input-shape {text!r} must be NxCxHxW, e.g. 1x3x224x224")
    return shape


def load_factory(spec: str):
    module_name, sep, func_name = spec.partition(":")
    if not sep or not module_name or not func_name:
        raise ModelError(f"model factory {spec!r} must be 'pkg.module:function'")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(f"cannot import {module_name!r} for the model factory: {exc}") from exc
    except Exception as exc:  # the user's module failed while it was imported
        raise ModelError(
            f"importing {module_name!r} for the model factory raised "
            f"{type(exc).__name__}: {exc}{_where(exc)}"
        ) from exc
    factory = getattr(module, func_name, None)
    if not callable(factory):
        raise ModelError(f"{module_name} has no callable {func_name!r}")
    return factory


def _where(exc: BaseException) -> str:
    """' (at file.py, line N)': the innermost frame of the user's code in ``exc``'s traceback."""
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "int8kit" not in f.filename]
    return f" (at {frames[-1].filename}, line {frames[-1].lineno})" if frames else ""


def build_model(spec: str):
    """Call the factory ``spec`` names; the result must be a torch.nn.Module."""
    import torch

    factory = load_factory(spec)
    try:
        model = factory()
    except Exception as exc:
        raise ModelError(
            f"model factory {spec} raised {type(exc).__name__}: {exc}{_where(exc)}; fix the "
            "factory so that it builds the model with no arguments"
        ) from exc
    if not isinstance(model, torch.nn.Module):
        raise ModelError(
            f"model factory {spec} returned {type(model).__name__}, not a torch.nn.Module; "
            "return the model itself (e.g. `return MyNet()`)"
        )
    return model


def run(args: argparse.Namespace) -> int:
    from int8kit._deps import require

    torch = require("torch", "int8kit torch")
    from int8kit.data import DataConfig, InputSpec, PreprocessConfig, make_source, split
    from int8kit.torch import QuantConfig
    from int8kit.torch.export import output_paths
    from int8kit.torch.workflow import load_weights, quantize_to_onnx

    shape = parse_shape(args.input_shape)
    if args.holdout < 0:
        raise Int8kitError(f"--holdout must be >= 0, got {args.holdout}")
    try:
        config = QuantConfig(
            method=args.method,
            percentile=args.percentile,
            exclude=args.exclude,
            quantize_input_layers=args.quantize_input_layers,
            bias_correction=args.bias_correction,
            bias_gate=args.bias_gate,
            equalize_depthwise=args.equalize_depthwise,
            center_one_sided=args.center_one_sided,
        )
        pre = PreprocessConfig(
            recipe=args.recipe,
            size=shape[2:],
            mean=tuple(float(v) for v in args.mean.split(",")),
            std=tuple(float(v) for v in args.std.split(",")),
        )
        data = DataConfig(
            source=args.calib,
            num_samples=args.num_samples,
            batch_size=args.batch_size,
            preprocess=pre,
        )
    except ValueError as exc:
        raise flag_error(exc, TORCH_FLAGS) from exc
    outputs = output_paths(args.output)
    check_outputs(
        {"--weights": args.weights, "--calib": args.calib},
        {"-o": outputs["onnx"], **{f"the {k} file": v for k, v in outputs.items() if k != "onnx"}},
    )
    from int8kit.cli.torch_dist import shard_source
    from int8kit.torch import distributed

    model = build_model(args.factory)
    if args.weights:
        load_weights(model, args.weights)
    joined = not distributed.active()
    device = distributed.init_from_env(args.device)
    joined = joined and distributed.active()  # this call started the process group
    model.to(device)
    specs = [InputSpec("input", (None, *shape[1:]))]
    held = None
    if args.holdout:
        source, held = split(data, specs, args.holdout)
    else:
        source = make_source(data, specs)
    source = shard_source(source, distributed.rank(), distributed.world_size())

    def batches():
        return (torch.from_numpy(b["input"]) for b in source)

    def holdout():
        return (torch.from_numpy(b["input"]) for b in held)

    summary = quantize_to_onnx(
        model,
        batches,
        torch.zeros(shape),
        args.output,
        config=config,
        qat_epochs=args.qat_epochs,
        lr=args.lr,
        opset=args.opset,
        holdout=holdout if held is not None else None,
        task=args.task,
    )
    main_rank = distributed.is_main()
    if joined:
        torch.distributed.destroy_process_group()
    if main_rank:
        print_summary(summary, args.factory)
    return 0


def print_summary(summary: dict, factory: str, out=None) -> None:
    """What `int8kit quantize` prints, for the PyTorch path (cli.summary holds the shared
    parts): recipe, calibration, float stem, depthwise equalization, centring, bias correction,
    QAT, files, held-out fidelity, trtexec lines."""
    from int8kit.cli.summary import print_bias_correction, print_fidelity, print_trtexec

    p = lambda *a: print(*a, file=out)  # noqa: E731
    method = summary["config"]["method"]
    rec = summary.get("recipe")
    if rec:
        method = f"auto ({rec['family']}): {method}"
    p(f"int8kit: {factory} -> INT8 ({method}) in {summary.get('seconds', 0.0):.1f} s")
    p(
        f"  calibration: {summary.get('calibration_samples', 0)} samples, "
        f"{summary['calibration_s']:.1f} s; {summary.get('quantizers', 0)} quantizers"
    )
    stem = summary.get("input_layers_float")
    if stem:
        p(
            f"  float (read the network input): {', '.join(stem)} "
            "(--quantize-input-layers quantizes them)"
        )
    dw = summary.get("equalize_depthwise") or {}
    if dw.get("equalized") or dw.get("skipped"):
        done = dw.get("equalized", {})
        p(
            f"  depthwise equalization: {len(done)} of {len(done) + len(dw.get('skipped', {}))} "
            "depthwise convs got per-channel input ranges"
        )
    ctr = summary.get("center_one_sided") or {}
    if ctr.get("centered"):
        ratios = [d["amax"] / d["amax_before"] for d in ctr["centered"].values()]
        p(
            f"  one-sided inputs centred: {len(ctr['centered'])} layers (int8 step "
            f"x{statistics.median(ratios):.2g}, median), the shift folded into their biases"
        )
    print_bias_correction(summary.get("bias_correction", {}), p)
    for kind, path in summary["outputs"].items():
        p(f"{kind:8s} {path}")
    if "qat" in summary:
        qat = summary["qat"]
        p(f"qat      {qat['steps']} steps, loss {qat['loss_first']:.4g} -> {qat['loss_last']:.4g}")
    print_fidelity(summary.get("fidelity", {}), summary.get("holdout_samples", 0), p)
    outputs = summary["outputs"]
    if "fp32" in outputs:
        stem_path = str(outputs["onnx"]).removesuffix(".onnx")
        print_trtexec(
            outputs["fp32"],
            outputs["onnx"],
            outputs.get("cache"),
            stem_path,
            summary.get("input_shapes", {}),
            p,
        )
