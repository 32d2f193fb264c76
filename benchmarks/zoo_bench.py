"""Every candidate recipe of int8kit and every peer on every zoo model, scored by the model's own
task metric against FP32 (benchmarks/zoo/). Feeds the leave-one-model-out choice of the default
(choose_default.py).

    .venv/bin/python benchmarks/zoo_bench.py [--models ...] [--recipes ...] [--peers ...]
                                             [--no-peers] [--redo] [--force] [--timing]

Results: benchmarks/results/zoo/<model>.recipes.json and <model>.peers.json (one entry per
recipe or peer: metrics per backend, seconds, TensorRT deployability), <model>.timing.json.
Recipes are scored as TensorRT computes (trt-like); peers also on ORT's integer kernels. Entries
that exist are kept unless --redo (or --force: new files). Candidate recipes run in this process (fidelity does not depend on it);
--timing measures the default recipe's whole quantize call in a fresh process, beside ORT MinMax.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BENCH, RESULTS, python_of, run_measured, save_json, timed  # noqa: E402

ZOO_RESULTS = RESULTS / "zoo"
ZOO_MODELS_OUT = BENCH / "work" / "zoo_models"

# Candidate recipes: name -> QuantizeConfig overrides. Every range method with and without bias
# correction (gated per layer, the library's default), the input layers float (the default) or
# INT8, the ungated correction, and the algorithms of issue 11 on the strongest bases. A 2-core
# machine cannot afford the full product (about 1 minute a recipe and model), so the options are
# crossed with the methods that win somewhere.
METHODS = ("minmax", "entropy", "percentile", "mse", "mean-max")


def recipe_grid() -> dict[str, dict]:
    recipes: dict[str, dict] = {}

    def add(name, method, bc=True, qin=False, **fields):
        recipes[name] = {
            "calib": {"method": method},
            "bias_correction": bc,
            "placement": {"quantize_input_layers": qin},
            **fields,
        }

    for m in METHODS:
        add(f"{m}+bc", m)
        add(m, m, bc=False)
    for m in ("minmax", "mse", "percentile"):
        add(f"{m}+bc+qin", m, qin=True)
        add(f"{m}+bcraw", m, bias_gate=False)
        add(f"{m}+bc+sq", m, smooth_quant="auto")
        add(f"{m}+bc+cle", m, equalize=True)
        add(f"{m}+bc+dw", m, equalize_depthwise=True)
        add(f"{m}+bc+dw+ctr", m, equalize_depthwise=True, center_one_sided=True)
    add("mse+sq", "mse", bc=False, smooth_quant="auto")
    add("minmax+sq", "minmax", bc=False, smooth_quant="auto")
    return recipes


RECIPES = recipe_grid()

from run_all import PEERS as TWO_MODEL_PEERS  # noqa: E402

PEERS = {
    # label: (venv, pip requirements, runner, variant): the two-model benchmark's peers, and
    # NNCF's transformer preset (run on transformers only)
    **{
        k: (venv, reqs, runner, variant or "default")
        for k, (venv, reqs, runner, variant) in TWO_MODEL_PEERS.items()
    },
    "nncf-transformer": (*TWO_MODEL_PEERS["nncf"][:3], "transformer"),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def rel(path) -> str:
    """Repository-relative path for result files."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(BENCH.parent))
    except ValueError:
        return p.name


def config_for(name: str, recipe: dict, out: Path):
    """The QuantizeConfig of ``recipe`` on zoo model ``name``."""
    from zoo import data_path, model_path

    from int8kit.data import DataConfig
    from int8kit.onnx.placement import PlacementConfig
    from int8kit.workflow import CalibConfig, QuantizeConfig

    fields = {k: v for k, v in recipe.items() if k not in ("calib", "placement")}
    return QuantizeConfig(
        model=str(model_path(name)),
        output=str(out),
        data=DataConfig(source=str(data_path(name, "calib"))),
        calib=CalibConfig(**recipe.get("calib", {})),
        placement=PlacementConfig(**recipe.get("placement", {})),
        holdout=0,
        **fields,
    )


def trt_deployable(path) -> tuple[bool, str]:
    """TensorRT's explicit INT8 takes signed int8 with zero point 0, and one scale per activation
    tensor (per-channel scales only for constant weights): NNCF, for one, gives a depthwise
    conv's input one scale per channel, which TensorRT cannot build."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    consts = {
        n.output[0]: next(a.t for a in n.attribute if a.name == "value")
        for n in model.graph.node
        if n.op_type == "Constant" and any(a.name == "value" for a in n.attribute)
    }
    bad = Counter()
    nq = 0
    for n in model.graph.node:
        if n.op_type != "QuantizeLinear":
            continue
        nq += 1
        scale = inits.get(n.input[1]) or consts.get(n.input[1])
        if n.input[0] not in inits and scale is not None and np.prod(scale.dims) > 1:
            bad["per-channel activation scale"] += 1
        if len(n.input) < 3 or not n.input[2]:
            bad["uint8 (no zero point given)"] += 1
            continue
        zp = inits.get(n.input[2]) or consts.get(n.input[2])
        if zp is None:
            bad["zero point computed at run time"] += 1
            continue
        arr = numpy_helper.to_array(zp)
        if arr.dtype != np.int8:
            bad[f"{arr.dtype} zero point"] += 1
        elif np.any(arr != 0):
            bad["non-zero zero point"] += 1
    if nq == 0:
        return False, "no QuantizeLinear"
    if bad:
        return False, "; ".join(f"{k}: {v} of {nq}" for k, v in bad.items())
    return True, ""


def qdq_counts(path) -> dict:
    import onnx

    ops = Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)
    return {"Q": ops.get("QuantizeLinear", 0), "DQ": ops.get("DequantizeLinear", 0)}


SHARED_METHODS = ("entropy", "minmax", "percentile", "mse")  # what one histogram pass gives


def shared_ranges(name: str, method: str) -> Path:
    """The ranges of ``method`` on ``name``'s calibration set, from ONE calibration pass shared
    by every recipe that does not change the FP32 model first (the histograms give every method's
    amax). The tensors are those of the widest placement (input layers quantized too)."""
    import dataclasses

    from zoo import data_path, model_path

    from int8kit.data import DataConfig, make_source
    from int8kit.onnx.model_io import input_specs, load_model
    from int8kit.onnx.placement import PlacementConfig, node_names_unique, plan
    from int8kit.ranges import Ranges
    from int8kit.workflow import CalibConfig, calibrate

    folder = BENCH / "work" / "zoo_ranges"
    paths = {m: folder / f"{name}.{m}.ranges.json" for m in SHARED_METHODS}
    if not all(p.exists() for p in paths.values()):
        t0 = time.perf_counter()
        model = load_model(model_path(name))
        node_names_unique(model)
        tensors = list(plan(model, PlacementConfig(quantize_input_layers=True)).activations)
        src = make_source(DataConfig(source=str(data_path(name, "calib"))), input_specs(model))
        ranges = calibrate(
            model, src, CalibConfig(method="minmax"), candidates_for=set(tensors), names=tensors
        )
        for m, path in paths.items():
            picked = Ranges(
                tensors={
                    t: dataclasses.replace(r, amax=r.candidates[m], method=m, candidates={})
                    for t, r in ranges.tensors.items()
                }
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            picked.write(path)
        log(
            f"{name}: shared calibration of {len(tensors)} tensors in {time.perf_counter() - t0:.0f} s"
        )
    return paths[method]


def quantize_entry(name: str, config, out: Path, keys, sizes: bool = False, **fields) -> dict:
    """One int8kit run as a result entry: quantize_onnx(config) writing ``out``, timed; ``fields``
    first, then the summaries of the result's ``keys`` (numbers and text as they are; with
    ``sizes`` also collections, as their sizes), then the task metrics (trt-like). A failed run
    is a result: {"ok": False, "failed": why}."""
    from zoo.evaluate import evaluate

    from int8kit.workflow import quantize_onnx

    t0 = time.perf_counter()
    try:
        r = quantize_onnx(config)
    except Exception as exc:  # a failed recipe is a result
        return {"ok": False, "failed": f"{type(exc).__name__}: {str(exc)[:400]}"}
    entry = {
        "ok": True,
        **fields,
        "quantize_s": time.perf_counter() - t0,
        "method": r.method,
        "qdq": qdq_counts(out),
    }
    kept = (int, float, str, dict, list) if sizes else (int, float, str)
    for key in keys:
        v = getattr(r, key, None)
        if isinstance(v, dict) and v:
            entry[key] = {
                k: (x if isinstance(x, (int, float, str)) else len(x))
                for k, x in v.items()
                if isinstance(x, kept)
            }
    entry["metrics"] = evaluate(name, out, backends=("trt-like",))
    return entry


def run_recipe(name: str, label: str, recipe: dict) -> dict:
    out = ZOO_MODELS_OUT / f"{name}.{label}.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    method = recipe.get("calib", {}).get("method")
    shared = method in SHARED_METHODS and not any(
        recipe.get(k) for k in ("smooth_quant", "equalize", "equalize_depthwise")
    )
    try:
        config = config_for(name, recipe, out)
        if shared:
            config.ranges = str(shared_ranges(name, method))
    except TypeError as exc:
        return {"ok": False, "skipped": f"this int8kit has no such option: {exc}"}
    keys = ("bias_correction", "smooth_quant", "equalize", "equalize_depthwise", "center")
    entry = quantize_entry(name, config, out, keys, recipe=recipe, shared_calibration=shared)
    out.unlink(missing_ok=True)  # a 2-core machine's disk is not the place to keep 200 models
    return entry


def ensure_venv(venv: str, reqs: list[str]) -> str | None:
    from run_all import ensure_venv as ensure

    return ensure(venv, reqs)


def run_peer(name: str, label: str) -> dict:
    from zoo import data_path, get, model_path
    from zoo.evaluate import evaluate

    venv, reqs, runner, variant = PEERS[label]
    if variant == "transformer" and not getattr(get(name), "TRANSFORMER", False):
        return {"ok": False, "skipped": "the transformer preset is for transformer models"}
    why = ensure_venv(venv, reqs)
    if why:
        return {"ok": False, "skipped": why}
    out = ZOO_MODELS_OUT / f"{name}.{label}.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    cmd = [
        python_of(venv),
        BENCH / runner,
        model_path(name),
        data_path(name, "calib"),
        out,
        variant,
    ]
    r = run_measured(timed(cmd), log=BENCH / "work/logs" / f"zoo.{name}.{label}.log", timeout=1800)
    entry = {
        "ok": r["rc"] == 0 and out.exists(),
        "wall_s": r["wall_s"],
        "peak_rss_mib": r["peak_rss_mib"],
        "quantize_s": (r["result"] or {}).get("quantize_s"),
    }
    if not entry["ok"]:
        killed = r["rc"] in (-9, 137) or "Killed" in r["stderr_tail"]
        entry["failed"] = (
            "killed (out of memory?)" if killed else f"rc {r['rc']}: {r['stderr_tail'][-400:]}"
        )
        return entry
    entry["trt_deployable"], entry["not_deployable_why"] = trt_deployable(out)
    entry["qdq"] = qdq_counts(out)
    entry["metrics"] = evaluate(name, out, backends=("trt-like", "ort-int8"))
    return entry


def timing(name: str, runs: int = 3) -> dict:
    """The default recipe's whole quantize call vs ORT MinMax's quantize_static call, each in a
    fresh process, alternated; medians. Also one plain FP32 ONNX Runtime pass over the same
    calibration set (int8kit_runner's floor, outside the timed call)."""
    import statistics

    from zoo import data_path, model_path

    out = ZOO_MODELS_OUT / f"{name}.timing.onnx"
    ours, ort, floor = [], [], []
    for _ in range(runs):
        r = run_measured(
            [
                sys.executable,
                BENCH / "int8kit_runner.py",
                model_path(name),
                data_path(name, "calib"),
                out,
                "auto",
            ]
        )
        if r["result"]:
            ours.append(r["result"]["quantize_s"])
            floor.append(r["result"]["floor_s"])
        if ensure_venv(*PEERS["ort-minmax"][:2]) is None:
            cmd = [python_of("ort"), BENCH / "peers/ort_runner.py", model_path(name)]
            r = run_measured(
                cmd + [data_path(name, "calib"), out.with_suffix(".ort.onnx"), "MinMax"]
            )
            if r["result"]:
                ort.append(r["result"]["quantize_s"])
    res = {"runs": runs, "int8kit_default_s": ours, "ort_minmax_s": ort, "fp32_pass_s": floor}
    if ours and ort:
        res["int8kit_default_median_s"] = statistics.median(ours)
        res["ort_minmax_median_s"] = statistics.median(ort)
        res["speedup_vs_ort_minmax"] = res["ort_minmax_median_s"] / res["int8kit_default_median_s"]
    if ours and floor:  # issue 11: the whole default call <= 3x one plain FP32 pass
        res["fp32_pass_median_s"] = statistics.median(floor)
        res["default_over_fp32_pass"] = res["int8kit_default_median_s"] / res["fp32_pass_median_s"]
    return res


def recheck_deployable(models) -> None:
    """Peer entries get the deployability of the current rule (their models are kept)."""
    for name in models:
        path = ZOO_RESULTS / f"{name}.peers.json"
        if not path.exists():
            continue
        res = json.loads(path.read_text())
        changed = False
        for label, e in res.get("entries", {}).items():
            out = ZOO_MODELS_OUT / f"{name}.{label}.onnx"
            if e.get("ok") and out.exists():
                verdict = list(trt_deployable(out))
                changed |= verdict != [e.get("trt_deployable"), e.get("not_deployable_why")]
                e["trt_deployable"], e["not_deployable_why"] = verdict
        if changed:
            save_json(path, res)


def main(argv=None) -> int:
    from zoo import ZOO, prepare

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(ZOO))
    p.add_argument("--recipes", nargs="+", help="recipes to run, in this order; default: all")
    p.add_argument("--peers", nargs="+", help="peers to run, in this order; default: all")
    p.add_argument(
        "--suffix", default="", help="write <model>.recipes<SUFFIX>.json: a parallel run's own file"
    )
    p.add_argument("--no-recipes", action="store_true")
    p.add_argument("--no-peers", action="store_true")
    p.add_argument("--force", action="store_true", help="start the result files afresh")
    p.add_argument("--redo", action="store_true", help="rerun the named entries that exist")
    p.add_argument("--timing", action="store_true", help="default vs ORT MinMax, fresh processes")
    a = p.parse_args(argv)

    prepare(a.models)
    recheck_deployable(a.models)
    todo: list[tuple[str, str]] = []
    if not a.no_recipes:
        todo += [("recipe", r) for r in (a.recipes or RECIPES)]
    if not a.no_peers:
        todo += [("peer", q) for q in (a.peers or PEERS)]
    # recipe-major: every model gets a recipe before the next recipe starts, so a partial run
    # already holds complete rows for the leave-one-out choice
    for kind, label in todo:
        for name in a.models:
            # recipes and peers in files of their own, so two processes can fill them at once
            path = ZOO_RESULTS / f"{name}.{kind}s{a.suffix}.json"
            res = json.loads(path.read_text()) if path.exists() and not a.force else {}
            res.setdefault("model", name)
            entries = res.setdefault("entries", {})
            key = label if kind == "peer" else f"int8kit:{label}"
            if key in entries and not a.redo:
                continue
            if kind == "recipe" and label not in RECIPES:
                log(f"unknown recipe {label}")
                continue
            log(f"{name}: {key}")
            entry = (
                run_recipe(name, label, RECIPES[label])
                if kind == "recipe"
                else run_peer(name, label)
            )
            entry["kind"] = kind
            entries[key] = entry
            why = entry.get("failed") or entry.get("skipped")
            if why:
                log(f"{name}: {key}: {why[:200]}")
            save_json(path, res)
    for name in a.models:
        if a.timing:
            log(f"{name}: timing")
            save_json(ZOO_RESULTS / f"{name}.timing.json", timing(name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
