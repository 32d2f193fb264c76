"""Where accuracy goes, on the real models: every calibration method, and fallback to a target.

YOLOv8n (nudenet, 320x320) with `--task detect`, EfficientNet-Lite0 with `--task classify`, on
the photo sets of int8kit.examples.make_photo_sets (calibration and evaluation crops from
disjoint source photos). Everything runs through the `int8kit` CLI in-process, so each figure
can be repeated with the command printed beside it in the Markdown.

    .venv/bin/python benchmarks/accuracy_eval.py [--calib-images 96] [--eval-images 64]

Writes benchmarks/results/accuracy_eval.json and accuracy_eval.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shlex
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
WORK = BENCH / "work" / "accuracy"
METHODS = ("entropy", "minmax", "percentile", "mse", "search")

YOLO_ARGS = ["--preprocess", "letterbox", "--size", "320"]
EFFNET_ARGS = [
    "--preprocess", "center-crop", "--size", "224",
    "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225",
]  # fmt: skip


def cli(args: list[str]) -> tuple[int, str, float]:
    from int8kit.cli.main import main

    buf = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(buf):
        rc = main(args)
    return rc, buf.getvalue(), time.perf_counter() - t0


def run_case(name, model, calib, evald, pre, task, n_calib, n_eval, holdout, extra, tag):
    out = WORK / name / f"{tag}.onnx"
    qjson, ejson = WORK / name / f"{tag}.quantize.json", WORK / name / f"{tag}.eval.json"
    q = ["quantize", str(model), "-o", str(out), "--calib", str(calib), *pre,
         "--num-images", str(n_calib + holdout), "--holdout", str(holdout), "--task", task,
         *extra, "--json", str(qjson)]  # fmt: skip
    rc, text, secs = cli(q)
    if rc:
        return {"tag": tag, "error": text[-2000:], "quantize_cmd": shlex.join(["int8kit", *q])}
    e = ["eval", str(model), str(out), "--data", str(evald), *pre, "--num-images", str(n_eval),
         "--task", task, "--backend", "trt-like", "--json", str(ejson)]  # fmt: skip
    rc2, _, esecs = cli(e)
    qs, es = json.loads(qjson.read_text()), json.loads(ejson.read_text())
    metrics = next(iter(es["outputs"]["trt-like"].values()))
    row = {
        "tag": tag,
        "quantize_seconds": round(secs, 1),
        "eval_seconds": round(esecs, 1),
        "eval_samples": es["samples"],
        "quantize_cmd": shlex.join(["int8kit", *q]),
        "eval_cmd": shlex.join(["int8kit", *e]),
        "eval": {
            k: metrics.get(k)
            for k in (
                "sqnr_db",
                "box_sqnr_db",
                "score_sqnr_db",
                "map50",
                "top1_agreement",
                "topk_overlap",
            )
        },  # fmt: skip
    }
    if qs.get("fallback"):
        fb = qs["fallback"]
        row["fallback"] = {
            "reached": fb["reached"],
            "excluded": fb["excluded"],
            "excluded_count": len(fb["excluded"]),
            "layers": fb["layers"],
            "evaluations": fb["evaluations"],
            "holdout_before": {k: fb["before"][k] for k in ("sqnr_db", "top1")},
            "holdout_after": {k: fb["after"][k] for k in ("sqnr_db", "top1")},
        }
    print(f"  {name} {tag}: {row['eval']} ({secs:.0f}+{esecs:.0f} s)", flush=True)
    return row


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calib-images", type=int, default=64)
    ap.add_argument("--holdout", type=int, default=32)
    ap.add_argument("--eval-images", type=int, default=64)
    ap.add_argument("--target-sqnr", type=float, default=20.0)
    ap.add_argument("--target-top1", type=float, default=0.99)
    ap.add_argument("--sensitivity-samples", type=int, default=4)
    args = ap.parse_args()
    os.environ.setdefault("INT8KIT_NO_PROGRESS", "1")
    from int8kit.examples import export_efficientnet_lite0, make_photo_sets, yolov8n_path

    calib, evald = make_photo_sets(BENCH / "data" / "photos", 128, 128)
    effnet = BENCH / "data" / "models" / "efficientnet_lite0.onnx"
    if not effnet.is_file():
        export_efficientnet_lite0(effnet)
    cases = [
        ("yolov8n", yolov8n_path(), YOLO_ARGS, "detect",
         ["--target-sqnr", str(args.target_sqnr)]),
        ("efficientnet_lite0", effnet, EFFNET_ARGS, "classify",
         ["--target-top1", str(args.target_top1)]),
    ]  # fmt: skip
    t0 = time.perf_counter()
    result = {
        "calib_images": args.calib_images,
        "holdout_images": args.holdout,
        "eval_images": args.eval_images,
        "cpu_cores": len(os.sched_getaffinity(0)),
        "models": {},
    }
    for name, model, pre, task, target in cases:
        rows = []
        common = (name, model, calib, evald, pre, task, args.calib_images, args.eval_images)
        for m in METHODS:
            rows.append(run_case(*common, args.holdout, ["--method", m], m))
        fb_args = ["--method", "entropy", *target, "--sensitivity-samples",
                   str(args.sensitivity_samples)]  # fmt: skip
        rows.append(run_case(*common, args.holdout, fb_args, "entropy+fallback"))
        result["models"][name] = rows
    result["seconds"] = round(time.perf_counter() - t0, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    from int8kit.fileio import write_json, write_text

    write_json(RESULTS / "accuracy_eval.json", result)
    write_text(RESULTS / "accuracy_eval.md", markdown(result, args))
    print(f"done in {result['seconds']} s")
    return 0


def _f(x, d=2):
    return "—" if x is None else f"{x:.{d}f}"


def markdown(result: dict, args) -> str:
    out = [
        "# Accuracy: INT8 vs FP32 by calibration method, and fallback to a target",
        "",
        f"Calibration: {result['calib_images']} photo crops (+{result['holdout_images']} held "
        f"out for the fallback check); evaluation: {result['eval_images']} crops of other "
        f"photos; trt-like backend (Q/DQ unfused, what TensorRT computes); "
        f"{result['cpu_cores']} CPU cores; {result['seconds']} s in all. "
        "`python benchmarks/accuracy_eval.py`",
        "",
    ]
    for name, rows in result["models"].items():
        out += [f"## {name}", ""]
        if name.startswith("yolo"):
            out += ["| run | box SQNR dB | score SQNR dB | mAP@0.5 vs FP32 | layers in float |",
                    "|---|---|---|---|---|"]  # fmt: skip
        else:
            out += ["| run | logits SQNR dB | top-1 agreement | top-5 overlap | layers in float |",
                    "|---|---|---|---|---|"]  # fmt: skip
        for r in rows:
            if "error" in r:
                out.append(f"| {r['tag']} | failed: {r['error'][-200:]!r} | | | |")
                continue
            e = r["eval"]
            fb = r.get("fallback")
            n = f"{fb['excluded_count']} of {fb['layers']}" if fb else "0"
            if name.startswith("yolo"):
                out.append(f"| {r['tag']} | {_f(e['box_sqnr_db'])} | {_f(e['score_sqnr_db'])} | "
                           f"{_f(e['map50'], 3)} | {n} |")  # fmt: skip
            else:
                out.append(f"| {r['tag']} | {_f(e['sqnr_db'])} | {_f(e['top1_agreement'], 3)} "
                           f"| {_f(e['topk_overlap'], 3)} | {n} |")  # fmt: skip
        for r in rows:
            fb = r.get("fallback")
            if fb:
                out += ["", f"Fallback ({r['tag']}): target reached on held-out: {fb['reached']}; "
                        f"held-out {fb['holdout_before']} -> {fb['holdout_after']}; "
                        f"{fb['evaluations']} held-out evaluations. Excluded: "
                        + ", ".join(f"`{x}`" for x in fb["excluded"]), "",
                        f"    {r['quantize_cmd']}"]  # fmt: skip
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    raise SystemExit(main())
