"""Fallback within a layer budget: repair the ranges of the most sensitive layers, then leave
the fewest layers in high precision until a fidelity target holds, never more than the budget.

1. Rank the layers by sensitivity (``skip`` view: what leaving one layer in float wins, every
   other layer quantized) on a few calibration samples.
2. Ranges first: for the most sensitive layers, in rank order, try every candidate amax of the
   layer's input activations (minmax, percentile, mse, entropy: recorded by the calibration pass)
   and keep the one with the smallest output error on the ranking samples (coordinate descent:
   each choice sees the others). A layer fixed this way costs no float. The repair is undone when
   it makes the held-out error worse (it fitted the few ranking samples).
3. Float, one layer at a time: re-rank the layers still quantized (every other choice applied;
   ``rerank=K``: only the first K of the last ranking), leave the best one in float, check the
   target on HELD-OUT samples; stop when it holds or when
   ``max_float`` layers are float (default 10% of the quantized layers) — then the result is
   the best held-out state seen on the way and says which target was missed, by how much and,
   for top-1, whether the flips are near-ties (`top1_flips`, `explain`).
4. Prune: try quantizing each float layer again, the last chosen first, and keep it quantized
   when the target still holds.

Every evaluation runs one gated session per sample set (``analysis.sensitivity``), with the
repaired activations' scales fed as inputs: no model is rebuilt. The model evaluated is the one
written: bias correction's shift of each layer (computed as ``quantize_onnx`` will, with every
layer quantized, and again after a range repair) is added while that layer is quantized and
dropped when it goes float. Without it the fallback ranked and checked a model 8-10 dB worse
than the one written (32 held-out samples: EfficientNet-Lite0 14.7 dB and top-1 0.81 vs 24.2 dB
and 0.97; PP-LCNet 19.8 dB / 0.88 vs 27.9 dB / 0.97). Float layers run in FP32 here;
FP16 (``--high-precision fp16``) adds noise far below any useful target (~70 dB SQNR), and the
final model's fidelity is measured again anyway. Targets: ``sqnr_db`` applies to the worst output
part (a detector's box and score parts apart), ``top1`` to the worst classifier output's top-1
agreement with FP32.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from int8kit.analysis.sensitivity import (
    GatedRunner,
    exclude_patterns,
    layers_of,
    rows_to_dicts,
    sensitivity,
)
from int8kit.errors import DataError
from int8kit.onnx.placement import Placement


@dataclass
class Target:
    """What the quantized model must reach on held-out data (None: not asked)."""

    sqnr_db: float | None = None
    top1: float | None = None

    def __post_init__(self):
        if self.sqnr_db is None and self.top1 is None:
            raise ValueError("a fallback target needs --target-sqnr and/or --target-top1")
        if self.sqnr_db is not None and not math.isfinite(self.sqnr_db):
            raise ValueError(f"--target-sqnr must be a finite number of dB, got {self.sqnr_db}")
        if self.top1 is not None and not 0 < self.top1 <= 1:
            raise ValueError(f"--target-top1 must be in (0, 1], e.g. 0.99; got {self.top1}")

    def met(self, metrics: dict) -> bool:
        if self.sqnr_db is not None and not metrics["sqnr_db"] >= self.sqnr_db:
            return False
        if self.top1 is not None and not (metrics["top1"] or 0.0) >= self.top1:
            return False
        return True

    def describe(self) -> str:
        parts = []
        if self.sqnr_db is not None:
            parts.append(f"worst-part SQNR >= {self.sqnr_db:g} dB")
        if self.top1 is not None:
            parts.append(f"top-1 agreement >= {self.top1:g}")
        return " and ".join(parts)


@dataclass
class FallbackResult:
    excluded: list[str]  # node names left in high precision, in the order they were chosen
    exclude: list[str]  # the same as anchored --exclude regexes
    reached: bool
    target: dict
    before: dict  # held-out metrics, every layer quantized
    after: dict  # held-out metrics with the repaired ranges and ``excluded`` in float
    layers: int
    evaluations: int
    holdout_samples: int
    max_float: int = 0  # the budget of float layers
    ranges: dict = field(default_factory=dict)  # {tensor: candidate method} changed by step 2
    after_ranges: dict = field(default_factory=dict)  # held-out metrics after step 2 alone
    missed: dict = field(default_factory=dict)  # {metric: {"reached": x, "target": y}}
    flips: dict = field(default_factory=dict)  # top-1 missed: `top1_flips` of the result
    why: str = ""  # a target missed: why, in figures (`explain`)
    path: list = field(default_factory=list)  # held-out sqnr_db/top1 after each float step
    sensitivity: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def budget_of(max_float: int | float | str | None, layers: int) -> int:
    """The float-layer budget: an int, a fraction of ``layers`` (0.1 or "10%"), None: 10%."""
    if max_float is None:
        max_float = 0.1
    if isinstance(max_float, str):
        text = max_float.strip()
        try:
            max_float = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        except ValueError:
            raise ValueError(
                f"--max-float-layers takes a count (6) or a share of the layers (10%), got {text!r}"
            ) from None
    if max_float < 0:
        raise ValueError(f"--max-float-layers must be >= 0, got {max_float}")
    if isinstance(max_float, float) and max_float < 1:
        return min(layers, math.ceil(max_float * layers))
    return min(layers, int(max_float))


def missed_by(target: Target, metrics: dict) -> dict:
    """{metric: {"reached": value, "target": wanted}} for each part of ``target`` not met."""
    out = {}
    if target.sqnr_db is not None and not metrics["sqnr_db"] >= target.sqnr_db:
        out["sqnr_db"] = {"reached": metrics["sqnr_db"], "target": target.sqnr_db}
    if target.top1 is not None and not (metrics["top1"] or 0.0) >= target.top1:
        out["top1"] = {"reached": metrics["top1"], "target": target.top1}
    return out


def shortfall(target: Target, metrics: dict) -> tuple[float, float]:
    """How far ``metrics`` are from ``target`` (0 when met; a top-1 point counts as 1 dB/10), then
    the mean noise/signal: the order in which the fallback compares held-out results."""
    gap = 0.0
    if target.sqnr_db is not None:
        gap += max(0.0, target.sqnr_db - metrics["sqnr_db"]) / 10
    if target.top1 is not None:
        gap += max(0.0, target.top1 - (metrics["top1"] or 0.0)) * 100 / 10
    return gap, metrics["nsr"]


def top1_flips(runner: GatedRunner, on: Iterable[str]) -> dict:
    """The held-out samples whose top-1 class changes with ``on`` quantized (the classifier
    output with the most): how many, their FP32 top-2 margins (top score minus the runner-up's),
    the median margin over all samples, and ``margin_noise``, the std over all samples of what
    quantization adds to that margin. A flip whose margin is far below that noise is a near-tie:
    chance decides it, whichever layers are float."""
    from int8kit.analysis.sensitivity import Scorer

    scorer = Scorer(runner.task, runner.embeddings)
    kept: dict[str, tuple[list, list]] = {}
    for ref, out in runner.outputs(on):
        scorer.update(ref, out)
        for name in scorer.classify:
            r, t = kept.setdefault(name, ([], []))
            r.append(ref[name].reshape(len(ref[name]), -1))
            t.append(out[name].reshape(len(out[name]), -1))
    best: dict = {}
    for r, t in kept.values():
        r, t = np.concatenate(r).astype(np.float64), np.concatenate(t).astype(np.float64)
        rows = np.arange(len(r))
        order = np.argsort(r, axis=1)
        top, second = order[:, -1], order[:, -2]
        margin = r[rows, top] - r[rows, second]
        noise = (t[rows, top] - t[rows, second]) - margin
        flipped = t.argmax(axis=1) != top
        if not best or flipped.sum() > best["flipped"]:
            best = {
                "samples": len(r),
                "flipped": int(flipped.sum()),
                "flip_margins": sorted(float(x) for x in margin[flipped]),
                "median_margin": float(np.median(margin)),
                "margin_noise": float(np.std(noise)),
            }
    return best


def explain(
    target: Target, before: dict, after: dict, flips: dict, n_float: int, tried: int = 0
) -> str:
    """Why ``after`` misses ``target`` with ``n_float`` layers float (the best held-out state of
    ``tried`` float steps), in figures ("" if met)."""
    missed = missed_by(target, after)
    if not missed:
        return ""
    spent = (
        f"the worst-part SQNR went from {before['sqnr_db']:.1f} to {after['sqnr_db']:.1f} dB "
        f"with {n_float} float layers"
    )
    if tried > n_float:
        spent += f" (the best held-out state of {tried} tried)"
    if "top1" not in missed or not flips.get("flipped"):
        return f"the budget is spent: {spent}"
    ms, noise = flips["flip_margins"], flips["margin_noise"]
    near = [x for x in ms if x < noise]
    text = (
        f"{flips['flipped']} of {flips['samples']} held-out samples change top-1; their FP32 "
        f"top-2 margins are {', '.join(f'{x:.3g}' for x in ms)} (median of all samples "
        f"{flips['median_margin']:.3g}), and quantization moves a margin by {noise:.3g} (std)"
    )
    if len(near) == len(ms):
        need = 20 * math.log10(noise / max(ms[-1], 1e-12))
        return (
            f"{text}: all are near-ties that noise decides, not the choice of float layers; "
            f"holding them needs about {need:.0f} dB less noise; {spent}"
        )
    return (
        f"{text}: {len(near)} are near-ties, {len(ms) - len(near)} are not (more float layers "
        f"or better ranges could fix those: --max-float-layers); {spent}"
    )


def repair_ranges(
    runner: GatedRunner,
    layers: list,
    candidates: dict[str, dict[str, float]],
    on: list[str],
    progress: Callable = lambda it, **_: it,
) -> dict[str, str]:
    """Step 2 on ``runner`` (its ``amax`` is updated in place): per activation of ``layers`` (in
    that order), the candidate amax with the smallest mean noise/signal with ``on`` quantized
    (`onnx.search.descend`). Returns {tensor: chosen method} for the tensors whose amax changed."""
    from int8kit.onnx.search import descend

    def error(amax: dict[str, float]) -> float:
        runner.amax = amax
        return runner.score(on)["nsr"]

    tensors = list(dict.fromkeys(t for L in layers for t in L.activations if t in candidates))
    amax, chosen, _, _ = descend(tensors, candidates, runner.amax, error, progress, "range repair")
    runner.amax = amax
    return chosen


def find_fallback(
    model,
    amax: dict[str, float],
    placement: Placement,
    rank_batches: Iterable[dict[str, np.ndarray]],
    holdout_batches: Iterable[dict[str, np.ndarray]],
    target: Target,
    task: str = "auto",
    progress: Callable = lambda it, **_: it,
    max_float: int | float | str | None = None,
    candidates: dict[str, dict[str, float]] | None = None,
    repair_layers: int | None = None,
    rerank: int | None = None,
    correction: Callable[[dict[str, float]], dict[str, np.ndarray]] | None = None,
) -> tuple[FallbackResult, dict[str, float]]:
    """The fewest layers to leave in float, after repairing ranges, so that ``target`` holds on
    ``holdout_batches``; at most ``max_float`` layers (see `budget_of`). ``candidates``:
    {activation: {method: amax}} for the range repair (none: no repair). ``correction``: amax ->
    {layer: what bias correction adds to its output} (`bias_shifts`), applied while the layer is
    quantized. Returns the result and the amax of every activation (repaired ones changed)."""
    candidates = {t: c for t, c in (candidates or {}).items() if t in amax}
    rank_batches, holdout_batches = list(rank_batches), list(holdout_batches)

    def runner(batches, amax, shifts) -> GatedRunner:
        return GatedRunner(model, placement, amax, batches, task, scaled=candidates, shifts=shifts)

    shifts = correction(amax) if correction is not None else None
    holdout = runner(holdout_batches, amax, shifts)
    layers = layers_of(model, placement)
    everything = [L.node for L in layers]
    holdout_n = sum(len(next(iter(f.values()))) for f in holdout.feeds)
    budget = budget_of(max_float, len(everything))

    def check(excluded: list[str]) -> dict:
        skip = set(excluded)
        return holdout.score([n for n in everything if n not in skip])

    before = check([])
    if target.top1 is not None and before["top1"] is None:
        raise DataError(
            "--target-top1 needs a classifier output (N, C); pass --task classify, or use "
            "--target-sqnr for other models"
        )

    def result(excluded, after, **kw) -> FallbackResult:
        return FallbackResult(
            excluded=excluded,
            exclude=exclude_patterns(excluded),
            reached=target.met(after),
            target=asdict(target),
            before=before,
            after=after,
            layers=len(everything),
            evaluations=holdout.runs,
            holdout_samples=holdout_n,
            max_float=budget,
            missed=missed_by(target, after),
            **kw,
        )

    if target.met(before):
        return result([], before), dict(amax)
    ranker = runner(rank_batches, amax, shifts)
    sens = sensitivity(
        model, amax, placement, None, task, modes=("skip",), progress=progress, runner=ranker
    )
    by_node = {L.node: L for L in layers}
    ranked = [by_node[r.node] for r in sens["rows"]]
    n_repair = repair_layers if repair_layers is not None else max(16, 2 * budget)
    start = dict(ranker.amax)
    chosen = repair_ranges(ranker, ranked[:n_repair], candidates, everything, progress)
    holdout.amax.update(ranker.amax)
    unrepaired = holdout, ranker
    if chosen and correction is not None:  # bias correction of the new ranges, as written
        shifts = correction(ranker.amax)
        holdout = runner(holdout_batches, ranker.amax, shifts)
        holdout.runs += unrepaired[0].runs
        ranker = runner(rank_batches, ranker.amax, shifts)
    after_ranges = check([])
    if chosen and shortfall(target, after_ranges) > shortfall(target, before):  # overfitted
        runs = holdout.runs
        holdout, ranker = unrepaired
        holdout.runs = runs
        ranker.amax, chosen = start, {}
        holdout.amax.update(start)
        after_ranges = before
    after, excluded = after_ranges, []
    steps = [([], after_ranges)]
    order = [L.node for L in ranked]
    while not target.met(after) and len(excluded) < budget:
        # Re-rank with every choice so far applied (EfficientNet-Lite0: re-ranking only the first
        # 12 left 0.977 top-1 agreement where all gives 0.992; benchmarks/fallback_budget.py).
        rest = [n for n in everything if n not in excluded]
        front = [n for n in order if n not in excluded][: rerank or None]
        scores = {
            n: ranker.score([m for m in rest if m != n])["nsr"]
            for n in progress(front, desc=f"float layer {len(excluded) + 1}/{budget}")
        }
        order = sorted(front, key=scores.__getitem__) + [n for n in order if n not in scores]
        excluded.append(order.pop(0))
        after = check(excluded)
        steps.append((list(excluded), after))
    # A float layer chosen on the ranking samples can make the held-out result worse: keep the
    # best held-out state seen (the fewest float layers among equals).
    path = [{"float": len(e), **{k: m[k] for k in ("sqnr_db", "top1")}} for e, m in steps]
    excluded, after = min(steps, key=lambda st: (shortfall(target, st[1]), len(st[0])))
    if target.met(after):  # prune: the last chosen first, re-quantize what the target spares
        for node in reversed(list(excluded)):
            trial = [n for n in excluded if n != node]
            r = check(trial)
            if target.met(r):
                excluded, after = trial, r
    flips = {}
    if "top1" in missed_by(target, after):
        flips = top1_flips(holdout, [n for n in everything if n not in set(excluded)])
    found = result(
        excluded,
        after,
        ranges=chosen,
        after_ranges=after_ranges,
        sensitivity=rows_to_dicts(sens),
        flips=flips,
        path=path,
        why=explain(target, before, after, flips, len(excluded), len(steps) - 1),
    )
    return found, dict(holdout.amax)


def correction_shifts(model, corrected, nodes: Iterable[str]) -> dict[str, np.ndarray]:
    """{layer: what bias correction adds to its output}: the bias of ``corrected`` (bias.py
    names it ``<layer>_bias_corrected``) minus the one ``model`` had there, shaped to broadcast
    over the layer's output (a Conv's per channel, a Gemm's times beta)."""
    from onnx import numpy_helper

    old_nodes = {n.name: n for n in model.graph.node}
    old_inits = {i.name: i for i in model.graph.initializer}
    new_inits = {i.name: i for i in corrected.graph.initializer}
    readers = {i: n for n in corrected.graph.node for i in n.input}
    out = {}
    for name in nodes:
        bias = f"{name}_bias_corrected"
        if bias not in new_inits or bias not in readers or name not in old_nodes:
            continue
        reader = readers[bias]  # the layer itself, or the Add after a MatMul
        k = list(reader.input).index(bias)
        before = old_nodes.get(reader.name)
        old = before.input[k] if before is not None and k < len(before.input) else ""
        shift = numpy_helper.to_array(new_inits[bias]).astype(np.float64)
        if old in old_inits:
            shift = shift - numpy_helper.to_array(old_inits[old])
        node = old_nodes[name]
        if node.op_type == "Conv":
            rank = len(old_inits[node.input[1]].dims)
            shift = shift.reshape((-1,) + (1,) * (rank - 2))
        elif node.op_type == "Gemm":
            beta = next((a.f for a in node.attribute if a.name == "beta"), 1.0)
            shift = shift * beta
        out[name] = shift.astype(np.float32)
    return out


def bias_shifts(model, placement: Placement, amax: dict[str, float], calib_src, config) -> dict:
    """`correction_shifts` of the bias correction ``quantize_onnx`` applies after the fallback
    (the same call on the same data; {} when it applies none). With ``local`` statistics (the
    default) a layer's shift depends on that layer's own quantization only, so the fallback's
    model with the float layers' shifts off is the model that is written."""
    if not config.bias_correction or calib_src is None or config.adaround:
        return {}
    if not placement.weights:
        return {}
    from int8kit.workflow import bias_correct_as_configured

    corrected, summary = bias_correct_as_configured(model, placement, calib_src, amax, config)
    return correction_shifts(model, corrected, summary.corrected)


def spread_samples(source, n: int) -> list[dict[str, np.ndarray]]:
    """Up to ``n`` batches spread over the whole of ``source`` (not just its first images)."""
    total = len(source) if hasattr(source, "__len__") else n
    step = max(1, total // max(1, n))
    return [b for k, b in enumerate(source) if k % step == 0][:n]


def run_fallback(model, placement: Placement, ranges, calib_src, holdout_src, config):
    """``quantize_onnx``'s fallback step: (result dict, placement with the layers excluded).

    Layers are ranked on ``config.sensitivity_samples`` calibration samples and the target is
    checked on the held-out split. Repaired ranges are written into ``ranges`` (method
    ``fallback:<candidate>``); the new placement is ``plan`` with the anchored node-name regexes
    added to ``--exclude``: exactly what a rerun with that ranges file and those flags produces."""
    from int8kit.data import progress
    from int8kit.onnx.placement import plan

    found, amax = find_fallback(
        model,
        ranges.amax(),
        placement,
        spread_samples(calib_src, config.sensitivity_samples),
        holdout_src,
        config.fallback_target,
        task=config.task,
        progress=progress,
        max_float=config.max_float_layers,
        candidates={n: r.candidates for n, r in ranges.tensors.items() if r.candidates},
        correction=lambda amax: bias_shifts(model, placement, amax, calib_src, config),
    )
    for name, method in found.ranges.items():
        ranges.tensors[name].amax = amax[name]
        ranges.tensors[name].method = f"fallback:{method}"
    new = replace(config.placement, exclude=list(config.placement.exclude) + found.exclude)
    return found.to_dict(), plan(model, new)
