"""YOLOv8n detector shipped by nudenet (``320n.onnx``), as in benchmarks/prepare.py: letterbox 320,
RGB, /255 (int8kit.examples.YOLO_PREPROCESS, the ultralytics LetterBox nudenet uses)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from int8kit.analysis.detection import DetectionStats
from int8kit.examples import YOLO_PREPROCESS, yolov8n_path
from zoo.photos import images_npz

NAME = "yolov8n"
TASK = "detect"
PACKAGE = "nudenet>=3.4"  # in int8kit's venv (the examples extra)
PRIMARY = "ap50"
SECONDARY = "score_sqnr_db"
TRANSFORMER = False
INPUT = "images"


def prepare_model(dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(yolov8n_path(), dest)


def prepare_data(split: str, n: int, dest: Path) -> None:
    from zoo import model_path

    images_npz(model_path(NAME), YOLO_PREPROCESS, split, n, dest, {INPUT: (1, 3, 320, 320)})


def score(fp32: list[list[np.ndarray]], int8: list[list[np.ndarray]]) -> dict[str, float]:
    """AP@0.5 of the INT8 detections against the FP32 ones (int8kit.analysis.detection: FP32 at
    conf 0.25 is the reference, INT8 at conf 0.001), box and class-score SQNR of the raw output."""
    stats = DetectionStats()
    for r, t in zip(fp32, int8, strict=True):
        stats.update(r[0], t[0])
    res = stats.result()
    return {
        "ap50": res["map50"],
        "box_sqnr_db": res["box_sqnr_db"],
        "score_sqnr_db": res["score_sqnr_db"],
        "raw_sqnr_db": res["raw_sqnr_db"],
        "n_ref": res["n_gt"],
    }
