"""Writing a zoo model: opset upgrade where int8kit needs it (per-channel Q/DQ needs opset >= 13),
checked against the original on real inputs, and an atomic save."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx

from int8kit.fileio import atomic_path

MIN_OPSET = 13


def opset_of(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _outputs(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    from int8kit.onnx.observe import make_session

    sess = make_session(model, optimize=False)
    return [sess.run(None, f) for f in feeds]


def write_model(src: Path, dest: Path, feeds: list[dict[str, np.ndarray]] | None = None) -> dict:
    """Copy the ONNX model ``src`` to ``dest``; below opset 13 upgrade it with
    onnx.version_converter and check that the upgraded model gives the same outputs on ``feeds``
    (max abs difference <= 1e-5 of the output's scale). Returns what was done."""
    model = onnx.load(src)
    info = {"opset": opset_of(model)}
    if info["opset"] < MIN_OPSET:
        from onnx import version_converter

        upgraded = version_converter.convert_version(model, MIN_OPSET)
        onnx.checker.check_model(upgraded)
        if feeds:
            worst = 0.0
            for a, b in zip(_outputs(model, feeds), _outputs(upgraded, feeds), strict=True):
                for x, y in zip(a, b, strict=True):
                    if x.shape != y.shape:
                        raise RuntimeError(f"upgraded model output shape {y.shape} != {x.shape}")
                    scale = max(float(np.abs(x).max()), 1e-12)
                    worst = max(worst, float(np.abs(x - y).max()) / scale)
            if worst > 1e-5:
                raise RuntimeError(f"opset upgrade changed the outputs (rel. max diff {worst:.2e})")
            info["upgrade_max_rel_diff"] = worst
        info["upgraded_to"] = MIN_OPSET
        print(f"[zoo] {src.name}: opset {info['opset']} -> {MIN_OPSET} ({info})", file=sys.stderr)
        model = upgraded
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        onnx.save(model, str(tmp))
    return info
