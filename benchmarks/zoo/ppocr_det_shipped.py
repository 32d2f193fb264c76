"""ppocr_det with the model file as the package ships it: paddle2onnx's export keeps every
weight in a Constant node (no initializers), so tools that look for weights among the
initializers quantize the activations only (zoo/paddle.py). Same data (hard links to
ppocr_det's npz files), preprocessing and metric as ppocr_det. HELD OUT (zoo.HOLDOUT)."""

from __future__ import annotations

import os
from pathlib import Path

from zoo import data_path
from zoo import ppocr_det as _det
from zoo.modelfile import write_model
from zoo.packages import package_file

NAME = "ppocr_det_shipped"
TASK, PACKAGE, PKG_DIR, FILE = _det.TASK, _det.PACKAGE, _det.PKG_DIR, _det.FILE
PRIMARY, SECONDARY, TRANSFORMER = _det.PRIMARY, _det.SECONDARY, _det.TRANSFORMER
INPUT, N_CALIB, N_EVAL = _det.INPUT, _det.N_CALIB, _det.N_EVAL
score = _det.score


def prepare_model(dest: Path) -> None:
    write_model(package_file(PKG_DIR, PACKAGE, FILE), dest, _det.calib_feeds())


def prepare_data(split: str, n: int, dest: Path) -> None:
    src = data_path(_det.NAME, split)
    if not src.is_file():
        _det.prepare_data(split, n, src)
    dest.unlink(missing_ok=True)
    os.link(src, dest)  # 400 MB a split: one copy on disk
