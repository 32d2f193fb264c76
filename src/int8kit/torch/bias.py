"""Bias correction for the PyTorch path, gated per layer like the ONNX path's.

For a Conv*/Linear with int8 weights the shift of output channel o is
delta[o] = E[y][o] - E[y_q][o]: y the layer's FP32 output, y_q its output with only its own
input and weight fake-quantized (the ONNX path's "local" statistics, `int8kit.onnx.bias`). Here
both are measured directly — the module's own forward runs a second time with its quantizers on —
so padding, groups, dilation and a subclass's own forward are all included. The correction is a
buffer (`modules.BIAS_SHIFT`) added to the bias in mode "quantize" only: with quantizers off the
model is still the FP32 model, and the exported Q/DQ model carries ``bias + shift``.

The gate is `int8kit.onnx.bias_safe`'s: shifts are estimated on the first calibration samples
and a layer's is kept only where it lowers the squared mean error of its output on the next
ones (`bias_safe.split_sizes`, `bias_safe.gate`; the exact rule and its proof are there). One
pass of ``forward_loop`` over at most 48 samples (32 estimate, 16 held out), stopped early.

Under torch.distributed the per-channel sums are all-reduced, and the samples are numbered as
one process that saw every rank's samples (rank 0's first) would number them, so every rank
keeps the same corrections as that process.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import asdict

import numpy as np
import torch
from torch import nn

from int8kit.onnx.bias import DEFAULT_MAX_SAMPLES
from int8kit.onnx.bias_safe import DEFAULT_GATE_SAMPLES, SafeBiasSummary, gate, split_sizes
from int8kit.torch.modules import BIAS_SHIFT, QuantWeightMixin
from int8kit.torch.stem import batch_size

SUMMARY_ATTR = "_int8kit_bias_correction"
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


class _Enough(Exception):
    """Raised by the model's pre-hook once every sample the correction needs was seen."""


def correctable(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every calibrated layer with an int8 weight."""
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, QuantWeightMixin)
        and m.weight_quantizer.enabled
        and m.input_quantizer.enabled
        and m.input_quantizer.has_amax
    ]


def _channel_axis(module: nn.Module) -> int:
    return 1 if isinstance(module, nn.modules.conv._ConvNd) else -1


def _rank_offset(num_samples: int | None) -> tuple[int, int | None]:
    """(index of this rank's first sample, samples of all ranks) in the numbering of one
    process that saw every rank's samples, rank 0's first; (0, num_samples) without a group."""
    from int8kit.torch import distributed

    if not distributed.active():
        return 0, num_samples
    counts: list = [None] * distributed.world_size()
    torch.distributed.all_gather_object(counts, num_samples)
    if any(c is None for c in counts):
        return 0, None
    return sum(counts[: distributed.rank()]), sum(counts)


def bias_correct(
    model: nn.Module,
    forward_loop: Callable[[nn.Module], object],
    num_samples: int | None = None,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    gate_samples: int = DEFAULT_GATE_SAMPLES,
    reduce: bool = True,
) -> SafeBiasSummary:
    """Set the bias shift of every calibrated Conv/Linear of ``model`` whose correction passes the
    held-out check (``gate_samples=0``: no check, every shift kept). ``forward_loop`` is the
    calibration loop; ``num_samples``: how many samples it runs (None: unknown, the defaults
    split). ``reduce``: all-reduce across torch.distributed ranks when a group is active."""
    t0 = time.perf_counter()
    layers = correctable(model)
    for _, m in layers:
        m._buffers.pop(BIAS_SHIFT, None)  # re-estimated from scratch
    offset, total_samples = _rank_offset(num_samples) if reduce else (0, num_samples)
    sizes = split_sizes(total_samples, max_samples, gate_samples)
    summary = SafeBiasSummary(estimate_samples=sizes[0])
    if not layers:
        return summary
    bounds = torch.tensor(np.cumsum(sizes), dtype=torch.int64)
    parts = len(sizes)
    state = {"start": offset, "n": 0, "busy": False}
    # name -> (parts + 1, output channels) float64 sums of y - y_q; the last row: ignored samples
    sums, counts = {}, {}
    for name, m in layers:
        w = m._parameters["weight"]
        channels = w.shape[1] * m.groups if isinstance(m, _TRANSPOSED) else w.shape[0]
        sums[name] = torch.zeros(parts + 1, channels, dtype=torch.float64, device=w.device)
        counts[name] = torch.zeros(parts + 1, dtype=torch.float64, device=w.device)

    def on_model(_module, args, kwargs):
        if state["busy"]:  # the model is itself a corrected layer, run again by on_layer
            return
        state["start"] += state["n"]
        state["n"] = batch_size(args, kwargs)
        if state["start"] >= int(bounds[-1]):
            raise _Enough

    def on_layer(module, args, kwargs, y):
        if state["busy"] or not isinstance(y, torch.Tensor):
            return
        wq, iq = module.weight_quantizer, module.input_quantizer
        wq.set_mode("quantize")
        iq.set_mode("quantize")
        state["busy"] = True
        try:
            yq = module(*args, **kwargs)
        finally:
            state["busy"] = False
            wq.set_mode("off")
            iq.set_mode("off")
        diff = (y - yq).movedim(_channel_axis(module), 1)
        channels = diff.shape[1]
        n = state["n"]
        if diff.shape[0] == n:  # one row per sample: samples split exactly between parts
            per_sample = diff.reshape(n, channels, -1).sum(-1, dtype=torch.float64)
            positions = diff[0, 0].numel()
        else:  # the call counts as its batch's first sample
            per_sample = diff.transpose(0, 1).reshape(channels, -1).sum(-1, dtype=torch.float64)
            per_sample, positions, n = per_sample[None], diff.numel() // channels, 1
        index = torch.arange(state["start"], state["start"] + n)
        part = torch.bucketize(index, bounds, right=True).clamp(max=parts).to(y.device)
        name = names[module]
        sums[name].index_add_(0, part, per_sample)
        counts[name].index_add_(
            0, part, torch.full((n,), float(positions), dtype=torch.float64, device=y.device)
        )

    from int8kit.torch.quantize import quantizers

    names = {m: n for n, m in layers}
    saved = [(q, q.mode) for _, q in quantizers(model)]
    for q, _ in saved:
        q.set_mode("off")
    was_training = model.training
    model.eval()
    handles = [model.register_forward_pre_hook(on_model, with_kwargs=True)]
    handles += [m.register_forward_hook(on_layer, with_kwargs=True) for m in names]
    try:
        with torch.no_grad():
            forward_loop(model)
    except _Enough:
        pass
    finally:
        for h in handles:
            h.remove()
        for q, mode in saved:
            q.set_mode(mode)
        model.train(was_training)
    if reduce:
        _all_reduce(sums, counts, [n for n, _ in layers])
    if not any(float(c[:parts].sum()) for c in counts.values()):
        warnings.warn(
            "bias correction saw no data: forward_loop ran no batch the second time (does it "
            "iterate a one-shot generator?); the biases are left as they are",
            stacklevel=3,
        )

    def means(p: int) -> dict[str, np.ndarray]:
        return {
            n: (sums[n][p] / counts[n][p]).cpu().numpy() for n in sums if float(counts[n][p]) > 0
        }

    estimate = means(0)
    held = means(1) if parts > 1 else {}
    summary.gate_samples = sizes[1] if held else 0
    keep = set(estimate)
    before = after = 0.0
    for name, ratio in gate(estimate, held).items():
        if ratio < 1.0:
            before += float(np.sum(held[name] ** 2))
            after += float(np.sum((held[name] - estimate[name]) ** 2))
        else:
            keep.discard(name)
            summary.dropped[name] = ratio
    modules = dict(layers)
    for name in (n for n, _ in layers if n in keep):
        m = modules[name]
        if m._parameters.get("bias") is None:
            summary.bias_added.append(name)
        w = m._parameters["weight"]
        m.register_buffer(
            BIAS_SHIFT, torch.as_tensor(estimate[name], dtype=w.dtype, device=w.device)
        )
        summary.corrected.append(name)
    shifts = [np.abs(estimate[n]) for n in summary.corrected]
    summary.mean_abs_shift = float(np.concatenate(shifts).mean()) if shifts else 0.0
    summary.kept_ratio = after / before if before > 0 else 1.0
    record = {**asdict(summary), "seconds": time.perf_counter() - t0}
    object.__setattr__(model, SUMMARY_ATTR, record)
    return summary


def _all_reduce(sums: dict, counts: dict, order: list[str]) -> None:
    """Sum every rank's per-channel sums (one collective)."""
    from int8kit.torch import distributed

    if not distributed.active():
        return
    flat = torch.cat([t.reshape(-1) for n in order for t in (sums[n], counts[n])])
    torch.distributed.all_reduce(flat)
    at = 0
    for n in order:
        for t in (sums[n], counts[n]):
            t.copy_(flat[at : at + t.numel()].view_as(t))
            at += t.numel()


def summary_of(model: nn.Module) -> dict:
    """The last `bias_correct` record of ``model`` (empty when it was not run)."""
    return dict(getattr(model, SUMMARY_ATTR, {}))
