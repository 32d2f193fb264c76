"""Layer sensitivity: how much output fidelity each quantized layer costs.

A *layer* is a node with Q/DQ on its inputs (its quantized activations and its weights). Two views:

- ``only``: only that layer quantized, everything else float — the error the layer makes alone;
- ``skip``: every layer quantized except that one — what leaving it in float wins back, with
  every interaction with the other layers' error included (what fallback needs).

Both run on ONE session: every quantized input of every layer passes through
``Where(gate_L, dequantized, float)`` with one boolean graph input per layer, so any subset of
layers can be quantized by the feed alone. ``Where`` picks one operand as it is, so a gated model
computes exactly what the Q/DQ model with that subset would (checked by a test). Samples are
concatenated into batches where the model's batch dimension is dynamic.

Fidelity is scored the way ``onnx.search.output_error`` does: per output, a detector output split
into its box and score parts; ``nsr`` is the mean over parts of noise/signal power, ``sqnr_db``
the worst part's SQNR and ``top1`` the worst classifier output's top-1 agreement with FP32.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import asdict, dataclass, field

import numpy as np

from int8kit._deps import require
from int8kit.analysis.detection import split_yolo_output
from int8kit.analysis.fidelity import TASKS, common_part, embedding_outputs, guess_task
from int8kit.analysis.metrics import ClassifyStats, OutputStats
from int8kit.calib.collector import safe_amax
from int8kit.onnx.placement import Placement

__all__ = [
    "Layer",
    "LayerSensitivity",
    "Scorer",
    "GatedRunner",
    "exclude_patterns",
    "gated_model",
    "layers_of",
    "sensitivity",
]

GATE_PREFIX = "int8kit_gate:"
MODES = ("only", "skip")


@dataclass
class Layer:
    """One quantized node: the activations it reads through a Q/DQ, and its quantized weights."""

    node: str
    op: str
    activations: list[str] = field(default_factory=list)
    weights: list[str] = field(default_factory=list)
    edges: list[tuple[str, int]] = field(default_factory=list)  # (node, input index)


def layers_of(model, placement: Placement) -> list[Layer]:
    """The quantized layers of ``placement`` in graph order."""
    edges: dict[str, list[tuple[int, str, bool]]] = {}
    for tensor, uses in placement.activations.items():
        for node, i in uses:
            edges.setdefault(node, []).append((i, tensor, False))
    for (node, i), wq in placement.weights.items():
        edges.setdefault(node, []).append((i, wq.initializer, True))
    out = []
    for n in model.graph.node:
        if n.name not in edges:
            continue
        uses = sorted(edges[n.name])
        out.append(
            Layer(
                n.name,
                n.op_type,
                [t for _, t, w in uses if not w],
                [t for _, t, w in uses if w],
                [(n.name, i) for i, _, _ in uses],
            )
        )
    return out


def exclude_patterns(nodes: Iterable[str]) -> list[str]:
    """Anchored regexes, one per node name, in the form ``--exclude`` and PlacementConfig take."""
    import re

    return [f"^{re.escape(n)}$" for n in nodes]


def gated_model(model, placement: Placement, amax: dict[str, float], shifts=None):
    """(Q/DQ model whose layers are switched by boolean inputs, {layer node: gate input name}).

    Feeding ``True`` to a layer's gate gives its consumers the dequantized values, ``False`` the
    float ones; all gates True is the Q/DQ model of ``placement``, all False the FP32 model.
    ``shifts``: {layer node: array added to its output (broadcast), e.g. bias correction's
    per-channel shift} while the layer's gate is True: a float layer gets no correction."""
    require("onnx")
    from onnx import TensorProto, helper

    from int8kit.onnx.qdq import insert_qdq

    qdq, _ = insert_qdq(model, placement, amax)
    layers = layers_of(model, placement)
    original = {n.name: list(n.input) for n in model.graph.node}
    g = qdq.graph
    present = {i.name for i in g.initializer}
    g.initializer.extend(
        i for i in model.graph.initializer if i.name not in present and _weight_of(i, placement)
    )
    gates = {L.node: f"{GATE_PREFIX}{L.node}" for L in layers}
    wanted = {(node, i) for L in layers for node, i in L.edges}
    nodes = []
    for node in g.node:
        for i in range(len(node.input)):
            if (node.name, i) not in wanted:
                continue
            gated = f"{node.input[i]}__gated_{node.name}_{i}"
            nodes.append(
                helper.make_node(
                    "Where",
                    [gates[node.name], node.input[i], original[node.name][i]],
                    [gated],
                    name=f"{node.name}_gate_{i}",
                )
            )
            node.input[i] = gated
        nodes.append(node)
        if node.name in (shifts or {}) and node.name in gates:
            nodes.extend(_gated_shift(g, node, gates[node.name], shifts[node.name]))
    del g.node[:]
    g.node.extend(nodes)
    for gate in gates.values():
        g.input.append(helper.make_tensor_value_info(gate, TensorProto.BOOL, []))
    return qdq, gates


def _gated_shift(graph, node, gate: str, shift: np.ndarray) -> list:
    """Nodes adding ``Where(gate, shift, 0)`` to ``node``'s first output (renamed)."""
    from onnx import helper, numpy_helper

    y = node.output[0]
    node.output[0] = f"{y}__unshifted"
    shift = np.asarray(shift, np.float32)
    graph.initializer.extend(
        [
            numpy_helper.from_array(shift, f"{y}__shift"),
            numpy_helper.from_array(np.zeros_like(shift), f"{y}__no_shift"),
        ]
    )
    return [
        helper.make_node("Where", [gate, f"{y}__shift", f"{y}__no_shift"], [f"{y}__gated_shift"]),
        helper.make_node(
            "Add", [node.output[0], f"{y}__gated_shift"], [y], name=f"{node.name}_shift"
        ),
    ]


def _weight_of(init, placement: Placement) -> bool:
    return any(w.initializer == init.name for w in placement.weights.values())


class Scorer:
    """Streaming fidelity of test outputs against reference outputs (see the module docstring)."""

    def __init__(self, task: str = "auto", embeddings: Collection[str] = ()):
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
        self.task = task
        self.embeddings = embeddings  # outputs that get no top-1 under 'auto' (guess_task)
        self.parts: dict[str, OutputStats] = {}
        self.classify: dict[str, ClassifyStats] = {}
        self._tasks: dict[str, str] = {}
        self.shape_differs: dict[str, int] = {}  # output -> batches of another shape than FP32

    def update(self, ref: dict[str, np.ndarray], test: dict[str, np.ndarray]) -> None:
        for name, r in ref.items():
            t = test[name]
            if np.shape(r) != np.shape(t):  # a data-dependent length (a decoder's end token)
                self.shape_differs[name] = self.shape_differs.get(name, 0) + 1
                common = common_part(r, t)
                if common is not None:  # SQNR on the part both have; top-1 / mAP need the rows
                    self.parts.setdefault(name, OutputStats()).update(*common)
                continue
            task = self._tasks.setdefault(
                name, guess_task(r, name in self.embeddings) if self.task == "auto" else self.task
            )
            if task == "detect":
                (rb, rs), (tb, ts) = split_yolo_output(r), split_yolo_output(t)
                self.parts.setdefault(f"{name}:box", OutputStats()).update(rb, tb)
                self.parts.setdefault(f"{name}:score", OutputStats()).update(rs, ts)
            else:
                self.parts.setdefault(name, OutputStats()).update(r, t)
            if task == "classify":
                self.classify.setdefault(name, ClassifyStats()).update(r, t)

    def result(self) -> dict:
        sqnr = {p: s.result()["sqnr_db"] for p, s in self.parts.items()}
        noise = [0.0 if v == math.inf else 10 ** (-v / 10) for v in sqnr.values()]
        top1 = [c.result()["top1_agreement"] for c in self.classify.values()]
        return {
            "sqnr_db": min(sqnr.values()) if sqnr else math.inf,
            "nsr": float(np.mean(noise)) if noise else 0.0,
            "top1": min(top1) if top1 else None,
            "parts": sqnr,
        }


def merge_samples(batches: Iterable[dict[str, np.ndarray]], session) -> list[dict]:
    """The model's inputs of ``batches``, concatenated where the batch dimension is dynamic."""
    from int8kit.onnx.search import _merge

    inputs = {i.name for i in session.get_inputs() if not i.name.startswith(GATE_PREFIX)}
    return _merge([{k: v for k, v in b.items() if k in inputs} for b in batches], session)


class GatedRunner:
    """One gated session and the FP32 references of a fixed list of samples: ``score(on)``
    returns the fidelity with exactly the layers in ``on`` quantized (``shifts``: see
    `gated_model`; the FP32 references are ``model``'s own)."""

    def __init__(self, model, placement, amax, batches, task: str = "auto", scaled=(), shifts=None):
        from int8kit.onnx.observe import make_session
        from int8kit.onnx.search import _scales_as_inputs

        gated, self.gates = gated_model(model, placement, amax, shifts)
        # Activations in ``scaled`` take their scale from ``self.amax`` at each run, so a range
        # can be changed without rebuilding the session.
        self.scaled = [t for t in placement.activations if t in set(scaled)]
        self.amax = dict(amax)
        if self.scaled:
            gated = _scales_as_inputs(gated, self.scaled)
        self.session = make_session(gated, optimize=False)
        fp32 = make_session(model)
        self.names = [o.name for o in fp32.get_outputs()]
        self.feeds = merge_samples(batches, fp32)
        if not self.feeds:
            from int8kit.errors import DataError

            raise DataError("sensitivity needs at least one sample; the data produced none")
        self.refs = [
            dict(zip(self.names, fp32.run(self.names, f), strict=True)) for f in self.feeds
        ]
        self.task = task
        self.embeddings = embedding_outputs(model)
        self.runs = 0

    def outputs(self, on: Iterable[str]) -> Iterator[tuple[dict, dict]]:
        """(FP32 reference, outputs) per merged batch, with the layers in ``on`` quantized."""
        on = set(on)
        gates = {g: np.array(node in on) for node, g in self.gates.items()}
        gates.update(
            (f"{t}_scale", np.array(safe_amax(self.amax[t]) / 127.0, np.float32))
            for t in self.scaled
        )
        self.runs += 1
        for feed, ref in zip(self.feeds, self.refs, strict=True):
            out = self.session.run(self.names, {**feed, **gates})
            yield ref, dict(zip(self.names, out, strict=True))

    def score(self, on: Iterable[str]) -> dict:
        scorer = Scorer(self.task, self.embeddings)
        for ref, out in self.outputs(on):
            scorer.update(ref, out)
        return scorer.result()


@dataclass
class LayerSensitivity:
    node: str
    op: str
    activations: list[str]
    weights: list[str]
    rank: int = 0
    only_sqnr_db: float | None = None  # only this layer quantized
    only_nsr: float | None = None
    only_top1: float | None = None
    skip_sqnr_db: float | None = None  # every layer but this one quantized
    skip_nsr: float | None = None
    skip_top1: float | None = None
    gain_db: float | None = None  # skip_sqnr_db minus the SQNR with every layer quantized

    def to_dict(self) -> dict:
        return asdict(self)


def sensitivity(
    model,
    amax: dict[str, float],
    placement: Placement,
    batches: Iterable[dict[str, np.ndarray]],
    task: str = "auto",
    modes: tuple[str, ...] = MODES,
    progress: Callable = lambda it, **_: it,
    runner: GatedRunner | None = None,
) -> dict:
    """Per-layer sensitivity over ``batches``; rows ranked most sensitive first.

    Ranking: by what leaving the layer in float wins (``skip``: drop in mean noise/signal), else
    by the error the layer makes alone (``only``). Returns ``{"rows": [LayerSensitivity],
    "all_quantized": metrics, "samples": n, "modes": modes, "sessions": 1, "runs": n}``."""
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ValueError(f"modes must be a non-empty subset of {MODES}, got {modes}")
    layers = layers_of(model, placement)
    runner = runner or GatedRunner(model, placement, amax, list(batches), task)
    everything = [L.node for L in layers]
    base = runner.score(everything)
    rows = []
    for L in progress(layers, desc="sensitivity", total=len(layers)):
        row = LayerSensitivity(L.node, L.op, L.activations, L.weights)
        if "only" in modes:
            r = runner.score([L.node])
            row.only_sqnr_db, row.only_nsr, row.only_top1 = r["sqnr_db"], r["nsr"], r["top1"]
        if "skip" in modes:
            r = runner.score([n for n in everything if n != L.node])
            row.skip_sqnr_db, row.skip_nsr, row.skip_top1 = r["sqnr_db"], r["nsr"], r["top1"]
            row.gain_db = _diff(r["sqnr_db"], base["sqnr_db"])
        rows.append(row)
    order = {L.node: k for k, L in enumerate(layers)}
    if "skip" in modes:
        rows.sort(key=lambda r: (r.skip_nsr, -(r.only_nsr or 0.0), order[r.node]))
    else:
        rows.sort(key=lambda r: (-r.only_nsr, order[r.node]))
    for k, r in enumerate(rows):
        r.rank = k + 1
    return {
        "rows": rows,
        "all_quantized": base,
        "samples": sum(len(next(iter(f.values()))) for f in runner.feeds),
        "modes": list(modes),
        "layers": len(layers),
        "runs": runner.runs,
    }


def _diff(a: float, b: float) -> float:
    if math.isinf(a) and math.isinf(b) and a == b:
        return 0.0
    return a - b


def rows_to_dicts(result: dict) -> dict:
    """``sensitivity()``'s result as plain JSON types."""
    return {**result, "rows": [r.to_dict() for r in result["rows"]]}
