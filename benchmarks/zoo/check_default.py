"""Quantize zoo models with int8kit's default recipe (calibration data: the zoo's calib npz) and
evaluate them with zoo.evaluate; prints one table row per model and backend, and a JSON line.

    .venv/bin/python benchmarks/zoo/check_default.py [--models u2netp pplcnet] [--backends ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zoo import BENCH, ZOO, data_path, get, model_path, relative  # noqa: E402
from zoo.evaluate import BACKENDS, evaluate, fp32_outputs  # noqa: E402

OUT = BENCH / "work" / "zoo_int8"


def quantize_default(name: str) -> tuple[Path, float, float]:
    from int8kit.data import DataConfig
    from int8kit.workflow import QuantizeConfig, quantize_onnx

    out = OUT / f"{name}.default.int8.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    t0, c0 = time.perf_counter(), time.process_time()
    quantize_onnx(
        QuantizeConfig(
            model=str(model_path(name)),
            output=str(out),
            data=DataConfig(source=str(data_path(name, "calib"))),
        )
    )
    return out, time.perf_counter() - t0, time.process_time() - c0


def check(name: str, backends, reuse: bool = False, samples: int | None = None) -> dict:
    mod = get(name)
    row: dict = {"model": name, "primary": mod.PRIMARY, "secondary": mod.SECONDARY}
    path = OUT / f"{name}.default.int8.onnx"
    if reuse and path.is_file():
        row["quantize_s"] = row["quantize_cpu_s"] = "reused"
    else:
        try:
            path, secs, cpu = quantize_default(name)
        except Exception as exc:
            row["quantize_failed"] = f"{type(exc).__name__}: {exc}"
            return row
        row["quantize_s"] = round(secs, 1)
        row["quantize_cpu_s"] = round(cpu, 1)
    row["int8_model"] = relative(path)
    t0 = time.perf_counter()
    fp32_outputs(name, samples)
    row["fp32_s"] = round(time.perf_counter() - t0, 1)
    row["backends"] = evaluate(name, path, backends, samples)
    return row


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(ZOO), choices=ZOO, metavar="NAME")
    ap.add_argument(
        "--backends", nargs="+", default=["trt-like", "ort-int8"], choices=list(BACKENDS)
    )
    ap.add_argument("--reuse", action="store_true", help="reuse an INT8 model written before")
    ap.add_argument("--samples", type=int, default=None, help="first N eval samples (all)")
    args = ap.parse_args(argv)
    rows = []
    for name in args.models:
        if not model_path(name).is_file():
            print(f"{name}: not prepared (run benchmarks/zoo/prepare.py)", file=sys.stderr)
            continue
        row = check(name, tuple(args.backends), args.reuse, args.samples)
        rows.append(row)
        if "quantize_failed" in row:
            print(f"| {name} | quantize failed: {row['quantize_failed'][:300]} |", flush=True)
            continue
        for backend, m in row["backends"].items():
            if "failed" in m:
                cells = f"failed: {m['failed'][:300]}"
            else:
                cells = ", ".join(f"{k}={_fmt(v)}" for k, v in m.items() if k != "samples")
            print(
                f"| {name} | {backend} | quantize {row['quantize_s']} s "
                f"(cpu {row['quantize_cpu_s']} s) | {cells} |",
                flush=True,
            )
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
