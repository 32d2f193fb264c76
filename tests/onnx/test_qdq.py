import models
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from int8kit.onnx.observe import make_session
from int8kit.onnx.placement import plan
from int8kit.onnx.qdq import insert_qdq


def nodes_of(m, op):
    return [n for n in m.graph.node if n.op_type == op]


def test_qdq_model_checks_runs_and_keeps_io():
    m = models.conv_bn_relu_chain()
    before = m.SerializeToString()
    q, summary = insert_qdq(m, plan(m), {t: 2.0 for t in ("x", "r1", "r2", "p", "f")})
    assert m.SerializeToString() == before  # input model untouched
    onnx.checker.check_model(q)
    assert summary.activations == 5 and summary.weights == 3
    assert [i.name for i in q.graph.input] == ["x"] and [o.name for o in q.graph.output] == ["y"]
    assert q.graph.input[0].type == m.graph.input[0].type  # dynamic batch kept
    x = np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)
    y = make_session(q, optimize=False).run(None, {"x": x})[0]
    assert y.shape == (3, 10)


def test_in_place_insertion_writes_the_same_model():
    m = models.conv_bn_relu_chain()
    amax = {t: 2.0 for t in ("x", "r1", "r2", "p", "f")}
    copied, _ = insert_qdq(m, plan(m), amax)
    in_place, summary = insert_qdq(m, plan(m), amax, copy=False)
    assert in_place is m and summary.activations == 5
    assert in_place.SerializeToString() == copied.SerializeToString()


def test_activation_scale_is_amax_over_127_with_int8_zero_point():
    m = models.residual_block()
    q, _ = insert_qdq(m, plan(m), {"x": 3.0})
    init = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    assert init["x_scale"] == np.float32(3.0 / 127)
    assert init["x_zero_point"].dtype == np.int8 and init["x_zero_point"] == 0
    assert len(nodes_of(q, "QuantizeLinear")) == 1  # one pair shared by conv1 and the Add


def test_weights_are_int8_per_channel_with_max_abs_scale():
    m = models.conv_transpose()
    q, _ = insert_qdq(m, plan(m), {"x": 1.0})
    init = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    w = numpy_helper.to_array(m.graph.initializer[0])
    dq = [n for n in nodes_of(q, "DequantizeLinear") if n.input[0].startswith("wt")][0]
    assert dict((a.name, a.i) for a in dq.attribute)["axis"] == 1
    scale = init[dq.input[1]]
    np.testing.assert_allclose(scale, np.abs(w).max(axis=(0, 2, 3)) / 127, rtol=1e-6)
    wq = init[dq.input[0]]
    assert wq.dtype == np.int8 and np.abs(wq).max() == 127
    assert "wt" not in init  # the float weight is gone


def test_unfused_qdq_equals_numpy_fake_quant():
    """The Q/DQ graph run unfused computes round-half-even, clamp to [-128, 127], times scale."""
    m = models.conv_transpose()
    amax = 1.5
    q, _ = insert_qdq(m, plan(m), {"x": amax})
    x = np.random.default_rng(1).standard_normal((1, 4, 4, 4)).astype(np.float32) * 2
    s = np.float32(amax / 127)
    xq = np.clip(np.round(x / s), -128, 127) * s
    init = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    dq = [n for n in nodes_of(q, "DequantizeLinear") if n.input[0].startswith("wt")][0]
    wq = init[dq.input[0]].astype(np.float32) * init[dq.input[1]].reshape(1, -1, 1, 1)
    ref = m
    ref.graph.initializer[0].CopyFrom(numpy_helper.from_array(wq, "wt"))
    expected = ort.InferenceSession(ref.SerializeToString()).run(None, {"x": xq})[0]
    got = make_session(q, optimize=False).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_zero_range_gets_a_safe_positive_scale_and_missing_range_stays_float():
    m = models.two_inputs()
    q, summary = insert_qdq(m, plan(m), {"a": 0.0, "cb": 1.0})
    init = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    assert init["a_scale"] > 0
    assert summary.skipped_without_range == ["b"]
    assert "b_scale" not in init


def test_old_opset_is_upgraded_for_per_axis_dequantize():
    m = models.model(
        [onnx.helper.make_node("Conv", ["x", "w"], ["y"], name="c")],
        [models.value("x", (1, 2, 4, 4))],
        [models.value("y", (1, 2, 4, 4))],
        [models.weight("w", (2, 2, 1, 1), 0)],
        opset=11,
    )
    q, _ = insert_qdq(m, plan(m), {"x": 1.0})
    assert q.opset_import[0].version >= 13
    onnx.checker.check_model(q)
    make_session(q).run(None, {"x": np.ones((1, 2, 4, 4), np.float32)})


@pytest.mark.parametrize("amax", [0.5, 4.0])
def test_observe_exposes_every_float_activation(amax):
    from int8kit.onnx.observe import activation_tensors, run_exposed

    m = models.conv_bn_relu_chain()
    names = activation_tensors(m)
    assert names[0] == "x" and "y" in names and "w1" not in names
    x = np.full((1, 3, 8, 8), amax, np.float32)
    values = next(run_exposed(m, names, [{"x": x}]))
    assert set(values) == set(names)
    assert values["x"].max() == amax
