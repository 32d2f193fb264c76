"""Example calibration images: seeded crops of the real photographs scikit-image ships.

Only photos bundled inside the scikit-image package are used (no network). ``photos`` lets a
caller build calibration and evaluation sets from disjoint source photos (``split_photos``),
so fidelity is never measured on crops of the images that were calibrated on.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from int8kit._deps import require
from int8kit.fileio import atomic_path, output_folder

PHOTOS: tuple[str, ...] = (
    "astronaut",
    "brick",
    "camera",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "page",
    "retina",
    "rocket",
    "stereo_motorcycle",
    "text",
)


@functools.cache
def _load(name: str) -> np.ndarray:
    skdata = require("skimage", "the example photos").data
    img = getattr(skdata, name)()
    if name == "stereo_motorcycle":
        img = img[0]  # (left, right, disparity): the left view
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = img[..., :3]
    if img.dtype != np.uint8:
        img = np.clip(np.rint(img * 255 if img.dtype.kind == "f" else img), 0, 255)
    img = np.ascontiguousarray(img.astype(np.uint8))
    img.setflags(write=False)
    return img


def photo(name: str) -> np.ndarray:
    """One bundled photo as an HxWx3 RGB uint8 array (gray photos repeated to 3 channels)."""
    if name not in PHOTOS:
        raise ValueError(f"unknown photo {name!r}; choose from {', '.join(PHOTOS)}")
    return _load(name).copy()


def split_photos(n_eval_photos: int = 4, seed: int = 0) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(calibration photos, evaluation photos): a seeded, disjoint split of ``PHOTOS``."""
    if not 0 < n_eval_photos < len(PHOTOS):
        raise ValueError(f"n_eval_photos must be in 1..{len(PHOTOS) - 1}, got {n_eval_photos}")
    order = np.random.default_rng(seed).permutation(len(PHOTOS))
    held = {PHOTOS[i] for i in order[:n_eval_photos]}
    calib = tuple(p for p in PHOTOS if p not in held)
    return calib, tuple(p for p in PHOTOS if p in held)


def _crop(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    area = rng.uniform(0.2, 1.0) * h * w
    aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
    ch = int(min(h, max(16, round(np.sqrt(area / aspect)))))
    cw = int(min(w, max(16, round(np.sqrt(area * aspect)))))
    top = int(rng.integers(0, h - ch + 1))
    left = int(rng.integers(0, w - cw + 1))
    crop = img[top : top + ch, left : left + cw]
    return crop[:, ::-1] if rng.random() < 0.5 else crop


def write_photo_crops(
    out_dir: str | os.PathLike,
    n: int,
    size: tuple[int, int] | None = (320, 320),
    seed: int = 0,
    photos: tuple[str, ...] | list[str] | None = None,
) -> list[Path]:
    """Write ``n`` JPEG crops (random position and scale, half mirrored) of the bundled photos
    to ``out_dir`` as crop_0000.jpg, ...; each resized to ``size`` (H, W) unless None.
    The same arguments give the same files."""
    cv2 = require("cv2", "writing example images")
    names = tuple(photos) if photos is not None else PHOTOS
    unknown = [p for p in names if p not in PHOTOS]
    if unknown or not names:
        raise ValueError(f"unknown photos {unknown}; choose from {', '.join(PHOTOS)}")
    out = output_folder(out_dir)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        name = names[i % len(names)] if i < len(names) else names[int(rng.integers(len(names)))]
        crop = _crop(_load(name), rng)
        if size is not None:
            crop = cv2.resize(crop, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(
            ".jpg", np.ascontiguousarray(crop[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 95]
        )
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for crop {i} of {name}")
        path = out / f"crop_{i:04d}.jpg"
        with atomic_path(path) as tmp:
            tmp.write_bytes(buf.tobytes())
        paths.append(path)
    return paths
