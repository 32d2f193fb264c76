"""What exposing activations as graph outputs costs ONNX Runtime (blocked fusions, layout
reorders, output buffers): CPU seconds of one single-threaded pass over 32 images, plain model vs
the model observe() runs with every activation exposed (what the TensorRT cache needs) and with
only the Q/DQ tensors of the default placement (what `quantize` calibrates), graph optimizations
on for all. Best of 3, interleaved.

    .venv/bin/python benchmarks/exposure_cost.py
    .venv/bin/python benchmarks/exposure_cost.py --zoo [--models efficientnet_lite0 ...]

``--zoo``: wall seconds over each zoo model's 128 calibration samples at ONNX Runtime's default
threads (every core: what "one plain FP32 pass" means in issue 11's <= 3x target), plain model
vs the Q/DQ tensors of the default placement exposed, medians of 3 interleaved
(benchmarks/results/exposure_cost_zoo.json). An exposed pass is the floor of any calibration
that reads activations through ONNX Runtime.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import MODELS, RESULTS, model_path, npy_path, save_json  # noqa: E402

from int8kit.onnx.observe import (  # noqa: E402
    activation_tensors,
    expose,
    exposure_plan,
    make_session,
    value_aliases,
)
from int8kit.onnx.placement import plan  # noqa: E402
from int8kit.workflow import QuantizeConfig  # noqa: E402


def main(n: int = 32, rounds: int = 3) -> dict:
    res = {}
    for name, (inp, _, _) in MODELS.items():
        model = onnx.load(model_path(name))
        names = activation_tensors(model)
        aliases = value_aliases(model, names)
        exposed = [t for t in names if t not in aliases]
        qdq_names = list(plan(model, QuantizeConfig("m", "o", ranges="r").placement).activations)
        qdq = exposure_plan(model, qdq_names)[0]  # what observe() exposes for them
        x = np.load(npy_path(name, "calib", 128), mmap_mode="r")
        feeds = [{inp: np.ascontiguousarray(x[i : i + 1])} for i in range(n)]
        plain = make_session(model, threads=1)
        observed = make_session(expose(model, exposed), threads=1)
        observed_q = make_session(expose(model, qdq), threads=1)
        cpu = {"plain": [], "exposed": [], "qdq": []}
        for _ in range(rounds):
            for key, sess, outs in (
                ("plain", plain, None),
                ("exposed", observed, exposed),
                ("qdq", observed_q, qdq),
            ):
                c0 = time.process_time()
                for f in feeds:
                    sess.run(outs, f)
                cpu[key].append(time.process_time() - c0)
        best = {k: min(v) for k, v in cpu.items()}
        res[name] = {
            "images": n,
            "tensors_exposed": len(exposed),
            "tensors_aliased": len(aliases),
            "plain_cpu_s": best["plain"],
            "exposed_cpu_s": best["exposed"],
            "exposed_over_plain": best["exposed"] / best["plain"],
            "tensors_qdq": len(qdq_names),
            "tensors_qdq_exposed": len(qdq),
            "qdq_cpu_s": best["qdq"],
            "qdq_over_plain": best["qdq"] / best["plain"],
        }
        print(name, res[name], flush=True)
    save_json(RESULTS / "exposure_cost.json", res)
    return res


def zoo(names, rounds: int = 3) -> dict:
    import statistics

    from zoo import ZOO, data_path, relative
    from zoo import model_path as zoo_model

    from int8kit.data import DataConfig, make_source
    from int8kit.onnx.model_io import input_specs, load_model

    res = {}
    for name in names or ZOO:
        model = load_model(zoo_model(name))
        qdq_names = list(plan(model, QuantizeConfig("m", "o", ranges="r").placement).activations)
        qdq = exposure_plan(model, qdq_names)[0]
        feeds = list(
            make_source(DataConfig(source=str(data_path(name, "calib"))), input_specs(model))
        )
        sessions = {
            "plain": (make_session(model), None),
            "qdq": (make_session(model, outputs=qdq), qdq),
        }
        wall = {k: [] for k in sessions}
        for r in range(rounds):
            for key in list(sessions)[:: 1 if r % 2 == 0 else -1]:
                sess, outs = sessions[key]
                sess.run(outs, feeds[0])
                t0 = time.perf_counter()
                for f in feeds:
                    sess.run(outs, f)
                wall[key].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in wall.items()}
        res[name] = {
            "model": relative(zoo_model(name)),
            "batches": len(feeds),
            "tensors_exposed": len(qdq),
            "plain_s": round(med["plain"], 3),
            "exposed_s": round(med["qdq"], 3),
            "exposed_over_plain": round(med["qdq"] / med["plain"], 2),
            "runs_s": {k: [round(x, 3) for x in v] for k, v in wall.items()},
        }
        print(
            f"{name:<20} plain {med['plain']:7.2f} s  exposed {med['qdq']:7.2f} s  "
            f"x{med['qdq'] / med['plain']:.2f}  ({len(qdq)} tensors)",
            flush=True,
        )
    doc = {"what": __doc__.split("``--zoo``")[1].split("(benchmarks/")[0].strip(), "models": res}
    save_json(RESULTS / "exposure_cost_zoo.json", doc)
    return res


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", action="store_true")
    ap.add_argument("--models", nargs="*")
    a = ap.parse_args()
    zoo(a.models) if a.zoo else main()
