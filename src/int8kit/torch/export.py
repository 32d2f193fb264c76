"""Export a quantized model: Q/DQ ONNX, ranges JSON and a TensorRT calibration cache.

The Q/DQ model comes from the TorchScript exporter (``dynamo=False``): each quantizer is one
autograd Function whose ``symbolic`` writes QuantizeLinear + DequantizeLinear (int8 zero point 0,
scale = amax / 127, weights per channel with ``axis``). Scales are constants: weight amax is read
from a buffer set just before export, activation amax is a buffer (or learned parameter).

Beside ``model.int8.onnx`` go ``model.ranges.json`` (amax per quantizer) and
``model.calib.cache`` for ``model.fp32.onnx`` (the same model exported with quantizers off), for
TensorRT's implicit INT8 path. Limits of the cache: it names only the tensors that feed a
quantizer (the inputs of convs, linears, pools, QuantAdd identities), found by matching the
input of each QuantizeLinear in the Q/DQ export to a tensor of the FP32 export (both exports
name tensors by module scope, so they agree for ordinary models); TensorRT runs layers whose
tensors have no scale in higher precision. For a full cache, calibrate ``model.fp32.onnx`` with
the ONNX path (`int8kit calibrate`).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from int8kit._deps import require
from int8kit.calib.cache import CalibrationCache
from int8kit.fileio import atomic_path, write_json
from int8kit.torch import bias, distributed, stem
from int8kit.torch.center import shifts
from int8kit.torch.quantize import get_config, get_recipe, quantizers, set_mode


def output_paths(path: str | os.PathLike) -> dict[str, Path]:
    """``x.int8.onnx`` -> x.ranges.json, x.calib.cache, x.fp32.onnx (same folder)."""
    path = Path(path)
    stem = path.name
    for suffix in (".onnx", ".int8"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    return {
        "onnx": path,
        "ranges": path.with_name(f"{stem}.ranges.json"),
        "cache": path.with_name(f"{stem}.calib.cache"),
        "fp32": path.with_name(f"{stem}.fp32.onnx"),
    }


@contextlib.contextmanager
def _modes_saved(model: nn.Module):
    saved = [(q, q.mode) for _, q in quantizers(model)]
    was_training = model.training
    try:
        yield
    finally:
        for q, mode in saved:
            q.set_mode(mode)
        model.train(was_training)


def _export(model, example_input, path: Path, opset: int, dynamic_batch: bool) -> None:
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    input_names = ["input"] if len(inputs) == 1 else [f"input_{i}" for i in range(len(inputs))]
    dynamic_axes = None
    if dynamic_batch:
        dynamic_axes = {n: {0: "batch"} for n in [*input_names, "output"]}
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding")
        torch.onnx.export(
            model,
            inputs,
            str(tmp),
            dynamo=False,
            opset_version=opset,
            input_names=input_names,
            output_names=["output"],
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )
        onnx = require("onnx", "ONNX export")
        onnx_model = onnx.load(str(tmp))
        changed = _bypass_constant_identities(onnx_model)
        changed += _fold_constants(onnx_model, list(shifts(model)), opset)
        if changed:
            onnx.save(onnx_model, str(tmp))


def _bypass_constant_identities(model) -> int:
    """The exporter deduplicates equal initializers through Identity nodes; point their
    consumers at the initializer so every Q/DQ scale is a plain constant (TensorRT wants that)."""
    inits = {i.name for i in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    alias = {}
    keep = []
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in inits and node.output[0] not in outputs:
            alias[node.output[0]] = node.input[0]
        else:
            keep.append(node)
    if not alias:
        return 0
    for node in keep:
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = alias[name]
    del model.graph.node[:]
    model.graph.node.extend(keep)
    return len(alias)


def _fold_constants(model, scopes: list[str], opset: int) -> int:
    """Replace the nodes of the modules ``scopes`` whose inputs are all constants by
    initializers (Q/DQ nodes excepted): a centred layer's c x weight sums, which the exporter
    leaves as Flatten/ReduceSum/Mul/Add on the weight, become part of its bias constant (TensorRT
    wants a constant bias). Returns the number of nodes folded."""
    if not scopes:
        return 0
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    scopes = set(scopes)
    const = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    keep, folded, read = [], [], set()
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            const[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif (
            _scope(node) in scopes
            and node.op_type not in ("QuantizeLinear", "DequantizeLinear")
            and node.input
            and all(i in const for i in node.input if i)
        ):
            run = ReferenceEvaluator(node, opsets={"": opset})
            values = run.run(None, {i: const[i] for i in node.input if i})
            for name, value in zip(node.output, values, strict=True):
                const[name] = value
                graph.initializer.append(numpy_helper.from_array(value, name))
            folded.append(node)
            read.update(node.input)
            continue
        keep.append(node)
    if not folded:
        return 0
    used = {i for n in keep for i in n.input} | {o.name for o in graph.output}
    keep = [n for n in keep if n.op_type != "Constant" or n.output[0] in used]
    del graph.node[:]
    graph.node.extend(keep)
    unused = [i for i in graph.initializer if i.name in read and i.name not in used]
    for init in unused:
        graph.initializer.remove(init)
    return len(folded)


def _scope(node) -> str:
    """The name of the module whose forward made ``node``: TorchScript export names nodes
    "/<module path with />/<Op>[_k]"."""
    return node.name.rsplit("/", 1)[0].strip("/").replace("/", ".")


def _quantizer_tensor_names(onnx_model) -> dict[str, str]:
    """{quantizer module name: name of the tensor its QuantizeLinear reads}, from node scopes."""
    names = {}
    for node in onnx_model.graph.node:
        if node.op_type == "QuantizeLinear":
            names[_scope(node)] = node.input[0]
    return names


def export_onnx(
    qmodel: nn.Module,
    example_input: torch.Tensor | tuple[torch.Tensor, ...],
    path: str | os.PathLike,
    opset: int = 17,
    dynamic_batch: bool = True,
    write_fp32: bool = True,
) -> dict[str, str]:
    """Write the Q/DQ ONNX at ``path`` (atomically), its ranges JSON and, with ``write_fp32``,
    the FP32 ONNX and its TensorRT calibration cache. Returns {kind: path} of what was written.

    Under torch.distributed only rank 0 writes (the others return the same paths and write
    nothing; no collective, so calling it on rank 0 alone is fine too). A model wrapped in
    DistributedDataParallel is exported as its ``.module``.
    """
    onnx = require("onnx", "ONNX export")
    if opset < 13:
        raise ValueError(f"opset {opset} is too old: per-channel Q/DQ needs opset >= 13")
    qmodel = getattr(qmodel, "module", qmodel) if _is_ddp(qmodel) else qmodel
    paths = output_paths(path)
    if not distributed.is_main():
        kinds = ["onnx", "ranges"] + (["fp32", "cache"] if write_fp32 else [])
        return {k: str(paths[k]) for k in kinds}
    active = list(quantizers(qmodel))
    missing = [n for n, q in active if not q.is_weight and not q.has_amax]
    if missing:
        raise RuntimeError(
            f"{len(missing)} quantizers have no amax (first: {missing[0]}); calibrate first"
        )
    with _modes_saved(qmodel), torch.no_grad():
        qmodel.eval()
        _refresh_weight_amax(qmodel)
        set_mode(qmodel, "quantize")
        _export(qmodel, example_input, paths["onnx"], opset, dynamic_batch)
        written = {"onnx": str(paths["onnx"])}
        qdq = onnx.load(str(paths["onnx"]))
        tensor_of = _quantizer_tensor_names(qdq)
        fp32_names: set[str] = set()
        if write_fp32:
            set_mode(qmodel, "off")
            _export(qmodel, example_input, paths["fp32"], opset, dynamic_batch)
            written["fp32"] = str(paths["fp32"])
            fp32 = onnx.load(str(paths["fp32"]))
            fp32_names = {i.name for i in fp32.graph.input}
            fp32_names |= {o for n in fp32.graph.node for o in n.output}

    config = get_config(qmodel)
    shift_of = {
        f"{n}.input_quantizer" if n else "input_quantizer": c for n, c in shifts(qmodel).items()
    }
    ranges: dict[str, dict] = {}
    scales: dict[str, float] = {}
    for name, q in active:
        if q.is_weight:
            continue
        amax = float(q.amax.detach())
        tensor = tensor_of.get(name)
        entry = {"amax": amax, "scale": amax / 127.0, "method": q.method, "onnx_tensor": tensor}
        if name in shift_of:  # it reads x - shift (onnx_tensor: the Sub's output); stats are x's
            entry["method"] = f"{q.method}+centered"
            entry["shift"] = shift_of[name]
        if q.collector is not None and q.collector.stats.count:
            entry["stats"] = q.collector.stats.to_dict()
        ranges[name] = entry
        if tensor is not None and tensor in fp32_names:
            scales.setdefault(tensor, amax / 127.0)
    doc = {
        "format": "int8kit.ranges/1",
        "source": "torch",
        "config": config.to_dict() if config else None,
        "recipe": get_recipe(qmodel),  # what method "auto" resolved to (empty: given explicitly)
        "input_layers_float": stem.input_layers(qmodel),
        "bias_correction": bias.summary_of(qmodel),
        "tensors": ranges,
        "weights": {
            n: {"axis": q.axis, "channels": int(q.amax.numel())} for n, q in active if q.is_weight
        },
    }
    write_json(paths["ranges"], doc)
    written["ranges"] = str(paths["ranges"])
    if write_fp32:
        # Always the EntropyCalibration2 header: it is the one trtexec reads; the scales are
        # whatever method the config chose (ranges.json says which).
        CalibrationCache(scales=scales).write(paths["cache"])
        written["cache"] = str(paths["cache"])
    return written


def _is_ddp(model: nn.Module) -> bool:
    return isinstance(model, nn.parallel.DistributedDataParallel)


def _refresh_weight_amax(model: nn.Module) -> None:
    """Set every weight quantizer's amax buffer to max |w| of its module's current weight."""
    for _, module in model.named_modules():
        wq = getattr(module, "weight_quantizer", None)
        if (
            wq is not None
            and wq.enabled
            and isinstance(module._parameters.get("weight"), torch.Tensor)
        ):
            wq.set_amax(wq.weight_amax(module._parameters["weight"]))
