"""A peer runner (ort_runner.py, nncf_runner.py, ...) fed whole per-sample feeds: the exact feeds
int8kit calibrates on, for models whose samples calib_data.py cannot slice off axis 0 (an RNN
state (2, 1, 128) listed one per sample, a 0-d sample rate, a loader script's feeds of their own
H, W). Runs in the peer's venv (numpy only besides the runner's own imports).

usage: python feeds_runner.py RUNNER.py MODEL FEEDS.npz OUT.onnx [ARG]
FEEDS.npz holds one array per sample and input, keyed "<sample index>:<input name>", each the
whole feed of that input (batch dim included). The runner reads its data through calib_data's
load/count/feed; those are swapped here, explicitly, for ones that hand these feeds over as they
are, before the runner is imported (it binds them at import).
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import calib_data  # noqa: E402


def load(path: str, input_names: list[str]) -> dict[str, list[np.ndarray]]:
    """{input name: [feed of sample 0, feed of sample 1, ...]}."""
    with np.load(path) as z:
        keys = z.files
        n = len({k.split(":", 1)[0] for k in keys})
        missing = [name for name in input_names if f"0:{name}" not in keys]
        if missing:
            raise SystemExit(f"{path} has no feeds for the model inputs {missing}")
        return {name: [z[f"{i}:{name}"] for i in range(n)] for name in input_names}


def feed(arrays: dict[str, list[np.ndarray]], i: int) -> dict[str, np.ndarray]:
    return {name: np.array(a[i]) for name, a in arrays.items()}  # a C-ordered copy; 0-d stays 0-d


if __name__ == "__main__":
    calib_data.load, calib_data.feed = load, feed  # count (len of the first value) fits lists
    runner = sys.argv[1]
    sys.argv = [runner, *sys.argv[2:]]
    runpy.run_path(runner, run_name="__main__")
