"""Quantization-aware training: `prepare_qat` and a small distillation `finetune` helper."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from int8kit.torch import batchnorm
from int8kit.torch.quantize import quantizers, set_mode


def prepare_qat(
    model: nn.Module,
    fold_bn: bool = True,
    freeze_bn: bool = False,
    learn_amax: bool = False,
    example_input: torch.Tensor | None = None,
) -> nn.Module:
    """Ready a calibrated model for QAT, in place.

    fold_bn: fold each BatchNorm into the conv before it (the weights TensorRT quantizes after
        export); pairs come from the calibration pass or from one forward of ``example_input``.
    freeze_bn: keep the BatchNorms that are not folded on their running statistics.
    learn_amax: make every activation amax a trainable parameter (LSQ-style gradient).

    For DistributedDataParallel, call this on every rank before wrapping the model (it adds
    parameters, and DDP registers parameters when it wraps): learned amax are then parameters
    whose gradients DDP averages, other amax are buffers it broadcasts from rank 0, and the
    folded weights are the same on every rank (calibrated amax and BN statistics are).
    """
    if isinstance(model, nn.parallel.DistributedDataParallel):
        raise ValueError(
            "prepare_qat got a DistributedDataParallel model: call prepare_qat on the model "
            "first, then wrap it in DistributedDataParallel (it adds parameters)"
        )
    if fold_bn:
        if example_input is not None:
            pairs = batchnorm.find_conv_bn_pairs(model, example_input)
        else:
            pairs = getattr(model, batchnorm.PAIRS_ATTR, None)
            if pairs is None:
                raise ValueError(
                    "prepare_qat(fold_bn=True) needs the conv/BN pairs: calibrate with "
                    "int8kit.torch.quantize(..., forward_loop=...) first or pass example_input"
                )
        batchnorm.fold_bn(model, pairs)
        object.__setattr__(model, batchnorm.PAIRS_ATTR, [])
    if freeze_bn:
        batchnorm.freeze_bn(model)
    if learn_amax:
        for _, q in quantizers(model):
            if not q.is_weight:
                q.enable_learned_amax()
    set_mode(model, "quantize")
    return model


def _first_tensor(batch) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, dict):
        batch = next(iter(batch.values()))
    elif isinstance(batch, (list, tuple)):
        batch = batch[0]
    return torch.as_tensor(batch)


def _cycle(data: Iterable):
    """Iterate ``data`` again and again (without caching it like itertools.cycle)."""
    while True:
        n = 0
        for batch in data:
            n += 1
            yield batch
        if n == 0:
            raise ValueError(
                "finetune data yielded nothing (a one-shot iterator can only be read once: "
                "pass a list or a re-iterable loader)"
            )


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str, temperature: float):
    if kind == "mse":
        return F.mse_loss(student, teacher)
    if kind == "kl":
        t = temperature
        return F.kl_div(
            F.log_softmax(student / t, dim=-1),
            F.log_softmax(teacher / t, dim=-1),
            reduction="batchmean",
            log_target=True,
        ) * (t * t)
    raise ValueError(f"distillation loss {kind!r} is unknown; choose 'mse' or 'kl'")


def finetune(
    qmodel: nn.Module,
    data: Iterable,
    steps: int,
    lr: float = 1e-5,
    teacher: nn.Module | None = None,
    loss: str = "kl",
    temperature: float = 1.0,
    amax_lr: float | None = None,
) -> dict[str, float]:
    """Fine-tune a quantized model to match an FP32 teacher's outputs on unlabelled inputs.

    ``data`` yields input tensors (or tuples/dicts whose first item is the input); it is cycled
    until ``steps`` optimizer steps ran. ``qmodel`` may be wrapped in DistributedDataParallel
    (each rank passes its own shard and the same ``steps``). ``teacher`` defaults to a copy of ``qmodel`` with its
    quantizers off, taken before training (with BN folded it computes what the FP32 model does).
    The student runs in eval mode: BatchNorm keeps its running statistics and dropout is off,
    which suits a short fine-tune on few images. Adam; learned amax get ``amax_lr`` (default
    ``lr * 100``, they live on a larger scale than weights).
    Returns the mean loss of the first and last tenth of the steps.
    """
    if steps <= 0:
        return {"steps": 0, "loss_first": math.nan, "loss_last": math.nan}
    if teacher is None:
        # A DistributedDataParallel model: copy the module it wraps (the teacher needs no DDP).
        ddp = isinstance(qmodel, nn.parallel.DistributedDataParallel)
        teacher = copy.deepcopy(qmodel.module if ddp else qmodel)
        set_mode(teacher, "off")
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    device = next(qmodel.parameters()).device
    amax_params = [q.amax for _, q in quantizers(qmodel) if q.learn_amax]
    amax_ids = {id(p) for p in amax_params}
    weights = [p for p in qmodel.parameters() if p.requires_grad and id(p) not in amax_ids]
    groups = [{"params": weights, "lr": lr}]
    if amax_params:
        groups.append({"params": amax_params, "lr": amax_lr if amax_lr is not None else lr * 100})
    opt = torch.optim.Adam(groups)
    qmodel.eval()
    losses = []
    batches = _cycle([data] if isinstance(data, torch.Tensor) else data)
    for _ in range(steps):
        x = _first_tensor(next(batches)).to(device)
        with torch.no_grad():
            target = teacher(x)
        value = distill_loss(qmodel(x), target, loss, temperature)
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        if amax_params:
            with torch.no_grad():
                for p in amax_params:
                    p.clamp_(min=1e-6)
        losses.append(float(value.detach()))
    tenth = max(1, len(losses) // 10)
    return {
        "steps": steps,
        "loss_first": sum(losses[:tenth]) / tenth,
        "loss_last": sum(losses[-tenth:]) / tenth,
    }
