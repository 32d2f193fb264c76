"""What exposing activations as graph outputs costs ONNX Runtime (blocked fusions, layout
reorders, output buffers): CPU seconds of one single-threaded pass over 32 images, plain model vs
the model observe() runs with every activation exposed (what the TensorRT cache needs) and with
only the Q/DQ tensors of the default placement (what `quantize` calibrates), graph optimizations
on for all. Best of 3, interleaved.

    .venv/bin/python benchmarks/exposure_cost.py
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


if __name__ == "__main__":
    main()
