"""The whole PyTorch path in one call (what `int8kit torch quantize` runs): load weights safely,
calibrate, optionally fine-tune with distillation, export Q/DQ ONNX and its side files."""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Iterable

import torch
from torch import nn

from int8kit.errors import ModelError
from int8kit.fileio import write_json
from int8kit.torch import bias, center, distributed, dwequalize, stem
from int8kit.torch.config import QuantConfig
from int8kit.torch.export import export_onnx, output_paths
from int8kit.torch.qat import finetune, prepare_qat
from int8kit.torch.quantize import (
    SAMPLES_ATTR,
    get_config,
    get_recipe,
    quantize,
    quantizers,
    set_mode,
)


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a state dict with ``torch.load(weights_only=True)``: tensors and plain containers
    only, so a file that pickles arbitrary objects (code) is refused, never run."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise ModelError(f"weights file {path} does not exist") from exc
    except Exception as exc:  # UnpicklingError and friends: not a plain state dict
        raise ModelError(
            f"{path} is not a plain state dict that torch.load(weights_only=True) accepts "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); save it with "
            "torch.save(model.state_dict(), path)"
        ) from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ModelError(f"{path} holds a {type(state).__name__}, not a state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(f"{path} does not fit the model: {exc}") from exc
    return model


def quantize_to_onnx(
    model: nn.Module,
    batches: Callable[[], Iterable[torch.Tensor]],
    example_input: torch.Tensor,
    output: str | os.PathLike,
    config: QuantConfig | None = None,
    qat_epochs: int = 0,
    lr: float = 1e-5,
    opset: int = 17,
    holdout: Callable[[], Iterable[torch.Tensor]] | None = None,
    task: str = "auto",
) -> dict:
    """Calibrate ``model`` on ``batches()`` (with the config's float stem, depthwise
    equalization, centred one-sided inputs and bias correction);
    with ``qat_epochs`` fold BN and fine-tune by distillation from the FP32 model over the same
    batches; export. With ``holdout`` (batches kept out of calibration), measure the exported
    Q/DQ model against the FP32 export on them, as `int8kit quantize` does
    (`int8kit.workflow.fidelity`: unfused Q/DQ "as TensorRT computes" and ONNX Runtime's
    integer kernels). Returns a summary that is also written next to the outputs as
    ``<stem>.torch.json``. Batches go to the model's device.

    Under torch.distributed (torchrun) each rank passes its own shard as ``batches``: the
    calibration statistics are reduced across ranks, QAT runs in DistributedDataParallel with
    the same number of steps on every rank (the smallest shard's), and rank 0 writes the files
    and measures the held-out fidelity.
    """
    t_start = time.perf_counter()
    config = config or QuantConfig()
    model.eval()
    device = next(model.parameters()).device
    teacher = copy.deepcopy(model) if qat_epochs else None
    t0 = time.perf_counter()
    quantize(model, config, forward_loop=lambda m: [m(x.to(device)) for x in batches()])
    summary: dict = {
        "config": get_config(model).to_dict(),  # "auto" resolved
        "recipe": get_recipe(model),
        "calibration_s": time.perf_counter() - t0,
        "calibration_samples": getattr(model, SAMPLES_ATTR, 0),
        "input_layers_float": stem.input_layers(model),
        "equalize_depthwise": dwequalize.summary_of(model),
        "center_one_sided": center.summary_of(model),
        "bias_correction": bias.summary_of(model),
        "quantizers": sum(1 for _ in quantizers(model)),
    }
    world = distributed.world_size()
    if world > 1:
        summary["world_size"] = world
    if qat_epochs:
        prepare_qat(model, fold_bn=True)
        data = list(batches()) if qat_epochs else []
        steps = qat_epochs * distributed.shard_sizes_min(len(data))
        student = model
        if world > 1:
            ids = [device.index] if device.type == "cuda" else None
            student = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        t0 = time.perf_counter()
        summary["qat"] = finetune(student, data, steps=steps, lr=lr, teacher=teacher)
        summary["qat"]["epochs"] = qat_epochs
        summary["qat_s"] = time.perf_counter() - t0
    set_mode(model, "quantize")
    example_input = example_input.to(device)
    summary["outputs"] = export_onnx(model, example_input, output, opset=opset)
    summary["input_shapes"] = {"input": list(example_input.shape)}
    if holdout is not None and distributed.is_main():
        summary["fidelity"], summary["holdout_samples"] = holdout_fidelity(
            summary["outputs"], holdout, task
        )
    summary["seconds"] = time.perf_counter() - t_start
    paths = output_paths(output)
    side = paths["ranges"].with_name(paths["ranges"].name.replace(".ranges.json", ".torch.json"))
    if distributed.is_main():
        write_json(side, summary)
    summary["outputs"]["summary"] = str(side)
    return summary


def holdout_fidelity(
    outputs: dict[str, str], holdout: Callable[[], Iterable[torch.Tensor]], task: str = "auto"
) -> tuple[dict, int]:
    """({backend: {output: metrics}}, samples) of the exported Q/DQ model vs the FP32 export
    (the torch model with quantizers off) on the ``holdout()`` batches."""
    from int8kit.onnx.model_io import load_model
    from int8kit.workflow import fidelity

    if "fp32" not in outputs:
        raise ValueError("held-out fidelity compares with the FP32 export: export with write_fp32")
    seen = [0]

    def feeds():
        for x in holdout():
            seen[0] += len(x)
            yield {"input": x.detach().cpu().numpy()}

    result = fidelity(load_model(outputs["fp32"]), load_model(outputs["onnx"]), feeds(), task=task)
    return result, seen[0]
