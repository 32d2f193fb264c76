"""TensorRT versions and what each can do, kept as one table of facts.

Every fact below is from NVIDIA's documentation (release notes and the 8.x->10.x and 10.x->11.x
migration guides for trtexec and the Python API); TensorRT cannot be installed here, so this table
is the single place where version knowledge lives and the command and build code only ask it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from int8kit.errors import Int8kitError

# (feature, first version that has it, first version that no longer has it, what it is).
# Versions are (major, minor); None means "still there".
FEATURES: dict[str, tuple[tuple[int, int], tuple[int, int] | None, str]] = {
    "implicit_int8": (
        (7, 0),
        (11, 0),
        "calibrators, BuilderFlag.INT8/FP16, trtexec --int8/--fp16/--calib (removed in 11.0)",
    ),
    "strongly_typed_flag": (
        (10, 0),
        None,
        "NetworkDefinitionCreationFlag.STRONGLY_TYPED and trtexec --stronglyTyped",
    ),
    "strongly_typed_preferred": (
        (10, 12),
        None,
        "weak typing deprecated in 10.12: build explicit Q/DQ models strongly typed",
    ),
    "strongly_typed_always": (
        (11, 0),
        None,
        "every network is strongly typed; the flag and --stronglyTyped are not needed",
    ),
    "explicit_batch_flag": (
        (7, 0),
        (10, 0),
        "create_network needs 1 << EXPLICIT_BATCH (ignored and deprecated from 10.0)",
    ),
    "mem_pool_flag": (
        (8, 4),
        None,
        "trtexec --memPoolSize=workspace:<MiB> (replaces --workspace=<MiB>, removed in 10.0)",
    ),
    "tensor_api": (
        (8, 5),
        None,
        "name-based I/O: set_input_shape, set_tensor_address, execute_async_v3",
    ),
}

# Newest minor release known per major, used for "10.x" style versions.
LATEST_MINOR = {8: 6, 10: 16, 11: 4}
DEFAULT_VERSION = "10.x"
SUPPORTED = "8.6, 10.x or 11.x"

_VERSION_RE = re.compile(r"^\s*v?(\d+)(?:\.(\d+|x))?(?:\.(\d+))?(?:\.\d+)*\s*$", re.IGNORECASE)


@dataclass(frozen=True, order=True)
class TrtVersion:
    """A TensorRT version and its capabilities (see ``FEATURES``)."""

    major: int
    minor: int
    patch: int = 0

    def has(self, feature: str) -> bool:
        first, gone, _ = FEATURES[feature]
        key = (self.major, self.minor)
        return key >= first and (gone is None or key < gone)

    @property
    def implicit_int8(self) -> bool:
        return self.has("implicit_int8")

    @property
    def strongly_typed_flag(self) -> bool:
        return self.has("strongly_typed_flag")

    @property
    def strongly_typed_preferred(self) -> bool:
        return self.has("strongly_typed_preferred")

    @property
    def strongly_typed_always(self) -> bool:
        return self.has("strongly_typed_always")

    @property
    def explicit_batch_flag(self) -> bool:
        return self.has("explicit_batch_flag")

    @property
    def mem_pool_flag(self) -> bool:
        return self.has("mem_pool_flag")

    @property
    def tensor_api(self) -> bool:
        return self.has("tensor_api")

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


def parse_version(text: str | TrtVersion) -> TrtVersion:
    """Parse "8.6.1", "10.3", "10.12", "10.x", "11" or tensorrt.__version__ into a TrtVersion.

    A bare major or "N.x" means the newest release of that major that int8kit knows.
    """
    if isinstance(text, TrtVersion):
        return text
    match = _VERSION_RE.match(str(text))
    if not match:
        raise Int8kitError(
            f"cannot read TensorRT version {text!r}: write it like 8.6, 10.x, 10.12 or 11"
        )
    major = int(match.group(1))
    minor_text = match.group(2)
    if minor_text is None or minor_text.lower() == "x":
        if major not in LATEST_MINOR:
            raise Int8kitError(
                f"unknown TensorRT major version {major}: give a full version such as "
                f"{major}.0, or one of {SUPPORTED}"
            )
        minor = LATEST_MINOR[major]
    else:
        minor = int(minor_text)
    patch = int(match.group(3)) if match.group(3) else 0
    version = TrtVersion(major, minor, patch)
    if (major, minor) < (8, 5):
        raise Int8kitError(
            f"TensorRT {version} is too old for int8kit: use TensorRT {SUPPORTED} "
            "(the name-based tensor API needs 8.5 or newer)"
        )
    return version


def installed_version(trt_module) -> TrtVersion:
    """The version of an imported ``tensorrt`` module."""
    return parse_version(trt_module.__version__)
