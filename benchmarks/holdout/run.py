"""The default recipe on held-out models (zoo.HOLDOUT: never seen by choose_default.py), beside
the previous default, plain range methods and every peer, scored as the zoo scores (the model's
task metric vs FP32 on its evaluation set, trt-like backend; peers also on ORT's integer kernels).

    .venv/bin/python benchmarks/holdout/run.py [--models ppocr_det ...] [--entries ...] [--redo]
    .venv/bin/python benchmarks/holdout/run.py --table      # benchmarks/results/holdout.{md,json}

Entries:
  int8kit:default      quantize_onnx(QuantizeConfig(model, output, data)): the library's defaults
                       (method auto, 4 calibration samples held out for the fidelity check), as
                       benchmarks/zoo/check_default.py runs it
  int8kit:previous     the same with method mse and no depthwise equalization or centring (the
                       default before them: mse + bias correction)
  int8kit:no-center    the default without centring; int8kit:no-dw without depthwise equalization
  int8kit:<recipe>     a zoo_bench.py recipe (all calibration samples, shared ranges)
  <peer>               a zoo_bench.py peer (ORT quantize_static, NNCF, ModelOpt)

Results: benchmarks/results/holdout/<model>.json (one entry per run; kept unless --redo).
To measure a commit rather than a working tree that others are editing, put its src/ first:

    git archive HEAD src | tar -x -C /tmp/head
    HOLDOUT_INT8KIT=$(git rev-parse --short HEAD) PYTHONPATH=/tmp/head/src .venv/bin/python ...
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCH))

import zoo_bench  # noqa: E402
from common import RESULTS, save_json  # noqa: E402
from zoo import HOLDOUT, get, model_path, prepare  # noqa: E402

OUT = RESULTS / "holdout"
OWN = {
    "int8kit:default": {},
    "int8kit:previous": {
        "calib": {"method": "mse"},
        "equalize_depthwise": False,
        "center_one_sided": False,
    },
    # the default less one of its two rewrites: which one moves a model (method auto: an
    # explicit method would turn the recipe, and so the other rewrite, off as well)
    "int8kit:no-center": {"center_one_sided": False},
    "int8kit:no-dw": {"equalize_depthwise": False},
}
ENTRIES = (
    "int8kit:default",
    "int8kit:previous",
    "ort-minmax",
    "ort-entropy",
    "ort-percentile",
    "nncf",
    "nncf-signed",
    "int8kit:minmax",
    "int8kit:entropy",
    "int8kit:minmax+bc",
    "modelopt-entropy",
    "modelopt-max",
)
TRT_DEPLOYABLE_OWN = True  # int8kit's tensorrt target: int8, zero point 0, per-tensor activations


def int8_layers(path) -> str:
    """ "k/n": of the n Conv/ConvTranspose/Gemm/MatMul nodes, the k whose first two inputs are
    both DequantizeLinear outputs (what TensorRT can run in INT8; a float weight keeps the layer
    float however its input is quantized)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    made_by = {o: n.op_type for n in graph.node for o in n.output}
    layers = [n for n in graph.node if n.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul")]
    k = sum(all(made_by.get(x) == "DequantizeLinear" for x in n.input[:2]) for n in layers)
    return f"{k}/{len(layers)}"


def run_own(name: str, label: str, overrides: dict) -> dict:
    """quantize_onnx with QuantizeConfig's defaults (holdout included) plus ``overrides``."""
    from zoo import data_path

    from int8kit.data import DataConfig
    from int8kit.workflow import CalibConfig, QuantizeConfig

    out = zoo_bench.ZOO_MODELS_OUT / f"{name}.{label.split(':')[1]}.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    fields = {k: v for k, v in overrides.items() if k != "calib"}
    config = QuantizeConfig(
        model=str(model_path(name)),
        output=str(out),
        data=DataConfig(source=str(data_path(name, "calib"))),
        calib=CalibConfig(**overrides.get("calib", {})),
        **fields,
    )
    keys = ("bias_correction", "equalize_depthwise", "center")
    entry = zoo_bench.quantize_entry(name, config, out, keys, sizes=True, overrides=overrides)
    if entry["ok"]:
        entry["int8_layers"] = int8_layers(out)
    return entry  # the model is kept (benchmarks/work/zoo_models/) for the per-layer analysis


def run_entry(name: str, label: str) -> dict:
    if label in OWN:
        entry = run_own(name, label, OWN[label])
    elif label.startswith("int8kit:"):
        recipe = label.split(":", 1)[1]
        entry = zoo_bench.run_recipe(name, recipe, zoo_bench.RECIPES[recipe])
    else:
        entry = zoo_bench.run_peer(name, label)
    entry["kind"] = "recipe" if label.startswith("int8kit:") else "peer"
    # which int8kit ran (a commit's src/ on PYTHONPATH, or the working tree: see the README)
    entry["int8kit"] = os.environ.get("HOLDOUT_INT8KIT", "working tree")
    if entry["kind"] == "recipe" and entry.get("ok"):
        entry["trt_deployable"] = TRT_DEPLOYABLE_OWN
    path = zoo_bench.ZOO_MODELS_OUT / f"{name}.{label.split(':')[-1]}.onnx"
    if entry.get("ok") and "int8_layers" not in entry and path.exists():
        entry["int8_layers"] = int8_layers(path)
    return entry


def _int8_layers_of(name: str, label: str) -> str:
    path = zoo_bench.ZOO_MODELS_OUT / f"{name}.{label.split(':')[-1]}.onnx"
    return int8_layers(path) if path.exists() else "n/a"


def collect(names) -> dict:
    """{model: {"primary", "secondary", "entries": {label: {primary, secondary, ...}}}}."""
    table = {}
    for name in names:
        path = OUT / f"{name}.json"
        if not path.exists():
            continue
        mod = get(name)
        rows = {}
        for label, e in json.loads(path.read_text())["entries"].items():
            m = (e.get("metrics") or {}).get("trt-like", {})
            if not e.get("ok") or "failed" in m:
                why = str(e.get("failed") or e.get("skipped") or m.get("failed"))
                rows[label] = {"failed": why}
                continue
            rows[label] = {
                "primary": m[mod.PRIMARY],
                "secondary": m[mod.SECONDARY],
                "trt_deployable": bool(e.get("trt_deployable")),
                "kind": e["kind"],
                "int8_layers": e.get("int8_layers") or _int8_layers_of(name, label),
            }
            ort = (e.get("metrics") or {}).get("ort-int8", {})
            if mod.PRIMARY in ort:
                rows[label]["ort_int8_primary"] = ort[mod.PRIMARY]
        verdict = {}
        default = rows.get("int8kit:default", {})
        peers = {k: v for k, v in rows.items() if "primary" in v and v["kind"] == "peer"}
        trt_peers = {k: v for k, v in peers.items() if v["trt_deployable"]}
        if "primary" in default:
            key = lambda kv: (kv[1]["primary"], kv[1]["secondary"])  # noqa: E731
            for what, pool in (("best_trt_peer", trt_peers), ("best_peer", peers)):
                if pool:
                    best = max(pool.items(), key=key)
                    verdict[what] = best[0]
                    verdict[f"default_ge_{what}"] = default["primary"] >= best[1]["primary"]
        table[name] = {
            "primary": mod.PRIMARY,
            "secondary": mod.SECONDARY,
            "entries": rows,
            "verdict": verdict,
        }
    return table


def _short(why: str) -> str:
    """One line of a failure: the exception of a traceback, or the first line."""
    lines = [x.strip() for x in why.splitlines() if x.strip()]
    exc = [x for x in lines if x.split(":")[0].endswith(("Error", "Exception"))]
    return (exc[-1] if exc else lines[0] if lines else why)[:100].replace("|", "/")


def write_table(names) -> None:
    table = collect(names)
    save_json(RESULTS / "holdout.json", table)
    lines = [
        "# The default on held-out models",
        "",
        "Models in `zoo.HOLDOUT`, never seen by `benchmarks/choose_default.py`; task metric vs "
        "FP32 on the evaluation set, trt-like backend (what TensorRT computes). "
        "Written by `benchmarks/holdout/run.py --table` from `benchmarks/results/holdout/`. "
        "TRT: deployable by TensorRT (int8, zero point 0, per-tensor activation scales). "
        "INT8 layers: Conv/Gemm/MatMul nodes whose input and weight are both dequantized "
        "(a float weight keeps the layer float in TensorRT).",
        "",
    ]
    for name, t in table.items():
        lines += [
            f"## {name} ({t['primary']}, {t['secondary']})",
            "",
            f"| entry | TRT | INT8 layers | {t['primary']} | {t['secondary']} "
            f"| ORT int8 {t['primary']} |",
            "|---|---|---|---|---|---|",
        ]
        for label, r in t["entries"].items():
            if "failed" in r:
                lines.append(f"| {label} | | | failed: {_short(r['failed'])} | | |")
                continue
            ort = r.get("ort_int8_primary")
            lines.append(
                f"| {label} | {'yes' if r['trt_deployable'] else 'no'} | {r['int8_layers']} "
                f"| {r['primary']:.4f} | "
                f"{r['secondary']:.2f} | {'' if ort is None else f'{ort:.4f}'} |"
            )
        v = t["verdict"]
        lines += [
            "",
            f"default >= best TRT peer ({v.get('best_trt_peer')}): "
            f"{v.get('default_ge_best_trt_peer')}; default >= best peer "
            f"({v.get('best_peer')}): {v.get('default_ge_best_peer')}",
            "",
        ]
    (RESULTS / "holdout.md").write_text("\n".join(lines))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(HOLDOUT), choices=HOLDOUT)
    p.add_argument("--entries", nargs="+", default=list(ENTRIES))
    p.add_argument("--redo", action="store_true", help="rerun the named entries that exist")
    p.add_argument("--table", action="store_true", help="only write results/holdout.{md,json}")
    a = p.parse_args(argv)
    if not a.table:
        prepare(a.models)
        for name in a.models:
            path = OUT / f"{name}.json"
            for label in a.entries:
                res = json.loads(path.read_text()) if path.exists() else {"model": name}
                entries = res.setdefault("entries", {})
                if label in entries and not a.redo:
                    continue
                zoo_bench.log(f"{name}: {label}")
                entries[label] = run_entry(name, label)
                why = entries[label].get("failed") or entries[label].get("skipped")
                if why:
                    zoo_bench.log(f"{name}: {label}: {why[:200]}")
                save_json(path, res)
    write_table(list(HOLDOUT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
