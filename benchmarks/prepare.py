"""Models and data for the benchmark: EfficientNet-Lite0 exported, YOLOv8n copied from nudenet,
photo crops from disjoint source photos, and each set preprocessed once by int8kit into .npy so
every tool calibrates and is evaluated on identical tensors."""

from __future__ import annotations

import shutil

import numpy as np
from common import DATA, MODELS_DIR, model_path, npy_path

from int8kit.data import DataConfig, make_source
from int8kit.examples import (
    EFFICIENTNET_PREPROCESS,
    YOLO_PREPROCESS,
    export_efficientnet_lite0,
    make_photo_sets,
    yolov8n_path,
)
from int8kit.onnx.model_io import input_specs, load_model

PREPROCESS = {"yolov8n": YOLO_PREPROCESS, "efficientnet_lite0": EFFICIENTNET_PREPROCESS}


def prepare_models() -> None:
    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    if not model_path("yolov8n").exists():
        shutil.copyfile(yolov8n_path(), model_path("yolov8n"))
    if not model_path("efficientnet_lite0").exists():
        export_efficientnet_lite0(model_path("efficientnet_lite0"))


def photo_dirs(n_calib: int, n_eval: int):
    return make_photo_sets(DATA / f"photos_{n_calib}_{n_eval}", n_calib=n_calib, n_eval=n_eval)


def data_config(name: str, folder, n: int | None = None, batch_size: int = 1) -> DataConfig:
    pp = PREPROCESS[name]
    return DataConfig(
        source=str(folder),
        num_samples=n,
        batch_size=batch_size,
        preprocess=pp,
        shapes={"images": (batch_size, 3, 320, 320)} if name == "yolov8n" else {},
    )


def write_npy(name: str, folder, split: str, n: int) -> None:
    out = npy_path(name, split, n)
    if out.exists():
        return
    specs = input_specs(load_model(model_path(name), load_weights=False))
    src = make_source(data_config(name, folder, n), specs)
    arr = np.concatenate([next(iter(b.values())) for b in src]).astype(np.float32)
    if len(arr) != n:
        raise RuntimeError(f"{name} {split}: expected {n} samples, got {len(arr)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.npy")
    np.save(tmp, arr)
    tmp.replace(out)


def prepare(n_calib: int = 128, n_eval: int = 128) -> dict:
    prepare_models()
    calib_dir, eval_dir = photo_dirs(n_calib, n_eval)
    for name in PREPROCESS:
        write_npy(name, calib_dir, "calib", n_calib)
        write_npy(name, eval_dir, "eval", n_eval)
    return {"calib_dir": str(calib_dir), "eval_dir": str(eval_dir)}


if __name__ == "__main__":
    print(prepare())
