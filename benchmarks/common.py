"""Shared paths and helpers of the benchmark (runs in int8kit's venv)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
DATA = BENCH / "data"
WORK = BENCH / "work"
RESULTS = BENCH / "results"
VENVS = WORK / "venvs"
MODELS_DIR = DATA / "models"
OUT_MODELS = WORK / "models"

MODELS = {
    # name: (input name, preprocess key, task)
    "yolov8n": ("images", "yolo", "detect"),
    "efficientnet_lite0": ("input", "efficientnet", "classify"),
}


def model_path(name: str) -> Path:
    return MODELS_DIR / f"{name}.onnx"


def npy_path(name: str, split: str, n: int) -> Path:
    return DATA / "npy" / f"{name}_{split}_{n}.npy"


def run_measured(cmd: list[str], log: Path | None = None, timeout: float | None = None) -> dict:
    """Run ``cmd``; wall seconds, peak RSS (MiB) of the child (os.wait4), exit code and the last
    JSON line it printed on stdout."""
    t0 = time.perf_counter()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    # communicate() already reaped the child; its rusage is folded into RUSAGE_CHILDREN only as
    # a max over all children, so each measured command runs through /usr/bin/time instead.
    wall = time.perf_counter() - t0
    if log:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"$ {' '.join(map(str, cmd))}\n--- stdout\n{out}\n--- stderr\n{err}\n")
    result = None
    for line in reversed(out.splitlines()):
        if line.startswith("{"):
            try:
                result = json.loads(line)
                break
            except json.JSONDecodeError:
                pass
    rss, cpu = None, 0.0
    for line in err.splitlines():
        if "Maximum resident set size" in line:
            rss = int(line.split(":")[-1]) / 1024
        elif line.strip().startswith(("User time (seconds)", "System time (seconds)")):
            cpu += float(line.split(":")[-1])
    return {
        "rc": proc.returncode,
        "wall_s": wall,
        "peak_rss_mib": rss,
        "cpu_s": cpu or None,
        "result": result,
        "stderr_tail": err[-2000:] if proc.returncode else "",
    }


def timed(cmd: list[str]) -> list[str]:
    """Prefix ``cmd`` with /usr/bin/time -v (peak RSS of the whole process tree's largest)."""
    return ["/usr/bin/time", "-v", *map(str, cmd)]


def python_of(venv: str) -> Path:
    return VENVS / venv / "bin" / "python"


def save_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_default) + "\n")
    tmp.replace(path)


def _default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o))


def here_python() -> str:
    return sys.executable
