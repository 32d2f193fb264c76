"""The peers beside int8kit's default on the sweep's real models outside the zoo (sweep.py).

The default recipe was chosen on the zoo; the sweep checks it only for robustness. Here every
sweep model that the default quantized (status ok, Q/DQ > 0) is quantized again by int8kit's
default, NNCF (default preset and signed INT8), and ONNX Runtime's quantize_static MinMax, all on
the SAME calibration samples, and all are scored with the SAME metric on the SAME held-out
samples.

Split: as the sweep's command ``int8kit quantize MODEL --calib DATA.npz --holdout 8`` makes it
(int8kit.data.split): an .npz calibrates on its first 32 samples in file order and holds out the
last 8; a loader script (mtcnn_pnet_pyramid) calibrates on all its feeds but the last 8. Those
calibration feeds, one whole feed per sample, are written to work/sweep_peers/<model>.feeds.npz
and handed to the peer runners through peers/feeds_runner.py. int8kit runs as the user types it
(the CLI, in a subprocess). Score: int8kit.workflow.fidelity (what the CLI reports), trt-like
backend (ONNX Runtime with graph optimizations off: fake-quant as TensorRT computes it) against
the FP32 model as int8kit reads it (an FP16 model computed in FP32), on the 8 held-out feeds:
the worst output's SQNR and the mean over outputs of the cosine; an output whose length depends
on the values is compared on the common part (fidelity does). A peer that fails or times out is
a result. TensorRT-deployable = zoo_bench.trt_deployable (signed INT8, zero point 0, one scale
per activation tensor).

    .venv/bin/python benchmarks/sweep_peers.py [--models NAME ...] [--timeout S] [--redo]
    .venv/bin/python benchmarks/sweep_peers.py --dig NAME ...   # int8kit with single options off
    .venv/bin/python benchmarks/sweep_peers.py --dig-tensors NAME ...  # one tensor's range each
    .venv/bin/python benchmarks/sweep_peers.py --table          # results/sweep_peers.{json,md}
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from common import python_of, save_json  # noqa: E402
from run_all import PEERS as TWO_MODEL_PEERS  # noqa: E402
from sweep import BY_NAME, MODELS, N_HOLDOUT, data_file, model_file  # noqa: E402
from zoo import ROOT, relative  # noqa: E402

WORK = BENCH / "work" / "sweep_peers"
RESULTS = BENCH / "results"
SWEEP_JSON = RESULTS / "sweep.json"
PEERS = {k: TWO_MODEL_PEERS[k] for k in ("nncf", "nncf-signed", "ort-minmax")}
PEER_COLUMNS = {"nncf": "NNCF", "nncf-signed": "NNCF signed", "ort-minmax": "ORT MinMax"}
# int8kit with one option of the default recipe off (--dig): label -> CLI flags
VARIANTS = {
    "int8kit": [],
    "int8kit no-center": ["--no-center-one-sided"],
    "int8kit no-dw-eq": ["--no-equalize-depthwise"],
    "int8kit no-bc": ["--no-bias-correction"],
    "int8kit minmax": ["--method", "minmax"],  # an explicit method drops the recipe's extras
    "int8kit minmax+ctr+dw": ["--method", "minmax", "--center-one-sided", "--equalize-depthwise"],
}
MAX_SWEEP_SECONDS = 120.0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def candidates(max_seconds: float) -> tuple[list[str], dict[str, str]]:
    """(sweep models to run, {model left out: why}): status ok with Q/DQ written."""
    rows = {r["model"]: r for r in json.loads(SWEEP_JSON.read_text())}
    keep, out = [], {}
    for m in MODELS:
        r = rows.get(m.name)
        if r is None or r["status"] != "ok":
            out[m.name] = f"sweep status {r['status'] if r else 'missing'}"
        elif not r.get("int8", {}).get("q"):
            out[m.name] = "the default wrote no Q/DQ"
        elif r.get("seconds", 0) > max_seconds:
            out[m.name] = f"int8kit took {r['seconds']} s in the sweep (> {max_seconds:.0f} s)"
        else:
            keep.append(m.name)
    keep.sort(key=lambda n: rows[n].get("seconds", 0))
    return keep, out


# ----------------------------------------------------------------------------- data


def data_config(name: str):
    from int8kit.data import DataConfig

    m = BY_NAME[name]
    if m.loader:
        return DataConfig(source=f"{relative(BENCH / 'sweep.py')}:{m.loader}", kind="script")
    return DataConfig(source=relative(data_file(m)))


def reference(name: str):
    """The FP32 model as int8kit reads it (an FP16 model computed in FP32, same function)."""
    from int8kit.onnx.model_io import load_model
    from int8kit.onnx.upcast import upcast_fp16

    model = load_model(model_file(BY_NAME[name]))
    upcast_fp16(model)
    return model


def split_feeds(name: str, model) -> tuple[list[dict], list[dict]]:
    """(calibration feeds, held-out feeds) of the sweep's split (int8kit.data.split)."""
    from int8kit.data import split
    from int8kit.onnx.model_io import input_specs

    calib, held = split(data_config(name), input_specs(model), N_HOLDOUT)
    return list(calib), list(held)


def write_feeds(path: Path, feeds: list[dict]) -> None:
    """One array per sample and input, keyed "<i>:<input>" (peers/feeds_runner.py reads it)."""
    arrays = {f"{i}:{k}": np.asarray(v) for i, f in enumerate(feeds) for k, v in f.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    tmp.replace(path)


# ----------------------------------------------------------------------------- runs


def _tail(text: str, n: int = 400) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-3:])[-n:] if lines else ""


def run_cmd(cmd: list, log_path: Path, timeout: float) -> dict:
    """Run ``cmd`` from the repository root: rc, seconds, its last JSON line; a timeout or a
    failure is a result."""
    t0 = time.perf_counter()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        proc = subprocess.run(
            [str(c) for c in cmd],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "failed": f"timed out after {timeout:.0f} s"}
    seconds = round(time.perf_counter() - t0, 1)
    log_path.write_text(f"$ {' '.join(map(str, cmd))}\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    if proc.returncode:
        return {
            "ok": False,
            "seconds": seconds,
            "failed": f"rc {proc.returncode}: " + _tail(proc.stderr or proc.stdout),
        }
    last = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("{")), None)
    return {"ok": True, "seconds": seconds, "printed": json.loads(last) if last else {}}


def run_int8kit(
    name: str, label: str, out: Path, timeout: float, flags: list[str] | None = None
) -> dict:
    m = BY_NAME[name]
    summary = out.with_suffix(".json")
    cmd = [sys.executable, "-m", "int8kit", "quantize", relative(model_file(m))]
    if m.loader:
        cmd += ["--data-loader-script", f"{relative(BENCH / 'sweep.py')}:{m.loader}"]
    else:
        cmd += ["--calib", relative(data_file(m))]
    cmd += ["-o", relative(out), "--holdout", str(N_HOLDOUT), "--json", relative(summary)]
    cmd += VARIANTS[label] if flags is None else flags
    r = run_cmd(cmd, out.with_suffix(".log"), timeout)
    r["command"] = " ".join(["int8kit"] + cmd[3:])
    if r["ok"]:
        js = json.loads(summary.read_text())
        r["recipe"] = js.get("recipe")
        r["center"] = _sizes(js.get("center"))
        r["equalize_depthwise"] = _sizes(js.get("equalize_depthwise"))
        bc = js.get("bias_correction")
        r["bias_correction"] = _sizes(bc)
        trt = js.get("fidelity", {}).get("trt-like", {})
        vals = [v["sqnr_db"] for v in trt.values() if isinstance(v, dict) and "sqnr_db" in v]
        r["cli_sqnr_db"] = min(vals) if vals else None  # the CLI's own figure, a cross-check
    return r


def _sizes(d) -> dict | None:
    """A summary dict with its numbers and text as they are and its collections as sizes."""
    if not isinstance(d, dict):
        return None
    return {
        k: v if isinstance(v, (int, float, str, bool)) or v is None else len(v)
        for k, v in d.items()
    }


def run_peer(
    name: str, label: str, feeds: Path, out: Path, timeout: float, model: Path | None = None
) -> dict:
    venv, _, runner, variant = PEERS[label]
    cmd = [python_of(venv), BENCH / "peers" / "feeds_runner.py", BENCH / runner]
    cmd += [model or model_file(BY_NAME[name]), feeds, out]
    if variant:
        cmd.append(variant)
    if not Path(cmd[0]).exists():
        return {"ok": False, "failed": f"no venv at {relative(Path(cmd[0]).parents[1])}"}
    r = run_cmd(cmd, out.with_suffix(".log"), timeout)
    if r["ok"] and not out.is_file():
        r.update(ok=False, failed="the runner wrote no model")
    if r.get("printed"):
        r["quantize_s"] = round(r["printed"].get("quantize_s", 0), 1)
    return r


OPSET_REFUSALS = (
    "opset version < 10 do not support quantization",  # NNCF
    "Unrecognized attribute: axis for operator DequantizeLinear",  # ORT per-channel below 13
)


def opset13(name: str) -> Path:
    """The model converted to opset 13 (onnx.version_converter: the same function), which a
    peer that refuses an old opset gets on a second try, as its user would do."""
    import onnx
    from onnx import version_converter

    path = WORK / f"{name}.opset13.onnx"
    if not path.is_file():
        model = version_converter.convert_version(onnx.load(str(model_file(BY_NAME[name]))), 13)
        onnx.save(model, str(path))
    return path


PASS_THROUGH = ("Transpose", "Reshape", "Identity", "Cast", "Squeeze", "Unsqueeze", "Flatten")


def int8_weight_layers(path: Path) -> int:
    """Conv/ConvTranspose/Gemm/MatMul nodes of the main graph whose weight (input 1) comes out of
    a DequantizeLinear and back, through Q/DQ and Transpose/Reshape/..., to a constant (an
    initializer or a Constant node): an int8 weight, or a float one fake-quantized (NNCF's
    Q -> DQ, which TensorRT folds). The layers a tool runs in INT8; the tools store weights
    differently (sweep.census counts int8 initializers only)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    consts = {i.name for i in model.graph.initializer}
    consts |= {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    made = {o: n for n in model.graph.node for o in n.output}
    follow = (*PASS_THROUGH, "QuantizeLinear", "DequantizeLinear")
    count = 0
    for n in model.graph.node:
        if n.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul") or len(n.input) < 2:
            continue
        name, seen = n.input[1], set()
        while name in made and made[name].op_type in follow:
            seen.add(made[name].op_type)
            name = made[name].input[0]
        count += name in consts and "DequantizeLinear" in seen
    return count


def deployable(path: Path) -> tuple[bool, str]:
    """zoo_bench.trt_deployable, except that a QuantizeLinear of a constant weight read through
    an Identity/Transpose/DequantizeLinear/... or stored in a Constant node (NNCF's fake-quantized weights on
    shared or paddle2onnx weights) is a weight, which TensorRT folds, not an activation with a
    per-channel scale."""
    import onnx
    from zoo_bench import trt_deployable

    ok, why = trt_deployable(path)
    if ok:
        return ok, why
    reasons = [r for r in why.split("; ") if not r.startswith("per-channel activation scale")]
    model = onnx.load(str(path), load_external_data=False)
    sizes = {i.name: int(np.prod(i.dims)) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            sizes[n.output[0]] = int(np.prod(n.attribute[0].t.dims))
    made = {o: n for n in model.graph.node for o in n.output}
    bad = nq = 0
    for n in model.graph.node:
        if n.op_type != "QuantizeLinear":
            continue
        nq += 1
        name = n.input[0]
        while name in made and made[name].op_type in (*PASS_THROUGH, "DequantizeLinear"):
            name = made[name].input[0]
        bad += name not in sizes and sizes.get(n.input[1], 1) > 1
    if bad:
        reasons.append(f"per-channel activation scale: {bad} of {nq}")
    return not reasons, "; ".join(reasons)


def score(ref, out: Path, held: list[dict]) -> dict:
    """trt-like fidelity of ``out`` vs ``ref`` on ``held`` (int8kit.workflow.fidelity)."""
    from zoo_bench import qdq_counts

    from int8kit.analysis.fidelity import failure
    from int8kit.onnx.model_io import load_model
    from int8kit.workflow import fidelity

    model = load_model(out)
    deploy, why = deployable(out)
    entry = {"qdq": qdq_counts(out), "trt_deployable": deploy, "why_not": why}
    entry["layers_int8"] = int8_weight_layers(out)
    trt = fidelity(ref, model, held, backends=("trt-like",))["trt-like"]
    reason = failure(trt)
    if reason:
        return {**entry, "ok": False, "failed": reason}
    outputs = {
        n: {k: v for k, v in o.items() if k in ("sqnr_db", "cosine", "shape_differs")}
        for n, o in trt.items()
    }
    sq = [o["sqnr_db"] for o in outputs.values()]
    cos = [o["cosine"] for o in outputs.values()]
    return {
        **entry,
        "sqnr_db": min(sq),
        "cosine_mean": float(np.mean(cos)),
        "outputs": outputs,
    }


def dig_tensors(name: str, timeout: float) -> dict:
    """The default's own ranges (its ranges.json, --ranges) with the amax of ONE activation
    tensor set to the largest |value| calibration saw (what minmax gives it), one run per
    tensor, and with every tensor's: the worst-output SQNR of each, to find which tensor's
    range loses (the centring's own ranges stay as they are)."""
    path = WORK / f"{name}.json"
    entries = json.loads(path.read_text())
    src = WORK / "out" / f"{name}.int8kit.ranges.json"
    tensors = json.loads(src.read_text())["tensors"]
    plain = [k for k, r in tensors.items() if "shift" not in r and "max" in r]
    ref = reference(name)
    _, held = split_feeds(name, ref)
    found = {}
    for i, which in enumerate([None, *plain]):
        edited = json.loads(src.read_text())
        for k in plain if which is None else [which]:
            r = edited["tensors"][k]
            r["amax"] = max(abs(r["max"]), abs(r.get("min", 0.0)))
            r.pop("scale", None)
        given = WORK / "out" / f"{name}.tensor{i}.in.json"  # not the output's ranges.json name
        given.write_text(json.dumps(edited))
        out = WORK / "out" / f"{name}.tensor{i}.onnx"
        r = run_int8kit(name, "int8kit", out, timeout, flags=["--ranges", relative(given)])
        r = _scored(r, ref, out, held)
        key = "every tensor" if which is None else which
        found[key] = {
            "amax": None
            if which is None
            else [tensors[which]["amax"], edited["tensors"][which]["amax"]],
            "sqnr_db": r.get("sqnr_db"),
            "failed": r.get("failed"),
        }
        log(f"{name}: max range on {key}: {r.get('sqnr_db', r.get('failed'))}")
    entries["int8kit"]["tensor_dig"] = found
    save_json(path, entries)
    return found


def _scored(r: dict, ref, out: Path, held: list[dict]) -> dict:
    if r["ok"]:
        try:
            r.update(score(ref, out, held))
        except Exception as exc:  # noqa: BLE001 - a model that cannot be scored is a result
            r.update(ok=False, failed=f"scoring: {type(exc).__name__}: {str(exc)[:300]}")
    return r


def run_model(name: str, labels: list[str], timeout: float, redo: bool) -> dict:
    path = WORK / f"{name}.json"
    entries = json.loads(path.read_text()) if path.is_file() else {}
    todo = [
        lb
        for lb in labels
        if redo
        or lb not in entries
        or (lb in PEERS and any(w in entries[lb].get("failed", "") for w in OPSET_REFUSALS))
    ]
    if not todo:
        return entries
    ref = reference(name)
    calib, held = split_feeds(name, ref)
    feeds = WORK / f"{name}.feeds.npz"
    if any(lb in PEERS for lb in todo):
        write_feeds(feeds, calib)
    for label in todo:
        out = WORK / "out" / f"{name}.{label.replace(' ', '.')}.onnx"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.unlink(missing_ok=True)
        log(f"{name}: {label}")
        if label in PEERS:
            r = run_peer(name, label, feeds, out, timeout)
        else:
            r = run_int8kit(name, label, out, timeout)
        r = _scored(r, ref, out, held)
        if label in PEERS and any(why in r.get("failed", "") for why in OPSET_REFUSALS):
            log(f"{name}: {label} refused the opset: again on the model converted to opset 13")
            try:
                again = run_peer(name, label, feeds, out, timeout, model=opset13(name))
            except Exception as exc:  # noqa: BLE001 - a model the converter cannot convert
                again = {"ok": False, "failed": f"{type(exc).__name__}: {str(exc)[:300]}"}
            again = _scored(again, ref, out, held)
            r = {**again, "opset13": True, "first_failed": r["failed"]}
        r.pop("printed", None)
        r["calib_samples"], r["held_out_samples"] = len(calib), len(held)
        entries[label] = r
        shown = f"{r['sqnr_db']:.2f} dB" if "sqnr_db" in r else r.get("failed")
        log(f"{name}: {label}: {shown} ({r.get('seconds', '')} s)")
        save_json(path, entries)
    return entries


# ----------------------------------------------------------------------------- report


def _sq(e: dict | None) -> float | None:
    return e.get("sqnr_db") if e and e.get("ok", True) and "sqnr_db" in e else None


def _margin(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    if math.isinf(a) and math.isinf(b):
        return 0.0
    return a - b


def summarize(name: str, entries: dict) -> dict:
    mine = _sq(entries.get("int8kit"))
    peers = {lb: _sq(entries.get(lb)) for lb in PEERS}
    scored = {lb: v for lb, v in peers.items() if v is not None}
    deploy = {lb: v for lb, v in scored.items() if entries[lb].get("trt_deployable")}
    best = max(scored, key=scored.get) if scored else None
    best_d = max(deploy, key=deploy.get) if deploy else None
    return {
        "model": name,
        "data": BY_NAME[name].data,
        "int8kit_sqnr_db": mine,
        "peers_sqnr_db": peers,
        "best_peer": best,
        "margin_db": _margin(mine, scored.get(best)),
        "best_deployable_peer": best_d,
        "margin_deployable_db": _margin(mine, deploy.get(best_d)),
    }


def _cell(e: dict | None) -> str:
    if e is None:
        return "-"
    if _sq(e) is None:
        return "timeout" if "timed out" in e.get("failed", "") else "failed"
    mark = ("" if e.get("trt_deployable") else "*") + ("°" if e.get("opset13") else "")
    return f"{e['sqnr_db']:.1f}{mark}"


def table(rows: list[dict], entries: dict[str, dict]) -> str:
    head = (
        "| model | data | int8kit SQNR | NNCF | NNCF signed | ORT MinMax | best peer | "
        "int8kit - best peer (dB) | int8kit - best deployable (dB) | int8 weight layers |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    labels = ["int8kit", *PEERS]
    lines = []
    for s in rows:
        e = entries[s["model"]]
        cells = [_cell(e.get(lb)) for lb in PEERS]
        m, md = s["margin_db"], s["margin_deployable_db"]
        lines.append(
            f"| {s['model']} | {s['data']} | {_cell(e.get('int8kit'))} | {' | '.join(cells)} "
            f"| {PEER_COLUMNS.get(s['best_peer'], '-')} "
            f"| {'' if m is None else f'{m:+.1f}'} | {'' if md is None else f'{md:+.1f}'} "
            f"| {' / '.join(str(e.get(lb, {}).get('layers_int8', '-')) for lb in labels)} |"
        )
    return head + "\n".join(lines) + "\n"


def dig_table(entries: dict[str, dict]) -> str:
    labels = list(VARIANTS)
    dug = [n for n, e in entries.items() if any(lb in e for lb in labels[1:])]
    if not dug:
        return ""
    head = "| model | " + " | ".join(labels) + " | best peer |\n" + "|---" * (len(labels) + 2)
    lines = []
    for n in dug:
        e = entries[n]
        best = summarize(n, e)
        peer = best["best_peer"]
        cells = [_cell(e.get(lb)) for lb in labels]
        lines.append(
            f"| {n} | {' | '.join(cells)} | "
            f"{PEER_COLUMNS.get(peer, '-')} {_cell(e.get(peer)) if peer else ''} |"
        )
    return head + "|\n" + "\n".join(lines) + "\n"


def tensor_table(entries: dict[str, dict], top: int = 3) -> str:
    """The --dig-tensors runs: every tensor at its max range, and the ``top`` single tensors
    whose max range helps most."""
    lines = []
    for n, e in entries.items():
        found = e.get("int8kit", {}).get("tensor_dig")
        if not found:
            continue
        base = e["int8kit"]["sqnr_db"]
        single = sorted(
            ((k, v) for k, v in found.items() if k != "every tensor" and v["sqnr_db"] is not None),
            key=lambda kv: -kv[1]["sqnr_db"],
        )[:top]
        best = "; ".join(
            f"`{k}` (amax {v['amax'][0]:.3g} -> {v['amax'][1]:.3g}): {v['sqnr_db']:.1f}"
            for k, v in single
        )
        every = found["every tensor"]["sqnr_db"]
        lines.append(f"| {n} | {base:.1f} | {every:.1f} | {len(found) - 1} | {best} |")
    if not lines:
        return ""
    return (
        "\n## Which tensor's range loses (--dig-tensors)\n\nThe default's own ranges (--ranges) "
        "with the amax of one activation tensor raised to the largest |value| calibration saw "
        "(the mse range replaced by the minmax one), one run per tensor; worst-output SQNR dB."
        "\n\n| model | default | every tensor at max | tensors | best single tensors |\n"
        "|---|---|---|---|---|\n" + "\n".join(lines) + "\n"
    )


def counts(rows: list[dict]) -> str:
    """The summary line; rows where int8kit's SQNR is infinite (an output it reproduces exactly:
    the onnx_light test models' saturated softmax) are left out of the counts."""
    exact = [s["model"] for s in rows if s["int8kit_sqnr_db"] == math.inf]
    rows = [s for s in rows if s["model"] not in exact]
    dep = [s for s in rows if s["margin_deployable_db"] is not None]
    anyk = [s for s in rows if s["margin_db"] is not None]
    win_d = sum(s["margin_deployable_db"] >= 0 for s in dep)
    win = sum(s["margin_db"] >= 0 for s in anyk)
    near = sum(s["margin_db"] >= -0.5 for s in anyk)
    return (
        f"int8kit >= the best TensorRT-deployable peer on {win_d} of {len(dep)} models; >= the "
        f"best peer of any kind on {win} of {len(anyk)} (within 0.5 dB of it on {near})"
        + (f"; not counted (int8kit SQNR inf): {', '.join(exact)}" if exact else "")
        + "."
    )


def _backfill(name: str, entries: dict) -> None:
    """layers_int8 and TensorRT-deployability of the scored runs, judged again from the models
    kept (runs written before int8_weight_layers and deployable judged them as they do now)."""
    changed = False
    for label, e in entries.items():
        out = WORK / "out" / f"{name}.{label.replace(' ', '.')}.onnx"
        if "sqnr_db" in e and out.is_file():
            n, (ok, why) = int8_weight_layers(out), deployable(out)
            changed |= (e.get("layers_int8"), e.get("trt_deployable"), e.get("why_not")) != (
                n,
                ok,
                why,
            )
            e.update(layers_int8=n, trt_deployable=ok, why_not=why)
    if changed:
        save_json(WORK / f"{name}.json", entries)


def _relative(text: str) -> str:
    """Result files hold repository-relative paths (a peer's traceback names its venv's files)."""
    return text.replace(str(ROOT) + "/", "")


def write_results(left_out: dict[str, str]) -> str:
    entries = {}
    for m in MODELS:
        p = WORK / f"{m.name}.json"
        if p.is_file():
            entries[m.name] = json.loads(p.read_text())
            _backfill(m.name, entries[m.name])
    left_out = {k: v for k, v in left_out.items() if k not in entries}
    rows = [summarize(n, e) for n, e in entries.items() if "int8kit" in e]
    rows.sort(key=lambda s: (s["margin_db"] is None, s["margin_db"] or 0.0))
    failures = [
        f"- {n} {lb}: {e['failed']}"
        for n, es in entries.items()
        for lb, e in es.items()
        if not e.get("ok", True) or "failed" in e
    ]
    summary = counts(rows)
    text = json.dumps(
        {"summary": summary, "rows": rows, "entries": entries, "left_out": left_out}, indent=1
    )
    (RESULTS / "sweep_peers.json").write_text(_relative(text) + "\n")
    dig = dig_table(entries)
    md = (
        "# Sweep models: int8kit's default beside NNCF and ONNX Runtime MinMax\n\n"
        "Written by `benchmarks/sweep_peers.py` (see its docstring). The sweep's models "
        "(`benchmarks/sweep.py`, none in the zoo) that the default quantized; every tool "
        f"calibrates on the same samples (the sweep's split: all but the last {N_HOLDOUT}) and "
        f"is scored on the same {N_HOLDOUT} held-out samples: worst-output SQNR (dB) vs FP32, "
        "trt-like (ONNX Runtime, graph optimizations off: fake-quant as TensorRT computes it). "
        "int8 weight layers = Conv/ConvTranspose/Gemm/MatMul layers that read an int8 weight in "
        "the model written by int8kit / NNCF / NNCF signed / ORT MinMax, int8 or fake-quantized "
        "(int8_weight_layers; a tool that quantizes fewer layers keeps more of FP32's "
        "accuracy). `*` = not TensorRT-deployable as written (NNCF default: UINT8 activations; per-channel "
        "activation scales). `°` = the peer refused the model's opset (NNCF: below 10; ORT "
        "MinMax: per-channel DequantizeLinear needs 13) and ran on a copy converted to opset 13 "
        "(onnx.version_converter, same function); scored against the original FP32. "
        "Sorted by int8kit - best peer (of any kind).\n\n"
        f"**{summary}**\n\n" + table(rows, entries)
    )
    if failures:
        md += "\nFailures (a result, not a skipped run):\n\n" + "\n".join(failures) + "\n"
    if left_out:
        md += "\nNot run: " + "; ".join(f"{k} ({v})" for k, v in left_out.items()) + ".\n"
    if dig:
        md += "\n## int8kit with one option of the default off (worst-output SQNR, dB)\n\n" + dig
    md += tensor_table(entries)
    (RESULTS / "sweep_peers.md").write_text(_relative(md))
    return md


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", choices=list(BY_NAME))
    ap.add_argument("--timeout", type=float, default=600, help="seconds per tool and model")
    ap.add_argument("--max-sweep-seconds", type=float, default=MAX_SWEEP_SECONDS)
    ap.add_argument("--redo", action="store_true", help="run again what has a result")
    ap.add_argument("--dig", nargs="+", choices=list(BY_NAME), help="int8kit variants on these")
    ap.add_argument(
        "--dig-tensors", nargs="+", choices=list(BY_NAME), help="one tensor's range at a time"
    )
    ap.add_argument("--table", action="store_true", help="only rewrite the results")
    args = ap.parse_args(argv)
    os.chdir(ROOT)
    names, left_out = candidates(args.max_sweep_seconds)
    if args.models:
        names = [n for n in names if n in args.models] + [
            n for n in args.models if n in left_out and n not in names
        ]
    if not args.table:
        if args.dig:
            for n in args.dig:
                run_model(n, list(VARIANTS), args.timeout, args.redo)
        elif args.dig_tensors:
            for n in args.dig_tensors:
                dig_tensors(n, args.timeout)
        else:
            for n in names:
                run_model(n, ["int8kit", *PEERS], args.timeout, args.redo)
                write_results(left_out)
    print(write_results(left_out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
