"""One command for the whole side-by-side benchmark (see README.md).

    .venv/bin/python benchmarks/run_all.py [--n-calib 128] [--n-eval 128] [--models ...]

Prepares models and data, quantizes each model with every int8kit method and every peer (each
peer in its own venv under benchmarks/work/venvs/<peer>, created here when missing; a peer that
cannot be installed or run is skipped and said so), evaluates every output model with int8kit's
metrics, and writes benchmarks/results/<model>.json, rss_scaling.json and summary.md.
Steps whose results exist are reused unless --force.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    BENCH,
    DATA,
    MODELS,
    OUT_MODELS,
    RESULTS,
    VENVS,
    model_path,
    npy_path,
    python_of,
    run_measured,
    save_json,
    timed,
)

# label suffix: (method, runner flags). "auto" is int8kit's default recipe; "entropy-plain" is
# TensorRT's own calibrator's ranges on every layer, nothing else (the reference point).
INT8KIT_METHODS = {
    "auto": ("auto", []),
    "entropy-plain": ("entropy", ["--plain"]),
    "entropy": ("entropy", []),
    "minmax": ("minmax", []),
    "percentile": ("percentile", []),
    "mse": ("mse", []),
    "search": ("search", []),
}
PEERS = {
    # tool label: (venv, pip requirements, runner, method argument)
    "ort-minmax": ("ort", ["onnxruntime", "onnx", "numpy"], "peers/ort_runner.py", "MinMax"),
    "ort-entropy": ("ort", ["onnxruntime", "onnx", "numpy"], "peers/ort_runner.py", "Entropy"),
    "ort-percentile": (
        "ort",
        ["onnxruntime", "onnx", "numpy"],
        "peers/ort_runner.py",
        "Percentile",
    ),
    "modelopt-entropy": (
        "modelopt",
        ["nvidia-modelopt[onnx]"],
        "peers/modelopt_runner.py",
        "entropy",
    ),
    "modelopt-max": ("modelopt", ["nvidia-modelopt[onnx]"], "peers/modelopt_runner.py", "max"),
    "nncf": ("nncf", ["nncf", "onnxruntime", "onnx", "numpy"], "peers/nncf_runner.py", None),
    # TensorRT-deployable NNCF: every activation quantizer signed INT8 with zero point 0.
    "nncf-signed": (
        "nncf",
        ["nncf", "onnxruntime", "onnx", "numpy"],
        "peers/nncf_runner.py",
        "signed",
    ),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def ensure_venv(venv: str, reqs: list[str]) -> str | None:
    """Create the peer's venv if missing; None when ready, else why it cannot be used."""
    py = python_of(venv)
    marker = VENVS / venv / ".installed"
    if marker.exists():
        return None
    log(f"preparing venv {venv}: pip install {' '.join(reqs)}")
    if not py.exists():
        subprocess.run(["python3", "-m", "venv", str(VENVS / venv)], check=False)
    if not py.exists():
        return f"could not create a venv at {VENVS / venv}"
    r = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", *reqs], capture_output=True, text=True
    )
    if r.returncode:
        return f"pip install {' '.join(reqs)} failed: {r.stderr.strip()[-500:]}"
    marker.write_text(" ".join(reqs) + "\n")
    return None


def quantize_all(name: str, n_calib: int, force: bool, only: set[str] | None) -> dict:
    calib = npy_path(name, "calib", n_calib)
    runs: dict[str, dict] = {}
    OUT_MODELS.mkdir(parents=True, exist_ok=True)
    for suffix, (method, flags) in INT8KIT_METHODS.items():
        label = f"int8kit-{suffix}"
        if only and label not in only:
            continue
        out = OUT_MODELS / f"{name}.{label}.onnx"
        log(f"{name}: {label}")
        r = run_measured(
            timed(
                [sys.executable, BENCH / "int8kit_runner.py", model_path(name), calib, out, method]
                + flags
            ),
            log=BENCH / "work/logs" / f"{name}.{label}.log",
        )
        runs[label] = {**r, "model": str(out), "ok": r["rc"] == 0 and out.exists()}
    for label, (venv, reqs, runner, method) in PEERS.items():
        if only and label not in only:
            continue
        why = ensure_venv(venv, reqs)
        out = OUT_MODELS / f"{name}.{label}.onnx"
        if why:
            runs[label] = {"ok": False, "skipped": why}
            log(f"{name}: {label} skipped: {why}")
            continue
        log(f"{name}: {label}")
        cmd = [python_of(venv), BENCH / runner, model_path(name), calib, out]
        if method:
            cmd.append(method)
        r = run_measured(timed(cmd), log=BENCH / "work/logs" / f"{name}.{label}.log", timeout=1800)
        runs[label] = {**r, "model": str(out), "ok": r["rc"] == 0 and out.exists()}
        if not runs[label]["ok"]:
            runs[label]["skipped"] = f"the runner failed (rc {r['rc']}): {r['stderr_tail'][-400:]}"
            log(f"{name}: {label} failed, see benchmarks/work/logs")
    return runs


def evaluate_all(name: str, runs: dict, n_eval: int) -> None:
    from evaluate import fidelity_of, latency, qdq_counts

    ok = {k: v["model"] for k, v in runs.items() if v.get("ok")}
    for label, path in ok.items():
        if "fidelity" in runs[label]:
            continue  # kept from an earlier run of the same model file
        log(f"{name}: fidelity of {label}")
        try:
            runs[label]["fidelity"] = fidelity_of(name, path, n_eval)
            runs[label]["qdq"] = qdq_counts(path)
        except Exception as exc:  # a peer's model that int8kit's ORT cannot run
            runs[label]["fidelity_error"] = repr(exc)[:500]
    log(f"{name}: latency")
    lat = latency(name, {"fp32": str(model_path(name)), **ok})
    for label, ms in lat.items():
        if label in runs:
            runs[label]["latency_ms"] = ms
    runs.setdefault("fp32", {})["latency_ms"] = lat["fp32"]


def rss_scaling(force: bool, sizes=(64, 256, 1024)) -> dict:
    out_path = RESULTS / "rss_scaling.json"
    if out_path.exists() and not force:
        return json.loads(out_path.read_text())
    from int8kit.examples import make_photo_sets

    calib_dir, _ = make_photo_sets(DATA / "photos_rss", n_calib=max(sizes), n_eval=8)
    res = {
        "model": "yolov8n",
        "method": "auto (default: minmax + bias correction)",
        "source": "image folder, streamed",
        "runs": {},
    }
    for n in sizes:
        log(f"rss scaling: {n} images")
        sub = DATA / f"rss_{n}"
        sub.mkdir(parents=True, exist_ok=True)
        for p in sorted(calib_dir.glob("crop_*.jpg"))[:n]:
            link = sub / p.name
            if not link.exists():
                link.symlink_to(p)
        out = OUT_MODELS / f"rss_{n}.onnx"
        r = run_measured(
            timed(
                [
                    sys.executable,
                    BENCH / "int8kit_runner.py",
                    model_path("yolov8n"),
                    sub,
                    out,
                    "auto",
                    "--preset",
                    "yolov8n",
                    "--no-floor",
                ]
            ),
            log=BENCH / "work/logs" / f"rss_{n}.log",
        )
        res["runs"][n] = {
            "peak_rss_mib": r["peak_rss_mib"],
            "wall_s": r["wall_s"],
            "images": (r["result"] or {}).get("images"),
            "rc": r["rc"],
        }
    first, last = res["runs"][sizes[0]], res["runs"][sizes[-1]]
    if first["peak_rss_mib"] and last["peak_rss_mib"]:
        res["growth_last_vs_first"] = last["peak_rss_mib"] / first["peak_rss_mib"] - 1
    save_json(out_path, res)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-calib", type=int, default=128)
    p.add_argument("--n-eval", type=int, default=128)
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--only", nargs="+", help="tool labels to (re)run, e.g. int8kit-entropy nncf")
    p.add_argument("--force", action="store_true", help="redo steps whose results exist")
    p.add_argument("--skip-rss", action="store_true")
    p.add_argument("--skip-speed", action="store_true", help="skip calib_speed.py's 5 runs")
    a = p.parse_args(argv)

    from prepare import prepare
    from summary import write_summary

    log("preparing models and data")
    prepare(a.n_calib, a.n_eval)
    for name in a.models:
        path = RESULTS / f"{name}.json"
        old = json.loads(path.read_text()) if path.exists() else {}
        if old and not a.force and not a.only:
            log(f"{name}: results exist ({path}); --force to redo")
            continue
        runs = quantize_all(name, a.n_calib, a.force, set(a.only) if a.only else None)
        if a.only and old:
            runs = {**{k: v for k, v in old["runs"].items() if k != "fp32"}, **runs}
        evaluate_all(name, runs, a.n_eval)
        save_json(
            path,
            {
                "model": name,
                "n_calib": a.n_calib,
                "n_eval": a.n_eval,
                "machine": {"cpus": __import__("os").cpu_count(), "platform": platform.platform()},
                "runs": runs,
            },
        )
    if not a.skip_speed:
        log("calibration speed: fresh processes, alternating methods")
        from calib_speed import main as calib_speed

        calib_speed(["--runs", "5", "--n-calib", str(a.n_calib)])
    if not a.skip_rss:
        rss_scaling(a.force)
    write_summary()
    log(f"wrote {RESULTS / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
