"""Fallback within a layer budget (issue 11 item 6) on the zoo: the default recipe with a
fidelity target, ``--max-float-layers`` at its default (10% of the quantized layers).

    .venv/bin/python benchmarks/zoo/prepare.py   # once
    .venv/bin/python benchmarks/fallback_budget.py [--models ...] [--holdout 32]

Per model: the target is checked on the last ``--holdout`` samples of the zoo's calibration
split (the rest calibrates); the INT8 model is then scored by the zoo's own task metric on the
zoo's evaluation split (disjoint photos), beside the default recipe without a target.
Classifiers get ``--target-top1 0.99``; detectors a worst-part SQNR target (``--target-sqnr``).
Writes benchmarks/results/fallback_budget.json and prints a table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, save_json  # noqa: E402
from zoo import data_path, get, model_path, relative  # noqa: E402
from zoo.evaluate import evaluate  # noqa: E402

from int8kit.data import DataConfig  # noqa: E402
from int8kit.workflow import QuantizeConfig, quantize_onnx  # noqa: E402

TARGETS = {
    "efficientnet_lite0": {"target_top1": 0.99, "task": "classify"},
    "pplcnet": {"target_top1": 0.99, "task": "classify"},
    "yolov8n": {"target_sqnr": 20.0},
    "retinaface": {"target_sqnr": 20.0},
}


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
        "eval": {module.PRIMARY: metrics.get(module.PRIMARY), "metrics": metrics},
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(TARGETS))
    p.add_argument("--holdout", type=int, default=32)
    a = p.parse_args(argv)
    path = RESULTS / "fallback_budget.json"
    import json

    res = json.loads(path.read_text()) if path.exists() else {}
    res.update(holdout=a.holdout, command="benchmarks/fallback_budget.py " + " ".join(argv or sys.argv[1:]))
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
