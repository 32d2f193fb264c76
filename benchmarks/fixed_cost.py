"""The default recipe's whole quantize call, old code vs new, beside ONNX Runtime's quantize_static
(MinMax) and one plain FP32 pass (issues 10 and 11: faster than ORT MinMax, <= 3x one FP32 pass),
with the bias correction's share of each call.

    .venv/bin/python benchmarks/fixed_cost.py [--models pplcnet minilm retinaface] [--runs 5]
                                              [--old COMMIT] [--new COMMIT] [--out NAME]

Each call runs in a fresh process, as zoo_bench.py --timing runs it (int8kit_runner.py, method
auto, 128 calibration samples, no held-out fidelity; ort_runner.py MinMax in the ORT venv). "old"
is ``src/`` of a commit (default HEAD; git archive into a temporary folder, first on PYTHONPATH),
"new" the working tree's ``src/`` (or that of ``--new COMMIT``) (numba's kernels of both compiled and cached first); the three alternate within
every run, starting one later each run, so load from other jobs falls on all of them alike:
compare the ratios, not the seconds. The old and new Q/DQ
models must be byte-identical and their ranges equal (checked every run).

Result: benchmarks/results/fixed_cost.json, or ``--out NAME`` there (repository-relative paths).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BENCH, RESULTS, python_of, save_json  # noqa: E402
from zoo import data_path, model_path, relative  # noqa: E402
from zoo_bench import PEERS, ZOO_MODELS_OUT, ensure_venv  # noqa: E402

ROOT = BENCH.parent


def run(cmd: list, pythonpath: str | None = None) -> dict:
    """Run ``cmd``; the last JSON line it printed (raises with its stderr when it fails)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", INT8KIT_NO_PROGRESS="1")
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    proc = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, env=env)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"{cmd[1]} failed (rc {proc.returncode}): {proc.stderr[-2000:]}")


def same_result(a: Path, b: Path) -> bool:
    """Byte-identical Q/DQ models and equal per-tensor ranges (the config part may differ)."""
    if a.read_bytes() != b.read_bytes():
        return False
    ranges = [json.loads(p.with_suffix(".ranges.json").read_text())["tensors"] for p in (a, b)]
    return ranges[0] == ranges[1]


def measure(name: str, runs: int, old_src: Path, new_src: Path) -> dict:
    out = {k: ZOO_MODELS_OUT / f"{name}.fixed_cost.{k}.onnx" for k in ("old", "new", "ort")}
    out["old"].parent.mkdir(parents=True, exist_ok=True)
    runner = [
        sys.executable,
        BENCH / "int8kit_runner.py",
        model_path(name),
        data_path(name, "calib"),
    ]
    ort_cmd = [python_of("ort"), BENCH / "peers/ort_runner.py", model_path(name)]
    calls = {
        "old": lambda: run([*runner, out["old"], "auto"], pythonpath=str(old_src)),
        "new": lambda: run([*runner, out["new"], "auto"], pythonpath=str(new_src)),
        "ort": lambda: run([*ort_cmd, data_path(name, "calib"), out["ort"], "MinMax"]),
    }
    seconds = {k: [] for k in calls}
    floor = {"old": [], "new": []}
    bias = {"old": [], "new": []}  # the bias correction inside the call
    identical = []
    order = list(calls)
    for r in range(runs):
        for k in order[r % 3 :] + order[: r % 3]:
            res = calls[k]()
            seconds[k].append(res["quantize_s"])
            if k in floor:
                floor[k].append(res["floor_s"])
                bias[k].append(res["bias_correction_s"])
                where = Path(res["int8kit"]).resolve()
                expected = old_src if k == "old" else new_src
                assert where.is_relative_to(expected), f"{k} ran {where}"
        identical.append(same_result(out["old"], out["new"]))
        print(
            f"  {name} run {r + 1}: " + "  ".join(f"{k} {v[-1]:.2f}s" for k, v in seconds.items())
        )
    med = {k: statistics.median(v) for k, v in seconds.items()}
    res = {
        "model": relative(model_path(name)),
        "calib": relative(data_path(name, "calib")),
        "runs": runs,
        "seconds": seconds,
        "fp32_pass_s": floor,
        "bias_correction_s": bias,
        "identical_outputs": identical,
        "median_s": med,
        "median_bias_correction_s": {k: statistics.median(v) for k, v in bias.items()},
        "new_over_old": med["new"] / med["old"],
    }
    for k in ("old", "new"):
        # per run, the call over the FP32 pass measured in the same process
        ratios = [q / f for q, f in zip(seconds[k], floor[k], strict=True)]
        res[f"{k}_speedup_vs_ort_minmax"] = med["ort"] / med[k]
        res[f"{k}_over_fp32_pass"] = statistics.median(ratios)
    return res


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout.strip()


def extract(commit: str, dest: Path) -> Path:
    """``src/`` of ``commit`` under ``dest``, its numba kernels compiled and cached (numba
    caches them beside the code: a fresh folder would compile inside the timed call)."""
    archive = subprocess.run(
        ["git", "archive", commit, "src"], capture_output=True, cwd=ROOT, check=True
    ).stdout
    dest.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", dest], input=archive, check=True)
    warm_numba(dest / "src")
    return dest / "src"


def warm_numba(src: Path) -> None:
    warm = "from int8kit.calib import kernels as k; k.numba_kernel(); k.channel_sums_kernel()"
    env = dict(os.environ, PYTHONPATH=str(src))
    subprocess.run([sys.executable, "-c", warm], env=env, check=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["pplcnet", "minilm", "retinaface"])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--old", default="HEAD", help="commit whose src/ is 'old' (default HEAD)")
    p.add_argument("--new", default=None, help="commit whose src/ is 'new' (default: worktree)")
    p.add_argument("--out", default="fixed_cost.json", help="file name under benchmarks/results")
    a = p.parse_args(argv)
    why = ensure_venv(*PEERS["ort-minmax"][:2])
    if why:
        raise SystemExit(f"ORT venv: {why}")
    old = git("rev-parse", "--short", a.old)
    if a.new:
        new = git("rev-parse", "--short", a.new)
    else:
        dirty = git("status", "--porcelain", "src")
        new = git("rev-parse", "--short", "HEAD") + (" + uncommitted src changes" if dirty else "")
    results = {}
    with tempfile.TemporaryDirectory(prefix="int8kit-fixed-cost-") as tmp:
        old_src = extract(old, Path(tmp) / "old")
        if a.new:
            new_src = extract(new, Path(tmp) / "new")
        else:
            new_src = ROOT / "src"
            warm_numba(new_src)
        for name in a.models:
            results[name] = measure(name, a.runs, old_src, new_src)
    doc = {
        "what": "default quantize call (int8kit_runner.py auto, holdout 0) in fresh processes, "
        "old/new/ORT MinMax alternated; medians",
        "old": old,
        "new": new,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "load_avg_1min_at_end": os.getloadavg()[0],
        "models": results,
    }
    save_json(RESULTS / a.out, doc)
    print(
        f"\n{'model':<12}{'old s':>8}{'new s':>8}{'ORT s':>8}{'new/old':>9}"
        f"{'ORT/old':>9}{'ORT/new':>9}{'old/FP32':>10}{'new/FP32':>10}{'bc old':>8}{'bc new':>8}"
        "  identical"
    )
    for name, r in results.items():
        m = r["median_s"]
        print(
            f"{name:<12}{m['old']:>8.2f}{m['new']:>8.2f}{m['ort']:>8.2f}{r['new_over_old']:>9.2f}"
            f"{r['old_speedup_vs_ort_minmax']:>9.2f}{r['new_speedup_vs_ort_minmax']:>9.2f}"
            f"{r['old_over_fp32_pass']:>10.1f}{r['new_over_fp32_pass']:>10.1f}"
            f"{r['median_bias_correction_s']['old']:>8.2f}{r['median_bias_correction_s']['new']:>8.2f}  "
            f"{all(r['identical_outputs'])}"
        )
    print(f"\nwrote {relative(RESULTS / a.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
