"""Per-channel ranges for the inputs of depthwise convolutions, through one scale per tensor.

The ONNX path's algorithm (`int8kit.onnx.dwequalize`, where the why is written down) for
modules: for a quantized depthwise conv (``groups == in_channels``, weight (C*m, 1, k...)) each
input channel c is divided by s_c = min(1, h * max|x_c| / max_c max|x_c|) and the weights of the
output channels that read it are multiplied by s_c. The FP32 function is unchanged; with weights
quantized per output channel the int8 layer is that of per-channel activation scales. Here the
1/s is a buffer of the module (`modules.set_input_scale`), multiplied into the input before its
quantizer, so the export reads Mul -> QuantizeLinear -> DequantizeLinear -> Conv with one scale
per activation tensor: a graph TensorRT builds.

The gate is the ONNX path's (`Gate`, `decide`, `gate_split`, `channel_scales`: the same numpy
code): channel ranges on the estimate samples, the int8 error of the layer's output (weighted by
the depthwise weights' energy) on the held-out ones for each headroom h, and a layer is
equalized only where the error drops to MAX_ERROR_RATIO of one shared range's. One difference:
``forward_loop`` does not say how many samples it runs until it has run, so the held-out samples
are the first ones (the ONNX path holds out the last), which lets the gate's pass stop early.

Passes of ``forward_loop`` (`int8kit.torch.calibrate` runs them when
``QuantConfig.equalize_depthwise``): the channel ranges are taken during calibration itself
(`ChannelRanges`); then one pass over the held-out samples only (the gate), and, when a layer was
equalized, one full pass in which only the equalized layers' input quantizers collect (their
histograms are of x / s now; every other quantizer is off, so this is the FP32 model's data).

Under torch.distributed the samples are numbered as one process that saw every rank's samples
(rank 0's first) would number them; the channel ranges are MAX-reduced, the held-out errors
summed and the new histograms reduced as in calibration, so every rank makes the same choices.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import asdict

import numpy as np
import torch
from torch import nn

from int8kit.onnx.dwequalize import (
    DEFAULT_GATE_SAMPLES,
    ERROR_POSITIONS,
    DepthwiseSummary,
    Gate,
    decide,
    gate_split,
)
from int8kit.torch import distributed, stem
from int8kit.torch.modules import INPUT_INV_SCALE, QuantWeightMixin, set_input_scale

SUMMARY_ATTR = "_int8kit_dw_equalize"
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class _Enough(Exception):
    """Raised by the model's pre-hook once every held-out sample was seen."""


def depthwise_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every quantized depthwise conv: one input channel per group."""
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, QuantWeightMixin)
        and isinstance(m, _CONVS)
        and m.groups > 1
        and m.groups == m.in_channels
        and m._parameters["weight"].shape[1] == 1
    ]


def _skip_reason(module: nn.Module) -> str | None:
    if not (module.input_quantizer.enabled and module.weight_quantizer.enabled):
        return "not quantized (float stem, or saw no calibration data)"
    if module.weight_quantizer.axis is None:
        return "weights quantized per tensor: s would cost the narrow channels' weights"
    return None


def _as_batch(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` as (N, C, positions): an unbatched input is one sample."""
    if x.dim() == module._parameters["weight"].dim() - 1:
        x = x.unsqueeze(0)
    return x.reshape(x.shape[0], x.shape[1], -1)


class _Numbering:
    """The index of each sample a model call carries, across the calls of ``forward_loop``
    (the stem's extra probe forward does not count)."""

    def __init__(self, model: nn.Module, offset: int = 0):
        self.model, self.start, self.n = model, offset, 0

    def on_model(self, _module, args, kwargs):
        if stem.probing(self.model):
            return
        self.start += self.n
        self.n = stem.batch_size(args, kwargs)

    def rows(self, x: torch.Tensor) -> tuple[int, torch.Tensor]:
        """(index of x's first row, x): one row per sample when x's batch is the call's, else
        all of x counts as the call's first sample."""
        if x.shape[0] == self.n:
            return self.start, x
        return self.start, x.transpose(0, 1).reshape(1, x.shape[1], -1)


class ChannelRanges:
    """Collects max |x| per input channel of every quantized depthwise conv over the forward
    passes inside ``with``: per sample for the first ``keep`` samples (the gate holds some of
    them out), one running max for the rest. Bounded memory: keep x channels per layer."""

    def __init__(self, model: nn.Module, keep: int = DEFAULT_GATE_SAMPLES):
        self.model, self.keep = model, keep
        self.layers = depthwise_layers(model)
        self.head: dict[str, torch.Tensor] = {}  # (keep, C) per sample
        self.rest: dict[str, torch.Tensor] = {}  # (C,) over samples >= keep
        self.numbering = _Numbering(model)
        self._handles: list = []

    @property
    def samples(self) -> int:
        return self.numbering.start + self.numbering.n

    def __enter__(self) -> ChannelRanges:
        names = {m: n for n, m in self.layers}

        def on_layer(module, args):
            if stem.probing(self.model) or not args or not isinstance(args[0], torch.Tensor):
                return
            start, x = self.numbering.rows(_as_batch(module, args[0].detach()))
            m = torch.nan_to_num(x.abs().amax(dim=2).float(), nan=0.0, posinf=0.0)
            name = names[module]
            if name not in self.head:
                c = module.groups
                self.head[name] = torch.zeros(self.keep, c, device=m.device)
                self.rest[name] = torch.zeros(c, device=m.device)
            if m.shape[1] != self.head[name].shape[1]:
                return
            cut = max(0, min(len(m), self.keep - start))
            if cut:
                h = self.head[name][start : start + cut]
                torch.maximum(h, m[:cut], out=h)
            if cut < len(m):
                torch.maximum(self.rest[name], m[cut:].amax(dim=0), out=self.rest[name])

        self._handles = [
            self.model.register_forward_pre_hook(self.numbering.on_model, with_kwargs=True)
        ]
        self._handles += [m.register_forward_pre_hook(on_layer) for m, _ in names.items()]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def amax(self, name: str, channels: int, held: int, offset: int = 0):
        """(max over the samples from index ``held`` on, max over all) of this rank's samples,
        numbered from ``offset``; zeros where none came."""
        head = self.head.get(name)
        if head is None:
            z = torch.zeros(channels)
            return z, z.clone()
        local = max(0, min(len(head), held - offset))  # this rank's held-out rows
        rest = self.rest[name]
        est = torch.maximum(head[local:].amax(dim=0), rest) if local < len(head) else rest
        every = torch.maximum(head.amax(dim=0), rest) if len(head) else rest
        return est.cpu(), every.cpu()


def _weight_energy(module: nn.Module) -> np.ndarray:
    """Per input channel: the sum of its depthwise weights squared (its error into the output)."""
    w = module._parameters["weight"].detach().double()
    return (w.reshape(module.groups, -1) ** 2).sum(dim=1).cpu().numpy()


def _reduce(t: torch.Tensor, op) -> torch.Tensor:
    if not distributed.active():
        return t
    d = t.to(distributed._device())
    torch.distributed.all_reduce(d, op=op)
    return d.to(t.device)


def _held_out_pass(model, forward_loop, gates: dict, modules: dict, held: int, offset: int):
    """Each gate's held-out error on the samples numbered below ``held`` (FP32 model)."""
    numbering = _Numbering(model, offset)
    names = {m: n for n, m in modules.items()}

    def on_model(module, args, kwargs):
        numbering.on_model(module, args, kwargs)
        if numbering.start >= held:
            raise _Enough

    def on_layer(module, args):
        if not args or not isinstance(args[0], torch.Tensor):
            return
        start, x = numbering.rows(_as_batch(module, args[0].detach()))
        x = x[: max(0, held - start)]
        if not len(x):
            return
        x = x[:, :, :: max(1, x.shape[2] // ERROR_POSITIONS)]  # onnx.dwequalize._positions
        gates[names[module]].add_held_out(x.float().cpu().numpy())

    handles = [model.register_forward_pre_hook(on_model, with_kwargs=True)]
    handles += [m.register_forward_pre_hook(on_layer) for m in names]
    try:
        forward_loop(model)
    except _Enough:
        pass
    finally:
        for h in handles:
            h.remove()


def _recollect(model, forward_loop, modules: dict, reduce: bool) -> dict[str, float]:
    """One pass in which only these modules' input quantizers collect (every other one is off:
    the FP32 model); their amax by their method. {module name: amax}; a module whose quantizer
    saw nothing is left out."""
    for m in modules.values():
        m.input_quantizer.reset()
        m.input_quantizer.set_mode("calibrate")
    forward_loop(model)
    named = [(n, m.input_quantizer.collector) for n, m in modules.items()]
    if reduce and distributed.active():
        distributed.reduce_collectors(named)
    return {
        n: modules[n].input_quantizer.load_calib_amax()
        for n, c in named
        if c is not None and c.stats.count
    }


def equalize_depthwise(
    model: nn.Module,
    forward_loop: Callable[[nn.Module], object],
    ranges: ChannelRanges | None = None,
    gate_samples: int = DEFAULT_GATE_SAMPLES,
    headroom: float | None = None,
    reduce: bool = True,
) -> DepthwiseSummary:
    """Equalize the calibrated depthwise convs of ``model`` in place where the gate says so, and
    recalibrate their input quantizers. Call it after calibration (`load_amax`) and before
    `bias_correct`; previous scales are undone and chosen afresh.

    ``ranges``: channel ranges collected during calibration (None: one more pass of
    ``forward_loop`` collects them). ``gate_samples``: at most this many samples decide the
    headroom (0: no gate, DEFAULT_HEADROOM). ``headroom``: this h for every layer, no gate.
    ``reduce``: across torch.distributed ranks when a group is active."""
    from int8kit.torch.quantize import quantizers

    t0 = time.perf_counter()
    summary = DepthwiseSummary()
    layers = dict(depthwise_layers(model))
    before = {n for n, m in layers.items() if INPUT_INV_SCALE in m._buffers}
    for m in layers.values():
        set_input_scale(m, None)  # the gate reads the module's own weights
    saved = [(q, q.mode) for _, q in quantizers(model)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for q, _ in saved:
                q.set_mode("off")  # every pass here sees the FP32 model
            if ranges is None:
                with ChannelRanges(model, max(gate_samples, 0)) as ranges:
                    forward_loop(model)
            _choose(model, forward_loop, layers, ranges, gate_samples, headroom, reduce, summary)
            redo = {
                n: m
                for n, m in layers.items()
                if (n in before or n in summary.equalized) and m.input_quantizer.enabled
            }
            if redo:
                amax = _recollect(model, forward_loop, redo, reduce)
                lost = set(redo) - set(amax)
                for n in lost:
                    set_input_scale(redo[n], None)
                    summary.equalized.pop(n, None)
                    summary.skipped[n] = "forward_loop ran no batch for its new range"
                if lost:
                    warnings.warn(
                        "depthwise equalization: forward_loop ran no batch the last time (does "
                        "it iterate a one-shot generator?); those layers keep one range",
                        stacklevel=2,
                    )
    finally:
        for q, mode in saved:
            q.set_mode(mode)
        model.train(was_training)
    summary.seconds = time.perf_counter() - t0
    object.__setattr__(model, SUMMARY_ATTR, asdict(summary))
    return summary


def _choose(model, forward_loop, layers, ranges, gate_samples, headroom, reduce, summary):
    """Run the gate and set the scales of the layers it picks (`decide`)."""
    from int8kit.torch.bias import _rank_offset

    todo = {}
    for n, m in layers.items():
        why = _skip_reason(m)
        if why is None:
            todo[n] = m
        else:
            summary.skipped[n] = why
    offset, total = _rank_offset(ranges.samples) if reduce else (0, ranges.samples)
    estimate = None
    if headroom is None:
        estimate = gate_split(total, min(gate_samples, ranges.keep))
    held = total - estimate if estimate is not None else 0
    summary.gate_samples = held
    gates: dict[str, Gate] = {}
    sync = reduce and distributed.active()
    for n, m in todo.items():
        est, every = ranges.amax(n, m.groups, held, offset)
        seen = torch.tensor([float(n in ranges.head)])
        if sync:
            flat = _reduce(torch.cat([seen, est, every]), torch.distributed.ReduceOp.MAX)
            seen, est, every = flat[:1], flat[1 : 1 + m.groups], flat[1 + m.groups :]
        g = Gate(_weight_energy(m))
        if float(seen[0]):
            g.amax_all = every.numpy().astype(np.float32)
            if estimate is not None:
                g.add_estimate(est.numpy().astype(np.float32))
        gates[n] = g
    gated = {n: g for n, g in gates.items() if g.amax is not None}
    if estimate is not None and gated:
        if held > offset:  # this rank holds some of the held-out samples
            modules = {n: todo[n] for n in gated}
            _held_out_pass(model, forward_loop, gated, modules, held, offset)
        if sync:
            for g in gated.values():
                keys = list(g.candidates())
                mine = [float(bool(g.errors))] + [(g.errors or {}).get(k, 0.0) for k in keys]
                flat = _reduce(
                    torch.tensor(mine, dtype=torch.float64), torch.distributed.ReduceOp.SUM
                )
                g.errors = dict(zip(keys, flat[1:].tolist(), strict=True)) if flat[0] else None
    for n, m in todo.items():
        s, d = decide(gates[n], m.groups, estimate is not None, headroom)
        if s is None:
            summary.skipped[n] = d
            continue
        set_input_scale(m, torch.from_numpy(s))
        summary.equalized[n] = {**d, "where": "input x 1/s in the module (Mul before its Q/DQ)"}


def summary_of(model: nn.Module) -> dict:
    """The last `equalize_depthwise` record of ``model`` (empty when it was not run)."""
    return dict(getattr(model, SUMMARY_ATTR, {}))
