"""The PyTorch path's default vs the ONNX path's default on EfficientNet-Lite0 (issue 11: "the
PyTorch path gets the same recipe"; target: within 1 dB of logit SQNR).

Model: EfficientNet-Lite0 with the package's ImageNet weights (int8kit.examples.efficientnet_lite0,
the torch module the zoo's ONNX model was exported from). Data: the zoo's photo crops
(benchmarks/data/zoo/data/efficientnet_lite0_{calib,eval}.npz, ImageNet preprocessing, calibration
and evaluation crops from disjoint photos): the first ``--calib`` calibration crops, the first
``--eval`` evaluation crops held out.

- torch default: ``int8kit.torch.workflow.quantize_to_onnx`` (what ``int8kit torch quantize``
  runs) with ``QuantConfig()``; fidelity of its Q/DQ export vs its FP32 export on the held-out
  crops (``holdout_fidelity``, as the CLI prints it).
- torch variants (``--variants``): without bias correction; the old default (entropy, the stem
  quantized, no bias correction: the issue's 9.7 dB).
- onnx default: ``int8kit.workflow.quantize_onnx`` on the zoo's ONNX export, ``--method auto``,
  scored by ``int8kit.workflow.fidelity`` against that FP32 model on the same crops.

Both scores are "trt-like" (the Q/DQ graph unfused: what TensorRT computes). The two FP32
references are the same network exported twice; their largest logit difference is recorded.

    .venv/bin/python benchmarks/torch_parity.py [--calib 64] [--eval 128] [--variants ...]

Writes benchmarks/results/torch_parity.json (repository-relative paths) and prints a table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, save_json  # noqa: E402
from zoo import data_path, model_path, relative  # noqa: E402

NAME = "efficientnet_lite0"
OUT = RESULTS / "torch_parity.json"
BATCH = 16
VARIANTS = {
    "torch default": {},
    "torch, no bias correction": {"bias_correction": False},
    "torch, old default (entropy, stem int8, no bias correction)": {
        "method": "entropy",
        "quantize_input_layers": True,
        "bias_correction": False,
    },
}


def crops(split: str, n: int) -> np.ndarray:
    with np.load(data_path(NAME, split), allow_pickle=False) as z:
        arr = z["input"][:n].astype(np.float32)
    if len(arr) != n:
        raise SystemExit(f"{data_path(NAME, split)} holds {len(arr)} samples, asked for {n}")
    return arr


def batches(arr: np.ndarray) -> list[np.ndarray]:
    return [arr[i : i + BATCH] for i in range(0, len(arr), BATCH)]


def scores(fidelity: dict) -> dict:
    """SQNR and top-1 agreement of the single output, per backend."""
    out = {}
    for backend, outputs in fidelity.items():
        (m,) = outputs.values()
        out[backend] = {k: m.get(k) for k in ("sqnr_db", "top1_agreement", "cosine")}
    return out


def torch_run(overrides: dict, calib: np.ndarray, held: np.ndarray, tmp: Path, tag: str) -> dict:
    import torch

    from int8kit.examples import efficientnet_lite0
    from int8kit.torch import QuantConfig
    from int8kit.torch.workflow import quantize_to_onnx

    model = efficientnet_lite0()
    t0, c0 = time.perf_counter(), time.process_time()
    summary = quantize_to_onnx(
        model,
        lambda: (torch.from_numpy(b) for b in batches(calib)),
        torch.zeros(1, 3, 224, 224),
        tmp / f"{tag}.int8.onnx",
        config=QuantConfig(**overrides),
        holdout=lambda: (torch.from_numpy(b) for b in batches(held)),
        task="classify",
    )
    bc = summary["bias_correction"]
    return {
        "config": summary["config"],
        "recipe": summary["recipe"],
        "input_layers_float": summary["input_layers_float"],
        "bias_correction": {
            k: bc[k] for k in ("corrected", "dropped", "estimate_samples", "gate_samples") if bc
        }
        | ({"layers_corrected": len(bc["corrected"])} if bc else {}),
        "metrics": scores(summary["fidelity"]),
        "holdout_samples": summary["holdout_samples"],
        "wall_s": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
        "_fp32": summary["outputs"]["fp32"],
    }


def onnx_run(calib_n: int, held: np.ndarray, tmp: Path) -> dict:
    from int8kit.data import DataConfig
    from int8kit.onnx.model_io import load_model
    from int8kit.workflow import QuantizeConfig, fidelity, quantize_onnx

    config = QuantizeConfig(
        model=str(model_path(NAME)),
        output=str(tmp / "onnx.int8.onnx"),
        data=DataConfig(source=str(data_path(NAME, "calib")), num_samples=calib_n),
        holdout=0,
    )
    t0, c0 = time.perf_counter(), time.process_time()
    result = quantize_onnx(config)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    fid = fidelity(
        load_model(str(model_path(NAME))),
        load_model(str(config.output)),
        ({"input": b} for b in batches(held)),
        task="classify",
    )
    bc = result.bias_correction
    return {
        "method": result.method,
        "recipe": result.recipe,
        "calibration_samples": result.images_used,
        "bias_correction": {"layers_corrected": len(bc.get("corrected", []))},
        "metrics": scores(fid),
        "wall_s": seconds,
        "cpu_s": cpu,
    }


def fp32_difference(torch_fp32: str, held: np.ndarray) -> float:
    """Largest |logit| difference between the torch FP32 export and the zoo's ONNX model."""
    from int8kit.onnx.model_io import load_model
    from int8kit.onnx.observe import make_session

    a, b = (make_session(load_model(str(p))) for p in (torch_fp32, model_path(NAME)))
    worst = 0.0
    for x in batches(held):
        worst = max(
            worst, float(np.abs(a.run(None, {"input": x})[0] - b.run(None, {"input": x})[0]).max())
        )
    return worst


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calib", type=int, default=64, help="calibration crops (default 64)")
    p.add_argument("--eval", type=int, default=128, help="held-out crops (default 128)")
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--result", type=Path, default=OUT)
    a = p.parse_args(argv)
    calib, held = crops("calib", a.calib), crops("eval", a.eval)
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs["onnx default"] = onnx_run(a.calib, held, tmp)
        fp32 = None
        for i, name in enumerate(
            ["torch default"] + [v for v in a.variants if v != "torch default"]
        ):
            runs[name] = torch_run(VARIANTS[name], calib, held, tmp, f"torch{i}")
            fp32 = fp32 or runs[name]["_fp32"]
        fp32_diff = fp32_difference(fp32, held)
    for r in runs.values():
        r.pop("_fp32", None)
    onnx_db = runs["onnx default"]["metrics"]["trt-like"]["sqnr_db"]
    torch_db = runs["torch default"]["metrics"]["trt-like"]["sqnr_db"]
    result = {
        "model": f"{NAME} (int8kit.examples.efficientnet_lite0; ONNX: {relative(model_path(NAME))})",
        "data": {
            "calib": f"{relative(data_path(NAME, 'calib'))} (first {a.calib})",
            "eval": f"{relative(data_path(NAME, 'eval'))} (first {a.eval})",
        },
        "backend": "trt-like (Q/DQ unfused, ONNX Runtime without graph optimizations)",
        "fp32_exports_max_abs_logit_difference": fp32_diff,
        "runs": runs,
        "torch_minus_onnx_sqnr_db": torch_db - onnx_db,
        "target_within_1db": abs(torch_db - onnx_db) <= 1.0 or torch_db > onnx_db,
        "command": "python benchmarks/torch_parity.py "
        + " ".join(f"--{k} {v}" for k, v in (("calib", a.calib), ("eval", a.eval))),
    }
    save_json(a.result, result)
    print(f"EfficientNet-Lite0, {a.calib} calibration / {a.eval} held-out crops (trt-like):")
    for name, r in runs.items():
        m = r["metrics"]["trt-like"]
        print(
            f"  {name:60s} SQNR {m['sqnr_db']:6.2f} dB  top-1 {m['top1_agreement']:.3f}  "
            f"({r['cpu_s']:.0f} CPU s)"
        )
    print(f"  torch - onnx: {torch_db - onnx_db:+.2f} dB; FP32 exports differ by {fp32_diff:.2g}")
    print(f"wrote {relative(a.result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
