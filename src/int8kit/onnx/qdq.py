"""Insert QuantizeLinear/DequantizeLinear pairs into an FP32 ONNX model, as a placement says.

Activations: one Q->DQ pair per tensor (per-tensor scale = amax/127, int8 zero point 0), shared by
every edge the placement names. Weights: stored as int8 with a per-channel DequantizeLinear
(scale = max|w|/127 along the output-channel axis), the form TensorRT and ONNX Runtime both load.
Biases stay float. The input model object is copied, never modified.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from int8kit._deps import require
from int8kit.calib.collector import safe_amax
from int8kit.calib.methods import weight_amax
from int8kit.onnx.model_io import FreshNames, drop_unused_initializers
from int8kit.onnx.placement import Placement

MIN_OPSET = 13  # per-axis DequantizeLinear

# Names ONNX Runtime's optimizer gives the initializers it adds (MatMulAddFusion's Reshape shapes,
# Squeeze axes, ...), made unique among node names only (Graph::GenerateNodeName). A model saved
# after ORT optimized it carries them; once Q/DQ opens a fusion ORT skipped before (the Q/K/V
# projections behind a LayerNorm), ORT generates the same name again and refuses the model:
# "AddInitializedOrtValue Attempt to replace the existing tensor". The writer renames them.
ORT_GENERATED = re.compile(
    r"^(gemm_input_shape|gemm_output_shape|SqueezeAxesInitializer|ConstAsInitializer|"
    r"squeeze_axes|fused_Split)(_token_\d+)?$"
)


@dataclass
class QDQSummary:
    activations: int = 0
    weights: int = 0
    skipped_without_range: list[str] | None = None


def _ensure_opset(model):
    require("onnx")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset >= MIN_OPSET:
        return model
    from onnx import version_converter

    if not opset:
        return model
    return version_converter.convert_version(model, MIN_OPSET)


def quantize_weight(w: np.ndarray, axis: int, qmax: int = 127) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel symmetric int8 of a weight: (int8 values, float32 scales along ``axis``),
    scale = max|w| of the channel / 127 — what TensorRT reads from the weight's DequantizeLinear.
    ``qmax`` 64: 7-bit weights ("reduce range", onnx/targets.py), scale max|w| / 64."""
    w = np.asarray(w, np.float32)
    axis = axis % w.ndim
    scales = np.array([safe_amax(a) for a in weight_amax(w, axis)], np.float32) / np.float32(qmax)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.round(w / scales.reshape(shape)), -qmax, qmax).astype(np.int8)
    return q, scales


def dequantized_weight(
    w: np.ndarray, axis: int, rounded: np.ndarray | None = None, qmax: int = 127
) -> np.ndarray:
    """The float weight the Q/DQ model computes with: quantize_weight's int8 (or ``rounded``,
    int8 values rounded otherwise, e.g. by AdaRound) times its scales."""
    q, scales = quantize_weight(w, axis, qmax)
    q = q if rounded is None else _checked_rounding(rounded, q)
    shape = [1] * q.ndim
    shape[axis % q.ndim] = -1
    return q.astype(np.float32) * scales.reshape(shape)


def _checked_rounding(rounded: np.ndarray, q: np.ndarray) -> np.ndarray:
    rounded = np.asarray(rounded)
    if rounded.shape != q.shape or rounded.dtype != np.int8:
        raise ValueError(f"pre-rounded weight {rounded.shape} {rounded.dtype} for int8 {q.shape}")
    return rounded


def insert_qdq(
    model,
    placement: Placement,
    amax: dict[str, float],
    rounded: dict[str, np.ndarray] | None = None,
    copy: bool = True,
):
    """Return a copy of ``model`` with Q/DQ inserted; tensors without an amax are left float.
    ``rounded``: {weight initializer: int8 values} written instead of round-to-nearest (same
    per-channel scales as ``quantize_weight``; onnx/adaround.py). ``copy=False``: ``model``
    itself is rewritten (a model the caller no longer needs: no copy of its weights)."""
    onnx = require("onnx", "writing Q/DQ models")
    from onnx import helper, numpy_helper

    out = model
    if copy:
        out = onnx.ModelProto()
        out.CopyFrom(model)
    out = _ensure_opset(out)
    graph = out.graph
    summary = QDQSummary(skipped_without_range=[])
    inits = {i.name: i for i in graph.initializer}
    new_inits: list = []
    fresh = FreshNames(graph)  # new names never collide with the model's own
    qdq_after: dict[str, list] = {}  # producer tensor -> Q/DQ nodes to place after it
    rewire: dict[tuple[str, int], str] = {}

    for tensor, edges in placement.activations.items():
        if tensor not in amax:
            summary.skipped_without_range.append(tensor)
            continue
        scale, zero_point = activation_qparams(amax[tensor])
        s_name, z_name = fresh(f"{tensor}_scale"), fresh(f"{tensor}_zero_point")
        q_name, dq_name = fresh(f"{tensor}_quantized"), fresh(f"{tensor}_dequantized")
        new_inits.append(numpy_helper.from_array(np.array(scale, np.float32), s_name))
        new_inits.append(numpy_helper.from_array(zero_point, z_name))
        qdq_after[tensor] = [
            helper.make_node(
                "QuantizeLinear",
                [tensor, s_name, z_name],
                [q_name],
                name=fresh(f"{tensor}_QuantizeLinear"),
            ),
            helper.make_node(
                "DequantizeLinear",
                [q_name, s_name, z_name],
                [dq_name],
                name=fresh(f"{tensor}_DequantizeLinear"),
            ),
        ]
        for edge in edges:
            rewire[edge] = dq_name
        summary.activations += 1

    weight_nodes: list = []
    done: dict[tuple[str, int], str] = {}
    for edge, wq in placement.weights.items():
        key = (wq.initializer, wq.axis)
        if key not in done:
            w = numpy_helper.to_array(inits[wq.initializer]).astype(np.float32)
            axis = wq.axis % w.ndim
            q, scales = quantize_weight(w, axis, getattr(wq, "qmax", 127))
            if rounded and wq.initializer in rounded:
                q = _checked_rounding(rounded[wq.initializer], q)
            base = f"{wq.initializer}_axis{axis}" if wq.axis != 0 else wq.initializer
            names = [fresh(f"{base}_{s}") for s in ("quantized", "scale", "zero_point")]
            new_inits += [
                numpy_helper.from_array(q, names[0]),
                numpy_helper.from_array(scales, names[1]),
                numpy_helper.from_array(np.zeros(scales.shape, np.int8), names[2]),
            ]
            done[key] = fresh(f"{base}_dequantized")
            weight_nodes.append(
                helper.make_node(
                    "DequantizeLinear",
                    names,
                    [done[key]],
                    name=fresh(f"{base}_DequantizeLinear"),
                    axis=axis,
                )
            )
            summary.weights += 1
        rewire[edge] = done[key]

    nodes = list(graph.node)
    for node in nodes:
        for i in range(len(node.input)):
            if (node.name, i) in rewire:
                node.input[i] = rewire[(node.name, i)]
    ordered = list(weight_nodes)
    graph_inputs = [i.name for i in graph.input]
    for name in graph_inputs:
        ordered += qdq_after.pop(name, [])
    for node in nodes:
        ordered.append(node)
        for o in node.output:
            ordered += qdq_after.pop(o, [])
    del graph.node[:]
    graph.node.extend(ordered)

    # Drop float weights that no node reads any more.
    drop_unused_initializers(graph)
    graph.initializer.extend(new_inits)
    _rename_ort_generated(graph, fresh)
    return out, summary


def activation_qparams(value) -> tuple[np.ndarray, np.ndarray]:
    """(float32 scale, zero point) of an activation: ``value`` an amax (int8, symmetric, scale
    amax/127, zero point 0) or an onnx.targets.ActQuant (uint8 with its zero point)."""
    if isinstance(value, (int, float, np.floating)):
        return np.array(safe_amax(float(value)) / 127.0, np.float32), np.array(0, np.int8)
    return np.array(value.scale, np.float32), np.array(value.zero_point, np.uint8)


def _rename_ort_generated(graph, fresh: FreshNames) -> None:
    """Give initializers named as ONNX Runtime names its own (ORT_GENERATED) another name."""
    inputs = {i.name for i in graph.input}
    renamed = {}
    for init in graph.initializer:
        if ORT_GENERATED.match(init.name) and init.name not in inputs:
            new = fresh(f"int8kit_{init.name}")
            renamed[init.name] = new
            init.name = new
    if not renamed:
        return
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name in renamed:
                node.input[k] = renamed[name]
