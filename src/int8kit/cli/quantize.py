"""`int8kit quantize MODEL --calib DATA -o OUT.onnx`: Q/DQ ONNX + ranges (+ TensorRT cache)."""

from __future__ import annotations

import argparse

import numpy as np

from int8kit.calib.cache import ALGORITHMS, DEFAULT_VERSION
from int8kit.cli.dataargs import CONFIG_FLAGS, add_data_args, data_config, flag_error
from int8kit.cli.eval import fmt
from int8kit.cli.summary import print_bias_correction, print_fidelity, print_trtexec
from int8kit.fileio import check_outputs
from int8kit.onnx.placement import PlacementConfig
from int8kit.onnx.targets import TARGETS
from int8kit.workflow import ALL_METHODS


def add_calib_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("calibration")
    g.add_argument(
        "--method",
        default="auto",
        choices=ALL_METHODS,
        help="range method. auto (default): the default recipe of the graph's family for a "
        "TensorRT Q/DQ model (mse with depthwise equalization and centring; --explain-rules "
        "prints it), mse for --target ort-cpu, entropy (= TensorRT EntropyCalibration2) for a "
        "cache-only `calibrate`",
    )
    g.add_argument("--percentile", type=float, default=99.99, help="for --method percentile")
    g.add_argument(
        "--sample-quantile",
        type=float,
        default=0.9,
        metavar="Q",
        help="for --method quantile-max: the Q-quantile of the per-sample |x| maxima (mean-max: "
        "their mean; both robust to a few outlier samples, independent of --batch-size)",
    )
    g.add_argument("--num-bins", type=int, default=2048, help="histogram bins (default 2048)")
    g.add_argument(
        "--cache-version",
        type=int,
        default=DEFAULT_VERSION,
        help=f"the N of the cache header TRT-N-... (default {DEFAULT_VERSION})",
    )
    g.add_argument(
        "--cache-algorithm",
        default=ALGORITHMS[0],
        choices=ALGORITHMS,
        help="cache header label; trtexec reads only EntropyCalibration2",
    )
    g.add_argument(
        "--ranges",
        metavar="RANGES.json",
        help="reuse the ranges of an earlier run instead of calibrating",
    )


def register(sub) -> None:
    p = sub.add_parser(
        "quantize",
        help="calibrate an ONNX model and write Q/DQ ONNX and ranges (--cache: TensorRT cache)",
        description="Calibrate MODEL on DATA; write OUT (explicit Q/DQ ONNX) and "
        "OUT-stem.ranges.json, with --cache also OUT-stem.calib.cache (trtexec --calib), "
        "atomically.",
    )
    p.add_argument("model", help="FP32 ONNX model (never modified)")
    p.add_argument("-o", "--output", required=True, help="Q/DQ ONNX to write, e.g. model.int8.onnx")
    add_data_args(p, required=False)
    add_calib_args(p)
    p.add_argument(
        "--cache",
        action="store_true",
        help="also write OUT-stem.calib.cache for TensorRT 8.6-10 implicit INT8 (trtexec "
        "--calib); calibrates every tensor, 2-3x the work of the Q/DQ tensors alone",
    )
    g = p.add_argument_group("target")
    g.add_argument(
        "--target",
        default="tensorrt",
        choices=TARGETS,
        help="where the INT8 model runs: tensorrt (default: int8 activations, symmetric) or "
        "ort-cpu (ONNX Runtime on a CPU: uint8 activations with zero points, placement its "
        "integer kernels fuse, fidelity measured on those kernels)",
    )
    g.add_argument(
        "--reduce-range",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="ort-cpu: 7-bit weights, so ONNX Runtime's u8 x s8 products cannot saturate on "
        "CPUs without VNNI (default: on exactly where the CPU lacks AVX512-VNNI/AVX-VNNI/AMX)",
    )
    g = p.add_argument_group("placement")
    g.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="REGEX",
        help="leave nodes whose name matches in float (repeatable)",
    )
    g.add_argument("--op-types", help="comma-separated op types to quantize (default: the rules)")
    g.add_argument(
        "--quantize-input-layers",
        action="store_true",
        help="also quantize the layers that read the network input (the stem conv); by default "
        "they stay float: the pixel grid of the input quantizes badly and they cost little",
    )
    g.add_argument(
        "--bias-correction",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="shift the biases of layers with int8 weights so their mean output matches FP32 "
        "(default on; needs --calib)",
    )
    add_bias_gate_arg(g)
    g.add_argument(
        "--bias-stats",
        default="local",
        choices=["local", "empirical"],
        help="bias correction statistics: local (default: each layer's own input quantized; "
        "one FP32 pass) or empirical (upstream layers quantized and corrected first; 4 more "
        "passes of the Q/DQ model)",
    )
    g.add_argument(
        "--equalize",
        action="store_true",
        help="cross-layer equalization of Conv->(Relu|LeakyRelu|none)->Conv pairs before "
        "calibration (same FP32 function; pairs through Relu6/Clip are skipped and listed)",
    )
    g.add_argument(
        "--equalize-depthwise",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="give each input channel of a depthwise Conv its own range through one scale per "
        "tensor (channels divided by their range, the depthwise weights multiplied by it; same "
        "FP32 function), where held-out calibration samples show the int8 error at most a third; "
        "--method auto does it by default (recipes.py), --no-equalize-depthwise turns it off",
    )
    g.add_argument(
        "--center-one-sided",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="one-sided activations (ReLU/GELU/HardSwish outputs) read by 1x1 Convs, Gemm and "
        "MatMul: subtract the middle of their range and add it back in those layers' biases, "
        "so the signed int8 scale covers only the values that occur (half the step; same FP32 "
        "function). --no-center-one-sided turns the default recipe's choice off",
    )
    g.add_argument(
        "--max-pool-max",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="inputs of MaxPool reach as far as the range of the pool's output where the "
        "method clipped them below it (a max pool passes on the largest values). --method auto "
        "does it by default, --no-max-pool-max turns it off",
    )
    g.add_argument(
        "--smooth-quant",
        nargs="?",
        const="auto",
        default=None,
        type=_alpha,
        metavar="ALPHA|auto|off",
        help="SmoothQuant before calibration: move activation outliers into the weights of the "
        "MatMul/Gemm layers reading them (same FP32 function). ALPHA in [0, 1], or auto (the "
        "default when the flag has no value): per activation, the alpha of 0.3..0.8 (or none) "
        "with the lowest int8 error of its layers on calibration rows. --method auto smooths "
        "transformers by default (recipes.py); off turns that off",
    )
    g.add_argument(
        "--adaround",
        action="store_true",
        help="learn each int8 weight's rounding (up or down) to keep every layer's output close "
        "to FP32 on calibration data (AdaRound); opt-in, bounded by --adaround-seconds",
    )
    g.add_argument(
        "--adaround-seconds",
        type=float,
        default=60.0,
        metavar="S",
        help="time budget of --adaround, its statistics pass included (default 60)",
    )
    g.add_argument(
        "--explain-rules", action="store_true", help="print the placement rules and exit"
    )
    g = p.add_argument_group("check")
    add_holdout_args(g)
    g.add_argument("--json", metavar="FILE", help="also write the summary as JSON")
    g.add_argument(
        "--report", metavar="DIR", help="write report.md, report.html and plots into DIR"
    )
    add_fallback_args(p)
    p.set_defaults(func=run)


def add_bias_gate_arg(group) -> None:
    """``--bias-gate/--no-bias-gate``, as `int8kit quantize` and `int8kit torch quantize` take it."""
    group.add_argument(
        "--bias-gate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep a layer's bias correction only where it lowers that layer's output error on "
        "calibration samples held out from its estimate (default on)",
    )


def add_holdout_args(group) -> None:
    """``--holdout N`` and ``--task``: the held-out fidelity check both quantize commands run."""
    from int8kit.analysis.fidelity import TASKS

    group.add_argument(
        "--holdout",
        type=int,
        default=4,
        help="images kept out of calibration to measure INT8 vs FP32 (0: skip)",
    )
    group.add_argument("--task", default="auto", choices=list(TASKS))


def add_fallback_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("fallback and high precision")
    g.add_argument(
        "--target-sqnr",
        type=float,
        metavar="DB",
        help="leave the most sensitive layers unquantized until the held-out SQNR reaches DB; "
        "the worst output part counts (a detector's box and score parts apart)",
    )
    g.add_argument(
        "--target-top1",
        type=float,
        metavar="FRACTION",
        help="as --target-sqnr, for a classifier's top-1 agreement with FP32 (e.g. 0.99; "
        "--task classify)",
    )
    g.add_argument(
        "--max-float-layers",
        metavar="N|P%",
        help="most layers the target may leave unquantized: a count or a share of the quantized "
        "layers (default 10%%); the most sensitive layers' ranges are repaired first",
    )
    g.add_argument(
        "--sensitivity-samples",
        type=int,
        default=8,
        metavar="N",
        help="calibration samples the layers are ranked on (default 8)",
    )
    g.add_argument(
        "--high-precision",
        default="fp32",
        choices=["fp32", "fp16"],
        help="type of everything left in float (fp16: for strongly typed TensorRT)",
    )
    g.add_argument(
        "--keep-io-types",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with fp16: keep the model's FP32 inputs and outputs (default yes)",
    )


def build_config(args: argparse.Namespace, write_qdq: bool = True):
    from int8kit.workflow import CalibConfig, QuantizeConfig

    try:
        return QuantizeConfig(
            model=args.model,
            output=args.output,
            data=data_config(args),
            calib=CalibConfig(
                method=args.method,
                percentile=args.percentile,
                sample_quantile=getattr(args, "sample_quantile", 0.9),
                num_bins=args.num_bins,
                cache_version=args.cache_version,
                cache_algorithm=args.cache_algorithm,
            ),
            placement=PlacementConfig(
                op_types=args.op_types.split(",") if getattr(args, "op_types", None) else None,
                exclude=getattr(args, "exclude", []),
                quantize_input_layers=getattr(args, "quantize_input_layers", False),
            ),
            holdout=getattr(args, "holdout", 0),
            ranges=args.ranges,
            task=getattr(args, "task", "auto"),
            write_qdq=write_qdq,
            write_cache=getattr(args, "cache", False),
            bias_correction=getattr(args, "bias_correction", True),
            bias_gate=getattr(args, "bias_gate", True),
            bias_stats=getattr(args, "bias_stats", "local"),
            equalize=getattr(args, "equalize", False),
            equalize_depthwise=getattr(args, "equalize_depthwise", None),
            center_one_sided=getattr(args, "center_one_sided", None),
            max_pool_max=getattr(args, "max_pool_max", None),
            smooth_quant=getattr(args, "smooth_quant", None),
            adaround=getattr(args, "adaround", False),
            adaround_seconds=getattr(args, "adaround_seconds", 60.0),
            target_sqnr=getattr(args, "target_sqnr", None),
            target_top1=getattr(args, "target_top1", None),
            sensitivity_samples=getattr(args, "sensitivity_samples", 8),
            max_float_layers=getattr(args, "max_float_layers", None),
            high_precision=getattr(args, "high_precision", "fp32"),
            keep_io_types=getattr(args, "keep_io_types", True),
            report=getattr(args, "report", None),
            target=getattr(args, "target", "tensorrt"),
            reduce_range=getattr(args, "reduce_range", None),
        )
    except ValueError as exc:
        raise flag_error(exc, CONFIG_FLAGS) from exc


def run(args: argparse.Namespace) -> int:
    from int8kit.workflow import quantize_onnx

    if args.explain_rules:
        from int8kit.onnx.rules import describe
        from int8kit.onnx.targets import describe_rules
        from int8kit.recipes import describe as describe_recipe

        print(describe_rules() if args.target == "ort-cpu" else describe())
        print(describe_recipe())
        return 0
    config = build_config(args)
    check_outputs(config.input_paths(), {**config.output_paths(), "--json": args.json})
    result = quantize_onnx(config)
    print_summary(result)
    if args.json:
        from int8kit.fileio import write_json

        write_json(args.json, summary_dict(result))
    return 0


def summary_dict(result) -> dict:
    return {
        "outputs": {k: str(v) for k, v in result.outputs.items()},
        "images_used": result.images_used,
        "images_skipped": result.images_skipped,
        "images_dropped": result.images_dropped,
        "skipped_files": [list(x) for x in result.skipped_files],
        "seconds": result.seconds,
        "calibration_seconds": result.calibration_seconds,
        "tensors_calibrated": result.tensors_calibrated,
        "activations_quantized": result.activations_quantized,
        "weights_quantized": result.weights_quantized,
        "weight_tensors_quantized": result.weight_tensors_quantized,
        "nonfinite": result.nonfinite,
        "rounds_to_zero": result.rounds_to_zero,
        "holdout_images": result.holdout_images,
        "fidelity": result.fidelity,
        "fallback": result.fallback,
        "fp16": result.fp16,
        "method": result.method,
        "recipe": result.recipe,
        "bias_correction": result.bias_correction,
        "equalize": result.equalize,
        "equalize_depthwise": result.equalize_depthwise,
        "center": result.center,
        "smooth_quant": result.smooth_quant,
        "adaround": result.adaround,
        "target": result.target,
        "config": result.config.to_dict(),
    }


def weights_quantized(result) -> str:
    """'61 layers', and '(1 tensor shared)' after it when layers share their weights."""
    layers, tensors = result.weights_quantized, result.weight_tensors_quantized
    shared = f" ({tensors} tensor{'s' if tensors != 1 else ''} shared)" if tensors != layers else ""
    return f"{layers} layer{'s' if layers != 1 else ''}{shared}"


def print_summary(result, out=None) -> None:
    p = lambda *a: print(*a, file=out)  # noqa: E731
    cfg = result.config
    method = result.method or cfg.calib.method
    if cfg.calib.method == "auto":
        fam = result.recipe.get("family")
        method = f"auto{f' ({fam})' if fam else ''}: {method}"
    p(f"int8kit: {cfg.model} -> INT8 ({method}) in {result.seconds:.1f} s")
    if not cfg.ranges:
        p(
            f"  calibration: {result.images_used} samples used, {result.images_skipped} skipped"
            + (
                f", {result.images_dropped} dropped (a short final batch for the model's fixed "
                "batch size)"
                if result.images_dropped
                else ""
            )
            + f", {result.calibration_seconds:.1f} s"
        )
        for path, why in result.skipped_files[:5]:
            p(f"    skipped {path}: {why}")
        if len(result.skipped_files) > 5:
            p(f"    ... and {len(result.skipped_files) - 5} more")
    qdq = (
        f"; Q/DQ on {result.activations_quantized} activations and the weights of "
        f"{weights_quantized(result)}"
        if "qdq_onnx" in result.outputs
        else ""
    )
    p(f"  ranges: {result.tensors_calibrated} tensors{qdq}")
    if result.target.get("name", "tensorrt") != "tensorrt":
        p(f"  target {result.target['scheme']}")
    for warning in result.target.get("warnings", []):
        p(f"  WARNING: {warning}")
    if "qdq_onnx" in result.outputs and not result.activations_quantized:
        p(
            "  WARNING: nothing was quantized: the compute layers of the main graph (if any) "
            "all read the network input or were excluded (--quantize-input-layers quantizes the "
            "first layers too)"
        )
    eq = result.equalize
    if eq:
        p(
            f"  equalization: {len(eq['pairs'])} Conv pairs ({eq['iterations']} rounds), weight "
            f"channel range spread {eq['range_spread_before']:.3g} -> "
            f"{eq['range_spread_after']:.3g}; {len(eq['skipped'])} pairs skipped"
        )
        for pair, why in list(eq["skipped"].items())[:3]:
            p(f"    skipped {pair}: {why}")
    dw = result.equalize_depthwise
    if dw.get("failed"):
        p(f"  WARNING: {dw['failed']}")
    elif dw and (dw.get("equalized") or dw.get("skipped")):
        done = dw.get("equalized", {})
        ratios = [d["error_ratio"] for d in done.values() if "error_ratio" in d]
        p(
            f"  depthwise equalization: {len(done)} of {len(done) + len(dw.get('skipped', {}))} "
            "depthwise inputs got per-channel ranges"
            + (f" (held-out int8 error x{np.median(ratios):.2g}, median)" if ratios else "")
        )
    ctr = result.center
    if ctr.get("failed"):
        p(f"  WARNING: {ctr['failed']}")
    elif ctr.get("centered"):
        ratios = [d["amax"] / d["amax_before"] for d in ctr["centered"].values()]
        p(
            f"  one-sided activations centred: {len(ctr['centered'])} (int8 step "
            f"x{np.median(ratios):.2g}, median), the shift folded into their readers' biases"
        )
    _print_ptq(result, p)
    print_bias_correction(result.bias_correction, p)
    if result.nonfinite:
        p(
            f"  WARNING: {len(result.nonfinite)} tensors produced NaN/Inf (left out of the statistics):"
        )
        for name, (nan, inf) in list(result.nonfinite.items())[:5]:
            p(f"    {name}: {nan} NaN, {inf} Inf")
    if result.rounds_to_zero:
        from int8kit.calib.underflow import warning

        p("  WARNING: " + warning(result.rounds_to_zero).replace("\n", "\n  "))
    if result.fallback:
        _print_fallback(result.fallback, p)
    if result.fp16:
        p(
            f"  float parts in FP16 (opset {result.fp16['opset']}, FP16 Q/DQ scales); "
            f"{len(result.fp16['kept_fp32'])} nodes kept FP32"
        )
    for kind, path in result.outputs.items():
        p(f"  wrote {kind:8s} {path}")
    print_fidelity(result.fidelity, result.holdout_images, p)
    if "qdq_onnx" in result.outputs and cfg.target == "tensorrt":
        _print_trtexec(result, p)


def _alpha(text: str) -> float | str:
    if text in ("auto", "off"):
        return text
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected auto, off or an alpha in [0, 1], got {text!r}")
    return value


def _print_ptq(result, p) -> None:
    sq = result.smooth_quant
    if sq:
        alphas = sorted({d["alpha"] for d in sq["smoothed"].values()})
        inserted = sum(1 for d in sq["smoothed"].values() if d["where"] == "inserted Mul")
        p(
            f"  SmoothQuant ({sq['alpha']}): {len(sq['smoothed'])} activations smoothed "
            f"(alpha {', '.join(f'{a:g}' for a in alphas) or '-'}; {inserted} by an inserted "
            f"Mul, the rest folded into their producer), {sq['seconds']:.1f} s"
        )
    ada = result.adaround
    if ada:
        kept = [n for n, d in ada["layers"].items() if d["kept"]]
        ratio = [d["adaround"] / d["rtn"] for d in ada["layers"].values() if d["rtn"] > 0]
        median = f"{np.median(ratio):.3g}" if ratio else "-"
        p(
            f"  AdaRound: {len(kept)} of {len(ada['layers']) + len(ada['skipped'])} layers "
            f"rounded (median layer output error vs nearest rounding x{median}), "
            f"{ada['seconds']:.1f} s"
        )


def _print_fallback(fb: dict, p) -> None:
    def metrics(m: dict) -> str:
        top1 = f", top-1 {fmt(m['top1'])}" if m.get("top1") is not None else ""
        return f"worst-part SQNR {fmt(m['sqnr_db'])} dB{top1}"

    state = "reached" if fb["reached"] else "NOT reached"
    p(
        f"  fallback: target {state} on {fb['holdout_samples']} held-out samples with "
        f"{len(fb['excluded'])} of {fb['layers']} layers unquantized "
        f"({fb['evaluations']} evaluations)"
    )
    p(f"    all quantized: {metrics(fb['before'])}; with fallback: {metrics(fb['after'])}")
    if fb.get("ranges"):
        picks = ", ".join(f"{t} -> {m}" for t, m in list(fb["ranges"].items())[:5])
        more = f" (+{len(fb['ranges']) - 5} more)" if len(fb["ranges"]) > 5 else ""
        p(f"    ranges repaired first ({metrics(fb['after_ranges'])}): {picks}{more}")
    for name, m in fb.get("missed", {}).items():
        unit = " dB" if name == "sqnr_db" else ""
        p(
            f"    MISSED {name}: {fmt(m['reached'])}{unit} < {fmt(m['target'])}{unit} with the "
            f"budget of {fb['max_float']} float layers spent (--max-float-layers to allow more)"
        )
    if fb.get("why"):
        p(f"    why: {fb['why']}")
    if fb["exclude"]:
        p("    reproduce without the search:")
        p("      " + " ".join(f"--exclude '{x}'" for x in fb["exclude"]))


def _print_trtexec(result, p) -> None:
    cfg = result.config
    print_trtexec(
        cfg.model,
        result.outputs["qdq_onnx"],
        result.outputs.get("cache"),
        cfg.stem,
        result.input_shapes,
        p,
    )
