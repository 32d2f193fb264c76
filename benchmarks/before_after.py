"""int8kit calibration speed before vs after the collector/observe optimisation: the same
runner with ``src/`` of an older commit (extracted with git archive) and of the working tree,
alternated in fresh processes.

    .venv/bin/python benchmarks/before_after.py [--before 0ede26b] [--rounds 2]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tarfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BENCH, MODELS, RESULTS, WORK, model_path, npy_path, save_json  # noqa: E402


def extract(rev: str) -> Path:
    dest = WORK / f"src_{rev}"
    if not (dest / "src" / "int8kit").is_dir():
        tar = subprocess.run(
            ["git", "archive", rev, "src"], cwd=BENCH.parent, capture_output=True, check=True
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(tar)) as t:
            t.extractall(dest, filter="data")
    return dest / "src"


def run(src: Path, name: str, method: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src))
    out = WORK / "models" / f"{name}.before_after.onnx"
    cmd = [
        sys.executable,
        str(BENCH / "int8kit_runner.py"),
        str(model_path(name)),
        str(npy_path(name, "calib", 128)),
        str(out),
        method,
    ]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return __import__("json").loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--before", default="0ede26b")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--method", default="entropy")
    a = p.parse_args()
    srcs = {"before": extract(a.before), "after": BENCH.parent / "src"}
    res: dict = {"before_rev": a.before, "method": a.method, "models": {}}
    for name in MODELS:
        runs: dict[str, list] = {k: [] for k in srcs}
        for _ in range(a.rounds):
            for k, src in srcs.items():
                runs[k].append(run(src, name, a.method))
                print(name, k, runs[k][-1]["calibration_s"], flush=True)
        res["models"][name] = {
            k: {
                "calibration_s": statistics.median(r["calibration_s"] for r in v),
                "quantize_cpu_s": statistics.median(r["quantize_cpu_s"] for r in v),
                "floor_s": statistics.median(r["floor_s"] for r in v),
                "calib_over_floor": statistics.median(r["calib_over_floor"] for r in v),
                "runs": v,
            }
            for k, v in runs.items()
        }
    save_json(RESULTS / "before_after.json", res)


if __name__ == "__main__":
    main()
