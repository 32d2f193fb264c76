"""Centring one-sided activations: the same FP32 function, half the int8 step, only for linear
layers that do not pad."""

import models
import numpy as np
import pytest
from onnx import helper, numpy_helper
from test_equalize import conv

from int8kit.onnx.center import center
from int8kit.onnx.placement import PlacementConfig, plan
from int8kit.ranges import Ranges, TensorRange


def relu_into(readers):
    """x -> 3x3 Conv(3->6) -> Relu -> r -> each of ``readers`` (nodes reading r) -> outputs."""
    c1, i1 = conv("c1", "x", "a", 3, 6, spread=np.ones(6))
    nodes = [c1, helper.make_node("Relu", ["a"], ["r"], name="relu")]
    inits = list(i1)
    outs = []
    for node, node_inits, shape in readers:
        nodes.append(node)
        inits += node_inits
        outs.append(models.value(node.output[0], shape))
    return models.model(nodes, [models.value("x", (None, 3, 8, 8))], outs, inits)


def ranges_of(model, tensors, data):
    """minmax ranges with the min/max stats calibration records."""
    from int8kit.onnx.observe import expose, make_session

    s = make_session(expose(model, tensors), optimize=False)
    vals = s.run(tensors, {"x": data})
    return Ranges(
        tensors={
            t: TensorRange(
                amax=float(np.abs(v).max()),
                method="minmax",
                stats={"min": float(v.min()), "max": float(v.max())},
            )
            for t, v in zip(tensors, vals, strict=True)
        }
    )


def outputs(model, x):
    from int8kit.onnx.observe import make_session

    return make_session(model, optimize=False).run(None, {"x": x})


@pytest.fixture
def x():
    return np.random.default_rng(1).standard_normal((4, 3, 8, 8)).astype(np.float32)


def test_pointwise_conv_reads_the_centred_tensor_and_the_padded_conv_keeps_the_old(x):
    pw, pw_i = conv("pw", "r", "y1", 6, 4, k=1, spread=np.ones(4))
    dense, dense_i = conv("c3", "r", "y2", 6, 4, k=3, spread=np.ones(4))  # pads 1
    m = relu_into([(pw, pw_i, (None, 4, 8, 8)), (dense, dense_i, (None, 4, 8, 8))])
    placement = plan(m, PlacementConfig())
    ranges = ranges_of(m, list(placement.activations), x)
    amax = ranges.tensors["r"].amax
    out, pl, rg, summary = center(m, placement, ranges)
    d = summary.centered["r"]
    assert d["layers"] == ["pw"] and d["shift"] == pytest.approx(amax / 2)  # relu: min 0
    assert "1 readers pad" in summary.kept["r"]
    new = next(t for t, edges in pl.activations.items() if edges == [("pw", 0)])
    assert pl.activations["r"] == [("c3", 0)]
    assert rg.tensors[new].amax == pytest.approx(amax / 2)  # half the step
    sub = next(n for n in out.graph.node if n.op_type == "Sub")
    assert sub.input[0] == "r" and sub.output[0] == new
    for a, b in zip(outputs(m, x), outputs(out, x), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)


def test_matmul_and_gemm_get_the_shift_in_a_bias(x):
    # r flattened (N, 384) -> MatMul (no bias) and Gemm (transB, beta 0.5, with C)
    rng = np.random.default_rng(2)
    f = numpy_helper.from_array
    flat = helper.make_node("Flatten", ["r"], ["h"], name="flat")
    relu2 = helper.make_node("Relu", ["h"], ["hr"], name="relu2")
    mm = helper.make_node("MatMul", ["hr", "wm"], ["y1"], name="mm")
    gemm = helper.make_node(
        "Gemm", ["hr", "wg", "cg"], ["y2"], name="gemm", transB=1, beta=0.5, alpha=2.0
    )
    wm = f(rng.standard_normal((384, 5)).astype(np.float32), "wm")
    wg = f(rng.standard_normal((7, 384)).astype(np.float32), "wg")
    cg = f(rng.standard_normal(7).astype(np.float32), "cg")
    m = relu_into(
        [
            (flat, [], (None, 384)),
            (relu2, [], (None, 384)),
            (mm, [wm], (None, 5)),
            (gemm, [wg, cg], (None, 7)),
        ]
    )
    placement = plan(m, PlacementConfig())
    assert set(placement.activations) >= {"hr"}
    out, pl, rg, summary = center(m, placement, ranges_of(m, list(placement.activations), x))
    assert sorted(summary.centered["hr"]["layers"]) == ["gemm", "mm"]
    add = next(n for n in out.graph.node if n.op_type == "Add")
    assert add.output[0] == "y1"  # the MatMul's bias Add keeps the output's name
    for a, b in zip(outputs(m, x), outputs(out, x), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-3)


def test_a_two_sided_tensor_is_left_alone(x):
    pw, pw_i = conv("pw", "a", "y", 6, 4, k=1)  # reads the conv output before the Relu
    c1, i1 = conv("c1", "x", "a", 3, 6)
    m = models.model(
        [c1, pw],
        [models.value("x", (None, 3, 8, 8))],
        [models.value("y", (None, 4, 8, 8))],
        i1 + pw_i,
    )
    placement = plan(m, PlacementConfig())
    out, _, _, summary = center(m, placement, ranges_of(m, list(placement.activations), x))
    assert not summary.centered
    assert [n.op_type for n in out.graph.node] == ["Conv", "Conv"]


def _quantize_relu_block(tmp_path, **options) -> dict:
    """quantize_onnx of a ReLU -> 1x1 conv block without and with centring: {on: result}."""
    from int8kit.data import DataConfig
    from int8kit.workflow import QuantizeConfig, quantize_onnx

    pw, pw_i = conv("pw", "r", "y", 6, 4, k=1, spread=np.ones(4))
    path = models.save(relu_into([(pw, pw_i, (None, 4, 8, 8))]), tmp_path / "m.onnx")
    data = models.save_npz(tmp_path / "d.npz", n=64, x=(1, 3, 8, 8))
    return {
        on: quantize_onnx(
            QuantizeConfig(
                path,
                str(tmp_path / f"o{on}.onnx"),
                data=DataConfig(data),
                holdout=16,
                bias_correction=False,
                center_one_sided=on,  # the input layer stays float: r is the only activation
                **options,
            )
        )
        for on in (False, True)
    }


def test_quantize_with_centring_halves_the_error_of_a_relu_block(tmp_path):
    results = _quantize_relu_block(tmp_path)
    sqnr = {}
    for on, r in results.items():
        assert bool(r.center.get("centered")) is on
        sqnr[on] = r.fidelity["trt-like"]["y"]["sqnr_db"]
    # the ReLU output's step halves (its share of the error / 4); the weights' share stays
    assert sqnr[True] > sqnr[False] + 1.5


def test_the_fallback_ranks_the_centred_model(tmp_path):
    """Centring runs before the fallback: the fallback's held-out score is the centred model's
    (the one written), not the uncentred model's."""
    results = _quantize_relu_block(tmp_path, target_sqnr=0.0)  # met at once: nothing goes float
    before = {}
    for on, r in results.items():
        assert r.fallback["excluded"] == []
        before[on] = r.fallback["before"]["sqnr_db"]
        final = r.fidelity["trt-like"]["y"]["sqnr_db"]
        assert before[on] == pytest.approx(final, abs=0.5)
    assert before[True] > before[False] + 1.5
