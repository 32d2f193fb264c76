"""PP-OCRv4 text recogniser (SVTR-LCNet, CTC over 6625 symbols) of rapidocr-onnxruntime 1.4.4
(rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx). HELD OUT: not in zoo.ZOO, so the
default recipe was never chosen on it (zoo.HOLDOUT; benchmarks/holdout/).

Text lines: 2-8 words of the split's sentences (zoo/rendered_text.py) drawn by PIL in a DejaVu
font on a patch cut from one of the split's photo crops (zoo/photos.py), the patch 1.2-1.7x the
font size high and at most 6.5x as wide as high, so the package pads every line to the same
320 columns. Calibration and evaluation differ in photos and in sentences.

Preprocessing copied from the package (utils/load_image.py LoadImage: RGB -> BGR;
ch_ppocr_rec/text_recognize.py ``resize_norm_img`` with config.yaml's rec_img_shape [3, 48, 320]):
max_wh_ratio = max(320 / 48, w / h), height 48, width ceil(48 w / h) (cv2.resize, bilinear),
``x / 255``, ``- 0.5``, ``/ 0.5``, zero padding to 320 columns: 1x3x48x320 float32.

Output ``softmax_11.tmp_0`` (1x40x6625): per-timestep class probabilities, decoded greedily
(CTCLabelDecode: argmax per step, repeats merged, blank 0 dropped). PRIMARY: the fraction of
the 40 timesteps of all lines whose argmax agrees with FP32; SECONDARY: SQNR of the
probabilities; also ``text_agreement``, the fraction of lines whose decoded index sequence
equals FP32's. The model is opset 12: upgraded to 13, its Constant-node weights moved into
initializers (zoo/paddle.py; both checked to give the same outputs).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from int8kit.analysis.metrics import OutputStats
from zoo.packages import package_file
from zoo.paddle import write_folded
from zoo.photos import crop_files, save_npz
from zoo.rendered_text import FONTS, fit_words, font, ink, rng, sentences

NAME = "ppocr_rec"
TASK = "ocr"
PACKAGE = "rapidocr-onnxruntime==1.4.4"
PKG_DIR = "rapidocr"  # benchmarks/work/zoo_pkgs/rapidocr (shared with ppocr_det)
PRIMARY = "step_agreement"
SECONDARY = "sqnr_db"
TRANSFORMER = False
FILE = "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx"
INPUT = "x"

# config.yaml, Rec: rec_img_shape [3, 48, 320]
IMG_C, IMG_H, IMG_W = 3, 48, 320
MAX_RATIO = 6.5  # line width / height drawn (< 320 / 48, so no line is wider than the pad)


def text_line(path: Path, split: str, i: int) -> tuple[np.ndarray, str]:
    """(RGB uint8 line image, its text): words of the split's sentences on a photo patch."""
    from PIL import Image, ImageDraw

    r = rng(split, i)
    size = int(r.integers(18, 41))
    fnt = font(FONTS[int(r.integers(len(FONTS)))], size)
    h = int(size * r.uniform(1.2, 1.7))
    words = sentences(split)[int(r.integers(len(sentences(split))))].split()
    start = int(r.integers(0, max(1, len(words) - 2)))
    words = words[start : start + int(r.integers(2, 9))]
    pad = int(size * r.uniform(0.1, 0.6))
    text = fit_words(words, fnt, int(MAX_RATIO * h) - 2 * pad)
    w = min(int(MAX_RATIO * h), int(fnt.getlength(text)) + 2 * pad)
    with Image.open(path) as img:
        img = img.convert("RGB")
    pw, ph = img.size
    scale = r.uniform(0.5, 1.0) * min(pw / w, ph / h)  # a patch of the line's aspect
    cw, ch = max(1, int(w * scale)), max(1, int(h * scale))
    x0, y0 = int(r.integers(0, pw - cw + 1)), int(r.integers(0, ph - ch + 1))
    patch = img.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.BILINEAR)
    colour = ink(np.asarray(patch).reshape(-1, 3).astype(np.float64))
    ImageDraw.Draw(patch).text((pad, (h - size) // 2), text, font=fnt, fill=colour)
    return np.asarray(patch), text


def preprocess(rgb: np.ndarray) -> np.ndarray:
    """resize_norm_img of the package on LoadImage's BGR line: 1x3x48x320 float32."""
    import cv2

    img = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    h, w = img.shape[:2]
    max_wh_ratio = max(IMG_W / IMG_H, w / h)
    img_width = int(IMG_H * max_wh_ratio)
    ratio = w / float(h)
    resized_w = img_width if math.ceil(IMG_H * ratio) > img_width else int(math.ceil(IMG_H * ratio))
    resized = cv2.resize(img, (resized_w, IMG_H)).astype("float32")
    resized = resized.transpose((2, 0, 1)) / 255
    resized -= 0.5
    resized /= 0.5
    out = np.zeros((IMG_C, IMG_H, img_width), dtype=np.float32)
    out[:, :, 0:resized_w] = resized
    return out[None]


def _inputs(split: str, files: list[Path]) -> np.ndarray:
    return np.concatenate([preprocess(text_line(p, split, i)[0]) for i, p in enumerate(files)])


def prepare_model(dest: Path) -> None:
    src = package_file(PKG_DIR, PACKAGE, FILE)
    write_folded(
        src, dest, [{INPUT: x[None]} for x in _inputs("calib", crop_files("calib", 128)[:4])]
    )


def prepare_data(split: str, n: int, dest: Path) -> None:
    save_npz(dest, {INPUT: _inputs(split, crop_files(split, n))})


def ctc_greedy(probs: np.ndarray) -> tuple[int, ...]:
    """CTCLabelDecode's index sequence of one line (T x C): argmax, repeats merged, blank dropped."""
    idx = probs.argmax(-1)
    keep = np.ones(len(idx), dtype=bool)
    keep[1:] = idx[1:] != idx[:-1]
    return tuple(int(k) for k in idx[keep & (idx != 0)])


def score(fp32: list[list[np.ndarray]], int8: list[list[np.ndarray]]) -> dict[str, float]:
    """Per-timestep argmax agreement, SQNR of the probabilities, whole-line text agreement."""
    stats = OutputStats()
    same_steps = steps = same_text = 0
    for r, t in zip(fp32, int8, strict=True):
        ref, test = r[0][0], t[0][0]
        stats.update(ref, test)
        same_steps += int(np.count_nonzero(ref.argmax(-1) == test.argmax(-1)))
        steps += ref.shape[0]
        same_text += ctc_greedy(ref) == ctc_greedy(test)
    res = stats.result()
    return {
        "step_agreement": same_steps / steps,
        "sqnr_db": res["sqnr_db"],
        "text_agreement": same_text / len(fp32),
        "cosine": res["cosine"],
    }
