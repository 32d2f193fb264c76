"""Calibration data: image folders, .npy/.npz files or loader scripts, as batches of
``dict[input_name, np.ndarray]`` ready for a model.

Importing this package needs numpy only; cv2, tqdm and scikit-image are imported when used.
"""

from __future__ import annotations

from int8kit.data.config import DataConfig, InputSpec, PreprocessConfig
from int8kit.data.factory import make_source, resolve_kind, split
from int8kit.data.progress import progress
from int8kit.data.samples import PHOTOS, photo, split_photos, write_photo_crops
from int8kit.data.source import Batch, DataSource, DataStats

__all__ = [
    "PHOTOS",
    "Batch",
    "DataConfig",
    "DataSource",
    "DataStats",
    "InputSpec",
    "PreprocessConfig",
    "make_source",
    "photo",
    "progress",
    "resolve_kind",
    "split",
    "split_photos",
    "write_photo_crops",
]
