"""Tiny ONNX models for the analysis tests (lint, layers, eval, bench), built in code."""

from __future__ import annotations

import numpy as np
import onnx
from models import model as _model
from models import residual_block as residual_block  # shared with the core tests
from models import value
from models import weight as _w
from onnx import helper, numpy_helper

from int8kit.onnx.placement import plan
from int8kit.onnx.qdq import insert_qdq


def _x(name="x", shape=(1, 3, 8, 8)):
    return value(name, shape)


def _y(shape, name="y"):
    return value(name, shape)


def conv_relu_conv():
    """x(1,3,8,8) -> conv1 -> relu -> conv2 -> y."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["y"], name="conv2", pads=[1, 1, 1, 1]),
    ]
    inits = [
        _w("w1", (4, 3, 3, 3), 1),
        numpy_helper.from_array(np.array([0.1, -0.2, 0.3, 0.0], np.float32), "b1"),
        _w("w2", (4, 4, 3, 3), 2),
    ]
    return _model(nodes, [_x()], [_y((1, 4, 8, 8))], inits, "chain")


def detector_head():
    """x -> conv_box -> sigmoid * 640 -> boxes (1,4,64); x -> conv_cls -> sigmoid -> scores (1,4,64);
    Concat(boxes, scores) -> cat -> Identity -> y (1,8,64): the detector trap when one Q/DQ
    covers cat."""
    nodes = [
        helper.make_node("Conv", ["x", "wb"], ["cb"], name="conv_box", pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["cb"], ["sb"], name="sigmoid_box"),
        helper.make_node("Mul", ["sb", "k640"], ["box4"], name="scale_box"),
        helper.make_node("Reshape", ["box4", "shape"], ["boxes"], name="reshape_box"),
        helper.make_node("Conv", ["x", "wc"], ["cc"], name="conv_cls", pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["cc"], ["sig4"], name="sigmoid"),
        helper.make_node("Reshape", ["sig4", "shape"], ["scores"], name="reshape_cls"),
        helper.make_node("Concat", ["boxes", "scores"], ["cat"], name="concat", axis=1),
        helper.make_node("Identity", ["cat"], ["y"], name="head_out"),
    ]
    inits = [
        _w("wb", (4, 3, 3, 3), 5),
        _w("wc", (4, 3, 3, 3), 6),
        numpy_helper.from_array(np.array(640.0, np.float32), "k640"),
        numpy_helper.from_array(np.array([1, 4, 64], np.int64), "shape"),
    ]
    return _model(nodes, [_x()], [_y((1, 8, 64))], inits, "head")


def sigmoid_add():
    """Add(sigmoid(x), x) -> y: a residual-looking Add with no conv on either side."""
    nodes = [
        helper.make_node("Sigmoid", ["x"], ["s"], name="sigmoid"),
        helper.make_node("Add", ["s", "x"], ["y"], name="add"),
    ]
    return _model(nodes, [_x()], [_y((1, 3, 8, 8))], [], "sigmoid_add")


def classifier():
    """x -> conv -> relu -> global pool -> flatten -> gemm -> logits (1, 10)."""
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("GlobalAveragePool", ["r1"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], name="fc", transB=1),
    ]
    inits = [
        _w("w1", (16, 3, 3, 3), 7),
        _w("wf", (10, 16), 8, scale=1.0),
        numpy_helper.from_array(np.zeros(10, np.float32), "bf"),
    ]
    return _model(nodes, [_x()], [_y((1, 10))], inits, "classifier")


def encoder():
    """x(1,4,16) tokens -> MatMul -> LayerNorm -> ln; outputs: 'emb' = L2-normalised mean over
    tokens, 'cls' = token 0 of ln (two embeddings), 'logits' = Gemm of cls (1, 10) and 'scaled'
    = logits / 2 (a temperature: still class scores)."""
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["h"], name="proj"),
        helper.make_node("LayerNormalization", ["h", "g", "b"], ["ln"], name="norm"),
        helper.make_node("ReduceMean", ["ln"], ["mean"], name="pool", axes=[1], keepdims=0),
        helper.make_node("ReduceL2", ["mean"], ["l2"], name="l2", axes=[1], keepdims=1),
        helper.make_node("Div", ["mean", "l2"], ["emb"], name="unit"),
        helper.make_node("Gather", ["ln", "first"], ["cls"], name="cls_token", axis=1),
        helper.make_node("Gemm", ["cls", "wc", "bc"], ["logits"], name="head", transB=1),
        helper.make_node("Div", ["logits", "temperature"], ["scaled"], name="temperature"),
    ]
    inits = [
        _w("wq", (16, 32), 11),
        numpy_helper.from_array(np.ones(32, np.float32), "g"),
        numpy_helper.from_array(np.zeros(32, np.float32), "b"),
        numpy_helper.from_array(np.array(0, np.int64), "first"),
        _w("wc", (10, 32), 12, scale=1.0),
        numpy_helper.from_array(np.zeros(10, np.float32), "bc"),
        numpy_helper.from_array(np.array(2.0, np.float32), "temperature"),
    ]
    outputs = [_y((1, 32), "emb"), _y((1, 32), "cls"), _y((1, 10), "logits"), _y((1, 10), "scaled")]
    return _model(nodes, [_x(shape=(1, 4, 16))], outputs, inits, "encoder")


def save(model, path) -> str:
    onnx.save(model, str(path))
    return str(path)


def ranges_for(model, batches) -> dict[str, float]:
    """Exact max |x| of every activation over ``batches`` (minmax calibration by hand)."""
    from int8kit.onnx.observe import activation_tensors, run_exposed

    names = activation_tensors(model)
    amax: dict[str, float] = {}
    for values in run_exposed(model, names, batches):
        for n, v in values.items():
            amax[n] = max(amax.get(n, 0.0), float(np.max(np.abs(v))))
    return amax


def int8kit_qdq(model, amax=None, batches=None):
    """The Q/DQ model int8kit makes: default placement, given (or measured) ranges."""
    if amax is None:
        amax = ranges_for(model, batches if batches is not None else random_batches())
    qdq, _ = insert_qdq(model, plan(model), amax)
    return qdq


def random_batches(n=3, shape=(1, 3, 8, 8), seed=0):
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(n)]


def add_qdq(model, tensor, scale, zero_point=0, zp_dtype=np.int8, consumers=None):
    """Insert a Q/DQ pair on ``tensor`` (rewiring ``consumers``, node names; default all)."""
    g = model.graph
    s, z = f"{tensor}_scale", f"{tensor}_zero_point"
    g.initializer.extend(
        [
            numpy_helper.from_array(np.array(scale, np.float32), s),
            numpy_helper.from_array(np.array(zero_point, zp_dtype), z),
        ]
    )
    dq_out = f"{tensor}_dequantized"
    for node in g.node:
        if consumers is None or node.name in consumers:
            for i, name in enumerate(node.input):
                if name == tensor:
                    node.input[i] = dq_out
    for o in g.output:
        if o.name == tensor and consumers is not None and "<output>" in consumers:
            o.name = dq_out
    q = helper.make_node(
        "QuantizeLinear", [tensor, s, z], [f"{tensor}_quantized"], name=f"{tensor}_Q"
    )
    dq = helper.make_node(
        "DequantizeLinear", [f"{tensor}_quantized", s, z], [dq_out], name=f"{tensor}_DQ"
    )
    nodes = list(g.node)
    pos = next((k + 1 for k, n in enumerate(nodes) if tensor in n.output), 0)
    nodes[pos:pos] = [q, dq]
    del g.node[:]
    g.node.extend(nodes)
    return model


def quantize_weight(model, node_name, index=1):
    """Replace a node's constant weight by int8 + per-channel DequantizeLinear (axis 0)."""
    g = model.graph
    node = next(n for n in g.node if n.name == node_name)
    wname = node.input[index]
    init = next(i for i in g.initializer if i.name == wname)
    w = numpy_helper.to_array(init)
    scales = (np.abs(w).reshape(w.shape[0], -1).max(axis=1) / 127).astype(np.float32)
    q = np.round(w / scales.reshape(-1, *[1] * (w.ndim - 1))).astype(np.int8)
    g.initializer.extend(
        [
            numpy_helper.from_array(q, f"{wname}_q"),
            numpy_helper.from_array(scales, f"{wname}_s"),
            numpy_helper.from_array(np.zeros_like(scales, np.int8), f"{wname}_z"),
        ]
    )
    dq = helper.make_node(
        "DequantizeLinear",
        [f"{wname}_q", f"{wname}_s", f"{wname}_z"],
        [f"{wname}_dq"],
        name=f"{wname}_DQ",
        axis=0,
    )
    node.input[index] = f"{wname}_dq"
    nodes = [dq, *g.node]
    del g.node[:]
    g.node.extend(nodes)
    return model
