"""Per-channel activation ranges for depthwise convolutions, in a graph TensorRT builds.

A depthwise convolution (every output channel reads one input channel: ``group`` = input
channels) is where one int8 scale per activation tensor hurts most: the channels of its input
span ranges that differ by 100x and more (MobileNet/EfficientNet/PP-LCNet blocks, after
ReLU6/HardSwish), and the narrow channels get a handful of levels. NNCF gives that input one scale
per channel; TensorRT's explicit INT8 takes one scale per activation tensor only.

The same arithmetic fits TensorRT: per input channel c, s_c = max|X_c| / max_c max|X_c|, the
activation becomes X / s and the depthwise weights of channel c become W_c * s_c. Output channel
c reads only input channel c, so the FP32 function is unchanged, and because the weights are
quantized per output channel (their scale follows W_c * s_c exactly), the int8 layer is that of
per-channel activation scales s_c * amax / 127: SmoothQuant's migration with alpha = 1, which on
a depthwise layer costs the weights nothing. (On a dense layer the same move makes every output
channel's weights share the activation's channel spread: that is SmoothQuant's trade-off, see
onnx/smoothquant.py.)

The 1/s lands where it costs nothing when it can: the output channels of the producing Conv
(weights and bias) or BatchNormalization, also through Relu/LeakyRelu/PRelu between them
(f(x/s) = f(x)/s for s > 0), when only depthwise layers read the tensor. Otherwise (ReLU6, i.e.
Clip, and HardSwish are not scale-invariant; or another layer reads the tensor) an explicit Mul by
1/s (shape 1xCx1x1) goes in front of the depthwise layers only: a per-channel scale that TensorRT
runs as a pointwise op next to the producer's activation.

    equalized, summary = equalize_depthwise(model, batches, exclude=float_layers)

Cost: one FP32 ONNX Runtime pass over ``batches`` with the depthwise inputs exposed (per-channel
max |x| only); the Q/DQ ranges are then calibrated on the equalized model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from int8kit._deps import require
from int8kit.onnx.model_io import (
    FreshNames,
    GraphIndex,
    drop_unused_initializers,
    insert_before_readers,
)

log = logging.getLogger(__name__)

# Channels whose range is below this fraction of the widest one are scaled by this much only:
# a channel that is (nearly) always zero keeps a finite weight.
MIN_SCALE = 1e-4
HOMOGENEOUS = {"Relu", "LeakyRelu", "PRelu"}  # f(x / s) = f(x) / s for s > 0


@dataclass
class DepthwiseGroup:
    """An activation and the depthwise layers with constant weights that read it."""

    tensor: str
    layers: list[str]  # node names
    channels: int
    rank: int = 4  # of the activation (N, C, spatial...): Conv1d 3, Conv2d 4, Conv3d 5


@dataclass
class DepthwiseSummary:
    # activation -> {"layers", "where" (what took the 1/s), "spread" (max/min channel range)}
    equalized: dict[str, dict] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # activation or node -> why not
    gate_samples: int = 0  # held-out calibration samples that chose the headroom (0: no gate)
    seconds: float = 0.0


def _attr(node, name: str, default):
    for a in node.attribute:
        if a.name == name:
            from onnx import helper

            return helper.get_attribute_value(a)
    return default


def depthwise_groups(model) -> tuple[list[DepthwiseGroup], dict[str, str]]:
    """The activations read by depthwise Convs (constant FP32 weight of shape (C*m, 1, ...),
    group = C), grouped by activation; and {node: why not} for convs that look depthwise but
    cannot be equalized."""
    inits = {i.name: i for i in model.graph.initializer}
    uses: dict[str, int] = {}
    for n in model.graph.node:
        for name in n.input:
            uses[name] = uses.get(name, 0) + 1
    groups: dict[str, DepthwiseGroup] = {}
    skipped: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2:
            continue
        w = inits.get(node.input[1])
        group = int(_attr(node, "group", 1))
        if w is None or len(w.dims) < 3 or w.dims[1] != 1 or group <= 1:
            continue  # not depthwise (or a weight computed at run time)
        if w.dims[0] % group:
            skipped[node.name] = f"{w.dims[0]} output channels in {group} groups"
            continue
        if w.data_type != 1 or uses.get(node.input[1], 0) != 1:
            skipped[node.name] = "weight is not an FP32 constant of its own"
            continue
        x = node.input[0]
        if x in inits:
            continue
        g = groups.setdefault(x, DepthwiseGroup(x, [], group, len(w.dims)))
        if g.channels != group:
            skipped[node.name] = "readers of one activation disagree on its channels"
            continue
        g.layers.append(node.name)
    return list(groups.values()), skipped


HEADROOMS = (1.0, 2.0, 4.0, 8.0, 16.0)  # candidate h: a channel keeps h x its calibrated range
DEFAULT_GATE_SAMPLES = 32
# The statistics pass reads this many samples (an FP32 pass of its own, before calibration):
# 32 estimate the channel ranges and 32 check them, so the scales come from 64 samples.
DEFAULT_STATS_SAMPLES = 2 * DEFAULT_GATE_SAMPLES
# A per-channel range is fitted to the calibration samples and clips a channel that reaches
# further on other images, which a held-out split of the same samples does not show: on the zoo,
# EfficientNet-Lite0's gains held out were ratios 0.51-0.99 and cost 6 dB on other photos, where
# PP-LCNet's and RetinaFace's were 0.003-0.26 and gained 5-11 dB. So an activation is equalized
# only where its held-out error drops to this fraction of one shared range's (4.6 dB), the
# middle of that gap.
MAX_ERROR_RATIO = 0.35
DEFAULT_HEADROOM = 4.0  # without a gate (fewer than 4 x MIN_GATE_SAMPLES samples)
MIN_GATE_SAMPLES = 8


def channel_scales(amax: np.ndarray, headroom: float = 1.0) -> np.ndarray:
    """s_c = min(1, h * max|X_c| / max_c max|X_c|), at least MIN_SCALE; all ones for an
    all-zero tensor. h = 1: every channel spans the whole int8 range on the calibration data
    (per-channel scales); h > 1 leaves each channel h times its calibrated range before it clips,
    for data whose channels reach further than the calibration samples did."""
    amax = np.asarray(amax, np.float64)
    top = float(amax.max()) if amax.size else 0.0
    if not np.isfinite(top) or top <= 0:
        return np.ones(amax.shape, np.float32)
    return np.clip(headroom * amax / top, MIN_SCALE, 1.0).astype(np.float32)


def _channel_max(v: np.ndarray) -> np.ndarray:
    """max |v| per channel (axis 1), NaN and Inf as 0. From the max and min along the
    contiguous positions: no |v| copy, no reduction across strided axes (the same values)."""
    flat = v.reshape(v.shape[0], v.shape[1], -1)
    if flat.shape[2]:
        m = np.maximum(flat.max(axis=2), -flat.min(axis=2)).max(axis=0)
    else:
        m = np.abs(v).max(axis=tuple(i for i in range(v.ndim) if i != 1))
    return np.nan_to_num(np.abs(m), nan=0.0, posinf=0.0).astype(np.float32)


ERROR_POSITIONS = 1024  # spatial positions per sample and channel the held-out error reads
DEFER_VALUES = 1 << 23  # deferred held-out values (32 MB) scored at once


def _positions(x: np.ndarray) -> np.ndarray:
    """``x`` as (N, C, P) with at most about ERROR_POSITIONS evenly strided positions: the
    held-out error is a sum over positions, so a stride keeps it an unbiased estimate (scaled
    alike for every candidate) at a fraction of the cost on large feature maps."""
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    stride = max(1, flat.shape[2] // ERROR_POSITIONS)
    return flat[:, :, ::stride]


def _channel_sq_error(x: np.ndarray, s: np.ndarray, top: float) -> np.ndarray:
    """Per channel: sum of (x - int8(x / s) * s)^2, one scale top/127 for x / s; ``x`` is
    (N, C, P)."""
    step = (s * np.float32(top / 127.0)).astype(np.float32)[None, :, None]
    d = x / step  # one temporary, the rest in place: x - int8(x / step) * step
    np.rint(d, out=d)
    np.clip(d, -127, 127, out=d)
    d *= step
    np.subtract(x, d, out=d)
    return np.einsum("ncp,ncp->c", d, d, dtype=np.float64)


@dataclass
class Gate:
    """Streaming state of one activation: the channel ranges of the estimation samples, then
    each candidate's int8 error on the held-out samples (weighted by the depthwise weights'
    energy per channel: the layer's output error)."""

    weight: np.ndarray  # per input channel: sum of squared depthwise weights
    amax: np.ndarray | None = None  # estimation samples
    amax_all: np.ndarray | None = None  # every sample
    errors: dict | None = None  # candidate -> summed weighted error
    _held: list = field(default_factory=list)  # deferred held-out positions, (C, P) each
    _held_values: int = 0

    def candidates(self) -> dict:
        cands = {"none": np.ones_like(self.amax)}
        for h in HEADROOMS:
            cands[h] = channel_scales(self.amax, h)
        return cands

    def add_estimate(self, m: np.ndarray) -> None:
        self.amax = m.copy() if self.amax is None else np.maximum(self.amax, m)

    def add_held_out(self, v: np.ndarray, defer: bool = False) -> None:
        """Add held-out samples ``v`` (N, C, ...) to each candidate's error. ``defer``: keep
        their strided positions and score them in ``flush`` (one NumPy call per candidate for
        many small samples instead of one per sample); scored at latest by DEFER_VALUES."""
        if defer:
            x = _positions(v)
            self._held.append(np.ascontiguousarray(x.transpose(1, 0, 2)).reshape(x.shape[1], -1))
            self._held_values += x.size
            if self._held_values >= DEFER_VALUES:
                self.flush()
            return
        self._score(_positions(v))

    def flush(self) -> None:
        """Score the deferred held-out samples."""
        if self._held:
            x = np.concatenate(self._held, axis=1)[None]
            self._held, self._held_values = [], 0
            self._score(x)

    def _score(self, x: np.ndarray) -> None:
        top = float(self.amax.max())
        if self.errors is None:
            self.errors = {}
        if top <= 0 or not np.isfinite(top):
            return
        base = _channel_sq_error(x, np.ones(x.shape[1], np.float32), top)
        for key, s in self.candidates().items():
            per_channel = base.copy()
            scaled = np.flatnonzero(s != 1.0)  # only these channels' error changes
            if len(scaled):
                per_channel[scaled] = _channel_sq_error(x[:, scaled], s[scaled], top)
            e = float((per_channel * self.weight).sum())
            self.errors[key] = self.errors.get(key, 0.0) + e

    def best(self):
        """The candidate with the lowest held-out error, if it is at most MAX_ERROR_RATIO of
        the error with one range for all channels; else "none"."""
        if not self.errors:
            return None
        key = min(self.errors, key=lambda k: (self.errors[k], k != "none"))
        base = self.errors.get("none", 0.0)
        return key if base > 0 and self.errors[key] <= MAX_ERROR_RATIO * base else "none"


def channel_stats(model, groups: list[DepthwiseGroup], batches, estimate: int | None, weights):
    """{tensor: Gate} from one FP32 pass: channel ranges on the first ``estimate`` samples of
    ``batches`` (None: all), each candidate's error on the samples after them."""
    from int8kit.onnx.observe import run_exposed

    gates = {g.tensor: Gate(weights[g.tensor]) for g in groups}
    names = [g.tensor for g in groups]
    estimate = estimate if estimate is not None else float("inf")
    seen = 0
    for values in run_exposed(model, names, batches, light_consumer=False):
        n = len(next(iter(values.values()))) if values else 0
        for name, v in values.items():
            if v.ndim < 2 or v.shape[1] != len(gates[name].weight):
                continue
            gate = gates[name]
            cut = int(min(len(v), max(0, estimate - seen)))
            head, tail = v[:cut], v[cut:]
            m = _channel_max(v)
            if len(head):
                gate.add_estimate(m if len(tail) == 0 else _channel_max(head))
            gate.amax_all = m if gate.amax_all is None else np.maximum(gate.amax_all, m)
            if len(tail) and gate.amax is not None:
                gate.add_held_out(tail, defer=True)
        seen += n
    for gate in gates.values():
        gate.flush()
    return gates


class _Editor(GraphIndex):
    def __init__(self, model):
        super().__init__(model)
        self.uses = {k: len(v) for k, v in self.readers.items()}

    def own_const(self, name: str) -> np.ndarray | None:
        """An FP32 initializer no other node reads, as an array."""
        init = self.inits.get(name)
        if init is None or init.data_type != 1 or self.uses.get(name, 0) != 1:
            return None
        return self.to_array(init)

    def set_const(self, name: str, value: np.ndarray) -> None:
        self.inits[name].CopyFrom(self.from_array(value.astype(np.float32), name))

    def through_zero_pad(self, tensor: str, readers: set[str]) -> tuple[str, set[str]]:
        """(tensor, readers) to scale: a Pad that adds zeros around the spatial axes commutes
        with a per-channel scale, so the scale goes in front of it (where the producer can take
        it, and where the Q/DQ placement and calibration look for the Pad's values)."""
        from int8kit.onnx.observe import constant_value, pad_source

        while True:
            node = self.producer.get(tensor)
            src = pad_source(node, self.inits)
            if src is None or not self.only_read_by(tensor, readers):
                return tensor, readers
            pads = src.pads
            if isinstance(pads, str):
                pads = constant_value(self.model, pads, self.producer)
            value = src.value
            if isinstance(value, str):
                value = constant_value(self.model, value, self.producer)
            pads = None if pads is None else np.asarray(pads).reshape(-1)
            if pads is None or len(pads) < 4 or pads[1] or pads[1 + len(pads) // 2]:
                return tensor, readers  # unknown pads, or pads on the channel axis
            if value is not None and np.any(np.asarray(value) != 0):
                return tensor, readers
            tensor, readers = src.x, {node.name}

    def fold(self, tensor: str, inv: np.ndarray, readers: set[str]) -> str | None:
        """Make the producer of ``tensor`` output ``tensor * inv`` (per channel, axis 1) when
        only ``readers`` read it; return what took it, or None (nothing changed)."""
        node = self.producer.get(tensor)
        if node is None or not self.only_read_by(tensor, readers) or len(node.output) != 1:
            return None
        k = len(inv)
        if node.op_type in HOMOGENEOUS:
            if node.op_type == "PRelu":
                slope = self.inits.get(node.input[1])
                if slope is None or int(np.prod(slope.dims)) not in (1, k):
                    return None
            took = self.fold(node.input[0], inv, {node.name})
            return f"{took} through {node.op_type}" if took else None
        if node.op_type == "Conv" and len(node.input) > 1:
            w = self.own_const(node.input[1])
            b = self.own_const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            if (
                w is None
                or w.shape[0] != k
                or (len(node.input) > 2 and node.input[2] and b is None)
            ):
                return None
            self.set_const(node.input[1], w * inv.reshape([-1] + [1] * (w.ndim - 1)))
            if b is not None:
                self.set_const(node.input[2], b * inv)
            return f"Conv {node.name}"
        if node.op_type == "BatchNormalization" and len(node.input) >= 5:
            scale, bias = self.own_const(node.input[1]), self.own_const(node.input[2])
            if scale is None or bias is None or scale.shape != (k,) or bias.shape != (k,):
                return None
            self.set_const(node.input[1], scale * inv)
            self.set_const(node.input[2], bias * inv)
            return f"BatchNormalization {node.name}"
        return None

    def insert_mul(self, tensor: str, inv: np.ndarray, readers: list[str], rank: int) -> str:
        from onnx import helper

        fresh = FreshNames(self.graph)
        name = fresh(f"{tensor}_dw_inv_s")
        shape = (1, len(inv)) + (1,) * (rank - 2)
        self.graph.initializer.append(self.from_array(inv.reshape(shape).astype(np.float32), name))
        out = fresh(f"{tensor}_dw_equalized")
        mul = helper.make_node(
            "Mul", [tensor, name], [out], name=fresh(f"{tensor}_DepthwiseEqualize")
        )
        insert_before_readers(self.graph, mul, tensor, readers)
        return "inserted Mul"

    def scale_weights(self, layers: list[str], s: np.ndarray) -> None:
        nodes = {n.name: n for n in self.graph.node}
        for name in layers:
            node = nodes[name]
            w = self.to_array(self.inits[node.input[1]])
            per_out = np.repeat(s, w.shape[0] // len(s))  # channel multiplier m: c*m .. c*m+m-1
            self.set_const(node.input[1], w * per_out.reshape([-1] + [1] * (w.ndim - 1)))


def apply_scales(model, groups: list[DepthwiseGroup], scales: dict[str, np.ndarray]):
    """A copy of ``model`` with each group's activation divided by ``scales[tensor]`` (folded into
    its producer where possible, else an explicit Mul) and its depthwise weights multiplied by it;
    and {tensor: what took the 1/s}."""
    onnx = require("onnx", "depthwise equalization")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    where: dict[str, str] = {}
    for g in groups:
        s = scales.get(g.tensor)
        if s is None:
            continue
        ed = _Editor(out)
        inv = (1.0 / s).astype(np.float32)
        tensor, readers = ed.through_zero_pad(g.tensor, set(g.layers))
        took = ed.fold(tensor, inv, readers)
        if took is None:
            took = ed.insert_mul(tensor, inv, sorted(readers), g.rank)
            ed = _Editor(out)
        if tensor != g.tensor:
            took += " (in front of the zero Pad)"
        ed.scale_weights(g.layers, s)
        where[g.tensor] = took
    drop_unused_initializers(out.graph)
    return out, where


def _weight_energy(model, groups: list[DepthwiseGroup]) -> dict[str, np.ndarray]:
    """Per input channel of each group's activation: the sum of its depthwise weights squared
    (over every reading layer and channel multiplier), what scales its error into the output."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    out = {}
    for g in groups:
        e = np.zeros(g.channels, np.float64)
        for name in g.layers:
            w = numpy_helper.to_array(inits[nodes[name].input[1]]).astype(np.float64)
            per_out = (w.reshape(w.shape[0], -1) ** 2).sum(axis=1)
            e += per_out.reshape(g.channels, -1).sum(axis=1)
        out[g.tensor] = e
    return out


def decide(gate: Gate, channels: int, gated: bool, headroom: float | None = None):
    """(s, record) for one activation: s its channel scales and record {"headroom", "spread",
    "error_ratio" (with a gate)}; or (None, why it is left alone). ``gated``: the held-out
    samples decide (else DEFAULT_HEADROOM); ``headroom``: this h, no gate."""
    a = gate.amax_all
    if a is None or a.shape != (channels,):
        return None, "not observed as a float NCHW tensor of its channels"
    if headroom is not None:
        h = headroom
    elif not gated or not gate.errors:  # no gate, or no held-out sample came
        h = DEFAULT_HEADROOM
    else:
        h = gate.best()
    if h is None or h == "none":
        return None, (
            f"per-channel ranges did not cut the held-out error to {MAX_ERROR_RATIO:g} of "
            "one range's"
        )
    s = channel_scales(a, h)
    if np.all(s == 1.0):
        return None, "channels already share one range"
    live = a[a > 0]
    d = {"headroom": float(h), "spread": float(live.max() / live.min()) if live.size else 1.0}
    if gate.errors and "none" in gate.errors and gate.errors["none"] > 0:
        d["error_ratio"] = float(gate.errors[h] / gate.errors["none"])
    return s, d


def gate_split(num_samples: int | None, gate_samples: int) -> int | None:
    """Samples that estimate the channel ranges; the rest decide the headroom. None: no gate
    (too few samples, or a count not known in advance)."""
    if num_samples is None or gate_samples <= 0:
        return None
    held = min(gate_samples, num_samples // 2)
    return num_samples - held if held >= MIN_GATE_SAMPLES else None


def equalize_depthwise(
    model,
    batches: Iterable[dict[str, np.ndarray]],
    exclude: Iterable[str] = (),
    num_samples: int | None = None,
    gate_samples: int = DEFAULT_GATE_SAMPLES,
    headroom: float | None = None,
    max_samples: int | None = DEFAULT_STATS_SAMPLES,
):
    """(equalized copy of ``model``, DepthwiseSummary). ``exclude``: node names of depthwise
    layers to leave alone (those kept float: their input gets no scale to help).

    Per activation, the headroom h (HEADROOMS, or none at all) is the one whose int8 error of
    the depthwise layers' outputs is lowest on the last ``gate_samples`` of the ``num_samples``
    calibration samples, with the channel ranges taken on the samples before them: a channel
    that was narrow on some images can be wide on others, and a per-channel range fitted too
    closely clips it. ``headroom``: use this h everywhere instead (no gate). The statistics
    read the first ``max_samples`` samples (None: all): half estimate, half held out; the
    final scales use the ranges of all of them, and the Q/DQ ranges are calibrated afterwards
    on every sample."""
    t0 = time.perf_counter()
    summary = DepthwiseSummary()
    groups, skipped = depthwise_groups(model)
    summary.skipped.update(skipped)
    excluded = set(exclude)
    for g in list(groups):
        if excluded & set(g.layers):
            summary.skipped[g.tensor] = "read by a depthwise layer that is not quantized"
            groups.remove(g)
    if not groups:
        summary.seconds = time.perf_counter() - t0
        return model, summary
    if max_samples is not None:
        from int8kit.onnx.bias import take_samples

        batches = take_samples(batches, max_samples)
        num_samples = None if num_samples is None else min(num_samples, max_samples)
    estimate = None if headroom is not None else gate_split(num_samples, gate_samples)
    gates = channel_stats(model, groups, batches, estimate, _weight_energy(model, groups))
    summary.gate_samples = 0 if estimate is None else num_samples - estimate
    scales, info = {}, {}
    for g in groups:
        s, d = decide(gates[g.tensor], g.channels, estimate is not None, headroom)
        if s is None:
            summary.skipped[g.tensor] = d
            continue
        scales[g.tensor] = s
        info[g.tensor] = {"layers": list(g.layers), **d}
    if not scales:
        summary.seconds = time.perf_counter() - t0
        return model, summary
    out, where = apply_scales(model, groups, scales)
    for t, d in info.items():
        summary.equalized[t] = {**d, "where": where[t]}
    summary.seconds = time.perf_counter() - t0
    log.info("depthwise equalization: %d of %d activations", len(summary.equalized), len(groups))
    return out, summary


def equalize_for_placement(model, placement_config, batches):
    """``equalize_depthwise`` for the quantize workflow: only depthwise layers whose weight and
    input the placement quantizes. Returns (model, DepthwiseSummary as a dict)."""
    from dataclasses import asdict

    from int8kit.onnx.placement import plan

    placement = plan(model, placement_config)
    weighted = {node for node, _ in placement.weights}
    read = {node for edges in placement.activations.values() for node, i in edges if i == 0}
    exclude = {
        n.name
        for n in model.graph.node
        if n.op_type == "Conv" and not (n.name in weighted and n.name in read)
    }
    num = getattr(batches, "num_samples", None)
    out, summary = equalize_depthwise(model, batches, exclude=exclude, num_samples=num)
    return out, asdict(summary)
