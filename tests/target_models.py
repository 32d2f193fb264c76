"""Tiny conv nets for the ort-cpu target tests (onnx/targets.py), built in code."""

from __future__ import annotations

import numpy as np
from models import model, value, weight
from onnx import helper, numpy_helper


def conv_net():
    """x(N,3,16,16) -> stem Conv-Relu -> Conv-Relu (r1) -> Conv -> SiLU (Sigmoid*Mul) -> MaxPool
    -> Concat(pool, MaxPool(r1)) -> Conv-Clip(0,6) -> Add(., pool2) -> GlobalAveragePool ->
    Flatten -> Gemm -> y(N,10). Every op has an ONNX Runtime integer version."""
    c = 8
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w0", "b0"], ["c0"], name="stem", pads=[1, 1, 1, 1]),
        n("Relu", ["c0"], ["r0"], name="relu0"),
        n("Conv", ["r0", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        n("Relu", ["c1"], ["r1"], name="relu1"),
        n("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        n("Sigmoid", ["c2"], ["sg"], name="sig"),
        n("Mul", ["c2", "sg"], ["silu"], name="silu"),
        n("MaxPool", ["silu"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        n("MaxPool", ["r1"], ["p2"], name="pool2", kernel_shape=[2, 2], strides=[2, 2]),
        n("Concat", ["p1", "p2"], ["cat"], name="cat", axis=1),
        n("Conv", ["cat", "w3", "b3"], ["c3"], name="conv3", pads=[1, 1, 1, 1]),
        n("Clip", ["c3", "lo", "hi"], ["r3"], name="relu6"),
        n("Add", ["r3", "p2"], ["s"], name="add"),
        n("GlobalAveragePool", ["s"], ["g"], name="gap"),
        n("Flatten", ["g"], ["f"], name="flatten"),
        n("Gemm", ["f", "wfc", "bfc"], ["y"], name="fc", transB=1),
    ]
    bias = lambda k, name: numpy_helper.from_array(  # noqa: E731
        np.linspace(-0.1, 0.2, k).astype(np.float32), name
    )
    inits = [
        weight("w0", (c, 3, 3, 3), 1),
        bias(c, "b0"),
        weight("w1", (c, c, 3, 3), 2, 0.2),
        bias(c, "b1"),
        weight("w2", (c, c, 3, 3), 3, 0.2),
        bias(c, "b2"),
        weight("w3", (c, 2 * c, 3, 3), 4, 0.15),
        bias(c, "b3"),
        numpy_helper.from_array(np.array(0, np.float32), "lo"),
        numpy_helper.from_array(np.array(6, np.float32), "hi"),
        weight("wfc", (10, c), 5),
        bias(10, "bfc"),
    ]
    return model(nodes, [value("x", ("N", 3, 16, 16))], [value("y", ("N", 10))], inits, "net")


def layernorm_only():
    """x(N,16) -> LayerNormalization -> Softmax -> y: no op ONNX Runtime runs in integer form."""
    n = helper.make_node
    nodes = [
        n("LayerNormalization", ["x", "g", "b"], ["ln"], name="ln", axis=-1),
        n("Softmax", ["ln"], ["y"], name="softmax", axis=-1),
    ]
    inits = [
        numpy_helper.from_array(np.ones(16, np.float32), "g"),
        numpy_helper.from_array(np.zeros(16, np.float32), "b"),
    ]
    return model(nodes, [value("x", ("N", 16))], [value("y", ("N", 16))], inits, "ln")


def pad_conv():
    """x(N,4,8,8) -> Conv-Relu -> Pad (TF "same" padding, pads computed by Constant -> Cast as
    exporters write them) -> depthwise Conv stride 2 -> Relu -> y."""
    n = helper.make_node
    pads = np.array([0, 0, 0, 0, 0, 0, 1, 1], np.float32)
    nodes = [
        n("Conv", ["x", "w0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
        n("Relu", ["c0"], ["r0"], name="relu0"),
        n("Constant", [], ["pf"], name="padsf", value=numpy_helper.from_array(pads)),
        n("Cast", ["pf"], ["pads"], name="cast", to=7),
        n("Pad", ["r0", "pads"], ["p"], name="pad", mode="constant"),
        n("Conv", ["p", "w1"], ["d"], name="dw", group=4, kernel_shape=[3, 3], strides=[2, 2]),
        n("Relu", ["d"], ["y"], name="relu1"),
    ]
    inits = [weight("w0", (4, 4, 3, 3), 6), weight("w1", (4, 1, 3, 3), 7)]
    return model(nodes, [value("x", ("N", 4, 8, 8))], [value("y", ("N", 4, 4, 4))], inits, "pad")
