"""The ``--report DIR`` of ``quantize`` and ``eval``: fidelity per output and backend, ranges
summary, per-tensor SQNR, the worst tensors' histograms with each method's threshold, layer
sensitivity and fallback — as report.md, report.html and PNGs in DIR."""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from pathlib import Path

from int8kit.analysis.fidelity import failure
from int8kit.fileio import output_folder
from int8kit.report.document import Document

WORST = 4  # tensors whose histograms are drawn


def _file(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")[:80] or "tensor"


def fidelity_section(doc: Document, fidelity: dict, samples) -> None:
    doc.heading("Fidelity: INT8 vs FP32")
    doc.text(
        f"On {samples} held-out samples. trt-like = the Q/DQ graph unfused (what TensorRT "
        "computes); ort-int8 = ONNX Runtime's fused integer kernels. A detector's box and score "
        "parts are measured apart; mAP@0.5 uses the FP32 detections as ground truth."
    )
    rows = []
    for backend, outputs in fidelity.items():
        if failure(outputs):
            rows.append([backend, f"FAILED: {failure(outputs)}"] + [None] * 7)
            continue
        for name, m in outputs.items():
            rows.append(
                [
                    backend,
                    name,
                    m.get("task", "raw"),
                    m.get("sqnr_db"),
                    m.get("cosine"),
                    m.get("box_sqnr_db"),
                    m.get("score_sqnr_db"),
                    m.get("map50"),
                    m.get("top1_agreement"),
                ]
            )
    doc.table(
        [
            "backend",
            "output",
            "task",
            "SQNR dB",
            "cosine",
            "box dB",
            "score dB",
            "mAP@0.5",
            "top-1",
        ],
        rows,
    )


def ranges_section(doc: Document, ranges, quantized: set[str]) -> None:
    doc.heading("Ranges")
    methods = Counter(r.method for n, r in ranges.tensors.items() if n in quantized)
    doc.text(
        f"{len(ranges.tensors)} tensors calibrated, {len(quantized)} quantized in the Q/DQ "
        "model; methods of the quantized ones: "
        + ", ".join(f"{m} {c}" for m, c in methods.most_common())
    )
    clipped = []
    for n in quantized:
        r = ranges.tensors.get(n)
        if r is None or not r.stats.get("max") or r.amax <= 0:
            continue
        peak = max(abs(r.stats.get("max") or 0.0), abs(r.stats.get("min") or 0.0))
        clipped.append((peak / r.amax, n, r))
    clipped.sort(reverse=True)
    doc.text("Most clipped quantized tensors (largest |x| seen / amax used):")
    doc.table(
        ["tensor", "method", "amax", "max |x|", "ratio"],
        [[n, r.method, r.amax, ratio * r.amax, ratio] for ratio, n, r in clipped[:10]],
    )


def layers_section(doc: Document, folder: Path, rows: list[dict], plots: bool) -> None:
    doc.heading("Per-tensor SQNR")
    if plots:
        from int8kit.report.plots import layer_sqnr_plot

        layer_sqnr_plot(folder / "layer_sqnr.png", rows)
        doc.image("layer_sqnr.png", "SQNR vs FP32 of every tensor in graph order")
    worst = sorted(
        (r for r in rows if not math.isnan(r["added_sqnr_db"])), key=lambda r: r["added_sqnr_db"]
    )[:10]
    doc.text("Tensors adding the most error (added = SQNR of the noise the op adds alone):")
    doc.table(
        ["tensor", "op", "SQNR dB", "input dB", "added dB"],
        [
            [r["tensor"] + (" (Q/DQ)" if r["op"] == "Q/DQ" else ""), r["op"], r["sqnr_db"],
             r["input_sqnr_db"], r["added_sqnr_db"]]
            for r in worst
        ],
    )  # fmt: skip


def worst_tensors(rows: list[dict], ranges, quantized: set[str], k: int = WORST) -> list[str]:
    """The quantized tensors whose Q/DQ adds the most error; without per-tensor rows, the most
    clipped ones."""
    qdq = [r for r in rows if r["op"] == "Q/DQ" and not math.isnan(r["added_sqnr_db"])]
    if qdq:
        return [r["tensor"] for r in sorted(qdq, key=lambda r: r["added_sqnr_db"])[:k]]
    ratio = {
        n: (ranges.tensors[n].stats.get("max") or 0.0) / max(ranges.tensors[n].amax, 1e-30)
        for n in quantized
        if ranges is not None and n in ranges.tensors
    }
    return sorted(ratio, key=ratio.get, reverse=True)[:k]


def histograms_section(
    doc: Document, folder: Path, model, tensors, data, chosen: dict, candidates: dict, note: str
) -> None:
    from int8kit.calib.collector import HistogramCollector
    from int8kit.calib.methods import METHODS
    from int8kit.onnx.observe import observe
    from int8kit.report.plots import histogram_plot

    if not tensors or data is None:
        return
    doc.heading("Activation histograms of the worst tensors")
    doc.text(
        f"|x| histograms ({note}) with the amax each range method would pick (dashed) and the "
        "amax the model uses (solid). Everything beyond a threshold is clipped; the step "
        "between int8 codes is amax/127."
    )
    collectors = observe(model, data, HistogramCollector, names=list(tensors))
    rows = []
    for t in tensors:
        c = collectors.get(t)
        if c is None or c.counts is None:
            continue
        cands = candidates.get(t) or {m: c.compute_amax(m) for m in METHODS}
        counts, edges = c.histogram
        name = f"hist_{_file(t)}.png"
        histogram_plot(folder / name, t, counts, edges, cands, chosen.get(t), note)
        doc.image(name, f"histogram of {t}")
        rows.append([t, chosen.get(t)] + [cands.get(m) for m in METHODS])
    doc.table(["tensor", "amax used"] + list(METHODS), rows)


def sensitivity_section(doc: Document, folder: Path, sens: dict, plots: bool) -> None:
    rows = sens.get("rows") or []
    if not rows:
        return
    doc.heading("Layer sensitivity")
    base = sens.get("all_quantized", {})
    doc.text(
        f"{sens.get('layers')} quantized layers on {sens.get('samples')} samples; every layer "
        f"quantized: worst-part SQNR {_f(base.get('sqnr_db'))} dB. 'skip' = every layer but "
        "this one quantized; 'only' = only this one quantized."
    )
    if plots:
        from int8kit.report.plots import sensitivity_plot

        sensitivity_plot(folder / "sensitivity.png", rows)
        doc.image("sensitivity.png", "layer sensitivity chart")
    doc.table(
        ["rank", "layer", "op", "skip SQNR dB", "gain dB", "only SQNR dB", "skip top-1"],
        [
            [r["rank"], r["node"], r["op"], r.get("skip_sqnr_db"), r.get("gain_db"),
             r.get("only_sqnr_db"), r.get("skip_top1")]
            for r in rows[:25]
        ],
    )  # fmt: skip


def fallback_section(doc: Document, fb: dict) -> None:
    doc.heading("Fallback")
    t = fb["target"]
    want = " and ".join(
        x
        for x in (
            f"worst-part SQNR >= {t['sqnr_db']} dB" if t.get("sqnr_db") is not None else "",
            f"top-1 >= {t['top1']}" if t.get("top1") is not None else "",
        )
        if x
    )
    doc.text(
        f"Target {want}: {'reached' if fb['reached'] else 'NOT reached'} on "
        f"{fb['holdout_samples']} held-out samples with {len(fb['excluded'])} of {fb['layers']} "
        f"layers left in high precision. Worst-part SQNR {_f(fb['before']['sqnr_db'])} dB -> "
        f"{_f(fb['after']['sqnr_db'])} dB."
    )
    if fb["exclude"]:
        doc.text("Reproduce: " + " ".join(f"--exclude '{x}'" for x in fb["exclude"]))


def _f(x) -> str:
    from int8kit.report.document import cell

    return cell(x)


def _plots() -> bool:
    from int8kit._deps import available

    return available("matplotlib")


def quantize_report(
    folder: str | os.PathLike, result, model, qdq_model, ranges, calib_src, holdout_src
) -> Path:
    """The report of a ``quantize_onnx`` run; returns the path of report.md."""
    from int8kit._deps import require

    require("matplotlib", "plots")
    from int8kit.analysis.layers import compare_layers

    folder = output_folder(folder)
    cfg = result.config
    doc = Document(f"int8kit quantize report: {Path(cfg.model).name}")
    method = result.method or cfg.calib.method
    bc = result.bias_correction.get("corrected") or []
    tensors = result.weight_tensors_quantized
    shared = f" ({tensors} weight tensors, shared)" if tensors != result.weights_quantized else ""
    doc.text(
        f"Model {cfg.model} -> {cfg.output}; method {method}; "
        f"{result.images_used} calibration samples; Q/DQ on {result.activations_quantized} "
        f"activations and the weights of {result.weights_quantized} layers{shared}; biases of "
        f"{len(bc)} layers corrected; float parts in {cfg.high_precision}."
    )
    if result.fidelity:
        fidelity_section(doc, result.fidelity, result.holdout_images)
    quantized = (
        {n.input[0] for n in qdq_model.graph.node if n.op_type == "QuantizeLinear"}
        if (qdq_model is not None)
        else set()
    )
    ranges_section(doc, ranges, quantized)
    rows: list[dict] = []
    if qdq_model is not None and holdout_src is not None and cfg.keep_io_types:
        rows = [r.to_dict() for r in compare_layers(model, qdq_model, holdout_src)]
        layers_section(doc, folder, rows, True)
    worst = worst_tensors(rows, ranges, quantized)
    chosen = {t: ranges.tensors[t].amax for t in worst if t in ranges.tensors}
    cands = {t: ranges.tensors[t].candidates for t in worst if t in ranges.tensors}
    histograms_section(doc, folder, model, worst, calib_src, chosen, cands, "calibration data")
    if result.fallback:
        sensitivity_section(doc, folder, result.fallback.get("sensitivity") or {}, True)
        fallback_section(doc, result.fallback)
    return doc.write(folder)


def qdq_amax(model) -> dict[str, float]:
    """{tensor: amax} from a Q/DQ model's activation QuantizeLinear scales (scale * 127)."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    out = {}
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[1] in inits:
            s = numpy_helper.to_array(inits[n.input[1]])
            if s.size == 1:
                out[n.input[0]] = float(s.reshape(())) * 127.0
    return out


def eval_report(folder: str | os.PathLike, result: dict, fp32, int8, make_data) -> Path:
    """The report of ``eval``: ``make_data()`` returns a fresh iterable of the evaluation
    batches for each extra pass (per-tensor SQNR, histograms)."""
    from int8kit._deps import require

    require("matplotlib", "plots")
    from int8kit.analysis.layers import compare_layers
    from int8kit.onnx.model_io import load_model

    folder = output_folder(folder)
    fp32_m = load_model(fp32) if not hasattr(fp32, "graph") else fp32
    int8_m = load_model(int8) if not hasattr(int8, "graph") else int8
    doc = Document(f"int8kit eval report: {Path(str(int8)).name}")
    doc.text(f"FP32 {fp32} vs INT8 {int8}.")
    fidelity_section(doc, result["outputs"], result.get("samples"))
    rows = [r.to_dict() for r in compare_layers(fp32_m, int8_m, make_data())]
    layers_section(doc, folder, rows, True)
    amax = qdq_amax(int8_m)
    worst = worst_tensors(rows, None, set(amax))
    histograms_section(doc, folder, fp32_m, worst, make_data(), amax, {}, "evaluation data")
    return doc.write(folder)
