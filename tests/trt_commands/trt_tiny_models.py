"""Tiny ONNX models for the TensorRT build tests, built in code with onnx.helper."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def conv_model(batch: int | str = "batch", channels: int = 3, size: int = 8) -> onnx.ModelProto:
    """images[batch,3,8,8] -> Conv(4 filters, 3x3, pad 1) -> Relu -> out; batch may be symbolic."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((4, channels, 3, 3)).astype(np.float32) * 0.2
    bias = rng.standard_normal(4).astype(np.float32) * 0.1
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["images", "w", "b"], ["conv"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["conv"], ["out"]),
        ],
        "tiny_conv",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, channels, size, size])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [batch, 4, size, size])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def qdq_conv_model(batch: int | str = 1, size: int = 8) -> onnx.ModelProto:
    """The conv model with symmetric int8 Q/DQ on the input and per-channel Q/DQ on the weight."""
    base = conv_model(batch=batch, size=size)
    weight = numpy_helper.to_array(base.graph.initializer[0])
    bias = numpy_helper.to_array(base.graph.initializer[1])
    w_scale = (np.abs(weight).reshape(4, -1).max(axis=1) / 127.0).astype(np.float32)
    w_q = np.clip(np.round(weight / w_scale[:, None, None, None]), -127, 127).astype(np.int8)
    inits = [
        numpy_helper.from_array(np.array(4.0 / 127.0, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "x_zp"),
        numpy_helper.from_array(w_q, "w_q"),
        numpy_helper.from_array(w_scale, "w_scale"),
        numpy_helper.from_array(np.zeros(4, np.int8), "w_zp"),
        numpy_helper.from_array(bias, "b"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["images", "x_scale", "x_zp"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w_dq"], axis=0),
        helper.make_node("Conv", ["x_dq", "w_dq", "b"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_qdq_conv",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [batch, 4, size, size])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def two_input_model() -> onnx.ModelProto:
    """a[N,4] + b[1,4] -> out; a dynamic batch, b static."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["out"])],
        "two_inputs",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 4]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model
