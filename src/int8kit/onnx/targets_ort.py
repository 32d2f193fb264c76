"""The ort-cpu target's placement and last rewrites (rules: onnx/targets.py, ORT_*).

``plan_ort`` puts a Q/DQ where ONNX Runtime's Q/DQ selectors turn the group into an integer
kernel: on the inputs of every Conv/MatMul/Gemm and on their outputs (after a fused Relu/Clip),
so the output stays uint8; chain ops (Add, Mul, Concat, pools, Sigmoid, LeakyRelu) stay in int8
when every input already is int8 or is quantized anyway in front of an integer layer;
pass-through ops (Reshape, MaxPool, Resize, ...) share their input's parameters; a Conv that
ORT's fast integer kernels do not take stays float where it can. ``quantize_biases`` stores the
biases of those layers as int32, which the selectors require. ``integer_ops`` reads what ONNX
Runtime made of a model (its optimised graph). The FP32 rewrites before all this (BatchNorm,
Pad, bias Add folding) are in targets_ort_prepare.py.
"""

from __future__ import annotations

import re
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from int8kit.errors import ModelError
from int8kit.onnx import rules as R
from int8kit.onnx.model_io import drop_unused_initializers
from int8kit.onnx.placement import (
    GraphIndex,
    Placement,
    PlacementConfig,
    WeightQ,
    _attrs,
    input_layers,
    mask_path,
)
from int8kit.onnx.targets import (
    ORT_CHAIN,
    ORT_COMPUTE,
    ORT_FLOAT_EPILOGUE,
    ORT_FUSED_EPILOGUE,
    ORT_PASS,
)

# What ONNX Runtime's optimised graph holds where a Q/DQ group became an integer kernel.
INTEGER_OPS = (
    "QLinearConv",
    "QLinearMatMul",
    "MatMulIntegerToFloat",
    "QGemm",
    "ConvInteger",
    "MatMulInteger",
    "QLinearAdd",
    "QLinearMul",
    "QLinearConcat",
    "QLinearSigmoid",
    "QLinearLeakyRelu",
    "QLinearAveragePool",
    "QLinearGlobalAveragePool",
    "QLinearSoftmax",
)
FLOAT_COMPUTE = ("Conv", "FusedConv", "MatMul", "FusedMatMul", "Gemm", "ConvTranspose")


def _epilogue(index: GraphIndex, tensor: str) -> str:
    """The tensor the Q of a fused node goes after: past a Relu/Clip that is ``tensor``'s only
    reader and that ONNX Runtime drops (constant bounds, not a graph output)."""
    readers = index.consumers.get(tensor, [])
    if len(readers) != 1 or tensor in index.outputs:
        return tensor
    node, _ = readers[0]
    if node.op_type not in ORT_FUSED_EPILOGUE or node.output[0] in index.outputs:
        return tensor
    if any(i and not index.is_constant(i) for i in node.input[1:]):
        return tensor
    return node.output[0]


def _slow_integer_conv(index: GraphIndex, node) -> str | None:
    """Why ONNX Runtime's QLinearConv would run ``node`` off its fast kernels, else None.

    A depthwise Conv runs on MLAS's symmetric depthwise kernel only when its channel count is a
    multiple of 16 (MlasConvSymPackWSize in onnxruntime/core/mlas/lib/convsym.cpp); otherwise
    it falls back to MlasConvDepthwise, slower than ORT's float NCHWc depthwise Conv (RetinaFace's
    8-channel 3x3 at 160x160: 868 us vs 366 us). Dense Convs off the fast kernels (fewer than 16
    output channels) stay int8: keeping U2-Net-p's 64 -> 1 side outputs float cost more in DQs
    than their generic int8 GEMM did (1.49x vs 1.63x FP32)."""
    w = index.initializers.get(node.input[1]) if len(node.input) > 1 else None
    if w is None or len(w.dims) < 3:
        return None
    group = int(_attrs(node).get("group", 1))
    if group > 1 and w.dims[1] == 1 and w.dims[0] == group and group % 16:
        return (
            f"depthwise with {group} channels: ORT's fast int8 depthwise kernel needs a "
            "multiple of 16 (the fallback is slower than its float Conv)"
        )
    return None


def plan_ort(model, config: PlacementConfig | None = None) -> Placement:
    """Decide every Q/DQ of ``model`` for ONNX Runtime's integer kernels; nothing is changed.

    Two walks over the graph: the first finds the float tensors quantized in front of an
    integer layer anyway; the second lets a chain op (Add, Concat, ...) read those as int8 too,
    so that a residual Add of an int8 branch and the float output of a layer kept float (the
    stem) is a QLinearAdd on that tensor's Q rather than a float island."""
    config = config or PlacementConfig()
    index = GraphIndex(model.graph)
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in index.nodes):
        raise ModelError(
            "the model already has QuantizeLinear/DequantizeLinear nodes; pass the FP32 model"
        )
    first = _walk(index, config, frozenset())
    quantized = frozenset(t for t, _, _ in first[2])
    placement, int_tensor, boundary = _walk(index, config, quantized)
    for tensor, root in int_tensor.items():
        edges = [(n.name, i) for n, i in index.consumers.get(tensor, [])]
        placement.activations[tensor] = edges
        producer = index.producer.get(tensor)
        placement.reasons[tensor] = (
            f"output of {producer.op_type if producer else 'input'} kept in uint8"
            + (f" (parameters of {root})" if root != tensor else "")
        )
    for tensor, node, i in boundary:
        placement.activations.setdefault(tensor, []).append((node, i))
        placement.reasons.setdefault(tensor, "float -> uint8 in front of an integer layer")
    return placement


def _walk(index: GraphIndex, config: PlacementConfig, quantized: frozenset):
    """One pass of plan_ort: (placement without activations, {uint8 tensor: tensor whose
    parameters it uses}, [(float tensor, node, input) a Q/DQ starts]). ``quantized``: float
    tensors known to get a Q/DQ (a chain op may read them as int8)."""
    allowed = set(ORT_COMPUTE + ORT_CHAIN + ORT_PASS)
    if config.op_types is not None:
        allowed = set(config.op_types) | set(ORT_PASS)
    excluded = [re.compile(p) for p in config.exclude]
    placement = Placement()
    if not config.quantize_input_layers:
        for name in input_layers(index):
            placement.kept_float[name] = "reads the network input (quantize_input_layers=False)"
    int_tensor: dict[str, str] = {}  # uint8 tensor -> the tensor whose parameters it uses
    boundary: list[tuple[str, str, int]] = []  # (float tensor, node, input) a Q/DQ starts

    def activation(name: str) -> bool:
        return bool(name) and not index.is_constant(name) and not mask_path(index, name)

    for node in index.nodes:
        op = node.op_type
        if op not in allowed or any(p.search(node.name) for p in excluded):
            continue
        if node.name in placement.kept_float or not node.output:
            continue
        out = node.output[0]
        readers = index.consumers.get(out, [])
        if op in ORT_COMPUTE and len(readers) == 1 and readers[0][0].op_type in ORT_FLOAT_EPILOGUE:
            placement.kept_float[node.name] = (
                f"feeds {readers[0][0].op_type}, which ONNX Runtime has no integer kernel for: "
                "its float Conv fuses it, an int8 Conv would pay a DQ, the float op and a Q"
            )
            continue
        # Only a Conv reading a float tensor can stay float: between a DQ and a Q, ORT's
        # WeightBiasQuantization transformer (qdq_transformer/weight_bias_quantization.cc)
        # quantizes its float weight itself, per tensor, and fuses it into a QLinearConv.
        slow = _slow_integer_conv(index, node) if op == "Conv" else None
        if slow and node.input[0] not in int_tensor:
            placement.kept_float[node.name] = slow
            continue
        if op in ORT_COMPUTE:
            w = node.input[1] if len(node.input) > 1 else ""
            acts = [0]
            if w in index.initializers:
                dims = index.initializers[w].dims
                axis = R.weight_axis(op, len(dims), _attrs(node))
                placement.weights[(node.name, 1)] = WeightQ(w, axis)
            elif op == "MatMul" and activation(w):
                acts = [0, 1]
            else:
                placement.kept_float[node.name] = "weight is not a constant"
                continue
            for i in acts:
                if not activation(node.input[i]):
                    continue
                if node.input[i] not in int_tensor:
                    boundary.append((node.input[i], node.name, i))
            fused = _epilogue(index, out)
            if fused not in index.outputs and index.consumers.get(fused):
                int_tensor[fused] = fused
        elif op in ORT_CHAIN:
            ins = [t for t in node.input if t]
            if len(node.output) != 1 or out in index.outputs or not ins:
                continue
            # A constant input would need its own DQ; a float input that gets a Q anyway (in
            # front of an integer layer) is read through that Q.
            if all(t in int_tensor or t in quantized for t in ins):
                for k, t in enumerate(node.input):
                    if t and t not in int_tensor:
                        boundary.append((t, node.name, k))
                fused = _epilogue(index, out)
                if fused not in index.outputs and index.consumers.get(fused):
                    int_tensor[fused] = fused
        elif op in ORT_PASS and node.input and node.input[0] in int_tensor:
            outs = [o for o in node.output if o]
            if any(o in index.outputs for o in outs):
                continue
            root = int_tensor[node.input[0]]
            for o in outs:
                int_tensor[o] = root
                placement.tied[o] = root
    return placement, int_tensor, boundary


def quantize_biases(model):
    """Store the float bias of every Conv/Gemm whose input and weight come from DequantizeLinear
    as int32 with a DequantizeLinear of scale s_x * s_w (per channel), zero point 0: ONNX
    Runtime's Conv/Gemm selectors need every input quantized. Works in place; returns ``model``."""
    from onnx import helper, numpy_helper

    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    inits = {i.name: i for i in graph.initializer}
    taken = {i.name for i in graph.initializer} | {o for n in graph.node for o in n.output}
    taken |= {n.name for n in graph.node}

    def fresh(name: str) -> str:
        new, k = name, 0
        while new in taken:
            k += 1
            new = f"{name}_{k}"
        taken.add(new)
        return new

    def const(name):
        return numpy_helper.to_array(inits[name]) if name in inits else None

    new_nodes: dict[int, object] = {}
    for k, node in enumerate(graph.node):
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3 or not node.input[2]:
            continue
        if node.op_type == "Gemm" and _attrs(node).get("beta", 1.0) != 1.0:
            continue
        dq_x, dq_w = producer.get(node.input[0]), producer.get(node.input[1])
        bias = const(node.input[2])
        if bias is None or bias.ndim != 1 or dq_x is None or dq_w is None:
            continue
        if dq_x.op_type != "DequantizeLinear" or dq_w.op_type != "DequantizeLinear":
            continue
        sx, sw = const(dq_x.input[1]), const(dq_w.input[1])
        if sx is None or sw is None or sx.size != 1 or sw.size not in (1, bias.size):
            continue
        scale = (np.float32(sx.reshape(())) * sw.astype(np.float32).reshape(-1)).astype(np.float32)
        scale = np.where(scale > 0, scale, np.float32(1e-12)).astype(np.float32)
        q = np.clip(np.rint(bias.astype(np.float64) / scale), -(2**31), 2**31 - 1).astype(np.int32)
        base = f"{node.input[2]}_int32"
        names = [fresh(f"{base}_quantized"), fresh(f"{base}_scale"), fresh(f"{base}_zero_point")]
        scale_arr = scale if scale.size > 1 else scale.reshape(())
        graph.initializer.extend(
            [
                numpy_helper.from_array(q, names[0]),
                numpy_helper.from_array(scale_arr, names[1]),
                numpy_helper.from_array(np.zeros(scale_arr.shape, np.int32), names[2]),
            ]
        )
        out = fresh(f"{base}_dequantized")
        new_nodes[k] = helper.make_node(
            "DequantizeLinear", names, [out], name=fresh(f"{base}_DequantizeLinear"), axis=0
        )
        node.input[2] = out
    if new_nodes:
        ordered = []
        for k, node in enumerate(graph.node):
            if k in new_nodes:
                ordered.append(new_nodes[k])
            ordered.append(node)
        del graph.node[:]
        graph.node.extend(ordered)
        drop_unused_initializers(graph)
    return model


def integer_ops(model, threads: int = 1) -> dict:
    """What ONNX Runtime's optimiser made of ``model`` (a ModelProto or path): {"integer": {op:
    count}, "float_compute": {op: count} (Conv/MatMul/Gemm left in float), "float_islands": the
    DequantizeLinear nodes left (each a switch from int8 back to float)}."""
    import onnx

    from int8kit._deps import require
    from int8kit.onnx.model_io import model_bytes_or_path

    ort = require("onnxruntime", "reading ONNX Runtime's optimised graph")
    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.intra_op_num_threads = threads
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        src = model if isinstance(model, (str, Path)) else model_bytes_or_path(model, Path(tmp))
        ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
        optimized = onnx.load(so.optimized_model_filepath)
    ops = Counter(n.op_type for n in optimized.graph.node)
    return {
        "integer": {k: v for k, v in sorted(ops.items()) if k in INTEGER_OPS},
        "float_compute": {k: v for k, v in sorted(ops.items()) if k in FLOAT_COMPUTE},
        "float_islands": ops.get("DequantizeLinear", 0),
        "quantize_ops": ops.get("QuantizeLinear", 0),
    }


def integer_warning(model, placement: Placement) -> str | None:
    """Why ONNX Runtime will run nothing of ``model`` in integer form, or None when it will."""
    index = GraphIndex(model.graph)
    compute = [n for n in index.nodes if n.op_type in ORT_COMPUTE]
    fused = [n for n, why in placement.kept_float.items() if why.startswith("feeds ")]
    if fused and len(fused) * 2 >= len(compute):
        ops = sorted({placement.kept_float[n].split(",")[0][6:] for n in fused})
        return (
            f"ort-cpu: {len(fused)} of {len(compute)} Conv/MatMul/Gemm layers stay float: each "
            f"feeds {'/'.join(ops)}, which ONNX Runtime has no integer kernel for (its float "
            "Conv fuses it). Expect little or no speedup over FP32 on this model"
        )
    names = {n.name for n in compute}
    edges = {node for e in placement.activations.values() for node, _ in e}
    if placement.weights or names & edges:
        return None
    if not compute:
        found = Counter(n.op_type for n in index.nodes).most_common(6)
        ops = ", ".join(f"{op} x{c}" for op, c in found) or "no nodes"
        why = (
            f"the model has no {'/'.join(ORT_COMPUTE)} (it has {ops}); ONNX Runtime's CPU "
            "integer kernels are QLinearConv, QLinearMatMul/MatMulIntegerToFloat and QGemm"
        )
    else:
        kept = [f"{n.name}: {placement.kept_float.get(n.name, 'excluded')}" for n in compute[:3]]
        why = "every Conv/MatMul/Gemm stays float (" + "; ".join(kept) + ")"
    return (
        f"ort-cpu: ONNX Runtime can run no layer of this model as an integer kernel: {why}. "
        "The model is written and computes what the FP32 model does (up to the Q/DQ placed), "
        "but it will not run faster than FP32"
    )
