"""Does centring (onnx/center.py) need a per-tensor gate? Two measurements per model.

    .venv/bin/python benchmarks/center_gate.py local [--models ppocr_rec yolov8n ...] [--samples 16]
    .venv/bin/python benchmarks/center_gate.py band [--models ...] [--deltas 0 0.002 -0.002 0.005]
    .venv/bin/python benchmarks/center_gate.py table     # benchmarks/results/center_gate.md

local: the score a per-tensor gate would read. The default run is stopped where it centres (the
dw-equalized model and its calibrated ranges); for each tensor it centres, on the first
``--samples`` calibration samples, the int8 error of its centred readers' outputs W (q(x) - x)
with the tensor's own scale (amax/127) and centred (x - c, scale a/127), split into
- spread: within each (sample, output channel), around its mean;
- coherent: the per-(sample, channel) mean less its mean over samples. Bias correction removes
  only the mean over samples; a GlobalAveragePool, an SE gate or attention downstream sums this
  part over positions instead of averaging it away (e.g. a padded margin whose constant values
  all round the same way).
A gate that centres a tensor where its readers' error drops keeps every tensor whose ratios
(centred / uncentred) are below 1.

band: the default, without and with centring, with every quantized activation's amax scaled by
(1 + delta) before centring (after calibration: the same ranges within 0.5 %). The spread of the
task metric over delta is the rounding lottery that a difference between the two is read against.

Results: benchmarks/results/center_gate.json (one key per model and measurement).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from common import RESULTS, WORK, save_json  # noqa: E402
from zoo import data_path, model_path  # noqa: E402

OUT = RESULTS / "center_gate.json"
INT8 = WORK / "center_gate"
DELTAS = (0.0, 0.002, -0.002, 0.005)


class _Stop(BaseException):
    """Ends a quantize run where it centres (the workflow catches Exception around centring)."""


def _quantize(name: str, out: Path, hook):
    """quantize_onnx as benchmarks/zoo/check_default.py runs it, with onnx.center.center
    replaced by ``hook(original_center, model, placement, ranges)``."""
    import int8kit.onnx.center as center_mod
    from int8kit.data import DataConfig
    from int8kit.workflow import QuantizeConfig, quantize_onnx

    original = center_mod.center
    center_mod.center = lambda m, p, r: hook(original, m, p, r)
    try:
        return quantize_onnx(
            QuantizeConfig(
                model=str(model_path(name)),
                output=str(out),
                data=DataConfig(source=str(data_path(name, "calib"))),
            )
        )
    finally:
        center_mod.center = original


def _reader_matrix(node, inits) -> np.ndarray | None:
    """(outputs, inputs) weight of a centred reader, or None (a Conv with a kernel above 1x1
    or groups: not analysed)."""
    from onnx import helper, numpy_helper

    w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
    a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
    if node.op_type == "Conv":
        if a.get("group", 1) != 1 or any(k != 1 for k in w.shape[2:]):
            return None
        return w.reshape(w.shape[0], w.shape[1])
    if node.op_type == "Gemm":
        return float(a.get("alpha", 1.0)) * (w if a.get("transB", 0) else w.T)
    return w.T  # MatMul: x @ w


def _output_error(node, m: np.ndarray, e: np.ndarray) -> np.ndarray:
    """The reader's output error for input error ``e`` as (N, outputs, positions)."""
    if node.op_type == "Conv":
        flat = e.reshape(e.shape[0], e.shape[1], -1)
        return np.einsum("oc,ncp->nop", m, flat)
    flat = e.reshape(e.shape[0], -1, e.shape[-1])  # (N, tokens, features)
    return np.einsum("oc,ntc->not", m, flat)


def _quant(x: np.ndarray, step: float) -> np.ndarray:
    return np.clip(np.rint(x / step), -127, 127) * step


def local(name: str, samples: int) -> dict:
    """Per centred tensor: its readers' output error centred / uncentred (module docstring)."""
    from zoo.evaluate import load_inputs

    from int8kit.onnx.observe import expose, make_session

    captured = {}

    def hook(center, model, placement, ranges):
        captured["model"] = model
        captured["result"] = center(model, placement, ranges)
        raise _Stop

    INT8.mkdir(parents=True, exist_ok=True)
    try:
        _quantize(name, INT8 / f"{name}.local.int8.onnx", hook)
    except _Stop:
        pass
    model = captured["model"]
    summary = captured["result"][3]
    inits = {i.name: i for i in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    tensors = list(summary.centered)
    session = make_session(expose(model, tensors), optimize=False)
    inputs = load_inputs(data_path(name, "calib"))
    n = min(samples, len(next(iter(inputs.values()))))
    acc = {t: {} for t in tensors}  # tensor -> reader -> sums
    for i in range(n):
        values = session.run(tensors, {k: v[i : i + 1] for k, v in inputs.items()})
        for t, x in zip(tensors, values, strict=True):
            d = summary.centered[t]
            x = x.astype(np.float64)
            errors = (
                _quant(x, d["amax_before"] / 127.0) - x,
                _quant(x - d["shift"], d["amax"] / 127.0) - (x - d["shift"]),
            )
            for layer in d["layers"]:
                m = _reader_matrix(nodes[layer], inits)
                if m is None:
                    continue
                s = acc[t].setdefault(layer, {"spread": [0.0, 0.0], "means": ([], [])})
                for k, e in enumerate(errors):
                    out = _output_error(nodes[layer], m, e)
                    mean = out.mean(axis=2)
                    s["spread"][k] += float(((out - mean[:, :, None]) ** 2).mean())
                    s["means"][k].append(mean)
    rows = []
    for t in tensors:
        for layer, s in acc[t].items():
            spread = [v / n for v in s["spread"]]
            coherent = []
            for means in s["means"]:
                m = np.concatenate(means)
                coherent.append(float(((m - m.mean(axis=0)) ** 2).mean()))
            total = [a + b for a, b in zip(spread, coherent, strict=True)]
            rows.append(
                {
                    "tensor": t,
                    "producer": producer.get(t, "input"),
                    "reader": layer,
                    "ratio": total[1] / total[0] if total[0] else None,
                    "spread_ratio": spread[1] / spread[0] if spread[0] else None,
                    "coherent_ratio": coherent[1] / coherent[0] if coherent[0] else None,
                    "coherent_share": coherent[0] / total[0] if total[0] else None,
                }
            )

    def worst(key):
        vals = [r[key] for r in rows if r[key] is not None]
        return max(vals) if vals else None

    return {
        "samples": n,
        "tensors": len(tensors),
        "readers": len(rows),
        "max_ratio": worst("ratio"),
        "max_spread_ratio": worst("spread_ratio"),
        "max_coherent_ratio": worst("coherent_ratio"),
        "readers_worse": sum(1 for r in rows if (r["ratio"] or 0) >= 1.0),
        "rows": rows,
    }


def band(name: str, deltas) -> dict:
    """The task metric of the default without and with centring, amax x (1 + delta)."""
    from zoo.evaluate import evaluate

    out = {}
    for mode in ("none", "center"):
        for delta in deltas:

            def hook(center, model, placement, ranges, delta=delta, mode=mode):
                for t in placement.activations:
                    if t in ranges.tensors:
                        ranges.tensors[t].amax *= 1.0 + delta
                if mode == "none":
                    return model, placement, ranges, type(center(model, placement, ranges)[3])()
                return center(model, placement, ranges)

            t0 = time.perf_counter()
            path = INT8 / f"{name}.{mode}.{delta:+g}.int8.onnx"
            INT8.mkdir(parents=True, exist_ok=True)
            res = _quantize(name, path, hook)
            metrics = evaluate(name, path, ("trt-like",))["trt-like"]
            row = {
                k: v for k, v in metrics.items() if k not in ("seconds", "cpu_seconds", "samples")
            }
            row["centered"] = len(res.center.get("centered", {}))
            row["seconds"] = round(time.perf_counter() - t0, 1)
            out.setdefault(mode, {})[f"{delta:+g}"] = row
            print(json.dumps({"model": name, "mode": mode, "delta": delta, **row}), flush=True)
    return out


def table(results: dict) -> str:
    from zoo import get

    lines = [
        "# Centring: would a per-tensor gate act, and how large is the rounding lottery?",
        "",
        "Written by `benchmarks/center_gate.py table` from `benchmarks/results/center_gate.json`."
        " local: per centred tensor and reader, the reader's int8 output error (activation "
        "only) centred / uncentred on calibration samples, in total, its spread within a "
        "(sample, channel) and its per-(sample, channel) mean (coherent); `worse`: readers whose "
        "error does not drop (what a gate at ratio 1 would leave uncentred). Readers: 1x1 convs "
        "of one group, Gemm, MatMul (EfficientNet-Lite0's depthwise convs behind a zero Pad are "
        "centred but not analysed). band: the task metric (trt-"
        "like, evaluation set) of the default without / with centring, every amax x (1 + delta).",
        "",
        "## local",
        "",
        "| model | centred tensors | readers | worse | max ratio | max spread ratio | "
        "max coherent ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        loc = r.get("local")
        if loc:

            def f(v):
                return "" if v is None else f"{v:.2f}"

            lines.append(
                f"| {name} | {loc['tensors']} | {loc['readers']} | {loc['readers_worse']} | "
                f"{f(loc['max_ratio'])} | {f(loc['max_spread_ratio'])} | "
                f"{f(loc['max_coherent_ratio'])} |"
            )
    lines += ["", "## band", ""]
    for name, r in results.items():
        b = r.get("band")
        if not b:
            continue
        mod = get(name)
        keys = [mod.PRIMARY] + [k for k in ("sqnr_db", mod.SECONDARY) if k != mod.PRIMARY]
        keys = list(dict.fromkeys(keys))
        deltas = list(next(iter(b.values())))
        lines += [
            f"### {name}",
            "",
            "| centring | " + " | ".join(f"delta {d}" for d in deltas) + " | mean |",
            "|---|" + "---|" * (len(deltas) + 1),
        ]
        for mode, rows in b.items():
            for k in keys:
                vals = [rows[d].get(k) for d in deltas]
                if any(v is None for v in vals):
                    continue
                cells = " | ".join(f"{v:.4g}" for v in vals)
                lines.append(f"| {mode} {k} | {cells} | {np.mean(vals):.4g} |")
        if {"none", "center"} <= set(b):
            lines.append("")
            for k in keys:
                v = {m: [b[m][d].get(k) for d in deltas] for m in ("none", "center")}
                if any(x is None for vals in v.values() for x in vals):
                    continue
                diff = np.mean(v["center"]) - np.mean(v["none"])
                sd = {m: float(np.std(vals, ddof=1)) for m, vals in v.items()}
                lines.append(
                    f"- {k}: centring - none {diff:+.4g} (mean of {len(deltas)} draws); one "
                    f"draw's standard deviation: none {sd['none']:.3g}, centred {sd['center']:.3g}"
                )
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("local", "band", "table"))
    ap.add_argument("--models", nargs="+", default=["ppocr_rec"])
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--deltas", nargs="+", type=float, default=list(DELTAS))
    args = ap.parse_args(argv)
    results = json.loads(OUT.read_text()) if OUT.is_file() else {}
    if args.what != "table":
        for name in args.models:
            if args.what == "local":
                r = local(name, args.samples)
                print(json.dumps({k: v for k, v in r.items() if k != "rows"}), flush=True)
            else:
                r = band(name, args.deltas)
            results = json.loads(OUT.read_text()) if OUT.is_file() else {}
            results.setdefault(name, {})[args.what] = r
            save_json(OUT, results)
    OUT.with_suffix(".md").write_text(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
