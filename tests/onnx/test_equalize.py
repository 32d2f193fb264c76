"""Cross-layer equalization: same FP32 function, equal per-channel ranges on both sides."""

import models
import numpy as np
import pytest
from onnx import helper, numpy_helper

from int8kit.onnx.equalize import _input_ranges, equalize, find_pairs
from int8kit.onnx.observe import make_session


def conv(name, x, y, c_in, c_out, group=1, seed=0, k=3, bias=True, spread=None):
    """A Conv with 'same' padding whose output channels have very different ranges."""
    w = np.random.default_rng(seed).standard_normal((c_out, c_in // group, k, k))
    spread = np.geomspace(0.01, 10, c_out) if spread is None else spread
    w = (w * spread.reshape(-1, 1, 1, 1)).astype(np.float32)
    inits = [numpy_helper.from_array(w, f"{name}_w")]
    inputs = [x, f"{name}_w"]
    if bias:
        b = np.linspace(-1, 1, c_out).astype(np.float32)
        inits.append(numpy_helper.from_array(b, f"{name}_b"))
        inputs.append(f"{name}_b")
    node = helper.make_node("Conv", inputs, [y], name=name, group=group, pads=[k // 2] * 4)
    return node, inits


def build(parts, c_in, c_out, extra_outputs=()):
    nodes, inits = [], []
    for n, i in parts:
        nodes.append(n)
        inits += i
    outs = [models.value("y", (None, c_out, 8, 8))] + [
        models.value(t, (None, 6, 8, 8)) for t in extra_outputs
    ]
    return models.model(nodes, [models.value("x", (None, c_in, 8, 8))], outs, inits)


def act(op, x, y, consts=(), **kw):
    """An activation node; ``consts``: (name, value) of its constant inputs."""
    inits = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in consts]
    node = helper.make_node(op, [x, *(n for n, _ in consts)], [y], name=f"{op}_{y}", **kw)
    return node, inits


def run(m, x):
    return make_session(m, optimize=False).run(None, {"x": x})[0]


def weights(m):
    return {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}


def x_data(c=3, seed=1):
    return np.random.default_rng(seed).standard_normal((2, c, 8, 8)).astype(np.float32)


def test_relu_pair_gets_equal_ranges_in_closed_form_and_same_outputs():
    m = build(
        [conv("c1", "x", "a", 3, 6), act("Relu", "a", "r"), conv("c2", "r", "y", 6, 4, 1, 1)], 3, 4
    )
    w = weights(m)
    r1 = np.abs(w["c1_w"]).reshape(6, -1).max(axis=1)
    r2 = _input_ranges(w["c2_w"], 1)
    out, summary = equalize(m)
    assert summary.pairs == [("c1", "c2")] and summary.iterations <= 2
    e = weights(out)
    s = np.sqrt(r1 / r2)
    np.testing.assert_allclose(e["c1_w"], w["c1_w"] / s.reshape(-1, 1, 1, 1), rtol=1e-6)
    np.testing.assert_allclose(e["c1_b"], w["c1_b"] / s, rtol=1e-6)
    # both sides now share r_i = sqrt(r1_i r2_i) channel by channel
    r1e = np.abs(e["c1_w"]).reshape(6, -1).max(axis=1)
    np.testing.assert_allclose(r1e, np.sqrt(r1 * r2), rtol=1e-6)
    np.testing.assert_allclose(_input_ranges(e["c2_w"], 1), np.sqrt(r1 * r2), rtol=1e-6)
    shared = np.sqrt(r1 * r2)
    assert summary.range_spread_before == pytest.approx(r1.max() / r1.min())
    assert summary.range_spread_after == pytest.approx(shared.max() / shared.min())
    x = x_data()
    np.testing.assert_allclose(
        run(out, x), run(m, x), rtol=1e-5, atol=1e-5 * np.abs(run(m, x)).max()
    )
    assert weights(m)["c1_w"] is not None and np.array_equal(
        weights(m)["c1_w"], w["c1_w"]
    )  # untouched


def test_depthwise_chain_converges_and_keeps_the_function():
    """conv -> Relu -> depthwise -> LeakyRelu -> pointwise (a MobileNet block): two pairs that
    share the depthwise conv, equalized in turn until the scales stop moving."""
    m = build(
        [
            conv("c1", "x", "a", 3, 8, seed=2),
            act("Relu", "a", "r"),
            conv("dw", "r", "d", 8, 8, group=8, seed=3, spread=np.geomspace(5, 0.05, 8)),
            act("LeakyRelu", "d", "l", alpha=0.1),
            conv("pw", "l", "y", 8, 4, seed=4, k=1),
        ],
        3,
        4,
    )
    out, summary = equalize(m)
    assert summary.pairs == [("c1", "dw"), ("dw", "pw")] and 2 < summary.iterations < 20
    e = weights(out)
    for a, b in (("c1", "dw"), ("dw", "pw")):
        groups = 8 if b == "dw" else 1
        r1 = np.abs(e[f"{a}_w"]).reshape(8, -1).max(axis=1)
        np.testing.assert_allclose(r1, _input_ranges(e[f"{b}_w"], groups), rtol=1e-2)
    x = x_data(seed=5)
    ref = run(m, x)
    np.testing.assert_allclose(run(out, x), ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_identity_pair_and_what_is_skipped():
    # Conv -> Conv directly: equalized; Conv -> Clip -> Conv: skipped, and the reason is given
    m = build(
        [
            conv("c1", "x", "a", 3, 6),
            conv("c2", "a", "b", 6, 6, seed=1),
            act("Clip", "b", "c", consts=[("lo", 0.0), ("hi", 6.0)]),
            conv("c3", "c", "y", 6, 4, seed=2),
        ],
        3,
        4,
    )
    out, summary = equalize(m)
    assert summary.pairs == [("c1", "c2")]
    assert "not scale-invariant" in summary.skipped["c2 -> c3"]
    np.testing.assert_array_equal(weights(out)["c3_w"], weights(m)["c3_w"])
    x = x_data(seed=6)
    ref = run(m, x)
    np.testing.assert_allclose(run(out, x), ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_a_middle_tensor_read_elsewhere_is_not_a_pair():
    m = build(
        [conv("c1", "x", "a", 3, 6), act("Relu", "a", "r"), conv("c2", "r", "y", 6, 4)],
        3,
        4,
        extra_outputs=["r"],
    )
    pairs, _ = find_pairs(m)
    assert pairs == []
    out, summary = equalize(m)
    assert summary.pairs == [] and out.graph == m.graph


@pytest.mark.parametrize("op", ["Relu", "LeakyRelu"])
def test_scaled_output_channels_are_undone_exactly_by_the_next_conv(op):
    """Power-of-two ranges make every scale a power of two: the result is bit-exact."""
    spread = np.array([0.25, 4.0, 1.0, 16.0])
    m = build(
        [
            conv("c1", "x", "a", 3, 4, spread=spread, k=1, bias=False),
            act(op, "a", "r"),
            conv("c2", "r", "y", 4, 2, k=1, bias=False, spread=np.ones(2)),
        ],
        3,
        2,
    )
    for i in m.graph.initializer:  # weights with |w| max exactly a power of two per channel
        a = numpy_helper.to_array(i).copy()
        a = np.sign(a) * 2.0 ** np.round(np.log2(np.abs(a) + 1e-12))
        i.CopyFrom(numpy_helper.from_array(a.astype(np.float32), i.name))
    out, _ = equalize(m)
    x = x_data(seed=7)
    np.testing.assert_array_equal(run(out, x), run(m, x))
