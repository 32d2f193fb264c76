"""Tiny ONNX models for the core tests, built in code (placement, Q/DQ, workflow)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def model(nodes, inputs, outputs, inits, name="tiny", opset=OPSET):
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def weight(name, shape, seed, scale=0.3):
    rng = np.random.default_rng(seed)
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def value(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, list(shape))


def conv_bn_relu_chain(batch="N"):
    """x(N,3,8,8) -> Conv-BN-Relu -> Conv-Relu -> MaxPool -> GlobalAveragePool -> Flatten -> Gemm."""
    c = 4
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node(
            "BatchNormalization", ["c1", "g", "beta", "mu", "var"], ["bn1"], name="bn1"
        ),
        helper.make_node("Relu", ["bn1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node(
            "MaxPool", ["r2"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]
        ),
        helper.make_node("GlobalAveragePool", ["p"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wfc", "bfc"], ["y"], name="fc", transB=1),
    ]
    inits = [
        weight("w1", (c, 3, 3, 3), 1),
        numpy_helper.from_array(np.linspace(-0.2, 0.2, c).astype(np.float32), "b1"),
        numpy_helper.from_array(np.ones(c, np.float32), "g"),
        numpy_helper.from_array(np.zeros(c, np.float32), "beta"),
        numpy_helper.from_array(np.zeros(c, np.float32), "mu"),
        numpy_helper.from_array(np.ones(c, np.float32), "var"),
        weight("w2", (c, c, 3, 3), 2),
        weight("wfc", (10, c), 3),
        numpy_helper.from_array(np.zeros(10, np.float32), "bfc"),
    ]
    return model(nodes, [value("x", (batch, 3, 8, 8))], [value("y", (batch, 10))], inits, "chain")


def residual_block():
    """x -> conv1 -> relu -> conv2 -> Add(c2, x) -> relu -> y: x is the identity branch."""
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "x"], ["s"], name="add"),
        helper.make_node("Relu", ["s"], ["y"], name="relu2"),
    ]
    inits = [weight("w1", (3, 3, 3, 3), 4), weight("w2", (3, 3, 3, 3), 5)]
    return model(nodes, [value("x", (1, 3, 8, 8))], [value("y", (1, 3, 8, 8))], inits, "residual")


def gemm_matmul():
    """x(2,16) -> MatMul W(16,8) -> Add bias -> Relu -> Gemm(transB=0) W2(8,4); and a MatMul of
    two activations (h @ h^T) as a second output."""
    nodes = [
        helper.make_node("MatMul", ["x", "wm"], ["m"], name="matmul"),
        helper.make_node("Add", ["m", "bm"], ["a"], name="bias"),
        helper.make_node("Relu", ["a"], ["h"], name="relu"),
        helper.make_node("Gemm", ["h", "wg"], ["y"], name="gemm"),
        helper.make_node("Transpose", ["h"], ["ht"], name="t"),
        helper.make_node("MatMul", ["h", "ht"], ["z"], name="gram"),
    ]
    inits = [
        weight("wm", (16, 8), 6),
        numpy_helper.from_array(np.full(8, 0.1, np.float32), "bm"),
        weight("wg", (8, 4), 7),
    ]
    return model(
        nodes, [value("x", (2, 16))], [value("y", (2, 4)), value("z", (2, 2))], inits, "mm"
    )


def two_inputs():
    """a, b (1,3,8,8) -> Conv each -> Add -> y (two model inputs)."""
    nodes = [
        helper.make_node("Conv", ["a", "wa"], ["ca"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["b", "wb"], ["cb"], name="conv_b", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["ca", "cb"], ["y"], name="add"),
    ]
    inits = [weight("wa", (2, 3, 3, 3), 8), weight("wb", (2, 3, 3, 3), 9)]
    inputs = [value("a", (1, 3, 8, 8)), value("b", (1, 3, 8, 8))]
    return model(nodes, inputs, [value("y", (1, 2, 8, 8))], inits, "two")


def conv_transpose():
    """x(1,4,4,4) -> ConvTranspose W(4,2,2,2) stride 2 -> y(1,2,8,8)."""
    nodes = [helper.make_node("ConvTranspose", ["x", "wt"], ["y"], name="deconv", strides=[2, 2])]
    return model(
        nodes,
        [value("x", (1, 4, 4, 4))],
        [value("y", (1, 2, 8, 8))],
        [weight("wt", (4, 2, 2, 2), 10)],
    )


def save(m, path) -> str:
    onnx.save(m, str(path))
    return str(path)


def save_npz(path, n=8, seed=0, **shapes) -> str:
    """Random calibration data, one array per input name, first axis = samples."""
    rng = np.random.default_rng(seed)
    np.savez(
        path, **{k: rng.standard_normal((n, *s[1:])).astype(np.float32) for k, s in shapes.items()}
    )
    return str(path)
