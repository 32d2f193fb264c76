"""Lazy import of optional dependencies, with an error that says how to install them."""

from __future__ import annotations

import importlib
from types import ModuleType

_INSTALL = {
    "onnx": "pip install onnx",
    "onnxruntime": "pip install onnxruntime",
    "cv2": "pip install opencv-python-headless",
    "tqdm": "pip install tqdm",
    "torch": "pip install 'int8kit[torch]'",
    "tensorrt": "pip install 'int8kit[tensorrt]' (needs an NVIDIA GPU and driver)",
    "matplotlib": "pip install 'int8kit[plots]'",
}


class MissingDependencyError(ImportError):
    """An optional dependency needed for this feature is not installed."""


def require(module: str, feature: str = "") -> ModuleType:
    """Import ``module`` or raise MissingDependencyError naming the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        how = _INSTALL.get(top, f"pip install {top}")
        what = f" for {feature}" if feature else ""
        raise MissingDependencyError(
            f"int8kit needs '{top}'{what}: install it with `{how}`"
        ) from exc


def available(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
