"""Per-tensor ranges: what a calibration found, readable by people and reusable by a later run.

``model.ranges.json`` holds, per tensor, amax, scale, the method, and the statistics behind it
(count, min, max, NaN/Inf count), plus the config of the run that made it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

from int8kit.calib.cache import CalibrationCache
from int8kit.calib.collector import safe_amax
from int8kit.errors import Int8kitError
from int8kit.fileio import write_json

FORMAT = "int8kit-ranges/1"


@dataclass
class TensorRange:
    amax: float
    method: str
    stats: dict = field(default_factory=dict)  # count, min, max, nan, inf
    candidates: dict[str, float] = field(default_factory=dict)  # method -> amax it would pick
    # target ort-cpu: the uint8 quantizer written (dtype, scale, zero_point, min, max)
    uint8: dict = field(default_factory=dict)
    # share of the non-zero values that round to 0 at this amax (calib.underflow; not written
    # to the ranges file: calibration sets it, a ranges file read back has None)
    zero_share: float | None = None

    @property
    def scale(self) -> float:
        return safe_amax(self.amax) / 127.0


@dataclass
class Ranges:
    tensors: dict[str, TensorRange] = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    def amax(self) -> dict[str, float]:
        return {n: r.amax for n, r in self.tensors.items()}

    def nonfinite(self) -> dict[str, tuple[int, int]]:
        """Tensors that produced NaN or Inf: name -> (nan, inf)."""
        out = {}
        for n, r in self.tensors.items():
            nan, inf = r.stats.get("nan", 0), r.stats.get("inf", 0)
            if nan or inf:
                out[n] = (nan, inf)
        return out

    def to_cache(self, version: int, algorithm: str = "EntropyCalibration2") -> CalibrationCache:
        return CalibrationCache(
            {n: r.scale for n, r in self.tensors.items()}, version=version, algorithm=algorithm
        )

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "config": self.config,
            "tensors": {
                n: {
                    "amax": r.amax,
                    "scale": r.scale,
                    "method": r.method,
                    **r.stats,
                    **({"candidates": r.candidates} if r.candidates else {}),
                    **({"uint8": r.uint8} if r.uint8 else {}),
                }
                for n, r in self.tensors.items()
            },
        }

    def write(self, path: str | os.PathLike) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def read(cls, path: str | os.PathLike) -> Ranges:
        """Read a ranges file; every amax is checked (a positive finite number), so a bad value
        stops the run with the tensor and the file named instead of becoming a silent 1.0."""
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise Int8kitError(f"cannot read ranges file {path}: {exc}") from exc
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            found = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise Int8kitError(
                f"{path} is not an int8kit ranges file (format {found!r}, expected {FORMAT!r}); "
                "give the .ranges.json an int8kit run wrote"
            )
        entries = d.get("tensors")
        if not isinstance(entries, dict):
            raise Int8kitError(
                f"{path}: 'tensors' must map tensor names to {{\"amax\": number, ...}}, "
                f"got {type(entries).__name__}"
            )
        tensors = {}
        for name, t in entries.items():
            if not isinstance(t, dict) or "amax" not in t:
                raise Int8kitError(
                    f"{path}: tensor {name!r} has no amax (its entry is {t!r}); each tensor "
                    'needs {"amax": <positive number>}'
                )
            stats = {
                k: t[k] for k in ("count", "min", "max", "nan", "inf", "shift", "of") if k in t
            }
            candidates = t.get("candidates", {})
            if not isinstance(candidates, dict):
                raise Int8kitError(f"{path}: tensor {name!r}: 'candidates' must be an object")
            tensors[name] = TensorRange(
                _amax(t["amax"], name, path, stats),
                str(t.get("method", "?")),
                stats,
                candidates,
                t.get("uint8") if isinstance(t.get("uint8"), dict) else {},
            )
        config = d.get("config", {})
        return cls(tensors, config if isinstance(config, dict) else {})


def _amax(value, name: str, path, stats: dict) -> float:
    """A checked amax: a positive finite number. 0.0 is accepted only where the file's own
    statistics say the tensor was always zero or never finite (what calibration writes then)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    amax = float(value) if ok else math.nan
    always_zero = stats.get("count") == 0 or (stats.get("min") == 0 and stats.get("max") == 0)
    if ok and math.isfinite(amax) and (amax > 0 or (amax == 0 and always_zero)):
        return amax
    raise Int8kitError(
        f"{path}: tensor {name!r} has amax {value!r}; an amax must be a positive finite number "
        "(TensorRT refuses a scale <= 0, NaN or Inf). Fix the file, or calibrate again without "
        "--ranges"
    )
