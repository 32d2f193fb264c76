"""Photo crops shared by the image models of the zoo: scikit-image's bundled photos, split into
disjoint source photos for calibration and evaluation (int8kit.examples.make_photo_sets), so no
model is evaluated on crops of a photo it was calibrated on. The crops are full-resolution JPEGs;
each model module resizes them as its package does."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from int8kit.data import DataConfig, make_source
from int8kit.examples import make_photo_sets
from int8kit.onnx.model_io import input_specs, load_model
from zoo import ZOO_DATA


def crop_dir(split: str, n: int) -> Path:
    """Folder of ``n`` crops for ``split`` (calib | eval); the same n gives the same files."""
    # One root per (split, n): make_photo_sets writes both splits, each with its own seed,
    # so a split's crops depend only on its n (calib seed 0, eval seed 1, as benchmarks/).
    calib, evl = make_photo_sets(
        ZOO_DATA / "photos" / f"{split}_{n}",
        n_calib=n if split == "calib" else 1,
        n_eval=n if split == "eval" else 1,
    )
    return calib if split == "calib" else evl


def crop_files(split: str, n: int) -> list[Path]:
    files = sorted(crop_dir(split, n).glob("crop_*.jpg"))
    if len(files) != n:
        raise RuntimeError(f"expected {n} {split} crops, found {len(files)}")
    return files


def save_npz(dest: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` (one per graph input, samples on axis 0) atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    tmp.replace(dest)


def images_npz(model: Path, preprocess, split: str, n: int, dest: Path, shapes=None) -> None:
    """Crops of ``split`` preprocessed by int8kit's image source (the benchmark's own path)."""
    specs = input_specs(load_model(model, load_weights=False))
    config = DataConfig(source=str(crop_dir(split, n)), preprocess=preprocess, shapes=shapes or {})
    src = make_source(config, specs)
    name = specs[0].name
    arr = np.concatenate([b[name] for b in src]).astype(np.float32)
    if len(arr) != n:
        raise RuntimeError(f"{model.name} {split}: expected {n} samples, got {len(arr)}")
    save_npz(dest, {name: arr})
