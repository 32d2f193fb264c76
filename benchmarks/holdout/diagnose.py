"""Where two INT8 models of one held-out model part: int8kit's per-layer error
(int8kit.analysis.layers.compare_layers, unfused: what TensorRT computes) of each against FP32 on
the first N evaluation samples, joined on the FP32 tensor names, and the tensors where model A's
SQNR falls furthest below B's relative to what the layer reads (the gap a layer opens).

    .venv/bin/python benchmarks/holdout/diagnose.py ppocr_rec default previous [--samples 32]

A and B are INT8 models kept by run.py: benchmarks/work/zoo_models/<model>.<label>.onnx.
Writes benchmarks/results/holdout/<model>.<A>_vs_<B>.layers.json.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCH))

from common import RESULTS, save_json  # noqa: E402
from zoo import HOLDOUT, data_path, model_path  # noqa: E402
from zoo.evaluate import load_inputs  # noqa: E402
from zoo_bench import ZOO_MODELS_OUT  # noqa: E402


def layers(name: str, label: str, samples: int) -> dict[str, dict]:
    """{row key: LayerError dict} of INT8 model ``label`` vs FP32 (row key: tensor, or
    "Q/DQ of tensor" for the dequantized value its consumers read)."""
    from int8kit.analysis.layers import compare_layers
    from int8kit.onnx.model_io import load_model

    inputs = load_inputs(data_path(name, "eval"))
    batches = [{k: v[i : i + 1] for k, v in inputs.items()} for i in range(samples)]
    fp32 = load_model(model_path(name))
    int8 = load_model(ZOO_MODELS_OUT / f"{name}.{label}.onnx")
    rows = compare_layers(fp32, int8, batches, optimize=False)
    return {(f"Q/DQ of {r.tensor}" if r.op == "Q/DQ" else r.tensor): r.to_dict() for r in rows}


def fp32_reads(name: str) -> dict[str, list[str]]:
    """{tensor: the inputs of the FP32 node that makes it}."""
    import onnx

    graph = onnx.load(str(model_path(name)), load_external_data=False).graph
    return {o: list(n.input) for n in graph.node for o in n.output}


def _finite(x: float) -> float:
    return 99.0 if math.isinf(x) else x


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", choices=HOLDOUT)
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--top", type=int, default=12)
    a = p.parse_args(argv)
    ra, rb = layers(a.model, a.a, a.samples), layers(a.model, a.b, a.samples)
    keys = [k for k in ra if k in rb]
    gaps = {k: _finite(rb[k]["sqnr_db"]) - _finite(ra[k]["sqnr_db"]) for k in keys}  # > 0: A worse
    reads = fp32_reads(a.model)
    rows = []
    for k in keys:
        x, y = ra[k], rb[k]
        gap = gaps[k]
        # the gap already there in what the FP32 node reads (its inputs' rows; for a Q/DQ row,
        # the tensor it quantizes): a layer "opens" the rest
        ins = [k[len("Q/DQ of ") :]] if k.startswith("Q/DQ of ") else reads.get(k, [])
        gap_in = max((gaps[t] for t in ins if t in gaps), default=0.0)
        rows.append(
            {
                "tensor": k,
                "op": x["op"],
                "node": x["node"],
                f"{a.a}_sqnr_db": x["sqnr_db"],
                f"{a.b}_sqnr_db": y["sqnr_db"],
                "gap_db": gap,
                "gap_opened_db": gap - gap_in,
                "order": x["order"],
            }
        )
    worst = sorted(rows, key=lambda r: -r["gap_opened_db"])[: a.top]
    best = sorted(rows, key=lambda r: r["gap_opened_db"])[: a.top]
    out = RESULTS / "holdout" / f"{a.model}.{a.a}_vs_{a.b}.layers.json"
    save_json(out, {"model": a.model, "a": a.a, "b": a.b, "samples": a.samples,
                    "a_worse_at": worst, "a_better_at": best, "graph_order": rows})  # fmt: skip
    last = rows[-1]
    print(f"{a.model}: {a.a} vs {a.b} on {a.samples} eval samples; output {last['tensor']}: "
          f"{last[f'{a.a}_sqnr_db']:.2f} vs {last[f'{a.b}_sqnr_db']:.2f} dB")  # fmt: skip
    for title, sel in ((f"{a.a} worse (gap opened)", worst), (f"{a.a} better", best)):
        print(f"-- {title}")
        for r in sel:
            print(
                f"  {r['order']:4d} {r['op']:>10} {r['tensor'][:48]:48} "
                f"{r[f'{a.a}_sqnr_db']:7.2f} {r[f'{a.b}_sqnr_db']:7.2f} opened {r['gap_opened_db']:+.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
