"""Which share of a tensor's values int8 rounds to zero, from the histogram calibration already
holds (no pass over the data of its own).

A value quantizes to 0 when |x| <= step / 2, step = amax / 127 (QuantizeLinear rounds half to
even). A tensor whose values span many decades (a power spectrum computed inside the graph: 2.5
to 8e11 in openwakeword's melspectrogram model) loses most of them that way, and the model's
fidelity drops with no other hint why. Exact zeros (a ReLU's) stay zero and do not count: the
share is over the values that are non-zero in FP32.

The histogram's bin 0, [0, width), holds the exact zeros together with the smallest values. Where
the tensor never reached 0 (min > 0 or max < 0) bin 0 holds no zero and counts whole; otherwise
it is left out of both counts, so the share is a lower bound over the values of at least one bin
width (1/2048 of the first batch's max).
"""

from __future__ import annotations

import re

import numpy as np

# Share of non-zero values that int8 rounds to zero, from which a quantized activation is
# reported. Measured with each model's default recipe (benchmarks/zero_share.py): the zoo's
# quantized activations other than Softmax outputs reach 0.44-0.47 at most (yolov8n's first SiLU,
# whose small negative values round to 0; most stay below 0.3); openwakeword's melspectrogram
# power spectrum is 0.95.
WARN_SHARE = 0.6
# Tensors made by these ops are not reported: their values lie in [0, 1], so the range is never
# too wide, and a probability that rounds to 0 weighs next to nothing in the product or the
# detection threshold it feeds (the zoo's ViT: 0.77-0.85 of each attention Softmax output's
# non-zero values round to 0, as in any int8 attention; YOLOv8n's class-score Sigmoid, uint8 on
# the ort-cpu target: 0.965, nearly every anchor's score being ~0).
QUIET_PRODUCERS = ("Softmax", "Sigmoid", "HardSigmoid")


def zero_share(counts: np.ndarray, width: float, amax: float, stats: dict) -> float | None:
    """Share of the non-zero values of a histogram of |x| (``counts`` in bins of ``width`` from
    0; ``stats`` with min/max) that quantize to 0 at int8 with ``amax``; None without a
    histogram, a positive amax or any non-zero value."""
    if counts is None or counts.size == 0 or width <= 0 or not amax > 0:
        return None
    lo, hi = stats.get("min"), stats.get("max")
    holds_zero = lo is None or hi is None or lo <= 0.0 <= hi
    first = 1 if holds_zero else 0
    total = float(counts[first:].sum())
    if total <= 0:
        return None
    edge = amax / 254.0 / width  # step / 2 in bins
    whole = int(min(edge, counts.size))
    below = float(counts[first:whole].sum()) if whole > first else 0.0
    if whole < counts.size and whole >= first:  # the bin step / 2 falls in, linearly
        below += (edge - whole) * float(counts[whole])
    return min(below / total, 1.0)


def warning(found: dict[str, dict], limit: int = 5) -> str:
    """One warning for the tensors of ``found`` (name -> {"share", "min", "max", "amax",
    "readers"}), worst first."""
    worst = sorted(found.items(), key=lambda kv: -kv[1]["share"])
    lines = [
        f"{len(found)} quantized activations lose most of their values to zero at int8 (a "
        "range too wide for 8 bits: in-graph signal processing such as a power spectrum):"
    ]
    for name, d in worst[:limit]:
        lines.append(
            f"  {name}: {d['share']:.1%} of its non-zero values round to 0 (values "
            f"{_g(d['min'])} .. {_g(d['max'])}, amax {_g(d['amax'])}, int8 step "
            f"{_g(d['amax'] / 127)}), read by {', '.join(d.get('readers') or ['?'])}"
        )
    if len(worst) > limit:
        lines.append(f"  ... and {len(worst) - limit} more")
    readers = sorted({n for _, d in worst for n in d.get("readers") or []})
    exclude = " ".join(f"--exclude '^{re.escape(n)}$'" for n in readers[:limit])
    lines.append(
        f"  keep the layers that read them in float ({exclude or '--exclude NODE'}), or let the "
        "fallback choose (--target-sqnr DB)"
    )
    return "\n".join(lines)


def _g(v) -> str:
    return "?" if v is None else f"{v:.3g}"
