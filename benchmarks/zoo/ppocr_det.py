"""PP-OCRv4 text detector (DBNet, MobileNetV3-style backbone) of rapidocr-onnxruntime 1.4.4
(rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx). HELD OUT: not in zoo.ZOO, so the
default recipe was never chosen on it (zoo.HOLDOUT; benchmarks/holdout/).

Images: a square centre crop of each zoo photo crop (zoo/photos.py) with 3-6 lines of English
text drawn on it by PIL (zoo/rendered_text.py: DejaVu fonts, 5-10% of the side high, dark or
light ink against the region). Calibration and evaluation differ in photos and in sentences.

Preprocessing copied from the package (utils/load_image.py LoadImage: RGB -> BGR;
ch_ppocr_det/utils.py DetPreProcess with config.yaml's Det section: limit_side_len 736,
limit_type min, mean = std = 0.5): the short side is scaled up to 736 and both sides rounded to
a multiple of 32 (cv2.resize, bilinear), ``(x / 255 - 0.5) / 0.5`` in float64, CHW, float32.
Square crops over 704 pixels are first scaled down to 704 (PIL LANCZOS), so the package's
resize is always an upscale and every input is 1x3x736x736.

Output: the DB probability map ``sigmoid_0.tmp_0`` (1x1x736x736). The package binarises it at
``thresh`` 0.3 (DBPostProcess) before finding boxes: PRIMARY is the mean per-image IoU of the
INT8 and FP32 maps binarised at 0.3, SECONDARY the SQNR of the map. The model is opset 12:
upgraded to 13, and its weights, which paddle2onnx keeps in Constant nodes, are moved into
initializers (zoo/paddle.py; both checked to give the same outputs). ppocr_det_shipped is the
file as shipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.masks import map_scores
from zoo.packages import package_file
from zoo.paddle import write_folded
from zoo.photos import crop_files, save_npz
from zoo.rendered_text import FONTS, fit_words, font, ink, rng, sentences

NAME = "ppocr_det"
TASK = "seg"
PACKAGE = "rapidocr-onnxruntime==1.4.4"
PKG_DIR = "rapidocr"  # benchmarks/work/zoo_pkgs/rapidocr (shared with ppocr_rec)
PRIMARY = "iou"
SECONDARY = "sqnr_db"
TRANSFORMER = False
FILE = "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"
INPUT = "x"
N_CALIB = 64  # 736x736 inputs: ~1 CPU-s a sample unfused on the 2-core machine
N_EVAL = 64

# config.yaml, Det: limit_side_len 736, limit_type min, mean/std 0.5; thresh 0.3
LIMIT_SIDE = 736
MEAN = np.array([0.5, 0.5, 0.5])
STD = np.array([0.5, 0.5, 0.5])
THRESHOLD = 0.3
MAX_SIDE = 704  # larger square crops are first scaled down to this (PIL LANCZOS)


def text_photo(path: Path, split: str, i: int) -> np.ndarray:
    """The RGB uint8 square crop of photo ``path`` with lines of the split's sentences on it."""
    from PIL import Image, ImageDraw

    with Image.open(path) as img:
        img = img.convert("RGB")
    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    if s > MAX_SIDE:  # keep the package's resize an upscale to 736 (one input shape)
        s = MAX_SIDE
        img = img.resize((s, s), Image.LANCZOS)
    arr = np.asarray(img)
    draw = ImageDraw.Draw(img)
    r = rng(split, i)
    sents = sentences(split)
    y = int(s * r.uniform(0.03, 0.12))
    for _ in range(int(r.integers(3, 7))):
        size = max(8, int(s * r.uniform(0.05, 0.10)))
        if y + size > s * 0.97:
            break
        fnt = font(FONTS[int(r.integers(len(FONTS)))], size)
        x = int(s * r.uniform(0.02, 0.3))
        text = fit_words(sents[int(r.integers(len(sents)))].split(), fnt, s - x - int(0.02 * s))
        region = arr[y : y + size, x:s].reshape(-1, 3).astype(np.float64)
        draw.text((x, y), text, font=fnt, fill=ink(region))
        y += int(size * r.uniform(1.4, 2.4))
    return np.asarray(img)


def preprocess(rgb: np.ndarray) -> np.ndarray:
    """DetPreProcess of the package on LoadImage's BGR array: 1x3xHxW float32."""
    import cv2

    img = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    h, w = img.shape[:2]
    ratio = float(LIMIT_SIDE) / min(h, w) if min(h, w) < LIMIT_SIDE else 1.0
    rh, rw = int(round(int(h * ratio) / 32) * 32), int(round(int(w * ratio) / 32) * 32)
    img = cv2.resize(img, (rw, rh))
    img = (img.astype("float32") * (1 / 255.0) - MEAN) / STD
    return np.expand_dims(img.transpose((2, 0, 1)), axis=0).astype(np.float32)


def _inputs(split: str, files: list[Path]) -> np.ndarray:
    return np.concatenate([preprocess(text_photo(p, split, i)) for i, p in enumerate(files)])


def calib_feeds() -> list[dict[str, np.ndarray]]:
    return [{INPUT: x[None]} for x in _inputs("calib", crop_files("calib", N_CALIB)[:4])]


def prepare_model(dest: Path) -> None:
    """The package's model with its Constant-node weights folded into initializers
    (zoo/paddle.py; ppocr_det_shipped keeps the file as shipped)."""
    write_folded(package_file(PKG_DIR, PACKAGE, FILE), dest, calib_feeds())


def prepare_data(split: str, n: int, dest: Path) -> None:
    save_npz(dest, {INPUT: _inputs(split, crop_files(split, n))})


def score(fp32: list[list[np.ndarray]], int8: list[list[np.ndarray]]) -> dict[str, float]:
    """Mean IoU of the probability maps binarised at 0.3 (DBNet's thresh) and the map's SQNR."""
    return map_scores([r[0][0, 0] for r in fp32], [t[0][0, 0] for t in int8], THRESHOLD)
