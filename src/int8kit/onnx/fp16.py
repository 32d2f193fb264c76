"""Convert what a Q/DQ model leaves in float to FP16 (``--high-precision fp16``).

Strongly typed TensorRT runs every float layer in the type the model gives it, so an INT8 model
whose float parts are FP32 runs them in FP32. This converter makes every float tensor FP16:
initializers, Constant/ConstantOfShape values, ``Cast(to=float)``, and the Q/DQ scales. With FP16
scales a DequantizeLinear outputs FP16 and a QuantizeLinear reads FP16 (opset 19 allows FP16
scales), so Q/DQ sits directly between FP16 layers with no Cast in between — the form TensorRT
fuses (Model Optimizer writes FP16 models the same way). The model is raised to opset 19 first
when it is older. Zero points stay int8.

The model's inputs and outputs keep their FP32 type by default (a Cast at each boundary), so the
caller feeds and reads what it did before; ``keep_io_types=False`` makes them FP16 too.
A few inputs must stay FP32 by the ONNX spec (Resize scales); ops without FP16 support
(``KEEP_FP32_OPS``) run in FP32 between Casts. FP32 values beyond the FP16 range are clipped to
±65504 and counted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from int8kit._deps import require
from int8kit.errors import ModelError

log = logging.getLogger(__name__)

FP16_QDQ_OPSET = 19
FP16_MAX = 65504.0
KEEP_FP32_OPS = {"NonMaxSuppression", "RoiAlign", "Range", "RandomNormal", "RandomUniform"}
KEEP_FP32_INPUTS = {"Resize": {1, 2}, "Upsample": {1}}  # roi, scales: tensor(float) only


@dataclass
class FP16Summary:
    initializers: int = 0
    constants: int = 0
    casts: int = 0
    boundary_casts: int = 0
    clipped_values: int = 0
    opset: int = 0
    kept_fp32: list[str] = field(default_factory=list)


def _opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _to_fp16(arr: np.ndarray, summary: FP16Summary) -> np.ndarray:
    arr = np.asarray(arr, np.float32)
    over = np.abs(arr) > FP16_MAX
    n = int(np.count_nonzero(over & np.isfinite(arr)))
    if n:
        summary.clipped_values += n
        arr = np.where(np.isfinite(arr), np.clip(arr, -FP16_MAX, FP16_MAX), arr)
    return arr.astype(np.float16)


def convert_to_fp16(model, keep_io_types: bool = True):
    """Return (FP16 copy of ``model``, FP16Summary). ``model`` (FP32, with or without Q/DQ) is
    not modified."""
    onnx = require("onnx", "FP16 conversion")
    from onnx import TensorProto, helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    summary = FP16Summary()
    g = out.graph
    if any(
        a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
        for n in g.node
        for a in n.attribute
    ):
        raise ModelError(
            "FP16 conversion does not handle control flow (If/Loop/Scan) yet; "
            "use --high-precision fp32 for this model"
        )
    if _opset(out) < FP16_QDQ_OPSET:
        from onnx import version_converter

        try:
            out = version_converter.convert_version(out, FP16_QDQ_OPSET)
        except Exception as exc:
            raise ModelError(
                f"cannot raise the model to opset {FP16_QDQ_OPSET} for FP16 Q/DQ scales ({exc}); "
                "use --high-precision fp32"
            ) from exc
        g = out.graph
    summary.opset = _opset(out)

    float_names = _float_tensors(out)
    keep32: set[str] = set()  # tensors that must stay FP32
    for node in g.node:
        for i in KEEP_FP32_INPUTS.get(node.op_type, ()):
            if i < len(node.input) and node.input[i]:
                keep32.add(node.input[i])

    inits = {i.name: i for i in g.initializer}
    for name, init in inits.items():
        if init.data_type == TensorProto.FLOAT and name not in keep32:
            init.CopyFrom(
                numpy_helper.from_array(_to_fp16(numpy_helper.to_array(init), summary), name)
            )
            summary.initializers += 1

    new_nodes = []
    for node in g.node:
        if node.op_type in KEEP_FP32_OPS:
            new_nodes += _wrap_fp32(node, float_names, summary)
            continue
        if node.op_type == "Cast":
            to = next(a for a in node.attribute if a.name == "to")
            if to.i == TensorProto.FLOAT and node.output[0] not in keep32:
                to.i = TensorProto.FLOAT16
                summary.casts += 1
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == TensorProto.FLOAT:
                if node.output and node.output[0] in keep32:
                    continue
                a.t.CopyFrom(
                    numpy_helper.from_array(_to_fp16(numpy_helper.to_array(a.t), summary), a.t.name)
                )
                summary.constants += 1
        if node.op_type == "ConstantOfShape" and not node.attribute:
            node.attribute.append(
                helper.make_attribute("value", numpy_helper.from_array(np.zeros(1, np.float16)))
            )
        if node.op_type in ("EyeLike", "RandomNormalLike", "RandomUniformLike"):
            for a in node.attribute:
                if a.name == "dtype" and a.i == TensorProto.FLOAT:
                    a.i = TensorProto.FLOAT16
        new_nodes.append(node)
    # keep32 inputs produced by a node in the graph (not initializers) need a Cast back to FP32
    new_nodes = _cast_kept_inputs(new_nodes, keep32 - set(inits), summary)
    del g.node[:]
    g.node.extend(new_nodes)
    _boundaries(g, keep_io_types, summary)
    del g.value_info[:]
    if summary.clipped_values:
        log.warning(
            "FP16 conversion clipped %d constant values beyond ±%g",
            summary.clipped_values,
            FP16_MAX,
        )
    return out, summary


def _float_tensors(model) -> set[str]:
    """Names of FP32 tensors (by shape inference, graph inputs/outputs and initializers)."""
    onnx = require("onnx")
    from onnx import TensorProto

    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception as exc:
        log.debug("shape inference failed: %s", exc)
        inferred = model
    g = inferred.graph
    names = {
        vi.name
        for vi in list(g.value_info) + list(g.input) + list(g.output)
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT
    }
    return names | {i.name for i in g.initializer if i.data_type == TensorProto.FLOAT}


def _cast(src: str, dst: str, to: int, name: str):
    from onnx import helper

    return helper.make_node("Cast", [src], [dst], name=name, to=to)


def _wrap_fp32(node, float_names: set[str], summary: FP16Summary) -> list:
    """Run ``node`` in FP32: Cast its float inputs up and its float outputs down."""
    from onnx import TensorProto

    before, after = [], []
    for i, name in enumerate(node.input):
        if name and name in float_names:
            up = f"{name}__fp32_for_{node.name}"
            before.append(_cast(name, up, TensorProto.FLOAT, f"{node.name}_in{i}_to_fp32"))
            node.input[i] = up
    for i, name in enumerate(node.output):
        if name and name in float_names:
            raw = f"{name}__fp32"
            after.append(_cast(raw, name, TensorProto.FLOAT16, f"{node.name}_out{i}_to_fp16"))
            node.output[i] = raw
    summary.kept_fp32.append(node.name)
    return before + [node] + after


def _cast_kept_inputs(nodes: list, names: set[str], summary: FP16Summary) -> list:
    from onnx import TensorProto

    if not names:
        return nodes
    out = []
    for node in nodes:
        for i, name in enumerate(node.input):
            if name in names and i in KEEP_FP32_INPUTS.get(node.op_type, ()):
                up = f"{name}__fp32"
                out.append(_cast(name, up, TensorProto.FLOAT, f"{node.name}_in{i}_to_fp32"))
                node.input[i] = up
                summary.casts += 1
        out.append(node)
    return out


def _boundaries(g, keep_io_types: bool, summary: FP16Summary) -> None:
    """FP32 graph inputs/outputs: Cast at the boundary (keep_io_types) or retype to FP16."""
    from onnx import TensorProto

    first, last = [], []
    edges = [(vi, False) for vi in g.input] + [(vi, True) for vi in g.output]
    for vi, is_output in edges:
        if vi.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        if not keep_io_types:
            vi.type.tensor_type.elem_type = TensorProto.FLOAT16
            continue
        half = f"{vi.name}__fp16"
        for node in g.node:  # an output's producer writes the FP16 tensor instead
            for names in (node.input, node.output) if is_output else (node.input,):
                for i, name in enumerate(names):
                    if name == vi.name:
                        names[i] = half
        if is_output:
            last.append(_cast(half, vi.name, TensorProto.FLOAT, f"{vi.name}_to_fp32"))
        else:
            first.append(_cast(vi.name, half, TensorProto.FLOAT16, f"{vi.name}_to_fp16"))
        summary.boundary_casts += 1
    nodes = first + list(g.node) + last
    del g.node[:]
    g.node.extend(nodes)
