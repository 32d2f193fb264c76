"""Fallback: leave the most sensitive layers in high precision until a fidelity target holds.

1. Rank the layers by sensitivity (``skip`` view: what leaving one layer in float wins, every
   other layer quantized) on a few calibration samples.
2. On HELD-OUT samples, find the shortest prefix of that ranking whose exclusion meets the target
   (galloping 1, 2, 4, ... then bisection, so a long prefix costs log2(layers) passes, not one
   pass per layer; prefixes are taken to meet the target monotonically, which step 3 repairs).
3. Prune: try quantizing each excluded layer again, least sensitive first, and keep it quantized
   when the target still holds — so no layer is excluded that the target does not need.

Every evaluation runs the one gated session of ``analysis.sensitivity`` (no model is rebuilt).
The search runs excluded layers in FP32; FP16 (``--high-precision fp16``) adds noise far below
any useful target (~70 dB SQNR), and the final model's fidelity is measured again anyway.
Targets: ``sqnr_db`` applies to the worst output part (a detector's box and score parts apart),
``top1`` to the worst classifier output's top-1 agreement with FP32.
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
    excluded: list[str]  # node names left in high precision, most sensitive first
    exclude: list[str]  # the same as anchored --exclude regexes
    reached: bool
    target: dict
    before: dict  # held-out metrics, every layer quantized
    after: dict  # held-out metrics with ``excluded`` in float
    layers: int
    evaluations: int
    holdout_samples: int
    sensitivity: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def find_fallback(
    model,
    amax: dict[str, float],
    placement: Placement,
    rank_batches: Iterable[dict[str, np.ndarray]],
    holdout_batches: Iterable[dict[str, np.ndarray]],
    target: Target,
    task: str = "auto",
    progress: Callable = lambda it, **_: it,
) -> FallbackResult:
    """The fewest layers to leave in float so that ``target`` holds on ``holdout_batches``."""
    holdout = GatedRunner(model, placement, amax, list(holdout_batches), task)
    everything = [L.node for L in layers_of(model, placement)]
    holdout_n = sum(len(next(iter(f.values()))) for f in holdout.feeds)

    def check(excluded: list[str]) -> dict:
        return holdout.score([n for n in everything if n not in set(excluded)])

    before = check([])
    if target.top1 is not None and before["top1"] is None:
        raise DataError(
            "--target-top1 needs a classifier output (N, C); pass --task classify, or use "
            "--target-sqnr for other models"
        )
    if target.met(before):
        return FallbackResult(
            [], [], True, asdict(target), before, before, len(everything), 1, holdout_n
        )
    sens = sensitivity(
        model, amax, placement, rank_batches, task, modes=("skip",), progress=progress
    )
    ranking = [r.node for r in sens["rows"]]

    # Galloping then bisection over the prefix length k: smallest k whose prefix meets target.
    lo, hi, k = 0, None, 1
    results: dict[int, dict] = {0: before}
    while hi is None:
        k = min(k, len(ranking))
        results[k] = check(ranking[:k])
        if target.met(results[k]):
            hi = k
        elif k == len(ranking):
            hi = k  # everything in float; the target is out of reach
        else:
            lo, k = k, k * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        results[mid] = check(ranking[:mid])
        if target.met(results[mid]):
            hi = mid
        else:
            lo = mid
    excluded = ranking[:hi]
    after = results[hi]
    reached = target.met(after)

    if reached:  # prune: least sensitive first, re-quantize what the target does not need
        for node in reversed(list(excluded)):
            trial = [n for n in excluded if n != node]
            r = check(trial)
            if target.met(r):
                excluded, after = trial, r
    return FallbackResult(
        excluded,
        exclude_patterns(excluded),
        reached,
        asdict(target),
        before,
        after,
        len(everything),
        holdout.runs,
        holdout_n,
        rows_to_dicts(sens),
    )


def spread_samples(source, n: int) -> list[dict[str, np.ndarray]]:
    """Up to ``n`` batches spread over the whole of ``source`` (not just its first images)."""
    total = len(source) if hasattr(source, "__len__") else n
    step = max(1, total // max(1, n))
    return [b for k, b in enumerate(source) if k % step == 0][:n]


def run_fallback(model, placement: Placement, ranges, calib_src, holdout_src, config):
    """``quantize_onnx``'s fallback step: (result dict, placement with the layers excluded).

    Layers are ranked on ``config.sensitivity_samples`` calibration samples and the target is
    checked on the held-out split; the new placement is ``plan`` with the anchored node-name
    regexes added to ``--exclude``, exactly what a rerun with those flags produces."""
    from int8kit.data import progress
    from int8kit.onnx.placement import plan

    found = find_fallback(
        model,
        ranges.amax(),
        placement,
        spread_samples(calib_src, config.sensitivity_samples),
        holdout_src,
        config.fallback_target,
        task=config.task,
        progress=progress,
    )
    new = replace(config.placement, exclude=list(config.placement.exclude) + found.exclude)
    return found.to_dict(), plan(model, new)
