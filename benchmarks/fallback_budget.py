"""Fallback within a layer budget (issue 11 item 6) on the zoo: the default recipe with a
fidelity target, ``--max-float-layers`` at its default (10% of the quantized layers).

    .venv/bin/python benchmarks/zoo/prepare.py   # once
    .venv/bin/python benchmarks/fallback_budget.py [--models ...] [--holdout 32]

Per model: the target is checked on the last ``--holdout`` samples of the zoo's calibration
split (the rest calibrates); the INT8 model is then scored by the zoo's own task metric on the
zoo's evaluation split (disjoint photos), beside the default recipe without a target.
Classifiers get ``--target-top1 0.99``; detectors a worst-part SQNR target (``--target-sqnr``).
For classifiers the evaluation's flips are listed with their FP32 top-2 margins beside the
spread of what quantization adds to a margin (near-ties: margins far below it).
Writes benchmarks/results/fallback_budget.json and prints a table.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, save_json  # noqa: E402
from zoo import data_path, get, model_path, relative  # noqa: E402
from zoo.evaluate import evaluate, fp32_outputs, output_names, run_outputs  # noqa: E402

from int8kit.data import DataConfig  # noqa: E402
from int8kit.workflow import QuantizeConfig, quantize_onnx  # noqa: E402

TARGETS = {
    "efficientnet_lite0": {"target_top1": 0.99, "task": "classify"},
    "pplcnet": {"target_top1": 0.99, "task": "classify"},
    "yolov8n": {"target_sqnr": 20.0},
    "retinaface": {"target_sqnr": 20.0},
}


def eval_flips(name: str, out: Path) -> dict:
    """The evaluation samples whose top-1 changes (first output): FP32 top-2 margins, the
    median margin, and the std of what quantization adds to a margin (trt-like)."""
    import numpy as np

    ref = np.concatenate([s[0].reshape(1, -1) for s in fp32_outputs(name)]).astype(np.float64)
    test = run_outputs(out, data_path(name, "eval"), "trt-like", output_names(name))
    test = np.concatenate([s[0].reshape(1, -1) for s in test]).astype(np.float64)
    rows = np.arange(len(ref))
    order = np.argsort(ref, axis=1)
    top, second = order[:, -1], order[:, -2]
    margin = ref[rows, top] - ref[rows, second]
    noise = test[rows, top] - test[rows, second] - margin
    flipped = test.argmax(axis=1) != top
    sigma = float(np.std(noise))
    return {
        "flipped": int(flipped.sum()),
        "flip_margins": sorted(round(float(x), 5) for x in margin[flipped]),
        "median_margin": float(np.median(margin)),
        "margin_noise": sigma,
        "samples_below_noise": int((margin < sigma).sum()),
        # A margin moved by Gaussian noise of std sigma: expected top-1 agreement, and how much
        # less noise (dB) would bring that expectation to 0.99.
        "expected_top1": expected_top1(margin, sigma),
        "db_less_noise_for_099": next(
            (g for g in range(61) if expected_top1(margin, sigma * 10 ** (-g / 20)) >= 0.99), None
        ),
    }


def expected_top1(margin, sigma: float) -> float:
    """Mean over samples of P(margin + N(0, sigma) > 0)."""
    return float(
        sum(0.5 * (1 + math.erf(m / (sigma * math.sqrt(2)))) for m in margin) / len(margin)
    )


def run(name: str, holdout: int, target: dict | None, out_dir: Path) -> dict:
    out = out_dir / f"{name}.{'target' if target else 'default'}.onnx"
    config = QuantizeConfig(
        model=str(model_path(name)),
        output=str(out),
        data=DataConfig(source=str(data_path(name, "calib"))),
        holdout=holdout,
        **(target or {}),
    )
    t0 = time.perf_counter()
    r = quantize_onnx(config)
    seconds = time.perf_counter() - t0
    fb = r.fallback
    module = get(name)
    metrics = evaluate(name, out, backends=("trt-like",))["trt-like"]
    return {
        "target": target,
        "seconds": seconds,
        "layers": fb.get("layers"),
        "max_float": fb.get("max_float"),
        "float_layers": fb.get("excluded", []),
        "ranges_repaired": fb.get("ranges", {}),
        "reached": fb.get("reached"),
        "missed": fb.get("missed", {}),
        "holdout_before": fb.get("before"),
        "holdout_after_ranges": fb.get("after_ranges"),
        "holdout_after": fb.get("after"),
        "holdout_path": fb.get("path", []),
        "holdout_flips": fb.get("flips", {}),
        "why": fb.get("why", ""),
        "eval": {module.PRIMARY: metrics.get(module.PRIMARY), "metrics": metrics},
        **({"eval_flips": eval_flips(name, out)} if module.TASK == "classify" else {}),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(TARGETS))
    p.add_argument("--holdout", type=int, default=32)
    a = p.parse_args(argv)
    path = RESULTS / "fallback_budget.json"
    import json

    res = json.loads(path.read_text()) if path.exists() else {}
    res.update(
        holdout=a.holdout, command="benchmarks/fallback_budget.py " + " ".join(argv or sys.argv[1:])
    )
    res.setdefault("models", {})
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.models:
            entry = {"model": relative(model_path(name))}
            entry["default"] = run(name, a.holdout, None, Path(tmp))
            entry["with_target"] = run(name, a.holdout, TARGETS[name], Path(tmp))
            res["models"][name] = entry
            save_json(path, res)
            d, t = entry["default"], entry["with_target"]
            key = get(name).PRIMARY
            print(
                f"{name:20s} {key:15s} default {d['eval'][key]:.3f} -> target "
                f"{t['eval'][key]:.3f}; float {len(t['float_layers'])}/{t['layers']} "
                f"(budget {t['max_float']}), ranges repaired {len(t['ranges_repaired'])}, "
                f"reached {t['reached']} {t['missed'] or ''} ({t['seconds']:.0f} s)",
                flush=True,
            )
            for label, r in (("default", d), ("target", t)):
                if r.get("eval_flips"):
                    f = r["eval_flips"]
                    print(
                        f"  {label}: eval flips {f['flipped']}, FP32 margins {f['flip_margins']}"
                        f" vs margin noise (std) {f['margin_noise']:.3g}; expected top-1 at that"
                        f" noise {f['expected_top1']:.3f}, 0.99 needs"
                        f" {f['db_less_noise_for_099']} dB less noise",
                        flush=True,
                    )
            if t["why"]:
                print(f"  why: {t['why']}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
