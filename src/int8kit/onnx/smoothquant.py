"""SmoothQuant (Xiao et al., 2023): move the per-channel range of an activation into the weights
of the MatMul/Gemm layers that read it, so one int8 scale per tensor fits the activation.

For an activation X read by layers with constant weights W (input channel j = row j of a MatMul
weight), per channel j: s_j = max|X_j|^alpha / max|W_j|^(1 - alpha) (max|W_j| over every layer
reading X), X' = X / s, W' = diag(s) W, so X' W' = X W: the FP32 model computes the same
function. The division lands where it costs nothing when it can (only when every reader of X is
smoothed): in the constants of the op that produces X (LayerNormalization's scale and bias; a Mul
or Div by a constant, e.g. GELU's final * 0.5; an Add of a constant whose other input can take
it; the output channels of a MatMul/Gemm with a constant weight, which per-channel weight
quantization does not see). Otherwise an explicit Mul by 1/s is inserted in front of the
smoothed layers only (a post-LayerNorm BERT's LayerNorm output also feeds the residual Add).

    smoothed, summary = smooth_quant(model, batches, alpha="auto")   # one FP32 pass
    # then calibrate / place / insert Q/DQ on ``smoothed``

``alpha="auto"``: per activation, the alpha of ``ALPHAS`` (or none at all) whose quantized
layer outputs are closest to FP32 on rows sampled from the calibration data, with the int8
activation scale minmax gives (max|X_j / s_j| over j) and per-channel int8 weights. A float alpha
smooths every eligible activation with it.

Cost: one FP32 ONNX Runtime pass over ``batches`` (every sample, see DEFAULT_SAMPLES) with
the smoothed activations exposed (per-channel max |x| and a few hundred sampled rows kept per
tensor), then a small NumPy grid search; the Q/DQ ranges are then calibrated as usual on the
smoothed model, over every calibration sample.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from int8kit._deps import require
from int8kit.onnx.model_io import GraphIndex, drop_unused_initializers, insert_before_readers

log = logging.getLogger(__name__)

ALPHAS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
SAMPLE_ROWS = 256  # rows per activation kept for the alpha search
# Channel maxima from every calibration sample: on MiniLM, maxima from the first 32 of 128
# samples give cosine 0.9971 where all 128 give 0.9989 (the calibrated per-tensor range of X / s
# is set by the channel whose max the subset underestimated).
DEFAULT_SAMPLES = None
_MIN_SCALE, _MAX_SCALE = 1e-5, 1e5


@dataclass
class SmoothGroup:
    """An activation and the layers with constant weights that read it."""

    tensor: str
    layers: list[str]  # node names
    weights: list[tuple[str, int]]  # (initializer, axis of the input channels)
    channels: int


@dataclass
class SmoothSummary:
    alpha: float | str = "auto"
    # activation -> {"alpha", "layers", "where" (what took the 1/s), "error_ratio"}
    smoothed: dict[str, dict] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # activation -> why not
    seconds: float = 0.0


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def smooth_groups(model) -> tuple[list[SmoothGroup], dict[str, str]]:
    """The activations read by MatMul (2-D constant weight as input 1) or Gemm (constant B,
    no transA) layers, each with its layers; and {node: why not} for the other MatMul/Gemm."""
    inits = {i.name: i for i in model.graph.initializer}
    groups: dict[str, SmoothGroup] = {}
    skipped: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2:
            continue
        x, w = node.input[0], node.input[1]
        if w not in inits or x in inits:
            skipped[node.name] = "no constant weight as input 1"
            continue
        dims = list(inits[w].dims)
        if len(dims) != 2:
            skipped[node.name] = f"weight of rank {len(dims)}"
            continue
        a = _attrs(node)
        if node.op_type == "Gemm" and a.get("transA", 0):
            skipped[node.name] = "Gemm with transA"
            continue
        axis = 1 if node.op_type == "Gemm" and a.get("transB", 0) else 0
        g = groups.setdefault(x, SmoothGroup(x, [], [], dims[axis]))
        if g.channels != dims[axis]:
            skipped[node.name] = "readers of one activation disagree on its channels"
            continue
        g.layers.append(node.name)
        g.weights.append((w, axis))
    return list(groups.values()), skipped


@dataclass
class _Stats:
    amax: np.ndarray  # per-channel max |x|
    rows: list  # sampled rows (n, K)


def channel_stats(
    model, groups: list[SmoothGroup], batches: Iterable[dict[str, np.ndarray]], seed: int = 0
) -> dict[str, _Stats]:
    """Per-channel max |x| of every group's activation (last axis; Gemm: axis 1 of a 2-D input)
    and up to SAMPLE_ROWS of its rows, in one FP32 pass."""
    from int8kit.onnx.observe import run_exposed

    rng = np.random.default_rng(seed)
    names = [g.tensor for g in groups]
    stats: dict[str, _Stats] = {}
    for values in run_exposed(model, names, batches, light_consumer=True):
        for name, v in values.items():
            k = v.shape[-1]
            rows = v.reshape(-1, k)
            amax = np.abs(rows).max(axis=0)
            st = stats.get(name)
            if st is None:
                st = stats[name] = _Stats(np.zeros(k, np.float32), [])
            np.maximum(st.amax, np.nan_to_num(amax, nan=0.0, posinf=0.0), out=st.amax)
            take = min(len(rows), 64)
            st.rows.append(rows[rng.choice(len(rows), take, replace=False)].astype(np.float32))
    for st in stats.values():
        rows = np.concatenate(st.rows) if st.rows else np.zeros((0, len(st.amax)), np.float32)
        if len(rows) > SAMPLE_ROWS:
            rows = rows[rng.choice(len(rows), SAMPLE_ROWS, replace=False)]
        st.rows = rows
    return stats


def smoothing_scales(x_amax: np.ndarray, w_amax: np.ndarray, alpha: float) -> np.ndarray:
    """s_j = max|X_j|^alpha / max|W_j|^(1-alpha); 1 where either max is 0."""
    x = np.asarray(x_amax, np.float64)
    w = np.asarray(w_amax, np.float64)
    ok = (x > 0) & (w > 0) & np.isfinite(x) & np.isfinite(w)
    s = np.ones_like(x)
    s[ok] = np.power(x[ok], alpha) / np.power(w[ok], 1.0 - alpha)
    return np.clip(s, _MIN_SCALE, _MAX_SCALE).astype(np.float32)


def _fake_quant(x: np.ndarray, amax, axis: int | None = None) -> np.ndarray:
    """Symmetric int8 fake quantization; ``amax`` per tensor, or per channel along ``axis``."""
    amax = np.asarray(amax, np.float32)
    if axis is not None:
        shape = [1] * x.ndim
        shape[axis] = -1
        amax = amax.reshape(shape)
    scale = np.where(amax > 0, amax / np.float32(127.0), np.float32(1.0))
    return np.clip(np.rint(x / scale), -127, 127) * scale


def _as_kn(w: np.ndarray, axis: int) -> np.ndarray:
    """The weight as (input channels, outputs)."""
    return w if axis == 0 else w.T


def layer_error(
    rows: np.ndarray, x_amax: np.ndarray, weights: list[np.ndarray], s, refs=None
) -> float:
    """Squared error of the int8 layers' outputs vs FP32 on ``rows`` with smoothing ``s``
    (None: none): activation per tensor (amax = max_j x_amax_j / s_j), weights per output.
    ``refs``: the FP32 outputs ``rows @ w`` when already computed."""
    rows = np.asarray(rows, np.float32)
    refs = refs if refs is not None else [rows @ w for w in weights]
    s = np.ones(rows.shape[1], np.float32) if s is None else np.asarray(s, np.float32)
    xq = _fake_quant(rows / s, float((x_amax / s).max())).astype(np.float32)
    err = 0.0
    for w, ref in zip(weights, refs, strict=True):  # (K, N), float32: BLAS (mixed: not)
        ws = (w * s[:, None]).astype(np.float32)
        wq = _fake_quant(ws, np.abs(ws).max(axis=0), axis=1).astype(np.float32)
        d = (xq @ wq - ref).astype(np.float64)
        err += float((d * d).sum())
    return err


def choose_alpha(
    rows: np.ndarray, x_amax: np.ndarray, weights: list[np.ndarray], alphas=ALPHAS
) -> tuple[float | None, float]:
    """(best alpha or None when smoothing does not lower the error, error ratio best/unsmoothed)."""
    w_amax = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
    rows = np.asarray(rows, np.float32)
    refs = [rows @ w for w in weights]
    base = layer_error(rows, x_amax, weights, None, refs)
    best, best_err = None, base
    for a in alphas:
        e = layer_error(rows, x_amax, weights, smoothing_scales(x_amax, w_amax, a), refs)
        if e < best_err:
            best, best_err = a, e
    return best, (best_err / base if base > 0 else 1.0)


# -- graph edits -------------------------------------------------------------------------------


class _Editor(GraphIndex):
    def __init__(self, model):
        super().__init__(model)
        self.count = 0

    def const(self, name: str) -> np.ndarray | None:
        if name in self.inits:
            return self.to_array(self.inits[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            from int8kit.onnx.observe import constant_value

            return constant_value(self.model, name, self.producer)
        return None

    def new_const(self, base: str, value: np.ndarray) -> str:
        name = f"{base}_smooth"
        while name in self.inits or name in self.producer:
            self.count += 1
            name = f"{base}_smooth{self.count}"
        init = self.from_array(np.ascontiguousarray(value), name)
        self.graph.initializer.append(init)
        self.inits[name] = init
        return name

    def fold(self, tensor: str, inv: np.ndarray, readers: set[str]) -> str | None:
        """Make the producer of ``tensor`` output ``tensor * inv`` (per last-axis channel), when
        only ``readers`` read it; return what took it, or None (nothing changed)."""
        node = self.producer.get(tensor)
        if node is None or not self.only_read_by(tensor, readers) or len(node.output) != 1:
            return None
        k = len(inv)
        op = node.op_type
        if op == "LayerNormalization":
            if _attrs(node).get("axis", -1) != -1 or len(node.input) < 2:
                return None
            consts = [self.const(n) if n else None for n in node.input[1:3]]
            names = list(node.input[1:3])
            if consts[0] is None or any(
                n and c is None for n, c in zip(names, consts, strict=True)
            ):
                return None
            if any(c is not None and c.shape != (k,) for c in consts):
                return None
            for i, c in enumerate(consts, start=1):
                if c is not None:
                    node.input[i] = self.new_const(node.input[i], c * inv)
            return f"{op} {node.name}"
        if op in ("Mul", "Div", "Add") and len(node.input) == 2:
            cs = [self.const(n) for n in node.input]
            if (cs[0] is None) == (cs[1] is None):
                return None
            i = 0 if cs[0] is not None else 1
            c = cs[i]
            if c.ndim > 0 and c.shape[-1] not in (1, k):
                return None
            if op == "Div" and i == 0:  # c / x: 1/s cannot go into c
                return None
            if op == "Add" and self.fold(node.input[1 - i], inv, {node.name}) is None:
                return None
            new = c * (1.0 / inv) if op == "Div" else c * inv
            node.input[i] = self.new_const(node.input[i], new.astype(c.dtype))
            return f"{op} {node.name}"
        if op in ("MatMul", "Gemm") and len(node.input) >= 2 and node.input[1] in self.inits:
            w = self.to_array(self.inits[node.input[1]])
            a = _attrs(node)
            if w.ndim != 2 or (op == "Gemm" and float(a.get("alpha", 1.0)) == 0):
                return None
            out_axis = 0 if op == "Gemm" and a.get("transB", 0) else 1
            if w.shape[out_axis] != k:
                return None
            bias = None
            if op == "Gemm" and len(node.input) > 2 and node.input[2]:
                bias = self.const(node.input[2])
                if bias is None or (bias.ndim and bias.shape[-1] not in (1, k)):
                    return None
            scale = inv[None, :] if out_axis == 1 else inv[:, None]
            node.input[1] = self.new_const(node.input[1], (w * scale).astype(w.dtype))
            if bias is not None:
                node.input[2] = self.new_const(node.input[2], (bias * inv).astype(bias.dtype))
            return f"{op} {node.name}"
        return None

    def insert_mul(self, tensor: str, inv: np.ndarray, readers: list[str]) -> str:
        from onnx import helper

        c = self.new_const(f"{tensor}_inv_s", inv.astype(np.float32))
        out = f"{tensor}_smoothed"
        mul = helper.make_node("Mul", [tensor, c], [out], name=f"{tensor}_SmoothQuant")
        insert_before_readers(self.graph, mul, tensor, readers)
        return "inserted Mul"

    def scale_weights(self, group: SmoothGroup, s: np.ndarray) -> None:
        nodes = {n.name: n for n in self.graph.node}
        for name, (w_name, axis) in zip(group.layers, group.weights, strict=True):
            node = nodes[name]  # its weight may already carry an earlier fold's column scales
            w = self.to_array(self.inits[node.input[1]])
            scaled = w * (s[:, None] if axis == 0 else s[None, :])
            node.input[1] = self.new_const(w_name, scaled.astype(w.dtype))

    def drop_unused(self) -> None:
        drop_unused_initializers(self.graph)


def apply_smoothing(model, groups: list[SmoothGroup], scales: dict[str, np.ndarray]):
    """A copy of ``model`` with each group's activation divided by ``scales[tensor]`` (folded
    into its producer where possible, else an explicit Mul) and its weights' rows multiplied by
    it; and {tensor: what took the 1/s}."""
    onnx = require("onnx", "SmoothQuant")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    ed = _Editor(out)
    where: dict[str, str] = {}
    for g in groups:
        s = scales.get(g.tensor)
        if s is None:
            continue
        inv = (1.0 / s).astype(np.float32)
        took = ed.fold(g.tensor, inv, set(g.layers))
        if took is None:
            took = ed.insert_mul(g.tensor, inv, g.layers)
            ed = _Editor(out)  # node order and consumers changed
        ed.scale_weights(g, s)
        where[g.tensor] = took
    ed.drop_unused()
    return out, where


def smooth_quant(
    model,
    batches: Iterable[dict[str, np.ndarray]],
    alpha: float | str = "auto",
    exclude: Iterable[str] = (),
    max_samples: int | None = DEFAULT_SAMPLES,
):
    """(smoothed copy of ``model``, SmoothSummary). ``alpha``: a float in [0, 1], or "auto" (per
    activation, the best of ALPHAS or no smoothing, by the quantized layers' output error).
    ``exclude``: node names of layers to leave alone (e.g. those kept float).
    ``max_samples``: the statistics use the first that many samples of ``batches`` (None: all);
    the Q/DQ ranges are calibrated afterwards on every sample of the smoothed model."""
    t0 = time.perf_counter()
    if alpha != "auto" and not (isinstance(alpha, (int, float)) and 0 <= float(alpha) <= 1):
        raise ValueError(f"SmoothQuant alpha must be in [0, 1] or 'auto', got {alpha!r}")
    from onnx import numpy_helper

    summary = SmoothSummary(alpha=alpha)
    groups, skipped = smooth_groups(model)
    summary.skipped.update(skipped)
    excluded = set(exclude)
    for g in list(groups):
        if excluded & set(g.layers):
            summary.skipped[g.tensor] = "read by a layer that is not quantized"
            groups.remove(g)
    if not groups:
        summary.seconds = time.perf_counter() - t0
        return model, summary
    from int8kit.onnx.bias import take_samples

    stats = channel_stats(model, groups, take_samples(batches, max_samples))
    inits = {i.name: i for i in model.graph.initializer}
    scales: dict[str, np.ndarray] = {}
    info: dict[str, dict] = {}
    for g in groups:
        st = stats.get(g.tensor)
        if st is None or len(st.amax) != g.channels:
            summary.skipped[g.tensor] = "not observed as a float tensor with its channels last"
            continue
        ws = [_as_kn(numpy_helper.to_array(inits[w]).astype(np.float32), ax) for w, ax in g.weights]
        if alpha == "auto":
            a, ratio = choose_alpha(st.rows, st.amax, ws)
            if a is None:
                summary.skipped[g.tensor] = "smoothing did not lower the layers' int8 error"
                continue
        else:
            a = float(alpha)
            w_amax = np.max([np.abs(w).max(axis=1) for w in ws], axis=0)
            base = layer_error(st.rows, st.amax, ws, None)
            after = layer_error(st.rows, st.amax, ws, smoothing_scales(st.amax, w_amax, a))
            ratio = after / base if base > 0 else 1.0
        w_amax = np.max([np.abs(w).max(axis=1) for w in ws], axis=0)
        scales[g.tensor] = smoothing_scales(st.amax, w_amax, a)
        info[g.tensor] = {"alpha": a, "layers": list(g.layers), "error_ratio": float(ratio)}
    out, where = apply_smoothing(model, groups, scales)
    for t, d in info.items():
        summary.smoothed[t] = {**d, "where": where[t]}
    summary.seconds = time.perf_counter() - t0
    log.info("SmoothQuant: %d activations smoothed", len(summary.smoothed))
    return out, summary


def smooth_for_placement(model, placement_config, batches, alpha: float | str = "auto"):
    """``smooth_quant`` for the quantize workflow: only layers whose weight and input the
    placement quantizes are smoothed. Returns (model, SmoothSummary as a dict)."""
    from dataclasses import asdict

    from int8kit.onnx.placement import plan

    placement = plan(model, placement_config)
    weighted = {node for node, _ in placement.weights}
    read = {node for edges in placement.activations.values() for node, i in edges if i == 0}
    exclude = {
        n.name
        for n in model.graph.node
        if n.op_type in ("MatMul", "Gemm") and not (n.name in weighted and n.name in read)
    }
    smoothed, summary = smooth_quant(model, batches, alpha, exclude=exclude)
    return smoothed, asdict(summary)
