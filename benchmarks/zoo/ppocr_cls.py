"""PP-OCR text-line direction classifier (MobileNetV3-small, 0 or 180 degrees) of
rapidocr-onnxruntime 1.4.4 (rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx).
HELD OUT: not in zoo.ZOO, so the default recipe was never chosen on it (zoo.HOLDOUT;
benchmarks/holdout/).

Text lines: those of ppocr_rec (zoo/rendered_text.py: the split's sentences drawn by PIL on
patches of the split's photo crops), every odd-numbered line turned by 180 degrees.

Preprocessing copied from the package (utils/load_image.py LoadImage: RGB -> BGR;
ch_ppocr_cls/text_cls.py ``resize_norm_img`` with config.yaml's cls_image_shape [3, 48, 192]):
height 48, width min(192, ceil(48 w / h)) (cv2.resize, bilinear; wider lines are squeezed to
192), ``x / 255``, ``- 0.5``, ``/ 0.5``, zero padding to 192 columns: 1x3x48x192 float32.

Output ``save_infer_model/scale_0.tmp_1`` (1x2): softmax over the labels ['0', '180']. PRIMARY:
top-1 agreement with FP32; SECONDARY: SQNR of the probabilities. The model is opset < 13:
upgraded to 13, its Constant-node weights moved into initializers (zoo/paddle.py; both
checked to give the same outputs).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from int8kit.analysis.metrics import ClassifyStats
from zoo.packages import package_file
from zoo.paddle import write_folded
from zoo.photos import crop_files, save_npz
from zoo.ppocr_rec import text_line

NAME = "ppocr_cls"
TASK = "classify"
PACKAGE = "rapidocr-onnxruntime==1.4.4"
PKG_DIR = "rapidocr"  # benchmarks/work/zoo_pkgs/rapidocr (shared with ppocr_det, ppocr_rec)
PRIMARY = "top1_agreement"
SECONDARY = "sqnr_db"
TRANSFORMER = False
FILE = "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx"
INPUT = "x"

# config.yaml, Cls: cls_image_shape [3, 48, 192]
IMG_C, IMG_H, IMG_W = 3, 48, 192


def preprocess(rgb: np.ndarray) -> np.ndarray:
    """resize_norm_img of the package on LoadImage's BGR line: 1x3x48x192 float32."""
    import cv2

    img = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    h, w = img.shape[:2]
    ratio = w / float(h)
    resized_w = IMG_W if math.ceil(IMG_H * ratio) > IMG_W else int(math.ceil(IMG_H * ratio))
    resized = cv2.resize(img, (resized_w, IMG_H)).astype("float32")
    resized = resized.transpose((2, 0, 1)) / 255
    resized -= 0.5
    resized /= 0.5
    out = np.zeros((IMG_C, IMG_H, IMG_W), dtype=np.float32)
    out[:, :, :resized_w] = resized
    return out[None]


def _inputs(split: str, files: list[Path]) -> np.ndarray:
    lines = (text_line(p, split, i)[0] for i, p in enumerate(files))
    return np.concatenate(
        [preprocess(np.rot90(a, 2 * (i % 2)).copy()) for i, a in enumerate(lines)]
    )


def prepare_model(dest: Path) -> None:
    src = package_file(PKG_DIR, PACKAGE, FILE)
    x = _inputs("calib", crop_files("calib", 128)[:4])
    write_folded(src, dest, [{INPUT: s[None]} for s in x])


def prepare_data(split: str, n: int, dest: Path) -> None:
    save_npz(dest, {INPUT: _inputs(split, crop_files(split, n))})


def score(fp32: list[list[np.ndarray]], int8: list[list[np.ndarray]]) -> dict[str, float]:
    """Top-1 agreement and SQNR of the two class probabilities vs FP32."""
    stats = ClassifyStats(k=1)
    for r, t in zip(fp32, int8, strict=True):
        stats.update(r[0], t[0])
    res = stats.result()
    return {k: res[k] for k in ("top1_agreement", "sqnr_db", "cosine")}
