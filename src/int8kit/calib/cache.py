"""The TensorRT calibration cache (`trtexec --int8 --calib=FILE`, `IInt8Calibrator` caches).

Format: a header line ``TRT-<version>-<algorithm>``, then one line per tensor,
``<name>: <hex>``, the lowercase hex of the big-endian IEEE float32 bits of the scale
(amax / 127). Tensor names may contain spaces, brackets and colons, so a line is split on its
last ``": "``.
"""

from __future__ import annotations

import math
import os
import re
import struct
from dataclasses import dataclass, field

from int8kit.errors import CacheFormatError
from int8kit.fileio import write_text

DEFAULT_VERSION = 8601
# trtexec reads only EntropyCalibration2 caches; IInt8MinMaxCalibrator reads MinMaxCalibration.
ALGORITHMS = ("EntropyCalibration2", "MinMaxCalibration")
_HEADER = re.compile(r"^TRT-(\d+)-([A-Za-z0-9]+)$")
_HEX = re.compile(r"^[0-9a-fA-F]{8}$")


def scale_to_hex(scale: float) -> str:
    return struct.pack(">f", scale).hex()


def hex_to_scale(text: str) -> float:
    return struct.unpack(">f", bytes.fromhex(text))[0]


@dataclass
class CalibrationCache:
    """Per-tensor scales as TensorRT reads them."""

    scales: dict[str, float] = field(default_factory=dict)
    version: int = DEFAULT_VERSION
    algorithm: str = "EntropyCalibration2"
    lines: dict[str, int] = field(default_factory=dict, compare=False, repr=False)  # as read

    def bad_scales(self) -> dict[str, str]:
        """{tensor: why} for every scale TensorRT refuses: NaN, infinite, zero or negative."""
        bad = {}
        for name, scale in self.scales.items():
            if math.isnan(scale):
                bad[name] = "NaN"
            elif math.isinf(scale):
                bad[name] = "infinite"
            elif scale <= 0:
                bad[name] = "zero" if scale == 0 else "negative"
        return bad

    def problems(self, source: str = "<cache>") -> list[str]:
        """What TensorRT would refuse or ignore in this cache, one message per finding, each
        naming the line: an algorithm trtexec does not read, and NaN/Inf/zero/negative scales."""
        out = []
        if self.algorithm not in ALGORITHMS:
            out.append(
                f"{source}:1: unknown algorithm {self.algorithm!r}: no TensorRT calibrator writes "
                "it, and trtexec reads only EntropyCalibration2 caches"
            )
        for name, why in self.bad_scales().items():
            line = f":{self.lines[name]}" if name in self.lines else ""
            scale = self.scales[name]
            out.append(
                f"{source}{line}: tensor {name!r} has a {why} scale "
                f"({scale_to_hex(scale)} = {scale!r}); TensorRT refuses scales that are not "
                "positive and finite"
            )
        return out

    @property
    def header(self) -> str:
        return f"TRT-{self.version}-{self.algorithm}"

    def amax(self, name: str) -> float:
        return self.scales[name] * 127.0

    def dumps(self) -> str:
        lines = [self.header]
        for name, scale in self.scales.items():
            if "\n" in name:
                raise CacheFormatError(
                    f"tensor name {name!r} contains a newline; TensorRT cannot read it"
                )
            lines.append(f"{name}: {scale_to_hex(scale)}")
        return "\n".join(lines) + "\n"

    def write(self, path: str | os.PathLike) -> None:
        write_text(path, self.dumps())

    @classmethod
    def loads(cls, text: str, source: str = "<cache>") -> CalibrationCache:
        lines = text.splitlines()
        if not lines:
            raise CacheFormatError(
                f"{source}: empty file; a TensorRT cache starts with 'TRT-<version>-<algorithm>'"
            )
        m = _HEADER.match(lines[0].strip())
        if not m:
            raise CacheFormatError(
                f"{source}:1: header {lines[0][:80]!r} is not 'TRT-<version>-<algorithm>' "
                "(e.g. TRT-8601-EntropyCalibration2)"
            )
        cache = cls(version=int(m.group(1)), algorithm=m.group(2))
        for lineno, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            name, sep, value = line.rpartition(": ")
            if not sep or not name:
                raise CacheFormatError(
                    f"{source}:{lineno}: expected '<tensor name>: <8 hex digits>', got {line!r}"
                )
            value = value.strip()
            if not _HEX.match(value):
                raise CacheFormatError(
                    f"{source}:{lineno}: scale {value!r} of {name!r} is not 8 hex digits"
                )
            if name in cache.scales:
                raise CacheFormatError(f"{source}:{lineno}: tensor {name!r} appears twice")
            cache.scales[name] = hex_to_scale(value)
            cache.lines[name] = lineno
        return cache

    @classmethod
    def read(cls, path: str | os.PathLike) -> CalibrationCache:
        try:
            with open(path, encoding="utf-8", newline="") as f:
                text = f.read()
        except FileNotFoundError as exc:
            raise CacheFormatError(f"calibration cache {path} does not exist") from exc
        except UnicodeDecodeError as exc:
            raise CacheFormatError(
                f"{path} is not a text file (a TensorRT engine or other binary?); a calibration "
                "cache is text whose first line is 'TRT-<version>-<algorithm>'"
            ) from exc
        except OSError as exc:
            raise CacheFormatError(f"cannot read calibration cache {path}: {exc.strerror}") from exc
        return cls.loads(text, source=os.fspath(path))
