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
    exporters write them) -> depthwise Conv stride 2 (16 channels: ORT's fast int8 depthwise
    kernel takes multiples of 16) -> Relu -> y."""
    n = helper.make_node
    pads = np.array([0, 0, 0, 0, 0, 0, 1, 1], np.float32)
    nodes = [
        n("Conv", ["x", "w0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
        n("Relu", ["c0"], ["r0"], name="relu0"),
        n("Constant", [], ["pf"], name="padsf", value=numpy_helper.from_array(pads)),
        n("Cast", ["pf"], ["pads"], name="cast", to=7),
        n("Pad", ["r0", "pads"], ["p"], name="pad", mode="constant"),
        n("Conv", ["p", "w1"], ["d"], name="dw", group=16, kernel_shape=[3, 3], strides=[2, 2]),
        n("Relu", ["d"], ["y"], name="relu1"),
    ]
    inits = [weight("w0", (16, 4, 3, 3), 6), weight("w1", (16, 1, 3, 3), 7)]
    return model(nodes, [value("x", ("N", 4, 8, 8))], [value("y", ("N", 16, 4, 4))], inits, "pad")


def stem_residual():
    """x(N,3,8,8) -> stem Conv-Relu (r0) -> Conv-Relu (r1) -> Add(r1, r0) -> Conv -> Relu -> y:
    the residual Add reads the float stem's output, which is quantized anyway for conv1."""
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w0"], ["c0"], name="stem", pads=[1, 1, 1, 1]),
        n("Relu", ["c0"], ["r0"], name="relu0"),
        n("Conv", ["r0", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        n("Relu", ["c1"], ["r1"], name="relu1"),
        n("Add", ["r1", "r0"], ["s"], name="add"),
        n("Conv", ["s", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        n("Relu", ["c2"], ["y"], name="relu2"),
    ]
    inits = [weight("w0", (16, 3, 3, 3), 8), weight("w1", (16, 16, 3, 3), 9, 0.1)]
    inits.append(weight("w2", (16, 16, 3, 3), 10, 0.1))
    return model(nodes, [value("x", ("N", 3, 8, 8))], [value("y", ("N", 16, 8, 8))], inits, "stem")


def conv_bias_add():
    """x(N,8,16,16) -> Conv (no bias) -> Add(bias [1,16,1,1]) -> Identity -> Relu -> Conv 1x1 ->
    Add(c [16]) -> y, as paddle2onnx writes biases; the last Add broadcasts along W, not C."""
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
        n("Add", ["c0", "b0"], ["a0"], name="bias0"),
        n("Identity", ["a0"], ["i0"], name="identity"),
        n("Relu", ["i0"], ["r0"], name="relu0"),
        n("Conv", ["r0", "w1"], ["c1"], name="conv1"),
        n("Add", ["c1", "b1"], ["y"], name="add_w"),
    ]
    rng = np.random.default_rng(11)
    inits = [
        weight("w0", (16, 8, 3, 3), 12),
        numpy_helper.from_array(rng.standard_normal((1, 16, 1, 1)).astype(np.float32), "b0"),
        weight("w1", (16, 16, 1, 1), 13),
        numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "b1"),
    ]
    return model(nodes, [value("x", ("N", 8, 16, 16))], [value("y", ("N", 16, 16, 16))], inits)


def depthwise_widths():
    """x(N,16,8,8) -> pw1 (16 -> 8, reads the input) -> dw8a -> pw2 (8 -> 16) -> dw16 -> pw_m
    (16 -> 8) -> dw8b -> pw3 (8 -> 16) -> y: 1x1 and 3x3 depthwise Convs, each with a Relu;
    dw8a reads a float tensor (the float input layer's output), dw8b an int8 one."""
    n = helper.make_node
    specs = [("pw1", 8, 16, 1), ("dw8a", 8, 1, 8), ("pw2", 16, 8, 1), ("dw16", 16, 1, 16)]
    specs += [("pw_m", 8, 16, 1), ("dw8b", 8, 1, 8), ("pw3", 16, 8, 1)]
    nodes, inits, t = [], [], "x"
    for k, (name, cout, cin, group) in enumerate(specs):
        ks = 1 if group == 1 else 3
        nodes.append(
            n("Conv", [t, f"w_{name}"], [f"c_{name}"], name=name, group=group, pads=[ks // 2] * 4)
        )
        out = "y" if name == "pw3" else f"r_{name}"
        nodes.append(n("Relu", [f"c_{name}"], [out], name=f"relu_{name}"))
        inits.append(weight(f"w_{name}", (cout, cin, ks, ks), 20 + k))
        t = out
    return model(nodes, [value("x", ("N", 16, 8, 8))], [value("y", ("N", 16, 8, 8))], inits, "dw")
