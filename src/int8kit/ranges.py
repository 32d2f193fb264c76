"""Per-tensor ranges: what a calibration found, readable by people and reusable by a later run.

``model.ranges.json`` holds, per tensor, amax, scale, the method, and the statistics behind it
(count, min, max, NaN/Inf count), plus the config of the run that made it.
"""

from __future__ import annotations

import json
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
                }
                for n, r in self.tensors.items()
            },
        }

    def write(self, path: str | os.PathLike) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def read(cls, path: str | os.PathLike) -> Ranges:
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except (OSError, json.JSONDecodeError) as exc:
            raise Int8kitError(f"cannot read ranges file {path}: {exc}") from exc
        if d.get("format") != FORMAT:
            raise Int8kitError(f"{path} is not an int8kit ranges file (format {d.get('format')!r})")
        tensors = {}
        for name, t in d["tensors"].items():
            stats = {k: t[k] for k in ("count", "min", "max", "nan", "inf") if k in t}
            tensors[name] = TensorRange(
                float(t["amax"]), t.get("method", "?"), stats, dict(t.get("candidates", {}))
            )
        return cls(tensors, d.get("config", {}))
