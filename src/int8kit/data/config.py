"""Configuration of calibration data: what the model declares, how images become tensors.

Every config is validated on construction (a bad value raises ValueError saying what is allowed)
and round-trips through plain JSON types with ``to_dict()`` / ``from_dict()``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

RECIPES = ("letterbox", "resize", "center-crop", "random-crop")
CHANNEL_ORDERS = ("RGB", "BGR")
LAYOUTS = ("NCHW", "NHWC", "auto")
INTERPOLATIONS = ("nearest", "linear", "cubic", "area", "lanczos")
KINDS = ("auto", "images", "npy", "script")


@dataclass
class InputSpec:
    """One model input as the model declares it.

    ``shape`` holds ints for static dims and None or a name (str) for dynamic dims.
    """

    name: str
    shape: tuple
    dtype: str = "float32"

    def __post_init__(self) -> None:
        self.shape = tuple(self.shape)
        self.dtype = np.dtype(self.dtype).name


def _pair(value: Any, what: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int):
        value = (value, value)
    value = tuple(value)
    if len(value) != 2 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in value):
        raise ValueError(f"{what} must be (height, width) with positive ints, got {value!r}")
    return (int(value[0]), int(value[1]))


def _floats(value: Any, what: str) -> tuple[float, ...]:
    if isinstance(value, (int, float)):
        value = (value,)
    value = tuple(float(v) for v in value)
    if len(value) not in (1, 3):
        raise ValueError(f"{what} must have 1 or 3 values (one per channel), got {value!r}")
    return value


def _choice(value: str, allowed: tuple[str, ...], what: str, fold=str.lower) -> str:
    folded = {fold(a): a for a in allowed}
    if not isinstance(value, str) or fold(value) not in folded:
        raise ValueError(f"{what} must be one of {', '.join(allowed)}; got {value!r}")
    return folded[fold(value)]


@dataclass
class PreprocessConfig:
    """How an image file becomes a model input tensor.

    Order of operations: read (BGR) -> geometry (``recipe`` to ``size``) -> channel order ->
    ``(x * scale - mean) / std`` -> ``layout`` -> ``dtype``.
    ``size`` is (H, W); None takes it from the model input's static shape. ``layout`` "auto"
    infers NCHW/NHWC from where the input's channel dim (1 or 3) sits.
    """

    recipe: str = "letterbox"
    size: tuple[int, int] | None = None
    channel_order: str = "RGB"
    scale: float = 1 / 255
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    layout: str = "auto"
    dtype: str | None = None
    pad_value: int = 114
    crop_fraction: float = 0.875
    interpolation: str = "linear"

    def __post_init__(self) -> None:
        self.recipe = _choice(self.recipe, RECIPES, "preprocess recipe")
        self.size = _pair(self.size, "preprocess size")
        self.channel_order = _choice(self.channel_order, CHANNEL_ORDERS, "channel_order", str.upper)
        self.layout = _choice(self.layout or "auto", LAYOUTS, "layout", str.upper)
        self.interpolation = _choice(self.interpolation, INTERPOLATIONS, "interpolation")
        self.scale = float(self.scale)
        if not np.isfinite(self.scale) or self.scale == 0:
            raise ValueError(f"scale must be a finite non-zero number, got {self.scale}")
        self.mean = _floats(self.mean, "mean")
        self.std = _floats(self.std, "std")
        if any(s == 0 or not np.isfinite(s) for s in self.std):
            raise ValueError(f"std values must be finite and non-zero, got {self.std}")
        if self.dtype is not None:
            try:
                self.dtype = np.dtype(self.dtype).name
            except TypeError as exc:
                raise ValueError(f"dtype must be a numpy dtype name, got {self.dtype!r}") from exc
        if not 0 <= int(self.pad_value) <= 255:
            raise ValueError(f"pad_value must be in 0..255, got {self.pad_value}")
        self.pad_value = int(self.pad_value)
        self.crop_fraction = float(self.crop_fraction)
        if not 0 < self.crop_fraction <= 1:
            raise ValueError(f"crop_fraction must be in (0, 1], got {self.crop_fraction}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["size"] = list(self.size) if self.size else None
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessConfig:
        return cls(**_known(cls, d))


@dataclass
class DataConfig:
    """Where calibration data comes from and how it is batched.

    ``source``: a folder of images, a .npy/.npz file or a folder of them, or
    ``"script.py[:func]"`` when ``kind == "script"`` (a loader script is never auto-detected:
    it runs code, so the user has to name it). ``shapes`` fixes dynamic input dims, e.g.
    ``{"images": (1, 3, 640, 640)}``. ``input_name`` picks the input images feed.
    """

    source: str
    kind: str = "auto"
    num_samples: int | None = None
    batch_size: int = 1
    seed: int = 0
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    input_name: str | None = None

    def __post_init__(self) -> None:
        self.source = str(self.source)
        if not self.source:
            raise ValueError("source must name a folder, a .npy/.npz file or a loader script")
        self.kind = _choice(self.kind, KINDS, "data kind")
        if self.num_samples is not None and int(self.num_samples) < 1:
            raise ValueError(f"num_samples must be >= 1 or None, got {self.num_samples}")
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        self.batch_size = int(self.batch_size)
        self.seed = int(self.seed)
        shapes = {}
        for name, shape in dict(self.shapes).items():
            shape = tuple(shape)
            if not all(isinstance(d, (int, np.integer)) and d > 0 for d in shape):
                raise ValueError(f"shape for input {name!r} must be positive ints, got {shape!r}")
            shapes[str(name)] = tuple(int(d) for d in shape)
        self.shapes = shapes
        if isinstance(self.preprocess, dict):
            self.preprocess = PreprocessConfig.from_dict(self.preprocess)
        elif not isinstance(self.preprocess, PreprocessConfig):
            raise ValueError("preprocess must be a PreprocessConfig or a dict")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shapes"] = {k: list(v) for k, v in self.shapes.items()}
        d["preprocess"] = self.preprocess.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataConfig:
        return cls(**_known(cls, d))


def _known(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(
            f"unknown {cls.__name__} keys: {', '.join(sorted(unknown))} "
            f"(allowed: {', '.join(sorted(names))})"
        )
    return dict(d)
