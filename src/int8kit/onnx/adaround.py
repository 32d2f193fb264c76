"""AdaRound (Nagel et al., 2020): learn, per int8 weight, whether to round it down or up so that
the layer's output on calibration data stays closest to FP32 (round-to-nearest is optimal per
weight, not per layer).

Per layer with a per-channel int8 weight (Conv with a 2-D kernel, any group count; Gemm;
MatMul with a 2-D constant weight), with s the per-channel scale ``quantize_weight`` uses and
h(V) = clip(sigmoid(V) (zeta - gamma) + gamma, 0, 1) the rectified sigmoid (zeta 1.1, gamma -0.1):

    W~ = s * clip(floor(W / s) + h(V), -127, 127)     (-qmax..qmax for 7-bit weights)
    loss = mean over rows || X_q W~^T - X W^T ||^2 + lambda * sum(1 - |2 h(V) - 1|^beta)

X is the layer's input in the FP32 model, X_q the same fake-quantized with the layer's own input
range (the layer as the Q/DQ model runs it, upstream error left out), the FP32 output X W^T the
target. The first 20% of the iterations run without the regulariser, then beta falls from 20 to
2 (cosine, as AIMET does), which drives every h(V) to 0 or 1. The result is the hard rounding
floor(W / s) + [h(V) >= 0.5]: every int8 weight is its nearest rounding or one step away.

The loss needs only sums over the rows (X_q^T X_q, (E W^T)^T X_q and ||E W^T||^2 with
E = X_q - X, per group), accumulated in one FP32 ONNX Runtime pass over ``max_samples``
calibration samples: for a Conv, ``positions`` output positions per sample are drawn at random
and their input patches used. An iteration then costs one (N x K) @ (K x K) product per group,
whatever the number of rows.

A layer keeps its learned rounding only where its output error on the calibration rows is below
round-to-nearest's (``AdaRoundSummary.layers`` has both); the weights are written by
``insert_qdq(..., rounded=...)`` as the int8 initializers of the weights' DequantizeLinear.

    rounded, summary = adaround(model, placement, batches, amax, seconds=60)
    qdq_model, _ = insert_qdq(model, placement, amax, rounded=rounded)

NumPy does the optimisation, Adam with the loss's gradient in closed form: an iteration is one
product per group, which BLAS does as fast as torch's CPU path, and it spares a torch import
(~14 s on a loaded 2-core machine, plus torch.optim's ~14 s of torch._dynamo). ``seconds``
bounds the whole step: the statistics pass stops taking samples at half of it (on a loaded
2-core machine 16 EfficientNet-Lite0 samples took 100-257 s), and the layers get equal shares of
what is left, at most ``max_iters`` iterations each.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from int8kit._deps import require
from int8kit.calib.collector import safe_amax
from int8kit.onnx.placement import Placement, _attrs
from int8kit.onnx.qdq import quantize_weight

log = logging.getLogger(__name__)

ZETA, GAMMA = 1.1, -0.1
# 16 samples x 128 rows (Conv output positions, MatMul rows such as tokens) per layer: H costs
# rows x K^2 per group, ~15 GFLOP a sample for YOLOv8n at 256 positions.
DEFAULT_SAMPLES = 16
DEFAULT_POSITIONS = 128


@dataclass
class AdaLayer:
    node: str
    op_type: str
    weight: str  # initializer
    axis: int  # per-channel (output) axis of the weight
    input: str
    groups: int = 1
    kernel: tuple = ()
    strides: tuple = (1, 1)
    pads: tuple = (0, 0, 0, 0)
    dilations: tuple = (1, 1)
    trans_b: bool = False
    qmax: int = 127  # int8 weights in [-qmax, qmax] (64: the ort-cpu target's 7-bit weights)


@dataclass
class AdaRoundSummary:
    # node -> {"rtn": error, "adaround": error, "iters": n, "kept": bool}; errors are the mean
    # squared output error per row (sum over output channels) on the calibration rows
    layers: dict[str, dict] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # node -> why
    samples: int = 0
    seconds: float = 0.0
    stats_seconds: float = 0.0


def ada_layers(model, placement: Placement) -> tuple[list[AdaLayer], dict[str, str]]:
    """The layers whose weight ``placement`` quantizes and AdaRound can handle; {node: why not}."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    nodes = {n.name: n for n in graph.node}
    readers: dict[str, int] = {}
    for n in graph.node:
        for name in set(n.input):
            readers[name] = readers.get(name, 0) + 1
    layers, skipped = [], {}
    for (name, idx), wq in placement.weights.items():
        node = nodes.get(name)
        if node is None or idx != 1 or not node.input or node.input[0] in inits:
            skipped[name] = "weight is not input 1 of a layer reading an activation"
            continue
        if readers.get(wq.initializer, 0) != 1:
            skipped[name] = "weight shared with other nodes"
            continue
        dims = list(inits[wq.initializer].dims)
        a = _attrs(node)
        base = dict(
            node=name,
            op_type=node.op_type,
            weight=wq.initializer,
            axis=wq.axis,
            qmax=int(getattr(wq, "qmax", 127)),
        )
        if node.op_type == "Conv":
            if len(dims) != 4 or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
                skipped[name] = "only 2-D convolutions with explicit pads"
                continue
            layers.append(
                AdaLayer(
                    **base,
                    input=node.input[0],
                    groups=int(a.get("group", 1)),
                    kernel=tuple(dims[2:]),
                    strides=tuple(a.get("strides", (1, 1))),
                    pads=tuple(a.get("pads", (0, 0, 0, 0))),
                    dilations=tuple(a.get("dilations", (1, 1))),
                )
            )
        elif node.op_type in ("Gemm", "MatMul") and len(dims) == 2:
            if node.op_type == "Gemm" and a.get("transA", 0):
                skipped[name] = "Gemm with transA"
                continue
            trans_b = bool(node.op_type == "Gemm" and a.get("transB", 0))
            layers.append(AdaLayer(**base, input=node.input[0], trans_b=trans_b))
        else:
            skipped[name] = f"{node.op_type} with a weight of rank {len(dims)}"
    return layers, skipped


def to_groups(layer: AdaLayer, w: np.ndarray) -> np.ndarray:
    """The weight as (groups, outputs per group, inputs per group)."""
    if layer.op_type == "Conv":
        return w.reshape(layer.groups, w.shape[0] // layer.groups, -1)
    return (w if layer.trans_b else w.T)[None]


def from_groups(layer: AdaLayer, g: np.ndarray, shape: tuple) -> np.ndarray:
    if layer.op_type == "Conv":
        return g.reshape(shape)
    return g[0] if layer.trans_b else g[0].T


def layer_rows(layer: AdaLayer, x: np.ndarray, rng, n_rows: int) -> np.ndarray:
    """Up to ``n_rows`` rows (row, group, inputs per group) of what the layer multiplies its
    weight with: input patches at random output positions for a Conv, rows of X otherwise."""
    if layer.op_type != "Conv":
        rows = x.reshape(-1, x.shape[-1])
        if len(rows) > n_rows:
            rows = rows[rng.choice(len(rows), n_rows, replace=False)]
        return rows[:, None, :]
    n, c, h, w = x.shape
    kh, kw = layer.kernel
    (sh, sw), (dh, dw) = layer.strides, layer.dilations
    t, left, b, r = layer.pads
    oh = (h + t + b - dh * (kh - 1) - 1) // sh + 1
    ow = (w + left + r - dw * (kw - 1) - 1) // sw + 1
    xp = np.pad(x, ((0, 0), (0, 0), (t, b), (left, r)))
    total = n * oh * ow
    pick = rng.choice(total, min(n_rows, total), replace=False)
    ni, rest = np.divmod(pick, oh * ow)
    oy, ox = np.divmod(rest, ow)
    iy = oy[:, None] * sh + np.arange(kh) * dh
    ix = ox[:, None] * sw + np.arange(kw) * dw
    patches = xp[
        ni[:, None, None, None],
        np.arange(c)[None, :, None, None],
        iy[:, None, :, None],
        ix[:, None, None, :],
    ]  # (P, C, kh, kw)
    return patches.reshape(len(pick), layer.groups, -1)


def _fake_quant(x: np.ndarray, amax) -> np.ndarray:
    """``x`` as the Q/DQ pair computes it: int8 with scale amax/127, or, for a range with a
    ``scale`` and ``zero_point`` (the ort-cpu target's uint8), that."""
    if isinstance(amax, (int, float, np.floating)):
        scale = np.float32(safe_amax(float(amax)) / 127.0)
        return (np.clip(np.rint(x / scale), -128, 127) * scale).astype(np.float32)
    scale, zp = np.float32(amax.scale), np.float32(amax.zero_point)
    return ((np.clip(np.rint(x / scale) + zp, 0, 255) - zp) * scale).astype(np.float32)


def gram_stats(
    model,
    layers: list[AdaLayer],
    batches: Iterable[dict[str, np.ndarray]],
    amax: dict,
    weights: dict[str, np.ndarray],
    max_samples: int = DEFAULT_SAMPLES,
    positions: int = DEFAULT_POSITIONS,
    seed: int = 0,
    deadline: float | None = None,
) -> tuple[dict[str, tuple], int]:
    """({node: (H, G, c, rows)}, samples seen), in one FP32 pass over the first ``max_samples``
    samples, with X the layer's input rows, X_q the same fake-quantized, E = X_q - X and W the
    grouped weight ``weights[node]`` (g, N, K), per group: H = sum X_q^T X_q (K x K),
    G = sum (E W^T)^T X_q (N x K), and c = sum ||E W^T||^2 over every group. ``deadline``
    (time.perf_counter()): no batch is started after it (the first always is)."""
    from int8kit.onnx.bias import take_samples
    from int8kit.onnx.observe import run_exposed

    rng = np.random.default_rng(seed)
    names = list(dict.fromkeys(layer.input for layer in layers))
    stats: dict[str, list] = {}
    seen = 0
    for values in run_exposed(model, names, take_samples(batches, max_samples)):
        if seen and deadline is not None and time.perf_counter() > deadline:
            break
        n = len(next(iter(values.values()))) if values else 0
        seen += n
        for layer in layers:
            x = values.get(layer.input)
            if x is None:
                continue
            rows = layer_rows(layer, x.astype(np.float32), rng, positions * max(n, 1))
            xq = _fake_quant(rows, amax[layer.input]) if layer.input in amax else rows
            a = np.ascontiguousarray(xq.transpose(1, 0, 2))  # (g, P, K)
            ew = (a - rows.transpose(1, 0, 2)) @ weights[layer.node].transpose(0, 2, 1)  # (g,P,N)
            new = [a.transpose(0, 2, 1) @ a, ew.transpose(0, 2, 1) @ a, float((ew * ew).sum())]
            st = stats.get(layer.node)
            if st is None:
                stats[layer.node] = [new[0].astype(np.float64), new[1].astype(np.float64)]
                stats[layer.node] += [new[2], len(rows)]
            else:
                st[0] += new[0]
                st[1] += new[1]
                st[2] += new[2]
                st[3] += len(rows)
    return {k: tuple(v) for k, v in stats.items()}, seen


def output_error(d: np.ndarray, stats: tuple) -> float:
    """Mean over rows of ||X_q W'^T - X W^T||^2 (summed over outputs) for W' = W + d (g, N, K):
    (sum(d H d) + 2 sum(d G) + c) / rows (``gram_stats``)."""
    h, g, c, rows = stats
    d = d.astype(np.float64)
    quad = np.einsum("gnk,gkl,gnl->", d, h, d)
    return float(max(quad + 2 * float((d * g).sum()) + c, 0.0) / max(rows, 1))


def _beta(frac: float, start: float = 20.0, end: float = 2.0) -> float:
    return end + 0.5 * (start - end) * (1 + math.cos(frac * math.pi))


def learn_rounding(
    w: np.ndarray,
    scale: np.ndarray,
    h: np.ndarray,
    g: np.ndarray,
    rows: int,
    iters: int,
    reg: float = 0.01,
    lr: float = 1e-2,
    warmup: float = 0.2,
    qmax: int = 127,
) -> np.ndarray:
    """The learned rounding of ``w`` (g, N, K) with per-output scales ``scale`` (g, N, 1): int
    values floor(w / scale) + {0, 1}, clipped to [-qmax, qmax]. Adam on V with the gradient in
    closed form (the loss is a quadratic of the soft weights plus the regulariser)."""
    f32 = np.float32
    w, scale = w.astype(f32), scale.astype(f32)
    hm = (h / rows).astype(f32)  # symmetric
    wc = (g / rows).astype(f32)
    floor = np.floor(w / scale)
    rest = np.clip(w / scale - floor, 0, 1)
    p = np.clip((rest - GAMMA) / (ZETA - GAMMA), 1e-4, 1 - 1e-4)
    v = np.log(p / (1 - p)).astype(f32)
    m1, m2 = np.zeros_like(v), np.zeros_like(v)
    b1, b2, eps = 0.9, 0.999, 1e-8
    start = int(warmup * iters)
    for it in range(iters):
        sig = 1 / (1 + np.exp(-v))
        pre = sig * f32(ZETA - GAMMA) + f32(GAMMA)
        hv = np.clip(pre, 0, 1)
        u = floor + hv
        d = scale * np.clip(u, -qmax, qmax) - w
        # d(loss)/d(hv): the quadratic's gradient (H symmetric) through the clip to [-qmax, qmax]
        g = 2 * (d @ hm + wc) * scale * ((u >= -qmax) & (u <= qmax))
        if it >= start:
            beta = _beta((it - start) / max(1, iters - start))
            t = 2 * hv - 1
            g = g - f32(reg * beta * 2) * np.abs(t) ** f32(beta - 1) * np.sign(t)
        g = g * (sig * (1 - sig) * f32(ZETA - GAMMA)) * ((pre > 0) & (pre < 1))
        m1 = b1 * m1 + (1 - b1) * g
        m2 = b2 * m2 + (1 - b2) * g * g
        k = it + 1
        v = v - f32(lr) * (m1 / (1 - b1**k)) / (np.sqrt(m2 / (1 - b2**k)) + f32(eps))
    up = np.clip(1 / (1 + np.exp(-v)) * (ZETA - GAMMA) + GAMMA, 0, 1) >= 0.5
    return np.clip(floor + up, -qmax, qmax)


def adaround(
    model,
    placement: Placement,
    batches: Iterable[dict[str, np.ndarray]],
    amax: dict[str, float],
    seconds: float = 60.0,
    max_samples: int = DEFAULT_SAMPLES,
    positions: int = DEFAULT_POSITIONS,
    max_iters: int = 2000,
    min_iters: int = 50,
) -> tuple[dict[str, np.ndarray], AdaRoundSummary]:
    """({weight initializer: int8 rounding} for ``insert_qdq(rounded=)``, AdaRoundSummary)."""
    require("onnx", "AdaRound")
    from onnx import numpy_helper

    t0 = time.perf_counter()
    summary = AdaRoundSummary()
    layers, summary.skipped = ada_layers(model, placement)
    inits = {i.name: i for i in model.graph.initializer}
    weights = {
        layer.node: to_groups(layer, numpy_helper.to_array(inits[layer.weight]).astype(np.float32))
        for layer in layers
    }
    # the statistics take at most half the budget (fewer samples on a slow or busy machine)
    stats, summary.samples = gram_stats(
        model, layers, batches, amax, weights, max_samples, positions, deadline=t0 + seconds / 2
    )
    summary.stats_seconds = time.perf_counter() - t0
    rounded: dict[str, np.ndarray] = {}
    todo = [layer for layer in layers if layer.node in stats]
    # Equal shares of the time left (what a layer leaves unused goes to the next ones). Shares in
    # proportion to N K^2 were worse on EfficientNet-Lite0 at 180 s: 3 layers rounded instead of
    # 28 (NumPy's per-iteration overhead dominates the small layers).
    for k, layer in enumerate(todo):
        h, g, _, rows = stats[layer.node]
        w = numpy_helper.to_array(inits[layer.weight]).astype(np.float32)
        qmax = [layer.qmax] if layer.qmax != 127 else []  # the ort-cpu target's 7-bit weights
        q_rtn, scales = quantize_weight(w, layer.axis, *qmax)
        shape = [1] * w.ndim
        shape[layer.axis % w.ndim] = -1
        sg = to_groups(layer, np.broadcast_to(scales.reshape(shape), w.shape))[..., :1]
        wg = to_groups(layer, w)
        # time one short run, then spend this layer's share of what is left
        left = seconds - (time.perf_counter() - t0)
        share = left / (len(todo) - k)
        if share <= 0:
            summary.skipped[layer.node] = f"time budget spent ({seconds:g} s)"
            continue
        t1 = time.perf_counter()
        learn_rounding(wg, sg, h, g, rows, 5, qmax=layer.qmax)
        per_iter = (time.perf_counter() - t1) / 5
        iters = int(min(max_iters, (share - 5 * per_iter) / max(per_iter, 1e-6)))
        if iters < min_iters:
            summary.skipped[layer.node] = f"time budget spent ({seconds:g} s)"
            continue
        qg = learn_rounding(wg, sg, h, g, rows, iters, qmax=layer.qmax)
        st = stats[layer.node]
        rtn = output_error(to_groups(layer, q_rtn.astype(np.float32)) * sg - wg, st)
        ada = output_error(qg * sg - wg, st)
        kept = ada < rtn
        summary.layers[layer.node] = {"rtn": rtn, "adaround": ada, "iters": iters, "kept": kept}
        if kept:
            rounded[layer.weight] = from_groups(layer, qg, w.shape).astype(np.int8)
    summary.seconds = time.perf_counter() - t0
    return rounded, summary


def without_rounded(placement: Placement, rounded: dict[str, np.ndarray]) -> Placement:
    """``placement`` minus the weights AdaRound rounded: the layers bias correction may still
    shift with round-to-nearest weights (AdaRound's loss already includes the mean error)."""
    weights = {e: w for e, w in placement.weights.items() if w.initializer not in rounded}
    return Placement(
        activations=placement.activations,
        weights=weights,
        reasons=placement.reasons,
        kept_float=placement.kept_float,
    )
