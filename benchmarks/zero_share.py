"""Share of non-zero activation values that int8 rounds to zero (calib.underflow), per quantized
activation of each model, to place ``underflow.WARN_SHARE``.

    .venv/bin/python benchmarks/zero_share.py [--samples N] MODEL.onnx:DATA.npz ...

Defaults: the zoo (benchmarks/data/zoo) and openwakeword's melspectrogram model from the sweep
(benchmarks/work/sweep/oww_melspec). Ranges by the method ``auto`` resolves to for each model
(without its graph rewrites); prints the largest shares and how many tensors pass each level.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LEVELS = (0.05, 0.1, 0.25, 0.5)


def default_pairs() -> list[tuple[Path, Path]]:
    zoo = ROOT / "benchmarks/data/zoo"
    pairs = [(m, zoo / "data" / f"{m.stem}_calib.npz") for m in sorted(zoo.glob("models/*.onnx"))]
    sweep = ROOT / "benchmarks/work/sweep"
    pairs.append((sweep / "oww_melspec.onnx", sweep / "oww_melspec.npz"))
    return [(m, d) for m, d in pairs if m.exists() and d.exists()]


def shares(model_path: Path, data_path: Path, samples: int | None) -> tuple[str, dict]:
    from int8kit.data import DataConfig, make_source
    from int8kit.onnx.targets import get_target
    from int8kit.recipes import default_recipe
    from int8kit.workflow import (
        CalibConfig,
        PlacementConfig,
        QuantizeConfig,
        _load,
        calibrate,
        rounds_to_zero,
    )

    data = DataConfig(source=str(data_path), num_samples=samples)
    model, specs, _ = _load(QuantizeConfig(model=str(model_path), output="unused.onnx", data=data))
    fam, recipe = default_recipe(model)
    target = get_target("tensorrt", None)
    model, _ = target.prepare(model)
    placement = target.plan(model, PlacementConfig())
    src = make_source(data, specs)
    ranges = calibrate(
        model,
        src,
        CalibConfig(method=recipe.method),
        total=len(src),
        names=list(placement.activations),
    )
    out = {n: r.zero_share for n, r in ranges.tensors.items() if r.zero_share is not None}
    warned = rounds_to_zero(model, ranges, placement)
    return f"{fam}/{recipe.method}", out, warned


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pairs", nargs="*", help="MODEL.onnx:DATA.npz")
    ap.add_argument("--samples", type=int, default=None, help="calibration samples per model")
    args = ap.parse_args(argv)
    pairs = [tuple(Path(x) for x in p.split(":", 1)) for p in args.pairs] or default_pairs()
    print(
        "| model | recipe | quantized activations | max share | tensor | "
        + " | ".join(f">= {x:g}" for x in LEVELS)
        + " | warned (Softmax outputs aside) |"
    )
    print("|---|---|---|---|---|" + "---|" * (len(LEVELS) + 1))
    for model_path, data_path in pairs:
        recipe, found, warned = shares(model_path, data_path, args.samples)
        worst = max(found, key=found.get) if found else "-"
        top = found.get(worst, 0.0)
        counts = " | ".join(str(sum(v >= x for v in found.values())) for x in LEVELS)
        print(
            f"| {model_path.stem} | {recipe} | {len(found)} | {top:.4f} | {worst} | {counts} | {len(warned)} |"
        )
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
