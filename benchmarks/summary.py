"""benchmarks/results/summary.md from the result JSONs."""

from __future__ import annotations

import json

from common import BENCH, MODELS, RESULTS

NOTE = {
    "int8kit-auto": "**int8kit default** (auto = minmax + bias correction, stem float)",
    "int8kit-entropy-plain": "int8kit entropy, every layer INT8, no bias correction (= TensorRT's calibrator)",
    "ort-minmax": "ORT quantize_static MinMax",
    "ort-entropy": "ORT quantize_static Entropy",
    "ort-percentile": "ORT quantize_static Percentile",
    "modelopt-entropy": "Model Optimizer entropy",
    "modelopt-max": "Model Optimizer max",
    "nncf": "NNCF (default preset; UINT8 activations, not TensorRT-deployable)",
    "nncf-signed": "NNCF, activations forced signed INT8 (TensorRT-deployable)",
}


speed_runs = 0  # processes per method in calib_speed.json


def _f(v, fmt="{:.2f}"):
    return "—" if v is None else fmt.format(v)


# fidelity columns per task: (backend, metric, format)
_FIDELITY = {
    "detect": [
        ("trt-like", "map50", "{:.3f}"),
        ("trt-like", "box_sqnr_db", "{:.1f}"),
        ("trt-like", "score_sqnr_db", "{:.1f}"),
        ("ort-int8", "map50", "{:.3f}"),
        ("ort-int8", "score_sqnr_db", "{:.1f}"),
    ],
    "classify": [
        ("trt-like", "top1_agreement", "{:.3f}"),
        ("trt-like", "topk_overlap", "{:.3f}"),
        ("trt-like", "sqnr_db", "{:.1f}"),
        ("ort-int8", "top1_agreement", "{:.3f}"),
        ("ort-int8", "sqnr_db", "{:.1f}"),
    ],
}


def _fidelity_row(task: str, label: str, r: dict) -> list[str]:
    fid = r.get("fidelity", {})
    return [label] + [_f(fid.get(b, {}).get(m), fmt) for b, m, fmt in _FIDELITY[task]]


def _common(r, fp32_ms):
    rs = r.get("result") or {}
    lat = r.get("latency_ms")
    q = r.get("qdq", {})
    return [
        _f(r.get("wall_s"), "{:.1f}"),
        _f(r.get("cpu_s"), "{:.1f}"),
        _f(rs.get("quantize_s"), "{:.1f}"),
        _f(r.get("peak_rss_mib"), "{:.0f}"),
        _f(lat, "{:.1f}") + (f" ({fp32_ms / lat:.2f}× FP32 speed)" if lat and fp32_ms else ""),
        f"{q.get('QuantizeLinear', '—')}/{q.get('DequantizeLinear', '—')}",
    ]


def table(name: str, data: dict) -> str:
    detect = MODELS[name][2] == "detect"
    head = (
        [
            "tool",
            "mAP@0.5 trt-like",
            "box SQNR dB",
            "score SQNR dB",
            "mAP@0.5 ort-int8",
            "score SQNR ort-int8",
        ]
        if detect
        else [
            "tool",
            "top-1 agree trt-like",
            "top-5 overlap",
            "logit SQNR dB",
            "top-1 agree ort-int8",
            "SQNR ort-int8",
        ]
    )
    head += [
        "process wall s",
        "process CPU s",
        "quantize call s",
        "peak RSS MiB",
        "CPU ms b1 (speed-up)",
        "Q/DQ",
    ]
    runs = data["runs"]
    fp32_ms = runs.get("fp32", {}).get("latency_ms")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, r in runs.items():
        if label == "fp32":
            continue
        if not r.get("ok"):
            lines.append(
                f"| {NOTE.get(label, label)} | skipped: "
                f"{(r.get('skipped') or 'failed').splitlines()[0][:120]} |" + " |" * (len(head) - 2)
            )
            continue
        row = _fidelity_row("detect" if detect else "classify", NOTE.get(label, label), r)
        lines.append("| " + " | ".join(row + _common(r, fp32_ms)) + " |")
    lines.append("| FP32 |" + " |" * (len(head) - 3) + f" {_f(fp32_ms, '{:.1f}')} | 0/0 |")
    return "\n".join(lines)


def speed_lines(name: str, data: dict, speed: dict | None) -> list[str]:
    """Calibration cost: medians of benchmarks/calib_speed.py's fresh processes when present,
    else run_all's one run; ORT's Entropy call from run_all."""
    runs = data["runs"]
    ort_run = runs.get("ort-entropy") or {}
    ort = ort_run.get("result") or {}
    out = []
    for method, what in (
        ("auto", "default (minmax ranges, then bias correction)"),
        ("entropy", "entropy (histograms)"),
    ):
        ik_run = runs.get(f"int8kit-{method}") or {}
        ik = (speed or {}).get(name, {}).get(method) or ik_run.get("result") or {}
        if not ik.get("calibration_s") or not ik.get("floor_s"):
            continue
        how = f"median of {speed_runs} processes" if speed else "one run"
        line = (
            f"- {name}, int8kit {what}: calibration {ik['calibration_s']:.2f} s wall "
            f"= **{ik['calib_over_floor']:.2f}×** one plain FP32 ORT pass over the same images "
            f"({ik['floor_s']:.2f} s; {how})"
        )
        if ik.get("bias_correction_s"):
            line += (
                f"; bias correction {ik['bias_correction_s']:.2f} s more "
                f"({ik['calib_bias_over_floor']:.2f}× together)"
            )
        out.append(line)
        if ort.get("quantize_s") and ik.get("quantize_s"):
            out.append(
                f"  - ORT quantize_static Entropy's call took {ort['quantize_s']:.1f} s, "
                f"int8kit's whole quantize call {ik['quantize_s']:.1f} s "
                f"(**{ort['quantize_s'] / ik['quantize_s']:.1f}× faster**); peak RSS of the "
                f"processes {_f(ort_run.get('peak_rss_mib'), '{:.0f}')} vs "
                f"{_f(ik_run.get('peak_rss_mib'), '{:.0f}')} MiB"
            )
    return out


def write_summary() -> str:
    parts = ["# int8kit side by side with ONNX Runtime, Model Optimizer and NNCF", ""]
    intro = BENCH / "summary_intro.md"  # the hand-written reading of the tables below
    if intro.exists():
        parts += [intro.read_text().strip(), ""]
    speed: list[str] = []
    global speed_runs
    sp = RESULTS / "calib_speed.json"
    speed_data = json.loads(sp.read_text()) if sp.exists() else None
    speed_runs = speed_data["runs"] if speed_data else 0
    for name in MODELS:
        path = RESULTS / f"{name}.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        parts += [
            f"## {name} ({data['n_calib']} calibration / {data['n_eval']} evaluation "
            "images, disjoint source photos)",
            "",
            table(name, data),
            "",
        ]
        speed += speed_lines(name, data, speed_data["models"] if speed_data else None)
    ex = RESULTS / "exposure_cost.json"
    if ex.exists():
        for name, v in json.loads(ex.read_text()).items():
            speed.append(
                f"- {name}: ONNX Runtime with the {v['tensors_exposed']} activations exposed "
                f"(what a run with the TensorRT cache calibrates) costs {v['exposed_over_plain']:.2f}× the CPU of the plain "
                f"model, before any histogram ({v['tensors_aliased']} Reshape/Transpose-like "
                "outputs are not exposed: they share their input's statistics)"
            )
            if "qdq_over_plain" in v:
                speed.append(
                    f"  - with only the {v['tensors_qdq']} tensors that get Q/DQ (what `quantize` "
                    "calibrates without `--cache`; a zero Pad's input exposed instead of its "
                    f"output): {v['qdq_over_plain']:.2f}× — the floor of any calibration that "
                    "reads activations through ONNX Runtime"
                )
    if speed:
        parts += ["## Calibration speed", "", *speed, ""]
    rss = RESULTS / "rss_scaling.json"
    if rss.exists():
        r = json.loads(rss.read_text())
        cells = ", ".join(f"{n} images: {v['peak_rss_mib']:.0f} MiB" for n, v in r["runs"].items())
        parts += [
            "## Memory vs number of calibration images",
            "",
            f"int8kit, {r['model']}, {r['method']}, {r['source']}, each in a fresh process: "
            f"{cells} (growth {100 * r.get('growth_last_vs_first', float('nan')):+.1f}%).",
            "",
        ]
    text = "\n".join(parts)
    (RESULTS / "summary.md").write_text(text)
    return text


if __name__ == "__main__":
    write_summary()
