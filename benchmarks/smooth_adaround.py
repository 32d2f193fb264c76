"""SmoothQuant and AdaRound on zoo models: each recipe quantized from the zoo's calib npz by
int8kit's library API (the default recipe plus the option), evaluated by zoo.evaluate on the
eval npz ("trt-like": the Q/DQ graph unfused, what TensorRT computes). Prints a Markdown row per
run and writes benchmarks/results/smooth_adaround.json (repository-relative paths).

    .venv/bin/python benchmarks/smooth_adaround.py --models minilm \
        --recipes default sq-auto sq-0.5 sq-0.8
    .venv/bin/python benchmarks/smooth_adaround.py --models efficientnet_lite0 yolov8n \
        --recipes default adaround-60 adaround-180
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from zoo import BENCH, data_path, get, model_path, relative  # noqa: E402
from zoo.evaluate import evaluate, fp32_outputs, load_inputs, session  # noqa: E402

OUT = BENCH / "work" / "smooth_adaround"
RESULTS = BENCH / "results" / "smooth_adaround.json"


def recipe_options(recipe: str) -> dict:
    """default | sq-auto | sq-ALPHA | adaround-SECONDS | sq-auto+adaround-SECONDS"""
    opts: dict = {}
    for part in recipe.split("+"):
        if part == "default":
            continue
        if part.startswith("sq-"):
            v = part[3:]
            opts["smooth_quant"] = v if v == "auto" else float(v)
        elif part.startswith("adaround-"):
            opts["adaround"] = True
            opts["adaround_seconds"] = float(part[len("adaround-") :])
        else:
            raise SystemExit(f"unknown recipe part {part!r}")
    return opts


def fp32_pass_seconds(name: str) -> float:
    """One plain FP32 ONNX Runtime pass over the calibration set (the issue's cost unit)."""
    inputs = load_inputs(data_path(name, "calib"))
    sess = session(model_path(name), "fp32")
    n = len(next(iter(inputs.values())))
    t0 = time.perf_counter()
    for i in range(n):
        sess.run(None, {k: v[i : i + 1] for k, v in inputs.items()})
    return time.perf_counter() - t0


def run(name: str, recipe: str) -> dict:
    from int8kit.data import DataConfig
    from int8kit.workflow import QuantizeConfig, quantize_onnx

    out = OUT / f"{name}.{recipe}.int8.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    cfg = QuantizeConfig(
        model=str(model_path(name)),
        output=str(out),
        data=DataConfig(source=str(data_path(name, "calib"))),
        holdout=0,
        **recipe_options(recipe),
    )
    t0 = time.perf_counter()
    res = quantize_onnx(cfg)
    row = {"model": name, "recipe": recipe, "quantize_s": round(time.perf_counter() - t0, 1)}
    row["int8_model"] = relative(out)
    if res.smooth_quant:
        sq = res.smooth_quant
        row["smooth_quant"] = {
            "seconds": round(sq["seconds"], 1),
            "smoothed": len(sq["smoothed"]),
            "alphas": sorted(d["alpha"] for d in sq["smoothed"].values()),
            "inserted_muls": sum(d["where"] == "inserted Mul" for d in sq["smoothed"].values()),
            "skipped": len(sq["skipped"]),
        }
    if res.adaround:
        ada = res.adaround
        layers = ada["layers"].values()
        ratios = [d["adaround"] / d["rtn"] for d in layers if d["rtn"] > 0]
        row["adaround"] = {
            "seconds": round(ada["seconds"], 1),
            "stats_seconds": round(ada["stats_seconds"], 1),
            "layers_rounded": sum(d["kept"] for d in layers),
            "layers_tried": len(ada["layers"]),
            "layers_skipped": len(ada["skipped"]),
            "median_error_ratio": round(float(sorted(ratios)[len(ratios) // 2]), 3)
            if ratios
            else None,
            "median_iters": sorted(d["iters"] for d in layers)[len(layers) // 2] if layers else 0,
        }
    row["trt-like"] = evaluate(name, out, ("trt-like",))["trt-like"]
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", required=True)
    ap.add_argument("--recipes", nargs="+", default=["default"])
    args = ap.parse_args(argv)
    old = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"runs": [], "fp32_pass_s": {}}
    for name in args.models:
        fp32_outputs(name)
        old["fp32_pass_s"][name] = round(fp32_pass_seconds(name), 2)
        mod = get(name)
        for recipe in args.recipes:
            row = run(name, recipe)
            m = row["trt-like"]
            old["runs"] = [
                r for r in old["runs"] if (r["model"], r["recipe"]) != (name, recipe)
            ] + [row]
            print(
                f"| {name} | {recipe} | {mod.PRIMARY} {m.get(mod.PRIMARY, m.get('failed'))} | "
                f"{mod.SECONDARY} {m.get(mod.SECONDARY)} | quantize {row['quantize_s']} s "
                f"(FP32 pass {old['fp32_pass_s'][name]} s) |",
                flush=True,
            )
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps(old, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
