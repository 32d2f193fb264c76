"""Summary lines that `int8kit quantize` and `int8kit torch quantize` both print: the bias
correction, the held-out fidelity and the trtexec commands. Each takes plain dicts (a result's
``bias_correction`` and ``fidelity``) and a print function ``p``."""

from __future__ import annotations

import os
from collections.abc import Callable

from int8kit.analysis.fidelity import failure
from int8kit.cli.eval import fmt
from int8kit.errors import Int8kitError

Print = Callable[..., None]


def print_bias_correction(bc: dict, p: Print) -> None:
    """One line: layers corrected, dropped by the held-out check, mean shift; or why not run."""
    if bc.get("corrected") or bc.get("dropped"):
        gate = (
            f", {len(bc['dropped'])} dropped by the check on {bc['gate_samples']} held-out samples"
            if bc.get("gate_samples")
            else ""
        )
        stats = f" ({bc['stats']} statistics)" if bc.get("stats") == "empirical" else ""
        p(
            f"  bias correction{stats}: {len(bc['corrected'])} layers{gate}, mean |shift| "
            f"{bc['mean_abs_shift']:.3g} ({bc['seconds']:.1f} s)"
        )
    elif bc.get("not_run"):
        p(f"  bias correction not run: {bc['not_run']}")


def print_fidelity(fidelity: dict, holdout_samples: int, p: Print) -> None:
    """INT8 vs FP32 per backend and output (SQNR, cosine, and the task's own metrics)."""
    if not fidelity:
        return
    p(f"  fidelity on {holdout_samples} held-out samples (INT8 vs FP32):")
    for backend, outputs in fidelity.items():
        if failure(outputs):
            p(f"    {backend:9s} FAILED: {failure(outputs)}")
            continue
        label = (
            "as TensorRT computes (Q/DQ unfused)"
            if backend == "trt-like"
            else "ONNX Runtime integer kernels"
        )
        for name, m in outputs.items():
            parts = [f"SQNR {fmt(m['sqnr_db'])} dB", f"cos {fmt(m['cosine'])}"]
            if m.get("task") == "detect":
                parts += [
                    f"box SQNR {fmt(m['box_sqnr_db'])} dB",
                    f"score SQNR {fmt(m['score_sqnr_db'])} dB",
                    f"mAP@0.5 {fmt(m['map50'])}",
                ]
            if m.get("task") == "classify":
                parts += [
                    f"top-1 agree {fmt(m['top1_agreement'])}",
                    f"top-5 overlap {fmt(m['topk_overlap'])}",
                ]
            if m.get("shape_differs"):
                parts.append(
                    f"shape differs from FP32 on {m['shape_differs']} of {m['batches']} batches "
                    "(a data-dependent length; compared on the common part)"
                )
            p(f"    {backend:9s} {name}: " + ", ".join(parts) + f"   [{label}]")


def print_trtexec(
    fp32_onnx: str | os.PathLike,
    qdq_onnx: str | os.PathLike,
    cache: str | os.PathLike | None,
    engine_stem: str | os.PathLike,
    input_shapes: dict,
    p: Print,
) -> None:
    """The labelled trtexec lines for every TensorRT generation (trt.commands)."""
    from int8kit.trt.commands import summary_commands
    from int8kit.trt.profiles import derive_profiles

    shapes = {  # a shape, or [min, opt, max] where the calibration batches' shapes differed
        n: tuple(map(tuple, s)) if s and isinstance(s[0], (list, tuple)) else (tuple(s),)
        for n, s in input_shapes.items()
    }
    try:
        from int8kit.onnx.model_io import load_model

        profiles = derive_profiles(load_model(fp32_onnx, load_weights=False), shapes)
    except Int8kitError:
        profiles = None
    p("  TensorRT:")
    for label, cmd in summary_commands(fp32_onnx, qdq_onnx, cache, engine_stem, profiles):
        p(f"    # {label}\n    {cmd}")
