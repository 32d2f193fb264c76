"""YOLOX-style character/icon detector of ddddocr 1.6.1 (``ddddocr/common_det.onnx``), the model
behind ``DdddOcr(det=True).detection`` for click captchas.

Model: input ``images`` 1 x 3 x 416 x 416 (static), output ``output`` 1 x 3549 x 6 per anchor
(52^2 + 26^2 + 13^2 cells): raw box regression (x, y offsets in cells, log w, log h), then the
objectness and the one class probability (sigmoids inside the graph). CSP backbone with SiLU
(Sigmoid * Mul), SPP MaxPools, PAN with Resize. Opset 11, upgraded to 13 (outputs checked).

Preprocessing and decoding copied from ``ddddocr/core/detection_engine.py``
(``DetectionEngine.get_bbox`` / ``preproc`` / ``demo_postprocess`` /
``multiclass_nms_class_agnostic``): the image decoded by cv2 (BGR), letterboxed to 416 x 416
(scale r = min(416 / h, 416 / w), cv2.INTER_LINEAR, top-left, pad value 114), HWC -> CHW,
float32 0-255 (no normalisation); grids and strides 8/16/32, centre = (xy + grid) * stride,
size = exp(wh) * stride, score = objectness * class probability, class-agnostic NMS at IoU 0.45,
boxes kept above score 0.1 (``score_thr``). The FP32 reference uses that threshold; INT8
detections are taken above 0.001. Boxes stay in the 416 x 416 input's pixels (the package
divides by r; irrelevant to AP).

Data (captcha-like images the detector fires on): a random crop of a scikit-image photo
(150 x 300, 240 x 360 or 344 x 344) with 3-6 glyphs drawn on it, each in a random colour, size
(28-56 px), rotation (+-30 deg) and font (Pillow's built-in scalable font, or one of four cv2
Hershey fonts; both ship with the libraries), at non-overlapping places, plus 0-4 random lines.
Calibration: photos coffee, chelsea, astronaut, grass, brick and the characters of CALIB_CHARS;
evaluation: photos rocket, hubble_deep_field, motorcycle, gravel, immunohistochemistry and the
characters of EVAL_CHARS. No photo and no character is shared.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from int8kit.analysis.detection import select_detections
from zoo.detection import random_crop, score_detector, skimage_rgb
from zoo.modelfile import write_model
from zoo.packages import package_file
from zoo.photos import save_npz

NAME = "yolox_ddddocr"
TASK = "detect"
PACKAGE = "ddddocr==1.6.1"
PRIMARY = "ap50"
SECONDARY = "score_sqnr_db"
TRANSFORMER = False
FILE = "ddddocr/common_det.onnx"
INPUT = "images"

# ddddocr/core/detection_engine.py
SIZE = (416, 416)
PAD_VALUE = 114
STRIDES = (8, 16, 32)
NMS_THRESHOLD = 0.45
SCORE_THRESHOLD = 0.1
CONF_PRED = 0.001

CALIB_CHARS = "ABCDEFGHJKLMabdefghkm2345&#"
EVAL_CHARS = "NPQRTUVWXYnpqrtuy6789@%"
SOURCES = {
    "calib": {
        "photos": ("coffee", "chelsea", "astronaut", "grass", "brick"),
        "chars": CALIB_CHARS,
        "seed": 0,
    },
    "eval": {
        "photos": ("rocket", "hubble_deep_field", "motorcycle", "gravel", "immunohistochemistry"),
        "chars": EVAL_CHARS,
        "seed": 1,
    },
}
CANVASES = ((150, 300), (240, 360), (344, 344))  # H, W


def preprocess(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB -> 1x3x416x416 float32, as DetectionEngine.preproc does with cv2's BGR."""
    import cv2

    img = np.ascontiguousarray(rgb[..., ::-1])
    padded = np.full((*SIZE, 3), PAD_VALUE, dtype=np.uint8)
    r = min(SIZE[0] / img.shape[0], SIZE[1] / img.shape[1])
    h, w = int(img.shape[0] * r), int(img.shape[1] * r)
    padded[:h, :w] = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.uint8)
    return np.ascontiguousarray(padded.transpose(2, 0, 1), dtype=np.float32)[None]


def _glyph_mask(rng: np.random.Generator, ch: str, size: int):
    """A PIL 'L' mask of one glyph about ``size`` px high, rotated at random."""
    import cv2
    from PIL import Image, ImageDraw, ImageFont

    side = size * 2
    if rng.random() < 0.5:
        mask = Image.new("L", (side, side), 0)
        font = ImageFont.load_default(size=size)
        ImageDraw.Draw(mask).text((side // 4, side // 4), ch, font=font, fill=255)
    else:
        hershey = (
            cv2.FONT_HERSHEY_SIMPLEX,
            cv2.FONT_HERSHEY_DUPLEX,
            cv2.FONT_HERSHEY_COMPLEX,
            cv2.FONT_HERSHEY_TRIPLEX,
        )
        font = hershey[int(rng.integers(len(hershey)))]
        scale = size / 30.0
        thick = int(rng.integers(2, 5))
        arr = np.zeros((side, side), np.uint8)
        cv2.putText(arr, ch, (side // 4, side * 3 // 4), font, scale, 255, thick, cv2.LINE_AA)
        mask = Image.fromarray(arr)
    mask = mask.rotate(float(rng.uniform(-30, 30)), resample=Image.BILINEAR, expand=True)
    box = mask.getbbox()
    return mask.crop(box) if box else None


def captcha(rng: np.random.Generator, src: dict) -> np.ndarray:
    """One captcha-like RGB uint8 image of ``src`` (see the module docstring)."""
    from PIL import Image, ImageDraw

    h, w = CANVASES[int(rng.integers(len(CANVASES)))]
    photo = skimage_rgb(src["photos"][int(rng.integers(len(src["photos"])))])
    img = Image.fromarray(random_crop(rng, photo, h, w))
    placed: list[tuple[int, int, int, int]] = []
    for _ in range(int(rng.integers(3, 7))):
        mask = _glyph_mask(
            rng, src["chars"][int(rng.integers(len(src["chars"])))], int(rng.integers(28, 57))
        )
        if mask is None or mask.width >= w or mask.height >= h:
            continue
        for _try in range(30):
            x, y = int(rng.integers(0, w - mask.width)), int(rng.integers(0, h - mask.height))
            box = (x, y, x + mask.width, y + mask.height)
            if all(
                box[2] <= b[0] or b[2] <= box[0] or box[3] <= b[1] or b[3] <= box[1] for b in placed
            ):
                colour = tuple(int(c) for c in rng.integers(0, 256, 3))
                img.paste(Image.new("RGB", mask.size, colour), (x, y), mask)
                placed.append(box)
                break
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 5))):
        pts = [(int(rng.integers(0, w)), int(rng.integers(0, h))) for _ in range(2)]
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.line(pts, fill=colour, width=int(rng.integers(1, 4)))
    return np.asarray(img)


def images(split: str, n: int) -> list[np.ndarray]:
    src = SOURCES[split]
    rng = np.random.default_rng(src["seed"])
    return [captcha(rng, src) for _ in range(n)]


def prepare_model(dest: Path) -> None:
    src = package_file(NAME, PACKAGE, FILE)
    feeds = [{INPUT: preprocess(img)} for img in images("calib", 4)]
    write_model(src, dest, feeds)


def prepare_data(split: str, n: int, dest: Path) -> None:
    save_npz(dest, {INPUT: np.concatenate([preprocess(img) for img in images(split, n)])})


def _grids() -> tuple[np.ndarray, np.ndarray]:
    """(A, 2) cell indices and (A, 1) strides, as demo_postprocess builds them."""
    grids, strides = [], []
    for stride in STRIDES:
        hs, ws = SIZE[0] // stride, SIZE[1] // stride
        xv, yv = np.meshgrid(np.arange(ws), np.arange(hs))
        grids.append(np.stack((xv, yv), 2).reshape(-1, 2))
        strides.append(np.full((hs * ws, 1), stride))
    return np.concatenate(grids).astype(np.float64), np.concatenate(strides).astype(np.float64)


_GRIDS = _grids()


def decode(outputs: list[np.ndarray], conf: float) -> np.ndarray:
    """Detections of one sample (batch 1) in letterbox pixels, as get_bbox decodes them."""
    pred = np.asarray(outputs[0][0], dtype=np.float64)
    grid, stride = _GRIDS
    xy = (pred[:, :2] + grid) * stride
    wh = np.exp(pred[:, 2:4]) * stride
    score = pred[:, 4] * pred[:, 5]
    xyxy = np.concatenate([xy - wh / 2, xy + wh / 2], axis=1)
    return select_detections(xyxy, score, None, conf, NMS_THRESHOLD, max_det=300)


def split(outputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw box regression, (objectness, class probability), and their product (the score)."""
    out = outputs[0][0]
    return out[:, :4], out[:, 4:6], out[:, 4] * out[:, 5]


def score(fp32: list[list[np.ndarray]], int8: list[list[np.ndarray]]) -> dict[str, float]:
    """AP@0.5 of INT8 glyphs (score > 0.001) vs FP32 glyphs (score > 0.1), box/score SQNR."""
    return score_detector(fp32, int8, split, decode, SCORE_THRESHOLD, CONF_PRED)
