"""Tiny models with control flow whose bodies read outer-scope initializers (Loop, If)."""

from __future__ import annotations

import numpy as np
from models import model, value, weight
from onnx import TensorProto, helper, numpy_helper


def _head_and_tail(body_nodes, extra_inits):
    """x(1,3,8,8) -> conv1 -> relu -> [body_nodes: r1 -> b] -> conv2 -> y(1,4,8,8)."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        *body_nodes,
        helper.make_node("Conv", ["b", "w2", "b2"], ["y"], name="conv2", pads=[1, 1, 1, 1]),
    ]
    inits = [
        weight("w1", (4, 3, 3, 3), 21),
        numpy_helper.from_array(np.linspace(-0.1, 0.1, 4).astype(np.float32), "b1"),
        weight("w2", (4, 4, 3, 3), 22),
        numpy_helper.from_array(np.full(4, 0.05, np.float32), "b2"),
        *extra_inits,
    ]
    return model(nodes, [value("x", (1, 3, 8, 8))], [value("y", (1, 4, 8, 8))], inits, "flow")


def if_model():
    """An If on sum(r1) > 0 whose branches scale r1 by ``then_w`` or shift it by ``else_b``:
    initializers only the branches read."""
    shape = (1, 4, 8, 8)
    then_g = helper.make_graph(
        [helper.make_node("Mul", ["r1", "then_w"], ["t"], name="then_mul")],
        "then",
        [],
        [value("t", shape)],
    )
    else_g = helper.make_graph(
        [helper.make_node("Add", ["r1", "else_b"], ["e"], name="else_add")],
        "else",
        [],
        [value("e", shape)],
    )
    cond = [
        helper.make_node("ReduceSum", ["r1"], ["s"], name="sum", keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["cond"], name="gt"),
    ]
    node = helper.make_node(
        "If", ["cond"], ["b"], name="branch", then_branch=then_g, else_branch=else_g
    )
    return _head_and_tail(
        [*cond, node],
        [
            numpy_helper.from_array(
                np.array([1.5, 0.5, 2.0, 1.0], np.float32).reshape(1, 4, 1, 1), "then_w"
            ),
            numpy_helper.from_array(np.full((1, 4, 1, 1), 0.25, np.float32), "else_b"),
            numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        ],
    )


def loop_model():
    """A Loop of 3 iterations v <- v * loop_w + loop_b, started from r1; loop_w and loop_b are
    initializers only the body reads."""
    shape = (1, 4, 8, 8)
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name="keep_going"),
            helper.make_node("Mul", ["v_in", "loop_w"], ["m"], name="loop_mul"),
            helper.make_node("Add", ["m", "loop_b"], ["v_out"], name="loop_add"),
        ],
        "body",
        [
            value("i", [], TensorProto.INT64),
            value("cond_in", [], TensorProto.BOOL),
            value("v_in", shape),
        ],
        [value("cond_out", [], TensorProto.BOOL), value("v_out", shape)],
    )
    node = helper.make_node("Loop", ["trips", "go", "r1"], ["b"], name="loop", body=body)
    return _head_and_tail(
        [node],
        [
            numpy_helper.from_array(np.array(3, np.int64), "trips"),
            numpy_helper.from_array(np.array(True), "go"),
            numpy_helper.from_array(
                np.array([0.9, 1.1, 0.8, 1.0], np.float32).reshape(1, 4, 1, 1), "loop_w"
            ),
            numpy_helper.from_array(np.full((1, 4, 1, 1), 0.1, np.float32), "loop_b"),
        ],
    )
