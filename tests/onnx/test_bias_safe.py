"""Bias correction that cannot hurt: the held-out gate and the empirical statistics."""

from dataclasses import replace

import models
import numpy as np
import pytest
from onnx import helper, numpy_helper
from test_bias import channel_error, conv_model, data, run, weights_only

from int8kit.onnx.bias import bias_layers, correct_biases, input_means
from int8kit.onnx.bias_safe import (
    gate,
    layer_shifts,
    layer_shifts_parts,
    safe_bias_correct,
    split_sizes,
)
from int8kit.onnx.placement import plan
from int8kit.onnx.qdq import dequantized_weight, insert_qdq


def shifts(m, p, x, amax=None):
    layers, _ = bias_layers(m, p)
    means = input_means(m, layers, [{"x": x}])
    quantized = input_means(m, layers, [{"x": x}], amax=amax) if amax else means
    return layer_shifts(m, layers, means, quantized)["conv"]


def pointwise_conv(c_in=4, c_out=6):
    """A 1x1 Conv: every output position reads one input position, so the mean output is
    W @ (per-channel input mean) exactly (a 3x3 kernel weighs border positions less)."""
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv")]
    inits = [
        models.weight("w", (c_out, c_in, 1, 1), 11),
        numpy_helper.from_array(np.linspace(-1, 1, c_out).astype(np.float32), "b"),
    ]
    return models.model(
        nodes,
        [models.value("x", (None, c_in, 8, 8))],
        [models.value("y", (None, c_out, 8, 8))],
        inits,
    )


def test_gate_ratio_is_the_measured_change_of_the_held_out_output_error():
    """Adding delta_A changes the held-out MSE by exactly mean_o[(dB - dA)^2 - dB^2]."""
    m = pointwise_conv()
    p = plan(m)
    amax = {"x": 2.5}
    xa, xb = data((8, 4, 8, 8), seed=1), data((8, 4, 8, 8), seed=2) * 0.7
    d_a, d_b = shifts(m, p, xa, amax), shifts(m, p, xb, amax)
    layers, _ = bias_layers(m, p)
    fixed, _ = correct_biases(
        m,
        p,
        input_means(m, layers, [{"x": xa}]),
        input_means(m, layers, [{"x": xa}], amax=amax),
    )
    ref = run(m, xb)
    mse_before = np.mean((run(insert_qdq(m, p, amax)[0], xb) - ref) ** 2)
    mse_after = np.mean((run(insert_qdq(fixed, p, amax)[0], xb) - ref) ** 2)
    predicted = np.mean((d_b - d_a) ** 2 - d_b**2)
    assert mse_after - mse_before == pytest.approx(predicted, rel=1e-3, abs=1e-9)
    ratio = gate({"conv": d_a}, {"conv": d_b})["conv"]
    assert ratio == pytest.approx(np.sum((d_b - d_a) ** 2) / np.sum(d_b**2))


def test_a_shift_that_does_not_hold_on_held_out_samples_is_dropped():
    """Weights-only quantization: delta is linear in the input mean, so held-out samples with
    the opposite channel means have delta_B = -delta_A and the correction quadruples the error."""
    m = conv_model(4, 6)
    p = weights_only(m)
    mean = np.linspace(0.5, 3.0, 4).astype(np.float32)
    xa = data((8, 4, 8, 8), seed=3, mean=mean)
    xb = data((8, 4, 8, 8), seed=4, mean=-mean)
    d_a, d_b = shifts(m, p, xa), shifts(m, p, xb)
    np.testing.assert_allclose(d_b, -d_a, rtol=0.15)
    assert gate({"conv": d_a}, {"conv": d_b})["conv"] == pytest.approx(4.0, rel=0.25)
    batches = [{"x": xa}, {"x": xb}]
    out, summary = safe_bias_correct(m, p, batches, {}, max_samples=8, gate_samples=8)
    assert summary.corrected == [] and list(summary.dropped) == ["conv"]
    assert summary.gate_samples == 8 and summary.estimate_samples == 8
    b = {i.name: numpy_helper.to_array(i) for i in out.graph.initializer}["b"]
    np.testing.assert_array_equal(b, np.linspace(-1, 1, 6).astype(np.float32))
    # the same held-out samples as the estimate: kept, and the held-out error falls
    same = [{"x": xa}, {"x": data((8, 4, 8, 8), seed=5, mean=mean)}]
    _, summary = safe_bias_correct(m, p, same, {}, max_samples=8, gate_samples=8)
    assert summary.corrected == ["conv"] and not summary.dropped and summary.kept_ratio < 0.1


def test_split_sizes_keep_a_third_of_a_small_set_for_the_check():
    assert split_sizes(None, 32, 16) == [32, 16]
    assert split_sizes(100, 32, 16) == [32, 16]
    assert split_sizes(12, 32, 16) == [8, 4]
    assert split_sizes(11, 32, 16) == [32]  # too few to hold out: no gate
    assert split_sizes(100, 32, 0) == [32]


def chain():
    """x -> conv1 -> Relu -> conv2 -> y (4 channels, 1x1 kernels: see pointwise_conv)."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["y"], name="conv2"),
    ]
    inits = [
        models.weight("w1", (4, 4, 1, 1), 21),
        numpy_helper.from_array(np.full(4, 0.3, np.float32), "b1"),
        models.weight("w2", (4, 4, 1, 1), 22),
        numpy_helper.from_array(np.zeros(4, np.float32), "b2"),
    ]
    return models.model(
        nodes, [models.value("x", (None, 4, 8, 8))], [models.value("y", (None, 4, 8, 8))], inits
    )


def test_empirical_statistics_cancel_the_whole_mean_error_on_their_samples():
    """Corrected stage by stage with upstream layers quantized and corrected, the last layer's
    mean output error on the estimation samples is zero; the local statistics leave the error
    that upstream quantization carries through the Relu."""
    m = chain()
    p = plan(m)
    x = data((8, 4, 8, 8), seed=7)
    amax = {"x": 2.0, "r1": 1.0}  # both clip
    errs = {}
    for stats in ("local", "empirical"):
        out, summary = safe_bias_correct(
            m, p, [{"x": x}], amax, max_samples=8, gate_samples=0, stats=stats, stages=2
        )
        assert summary.corrected == ["conv1", "conv2"] and summary.gate_samples == 0
        assert summary.passes == (3 if stats == "empirical" else 1)
        errs[stats] = channel_error(m, insert_qdq(out, p, amax)[0], x)
    assert errs["empirical"].max() < 1e-4
    assert errs["local"].max() > 20 * errs["empirical"].max()


def test_unknown_statistics_are_refused():
    m = conv_model()
    with pytest.raises(ValueError, match="local"):
        safe_bias_correct(m, plan(m), [], {}, stats="global")


def test_shifts_of_several_sample_sets_are_each_sets_own():
    """Estimate and held-out shifts from one call (each weight rounded once) are
    E[W x] - E[Wq x_q] of their own means; for a 1x1 Conv that is W @ m - Wq @ mq exactly."""
    m = pointwise_conv()
    p = plan(m)
    layers, _ = bias_layers(m, p)
    amax = {"x": 2.5}
    w = numpy_helper.to_array(m.graph.initializer[0]).astype(np.float64)[:, :, 0, 0]
    wq = dequantized_weight(w.astype(np.float32), 0).astype(np.float64)
    parts = []
    for seed, scale in ((1, 1.0), (2, -0.6)):
        x = [{"x": data((8, 4, 8, 8), seed=seed) * np.float32(scale)}]
        parts.append((input_means(m, layers, x), input_means(m, layers, x, amax=amax)))
    got = layer_shifts_parts(m, layers, parts)
    assert [list(g) for g in got] == [["conv"], ["conv"]]
    for (means, quantized), g in zip(parts, got, strict=True):
        np.testing.assert_allclose(
            g["conv"], w @ means["x"] - wq @ quantized["x"], rtol=1e-12, atol=1e-12
        )
    assert not np.allclose(got[0]["conv"], got[1]["conv"])
    # a set that lacks a layer's means has no shift for it; the others still do
    missing = layer_shifts_parts(m, layers, [parts[0], ({}, {})])
    assert list(missing[0]) == ["conv"] and missing[1] == {}


def test_correct_biases_adds_the_shifts_it_is_given_as_they_are():
    """Given layer_shifts' own shifts, correct_biases writes the very same model as when it
    computes them; given other shifts, the bias moves by exactly the difference."""
    m = pointwise_conv()
    p = plan(m)
    layers, _ = bias_layers(m, p)
    x = [{"x": data((8, 4, 8, 8), seed=3)}]
    means, quantized = input_means(m, layers, x), input_means(m, layers, x, amax={"x": 2.5})
    d = layer_shifts(m, layers, means, quantized)
    computed, _ = correct_biases(m, p, means, quantized)
    given, summary = correct_biases(m, p, means, quantized, shifts=d)
    assert given.SerializeToString() == computed.SerializeToString()
    assert summary.corrected == ["conv"]
    moved, _ = correct_biases(m, p, means, quantized, shifts={"conv": d["conv"] + 0.25})

    def bias(model):
        inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        return inits["conv_bias_corrected"]

    np.testing.assert_allclose(bias(moved) - bias(given), 0.25, rtol=1e-6)


def test_gated_correction_writes_what_correct_biases_writes_for_the_kept_layers():
    """safe_bias_correct (estimate + held-out in one pass) gives the bytes correct_biases
    gives from the estimate samples' means for the layers the gate keeps."""
    m = chain()
    p = plan(m)
    amax = {"x": 2.0, "r1": 1.0}
    xa, xb = data((8, 4, 8, 8), seed=7), data((8, 4, 8, 8), seed=8)
    out, summary = safe_bias_correct(m, p, [{"x": xa}, {"x": xb}], amax, 8, 8)
    assert summary.gate_samples == 8 and summary.corrected
    layers, _ = bias_layers(m, p)
    kept = [layer for layer in layers if layer.node in summary.corrected]
    means = input_means(m, kept, [{"x": xa}])
    quantized = input_means(m, kept, [{"x": xa}], amax=amax)
    sub = replace(p, weights={k: v for k, v in p.weights.items() if k[0] in summary.corrected})
    ref, _ = correct_biases(m, sub, means, quantized)
    assert out.SerializeToString() == ref.SerializeToString()
