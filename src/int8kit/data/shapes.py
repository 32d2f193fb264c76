"""Input shapes: user-fixed dims over model-declared ones, layout inference, batch validation."""

from __future__ import annotations

import numpy as np

from int8kit.data.config import DataConfig, InputSpec
from int8kit.errors import DataError


def is_static(dim: object) -> bool:
    return isinstance(dim, (int, np.integer)) and not isinstance(dim, bool) and dim > 0


def fmt_shape(shape: tuple) -> str:
    return "(" + ", ".join(str(d) if is_static(d) else "?" for d in shape) + ")"


def effective_shape(spec: InputSpec, config: DataConfig) -> tuple:
    """The model's shape with dynamic dims replaced by the user's ``shapes`` entry, if any."""
    user = config.shapes.get(spec.name)
    if user is None:
        return tuple(spec.shape)
    if len(user) != len(spec.shape):
        raise DataError(
            f"shapes[{spec.name!r}] = {tuple(user)} has {len(user)} dims but input "
            f"'{spec.name}' has {len(spec.shape)}: {fmt_shape(spec.shape)}; give one value per dim"
        )
    for axis, (model_dim, user_dim) in enumerate(zip(spec.shape, user, strict=True)):
        if is_static(model_dim) and model_dim != user_dim:
            raise DataError(
                f"shapes[{spec.name!r}] = {tuple(user)} sets dim {axis} to {user_dim}, but input "
                f"'{spec.name}' fixes it at {model_dim} ({fmt_shape(spec.shape)}); "
                "only dynamic dims can be overridden"
            )
    return tuple(user)


def infer_layout(shape: tuple, name: str, requested: str) -> str:
    """NCHW or NHWC for a 4D image input; "auto" looks where a channel dim of 1 or 3 sits."""
    if requested != "auto":
        return requested
    at1 = shape[1] in (1, 3)
    at_last = shape[-1] in (1, 3)
    if at1 and not at_last:
        return "NCHW"
    if at_last and not at1:
        return "NHWC"
    if at1 and at_last:  # e.g. (1, 3, 3, 3): NCHW is the usual export
        return "NCHW"
    if not is_static(shape[1]) and not is_static(shape[-1]):
        return "NCHW"
    raise DataError(
        f"cannot tell the layout of input '{name}' {fmt_shape(shape)}: no channel dim of 1 or 3 "
        "at axis 1 or -1; set preprocess layout to NCHW or NHWC"
    )


def check_batch(name: str, array: np.ndarray, shape: tuple) -> None:
    """Raise DataError if ``array`` does not fit ``shape`` (static dims must match)."""
    ok = array.ndim == len(shape) and all(
        not is_static(d) or d == a for d, a in zip(shape, array.shape, strict=True)
    )
    if not ok:
        raise DataError(
            f"input '{name}' expects shape {fmt_shape(shape)} but the data has shape "
            f"{tuple(array.shape)}; fix the data (or the preprocess size), or fix the "
            "input's dynamic dims with the shapes setting"
        )


def cast(name: str, array: np.ndarray, dtype: str) -> np.ndarray:
    """Cast to the input's dtype when no value kind is lost (float64 -> float32 is fine)."""
    target = np.dtype(dtype)
    if array.dtype == target:
        return array
    if not np.can_cast(array.dtype, target, casting="same_kind"):
        raise DataError(
            f"input '{name}' takes {target.name} but the data is {array.dtype.name}; "
            f"convert the data to {target.name}"
        )
    return array.astype(target)
