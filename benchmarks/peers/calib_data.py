"""Calibration data for the peer runners (numpy only: it runs in every peer's venv).

A ``.npy`` holds the one input's samples; an ``.npz`` (the zoo) one array per graph input, first
axis = samples. Both become per-sample feeds ``{input name: array[i:i+1]}``.
"""

from __future__ import annotations

import numpy as np


def load(path: str, input_names: list[str]) -> dict[str, np.ndarray]:
    """{input name: all samples}; a .npy feeds the model's first input."""
    if str(path).endswith(".npz"):
        with np.load(path) as z:
            missing = [n for n in input_names if n not in z.files]
            if missing:
                raise SystemExit(f"{path} has no array for the model inputs {missing}")
            return {n: z[n] for n in input_names}
    return {input_names[0]: np.load(path)}


def count(arrays: dict[str, np.ndarray]) -> int:
    return len(next(iter(arrays.values())))


def feed(arrays: dict[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
    return {n: np.ascontiguousarray(a[i : i + 1]) for n, a in arrays.items()}


def graph_inputs(model) -> list[str]:
    """Names of the real inputs of an onnx ModelProto (initializers listed as inputs excluded)."""
    inits = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]
