import models
import numpy as np
import pytest
from onnx import helper, numpy_helper

from int8kit.onnx.adaround import (
    ada_layers,
    adaround,
    gram_stats,
    output_error,
    to_groups,
)
from int8kit.onnx.observe import make_session
from int8kit.onnx.placement import Placement, plan
from int8kit.onnx.qdq import insert_qdq, quantize_weight
from int8kit.workflow import CalibConfig, calibrate


def conv(group=1, c=4, stride=1, pads=1):
    nodes = [
        helper.make_node(
            "Conv",
            ["x", "w"],
            ["y"],
            name="conv",
            group=group,
            pads=[pads] * 4,
            strides=[stride, stride],
        )
    ]
    return models.model(
        nodes,
        [models.value("x", ("N", c, 8, 8))],
        [models.value("y", ("N", c, None, None))],
        [models.weight("w", (c, c // group, 3, 3), 7)],
    )


def matmul(k=16, n=8):
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")]
    return models.model(
        nodes,
        [models.value("x", ("N", k))],
        [models.value("y", ("N", n))],
        [models.weight("w", (k, n), 3)],
    )


def data(shape, n=4, seed=0):
    rng = np.random.default_rng(seed)
    return [{"x": (rng.standard_normal(shape) + 0.5).astype(np.float32)} for _ in range(n)]


def correlated(shape, n=8, seed=1):
    """Inputs with correlated channels (and, for images, neighbouring pixels), as real layer
    inputs have: what AdaRound exploits (for white inputs nearest rounding is near optimal)."""
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((4, shape[1])).astype(np.float32)
    out = []
    for _ in range(n):
        if len(shape) == 2:
            x = rng.standard_normal((shape[0], 4)) @ mix
        else:
            z = rng.standard_normal((shape[0], shape[2] // 2, shape[3] // 2, 4)) @ mix
            x = np.kron(np.moveaxis(z, -1, 1), np.ones((1, 1, 2, 2)))
        x = x + 0.1 * rng.standard_normal(x.shape)
        out.append({"x": x.astype(np.float32)})
    return out


def layer_mse(fp32, q, batches):
    """Mean over output positions of the squared error summed over output channels."""
    a, b = make_session(fp32), make_session(q, optimize=False)
    total, rows = 0.0, 0
    for batch in batches:
        d = (b.run(None, batch)[0] - a.run(None, batch)[0]).astype(np.float64)
        d = np.moveaxis(d, 1, -1) if d.ndim == 4 else d
        total += float((d**2).sum())
        rows += d.size // d.shape[-1]
    return total / rows


def ranges(m, batches):
    placement = plan(m)
    r = calibrate(m, batches, CalibConfig(method="minmax"), names=list(placement.activations))
    return placement, r.amax()


@pytest.mark.parametrize("group,stride", [(1, 1), (4, 1), (2, 2)])
def test_output_error_is_the_layers_output_error(group, stride):
    """The Gram-matrix error of round-to-nearest equals the Q/DQ layer's output error computed
    by ONNX Runtime (every output position of the tiny conv is a row)."""
    m = conv(group, stride=stride)
    batches = data((2, 4, 8, 8))
    placement, amax = ranges(m, batches)
    layers, _ = ada_layers(m, placement)
    w = numpy_helper.to_array(m.graph.initializer[0])
    wg = to_groups(layers[0], w)
    stats, _ = gram_stats(m, layers, batches, amax, {"conv": wg}, positions=1000)
    q, s = quantize_weight(w, 0)
    d = to_groups(layers[0], q * s[:, None, None, None]) - wg
    qdq, _ = insert_qdq(m, placement, amax)
    expected = layer_mse(m, qdq, batches)
    assert output_error(d, stats["conv"]) == pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize("model,shape", [(matmul, (64, 16)), (lambda: conv(1), (4, 4, 8, 8))])
def test_learned_rounding_beats_nearest_and_stays_within_a_step(model, shape):
    m = model()
    calib = correlated(shape)
    # weights only: the whole output error is the weights' rounding (none from the input)
    placement, amax = Placement(activations={}, weights=plan(m).weights), {}
    rounded, summary = adaround(
        m, placement, calib, amax, seconds=1.5, max_iters=400, max_samples=10**6, positions=256
    )
    name = m.graph.initializer[0].name
    assert name in rounded, summary
    w = numpy_helper.to_array(m.graph.initializer[0])
    q_rtn, scales = quantize_weight(w, placement.weights[next(iter(placement.weights))].axis)
    q = rounded[name].astype(np.int32)
    assert np.abs(q - q_rtn).max() <= 1  # nearest rounding or one step away
    assert (q != q_rtn).any()
    # the Q/DQ model's weight DequantizeLinear holds exactly the learned values
    qdq_rtn, _ = insert_qdq(m, placement, amax)
    qdq_ada, _ = insert_qdq(m, placement, amax, rounded=rounded)
    stored = [numpy_helper.to_array(i) for i in qdq_ada.graph.initializer]
    (stored,) = [a for a in stored if a.dtype == np.int8 and a.shape == w.shape]
    np.testing.assert_array_equal(stored, rounded[name])
    rtn, ada = layer_mse(m, qdq_rtn, calib), layer_mse(m, qdq_ada, calib)
    assert ada < 0.7 * rtn, (ada, rtn)  # on the calibration data
    layer = summary.layers[next(iter(summary.layers))]
    assert layer["adaround"] == pytest.approx(ada, rel=0.05)
    assert layer["rtn"] == pytest.approx(rtn, rel=0.05)


def test_no_time_left_keeps_nearest_rounding():
    m = matmul()
    calib = data((64, 16))
    placement, amax = ranges(m, calib)
    rounded, summary = adaround(m, placement, calib, amax, seconds=1e-6)
    assert rounded == {} and "time budget" in summary.skipped["mm"]
