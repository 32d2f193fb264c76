"""The model zoo of the benchmark: real models from PyPI packages, each with calibration and
evaluation data from disjoint sources and a task metric vs FP32 (see README.md in this folder).

One module per model (``zoo.<name>``) with NAME, TASK, PACKAGE, PRIMARY, SECONDARY,
TRANSFORMER, ``prepare_model(dest)``, ``prepare_data(split, n, dest)`` and
``score(fp32, int8)``. ``python benchmarks/zoo/prepare.py`` writes every model and data set.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

ZOO = (
    "yolov8n",
    "efficientnet_lite0",
    "u2netp",
    "retinaface",
    "pplcnet",
    "yolox_ddddocr",
    "minilm",
    "vit_focus",
)
# Held-out models: never part of the default's choice (choose_default.py reads ZOO only);
# benchmarks/holdout/run.py checks the default on them.
HOLDOUT = (
    "ppocr_det",
    "ppocr_rec",
    "ppocr_cls",
    "ppocr_det_shipped",  # ppocr_det as the package ships it (weights in Constant nodes)
)
SPLITS = ("calib", "eval")
N_SAMPLES = 128  # per split, unless a module sets N_CALIB / N_EVAL

BENCH = Path(__file__).resolve().parents[1]
ROOT = BENCH.parent
ZOO_DATA = BENCH / "data" / "zoo"
PKGS = BENCH / "work" / "zoo_pkgs"
CACHE = BENCH / "work" / "zoo_cache"


def get(name: str) -> ModuleType:
    """The model module ``zoo.<name>`` (ModuleNotFoundError if it is not written yet)."""
    if name not in ZOO + HOLDOUT:
        raise ValueError(f"unknown zoo model {name!r}; choose from {', '.join(ZOO + HOLDOUT)}")
    return importlib.import_module(f"zoo.{name}")


def model_path(name: str) -> Path:
    return ZOO_DATA / "models" / f"{name}.onnx"


def data_path(name: str, split: str) -> Path:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return ZOO_DATA / "data" / f"{name}_{split}.npz"


def n_samples(module: ModuleType, split: str) -> int:
    """Samples of ``split`` for a model module (N_CALIB / N_EVAL, default N_SAMPLES)."""
    return int(getattr(module, f"N_{split.upper()}", N_SAMPLES))


def relative(path: Path) -> str:
    """``path`` relative to the repository root (result files never hold absolute paths)."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def prepare(names=ZOO, force: bool = False) -> dict:
    """Install packages, write every model and calib/eval npz (idempotent; ``force`` redoes)."""
    from zoo.prepare import prepare_all

    return prepare_all(names, force=force)
