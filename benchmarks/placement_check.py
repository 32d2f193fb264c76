"""One zoo model with int8kit's default recipe: its task metric vs FP32, to check a placement.

Measures the placement (DESIGN.md, "Where Q/DQ goes"; for ``minilm`` and ``vit_focus`` the
transformer rules): the default ``quantize`` recipe on the zoo's calibration data, scored by the
zoo module's ``score`` on its evaluation data (batch 1), as TensorRT computes (Q/DQ unfused) and
with ONNX Runtime's fused kernels (a backend that refuses the model is reported as failed).

    python benchmarks/zoo/prepare.py --models minilm   # once
    python benchmarks/placement_check.py [--model minilm] [--method M] [--limit N] [--out F.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from zoo import data_path, get, model_path, relative  # noqa: E402


def outputs(session, npz) -> list[list[np.ndarray]]:
    names = [o.name for o in session.get_outputs()]
    n = len(next(iter(npz.values())))
    return [session.run(names, {k: v[i : i + 1] for k, v in npz.items()}) for i in range(n)]


def main(argv=None) -> dict:
    from int8kit.analysis.lint import lint
    from int8kit.data import DataConfig
    from int8kit.onnx.model_io import load_model
    from int8kit.onnx.observe import make_session
    from int8kit.workflow import CalibConfig, QuantizeConfig, quantize_onnx

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="write the figures to this JSON file")
    ap.add_argument("--model", default="minilm", help="zoo model (default: minilm)")
    ap.add_argument("--method", default="auto", help="calibration method (default: auto)")
    ap.add_argument("--limit", type=int, default=None, help="evaluation samples (default: all)")
    args = ap.parse_args(argv)
    zoo = get(args.model)
    fp32_path, calib, evaln = (
        model_path(args.model),
        data_path(args.model, "calib"),
        data_path(args.model, "eval"),
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "minilm.int8.onnx"
        t0 = time.perf_counter()
        result = quantize_onnx(
            QuantizeConfig(
                model=str(fp32_path),
                output=str(out),
                data=DataConfig(str(calib)),
                calib=CalibConfig(method=args.method),
            )
        )
        seconds = time.perf_counter() - t0
        int8 = load_model(out)
    data = {k: v[: args.limit] for k, v in np.load(evaln).items()}
    ref = outputs(make_session(load_model(fp32_path)), data)
    report = {
        "model": relative(fp32_path),
        "calib": relative(calib),
        "eval": relative(evaln),
        "recipe": f"int8kit quantize defaults, method {args.method}",
        "method": result.method,
        "quantize_seconds": round(seconds, 2),
        "activations_quantized": result.activations_quantized,
        "weights_quantized": result.weights_quantized,
        "lint_errors": [str(f) for f in lint(int8) if f.severity == "error"],
    }
    for backend, optimize in (("trt-like", False), ("ort-int8", True)):
        try:
            report[backend] = zoo.score(ref, outputs(make_session(int8, optimize=optimize), data))
        except Exception as exc:  # ORT refusing the model is a result
            report[backend] = {"failed": f"{type(exc).__name__}: {exc}"[:500]}
    print(json.dumps(report, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
