"""Robust ranges, bias correction that cannot hurt, and cross-layer equalization on the zoo
(issue 11, algorithms 2, 3 and 5): one row per model x recipe with the task metric vs FP32
(zoo/evaluate.py, trt-like backend = the Q/DQ graph unfused, batch 1, the zoo's eval set) and
the costs (whole quantize call vs one plain FP32 ONNX Runtime pass over the calibration set).

    .venv/bin/python benchmarks/ptq_algorithms.py [--models u2netp ...] [--recipes ...]

Results: benchmarks/results/ptq_algorithms.json (merged: rows of models or recipes not run keep
their last result) and .md. Calibration: the zoo's calibration samples (``--calib-samples``,
default all 128), batch 1, holdout 0. To save time on a shared machine, a recipe whose ranges
equal another's (same method, no equalization) reuses that recipe's ranges file: its cost is then
its own call plus the calibration seconds of the run that made the ranges ("cost_estimated").
``--eval-samples`` scores the first N of the zoo's eval samples (default all).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from zoo import ZOO, data_path, get, model_path, relative  # noqa: E402
from zoo.evaluate import _run, fp32_outputs, load_inputs, output_names, session  # noqa: E402

RESULTS = BENCH / "results" / "ptq_algorithms.json"
OUT = BENCH / "work" / "ptq_algorithms"

# name -> (CalibConfig.method, QuantizeConfig overrides); the first recipe of each method
# calibrates, the others of that method without equalization reuse its ranges.
RECIPES = {
    "minmax+safeBC": ("minmax", {}),
    "minmax": ("minmax", {"bias_correction": False}),
    "minmax+BC": ("minmax", {"bias_gate": False}),  # today's default
    "minmax+empBC": ("minmax", {"bias_stats": "empirical"}),
    "mean-max+safeBC": ("mean-max", {}),
    "mean-max": ("mean-max", {"bias_correction": False}),
    "quantile-max+safeBC": ("quantile-max", {}),
    "minmax+safeBC+CLE": ("minmax", {"equalize": True}),
    "mean-max+safeBC+CLE": ("mean-max", {"equalize": True}),
}


def fp32_pass_seconds(name: str, n: int | None) -> tuple[float, float]:
    """(wall, CPU) seconds of one plain FP32 ONNX Runtime pass (default options) over the
    calibration set, batch 1. CPU seconds (every thread of the process) hardly depend on what
    else the shared machine runs; wall seconds do."""
    sess = session(model_path(name), "fp32")
    inputs = load_inputs(data_path(name, "calib"))
    names = [i.name for i in sess.get_inputs()]
    n = min(n or 10**9, len(next(iter(inputs.values()))))
    sess.run(None, {k: inputs[k][:1] for k in names})  # warm-up, as quantize's session has
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        sess.run(None, {k: inputs[k][i : i + 1] for k in names})
    return time.perf_counter() - t0, time.process_time() - c0


def quantize(name: str, recipe: str, n_calib: int | None, ranges: str | None):
    from int8kit.data import DataConfig
    from int8kit.workflow import CalibConfig, QuantizeConfig, quantize_onnx

    method, overrides = RECIPES[recipe]
    out = OUT / f"{name}.{recipe}.int8.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    cfg = QuantizeConfig(
        model=str(model_path(name)),
        output=str(out),
        data=DataConfig(source=str(data_path(name, "calib")), num_samples=n_calib),
        calib=CalibConfig(method=method),
        holdout=0,
        ranges=ranges,
    )
    cfg = replace(cfg, **overrides)
    t0, c0 = time.perf_counter(), time.process_time()
    result = quantize_onnx(cfg)
    result.cpu_seconds = time.process_time() - c0
    return out, time.perf_counter() - t0, result


def score(name: str, path: Path, n_eval: int | None) -> dict:
    """zoo.evaluate's trt-like metrics on the first ``n_eval`` eval samples."""
    mod = get(name)
    ref = fp32_outputs(name)[:n_eval]
    inputs = {k: v[:n_eval] for k, v in load_inputs(data_path(name, "eval")).items()}
    t0 = time.perf_counter()
    try:
        test = _run(session(path, "trt-like"), inputs, output_names(name))
    except Exception as exc:
        return {"failed": f"{type(exc).__name__}: {exc}"[:400]}
    metrics = {k: float(v) for k, v in mod.score(ref, test).items()}
    metrics["seconds"] = round(time.perf_counter() - t0, 2)
    metrics["samples"] = len(test)
    return metrics


def row(name: str, recipe: str, fp32_s: float, args, base: dict) -> dict:
    mod = get(name)
    method, overrides = RECIPES[recipe]
    reuse = base.get(method) if not overrides.get("equalize") else None
    r: dict = {"model": name, "recipe": recipe}
    try:
        path, secs, result = quantize(name, recipe, args.calib_samples, reuse and reuse[0])
    except Exception as exc:  # a recipe that fails is a result
        r["failed"] = f"{type(exc).__name__}: {exc}"[:400]
        return r
    calib_s = result.calibration_seconds
    if reuse:
        calib_s = reuse[1]
        secs += calib_s
        r["cost_estimated"] = True
    elif not overrides.get("equalize"):
        base[method] = (str(result.outputs["ranges"]), calib_s, result.images_used)
    r["quantize_s"] = round(secs, 2)
    r["fp32_pass_s"] = round(fp32_s[0], 2)
    r["cost_ratio"] = round(secs / fp32_s[0], 2)
    if not reuse:  # CPU seconds of the whole call (with reused ranges: not comparable)
        r["quantize_cpu_s"] = round(result.cpu_seconds, 2)
        r["fp32_pass_cpu_s"] = round(fp32_s[1], 2)
        r["cpu_cost_ratio"] = round(result.cpu_seconds / fp32_s[1], 2)
    r["calibration_s"] = round(calib_s, 2)
    bc = result.bias_correction
    if bc and "corrected" in bc:
        r["bc"] = {
            "corrected": len(bc["corrected"]),
            "dropped": len(bc.get("dropped", {})),
            "gate_samples": bc.get("gate_samples", 0),
            "stats": bc.get("stats", "local"),
            "seconds": round(bc["seconds"], 2),
        }
    if result.equalize:
        eq = result.equalize
        r["cle"] = {
            "pairs": len(eq["pairs"]),
            "skipped": len(eq["skipped"]),
            "spread": [round(eq["range_spread_before"], 1), round(eq["range_spread_after"], 1)],
            "skip_reasons": sorted({why.split(" between")[0] for why in eq["skipped"].values()}),
        }
    r["metrics"] = score(name, path, args.eval_samples)
    r["primary"], r["secondary"] = mod.PRIMARY, mod.SECONDARY
    r["int8_model"] = relative(path)
    r["calib_samples"] = reuse[2] if reuse else result.images_used
    return r


def load() -> dict:
    if RESULTS.is_file():
        return json.loads(RESULTS.read_text())
    return {"rows": []}


def save(data: dict) -> None:
    from int8kit.fileio import write_json

    write_json(RESULTS, data)
    RESULTS.with_suffix(".md").write_text(markdown(data["rows"]))


def _f(v, digits=3) -> str:
    return f"{v:.{digits}g}" if isinstance(v, (int, float)) else "—"


def markdown(rows: list[dict]) -> str:
    lines = [
        "# Robust ranges, safe bias correction, cross-layer equalization (zoo, trt-like)",
        "",
        "`.venv/bin/python benchmarks/ptq_algorithms.py --calib-samples 64 --eval-samples 32`:",
        "task metric of the INT8 model vs FP32 on the first 32 of the zoo's eval samples (Q/DQ",
        "unfused = what TensorRT computes), calibration on 64 samples, batch 1. Cost = whole",
        "`quantize_onnx` call / one plain FP32 ONNX Runtime pass over the same calibration",
        "samples, wall and (where measured) CPU seconds of the process. The machine ran ~20",
        "processes on 2 cores (load 12-23): wall ratios are not comparable between rows (the",
        "FP32 pass of one model took 2.5 s in one run, 13 s in another); the CPU ratios are the",
        "figures to trust. * = ranges reused from the run of the same method, cost = own call + that",
        "run's calibration). BC kept/dropped: layers whose correction passed / failed the",
        "held-out check. Samples: see each row in the JSON (`metrics.samples`, `calib_samples`).",
        "",
        "| model | recipe | primary | secondary | quantize s | cost × FP32 pass (wall / CPU) | BC kept/dropped (s) | CLE pairs (skipped) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "failed" in r:
            lines.append(f"| {r['model']} | {r['recipe']} | failed: {r['failed'][:120]} ||||||")
            continue
        m = r["metrics"]
        bc = r.get("bc")
        bct = f"{bc['corrected']}/{bc['dropped']} ({bc['seconds']})" if bc else "—"
        cle = r.get("cle")
        clet = f"{cle['pairs']} ({cle['skipped']})" if cle else "—"
        lines.append(
            f"| {r['model']} | {r['recipe']} | {r['primary']} {_f(m.get(r['primary']), 4)} | "
            f"{r['secondary']} {_f(m.get(r['secondary']), 4)} | {r['quantize_s']} | "
            f"{r['cost_ratio']}{'*' if r.get('cost_estimated') else ''} / "
            f"{r.get('cpu_cost_ratio', '—')} | {bct} | {clet} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=[z for z in ZOO if model_path(z).is_file()])
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    ap.add_argument("--calib-samples", type=int, default=None, help="default: all (128)")
    ap.add_argument("--eval-samples", type=int, default=None, help="default: all (128)")
    args = ap.parse_args(argv)
    data = load()
    for name in args.models:
        if not model_path(name).is_file():
            print(f"{name}: not prepared (benchmarks/zoo/prepare.py)", file=sys.stderr)
            continue
        fp32_s = fp32_pass_seconds(name, args.calib_samples)
        base: dict = {}  # method -> (ranges file, calibration s, samples) of a run that calibrated
        for x in data["rows"]:
            method, over = RECIPES.get(x["recipe"], (None, {"equalize": True}))
            ranges = OUT / f"{name}.{x['recipe']}.int8.ranges.json"
            fresh = "failed" not in x and not x.get("cost_estimated") and not over.get("equalize")
            if x["model"] == name and fresh and ranges.is_file():
                base.setdefault(method, (str(ranges), x["calibration_s"], x["calib_samples"]))
        for recipe in args.recipes:
            r = row(name, recipe, fp32_s, args, base)
            data = load()  # another run may have added rows meanwhile
            data["rows"] = [
                x for x in data["rows"] if (x["model"], x["recipe"]) != (name, recipe)
            ] + [r]
            data["rows"].sort(key=lambda x: (x["model"], list(RECIPES).index(x["recipe"])))
            save(data)
            print(json.dumps(r), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
