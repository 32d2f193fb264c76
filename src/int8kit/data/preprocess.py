"""Image preprocessing: geometry recipes and the arithmetic that turns pixels into a tensor.

Geometry works on HxWxC uint8 arrays (as cv2 reads them, BGR); ``to_tensor`` does channel
order, scale/mean/std, and stacks a batch in the requested layout and dtype.
"""

from __future__ import annotations

import math

import numpy as np

from int8kit._deps import require
from int8kit.data.config import PreprocessConfig

STRIDE = 32  # letterbox without a target size pads each image up to a multiple of this (YOLO)


def _cv2():
    return require("cv2", "image calibration data")


def _interp(name: str) -> int:
    cv2 = _cv2()
    return {
        "nearest": cv2.INTER_NEAREST,
        "linear": cv2.INTER_LINEAR,
        "cubic": cv2.INTER_CUBIC,
        "area": cv2.INTER_AREA,
        "lanczos": cv2.INTER_LANCZOS4,
    }[name]


def _resize(img: np.ndarray, h: int, w: int, interpolation: str) -> np.ndarray:
    if img.shape[:2] == (h, w):
        return img
    out = _cv2().resize(img, (w, h), interpolation=_interp(interpolation))
    return out if out.ndim == img.ndim else out[..., None]


def letterbox(
    img: np.ndarray,
    size: tuple[int, int] | None,
    pad_value: int = 114,
    interpolation: str = "linear",
) -> np.ndarray:
    """Fit inside ``size`` keeping aspect, pad centred with ``pad_value`` (ultralytics
    LetterBox, auto=False). With ``size`` None the image keeps its scale and is padded up to
    a multiple of 32."""
    h, w = img.shape[:2]
    if size is None:
        th, tw = math.ceil(h / STRIDE) * STRIDE, math.ceil(w / STRIDE) * STRIDE
        nh, nw = h, w
    else:
        th, tw = size
        r = min(th / h, tw / w)
        nh, nw = round(h * r), round(w * r)
        img = _resize(img, nh, nw, interpolation)
    dh, dw = (th - nh) / 2, (tw - nw) / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    # Rounding can leave the total one pixel off the target; correct the far side.
    bottom += th - (nh + top + bottom)
    right += tw - (nw + left + right)
    out = np.full((th, tw) + img.shape[2:], pad_value, dtype=img.dtype)
    out[top : top + nh, left : left + nw] = img
    return out


def resize(img: np.ndarray, size: tuple[int, int] | None, interpolation: str = "linear"):
    """Stretch to ``size`` (H, W), ignoring aspect; None keeps the image as it is."""
    return img if size is None else _resize(img, size[0], size[1], interpolation)


def _cover(img: np.ndarray, min_h: int, min_w: int, interpolation: str) -> np.ndarray:
    """Scale (keeping aspect) so the image is at least min_h x min_w."""
    h, w = img.shape[:2]
    r = max(min_h / h, min_w / w)
    nh, nw = max(min_h, round(h * r)), max(min_w, round(w * r))
    return _resize(img, nh, nw, interpolation)


def center_crop(
    img: np.ndarray, size: tuple[int, int], crop_fraction: float = 0.875, interpolation="linear"
) -> np.ndarray:
    """Resize the short side to round(min(size) / crop_fraction), then crop ``size`` from the
    centre (the ImageNet 256 -> 224 evaluation transform)."""
    th, tw = size
    h, w = img.shape[:2]
    short = round(min(th, tw) / crop_fraction)
    r = short / min(h, w)
    img = _cover(_resize(img, round(h * r), round(w * r), interpolation), th, tw, interpolation)
    h, w = img.shape[:2]
    top, left = int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))
    return img[top : top + th, left : left + tw]


def random_crop(
    img: np.ndarray, size: tuple[int, int], rng: np.random.Generator, interpolation="linear"
) -> np.ndarray:
    """Crop ``size`` at a random position drawn from ``rng``; images smaller than ``size``
    are upscaled (keeping aspect) first."""
    th, tw = size
    img = _cover(img, th, tw, interpolation) if img.shape[0] < th or img.shape[1] < tw else img
    h, w = img.shape[:2]
    top = int(rng.integers(0, h - th + 1))
    left = int(rng.integers(0, w - tw + 1))
    return img[top : top + th, left : left + tw]


def apply_recipe(
    img: np.ndarray,
    config: PreprocessConfig,
    size: tuple[int, int] | None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Geometry step of ``config.recipe`` to ``size`` (None: keep the image's own size)."""
    if config.recipe == "letterbox":
        return letterbox(img, size, config.pad_value, config.interpolation)
    if config.recipe == "resize":
        return resize(img, size, config.interpolation)
    if size is None:
        raise ValueError(f"recipe {config.recipe} needs a size")
    if config.recipe == "center-crop":
        return center_crop(img, size, config.crop_fraction, config.interpolation)
    return random_crop(img, size, rng or np.random.default_rng(0), config.interpolation)


def to_tensor(images: list[np.ndarray], config: PreprocessConfig, layout: str, dtype: str):
    """Stack HxWxC BGR (or HxWx1 gray) uint8 images into one normalised batch."""
    x = np.stack(images).astype(np.float32)
    if x.shape[-1] == 3 and config.channel_order == "RGB":
        x = x[..., ::-1]
    channels = x.shape[-1]
    mean = np.asarray(config.mean[:channels], dtype=np.float32)
    std = np.asarray(config.std[:channels], dtype=np.float32)
    x = (x * np.float32(config.scale) - mean) / std
    if layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    target = np.dtype(dtype)
    if target.kind in "iub":
        info = np.iinfo(target) if target.kind != "b" else None
        x = np.rint(x)
        if info is not None:
            x = np.clip(x, info.min, info.max)
    return np.ascontiguousarray(x.astype(target))
