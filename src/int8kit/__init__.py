"""int8kit: INT8 quantization for NVIDIA TensorRT and ONNX Runtime.

Importing this package needs numpy only; every heavier dependency is imported where it is used.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
