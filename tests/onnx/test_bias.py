import models
import numpy as np
import pytest
from onnx import helper, numpy_helper

from int8kit.onnx.bias import bias_correct, bias_layers, correct_biases, input_means
from int8kit.onnx.observe import make_session
from int8kit.onnx.placement import Placement, plan
from int8kit.onnx.qdq import insert_qdq


def conv_model(c_in=4, c_out=4, group=1, bias=True, pads=0):
    nodes = [
        helper.make_node(
            "Conv",
            ["x", "w"] + (["b"] if bias else []),
            ["y"],
            name="conv",
            group=group,
            pads=[pads] * 4,
        )
    ]
    inits = [models.weight("w", (c_out, c_in // group, 3, 3), 11)]
    if bias:
        inits.append(numpy_helper.from_array(np.linspace(-1, 1, c_out).astype(np.float32), "b"))
    size = 8 - 2 + 2 * pads
    return models.model(
        nodes,
        [models.value("x", (None, c_in, 8, 8))],
        [models.value("y", (None, c_out, size, size))],
        inits,
    )


def data(shape, seed=0, mean=None):
    """Inputs whose channels have clearly non-zero, different means."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    if mean is None:
        mean = np.linspace(0.5, 3.0, shape[1]).astype(np.float32)
    return x + mean.reshape([1, -1] + [1] * (len(shape) - 2))


def run(m, x, optimize=False):
    return make_session(m, optimize=optimize).run(None, {"x": x})[0]


def channel_error(fp32, q, x, axis=1):
    """|mean over everything but ``axis`` of (INT8 output - FP32 output)| per channel."""
    d = run(q, x) - run(fp32, x)
    return np.abs(d.mean(axis=tuple(a for a in range(d.ndim) if a != axis)))


def weights_only(m):
    return Placement(activations={}, weights=plan(m).weights)


@pytest.mark.parametrize("c_in,c_out,group", [(4, 6, 1), (4, 4, 4), (4, 6, 2)])
def test_conv_mean_error_is_cancelled(c_in, c_out, group):
    m = conv_model(c_in, c_out, group)
    p = weights_only(m)
    x = data((16, c_in, 8, 8))
    layers, _ = bias_layers(m, p)
    fixed, summary = correct_biases(m, p, input_means(m, layers, [{"x": x}]))
    assert summary.corrected == ["conv"] and not summary.bias_added
    before = channel_error(m, insert_qdq(m, p, {})[0], x)
    after = channel_error(m, insert_qdq(fixed, p, {})[0], x)
    assert before.max() > 2e-3  # the rounding does shift the mean
    # Per-channel means stand for every kernel tap's window: what is left is their spread.
    assert after.max() < before.max() / 50


def test_depthwise_uses_each_channels_own_mean():
    """Depthwise: channel o only sees input channel o; a shift computed with a full-sum over
    input channels (group ignored) would be wrong by far more than the tolerance."""
    m = conv_model(4, 4, group=4)
    p = weights_only(m)
    means = {"x": np.array([4.0, -3.0, 0.5, 2.0])}
    fixed, _ = correct_biases(m, p, means)
    w = numpy_helper.to_array(m.graph.initializer[0]).astype(np.float64)
    from int8kit.onnx.qdq import dequantized_weight

    dw = dequantized_weight(w.astype(np.float32), 0) - w
    expect = np.linspace(-1, 1, 4) - dw.reshape(4, -1).sum(axis=1) * means["x"]
    got = {i.name: numpy_helper.to_array(i) for i in fixed.graph.initializer}["conv_bias_corrected"]
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-7)


def test_input_model_is_untouched_and_layer_without_bias_gets_one():
    m = conv_model(bias=False)
    before = m.SerializeToString()
    p = weights_only(m)
    fixed, summary = correct_biases(m, p, {"x": np.full(4, 2.0)})
    assert m.SerializeToString() == before
    assert summary.bias_added == ["conv"] and summary.corrected == ["conv"]
    conv = fixed.graph.node[0]
    assert list(conv.input) == ["x", "w", "conv_bias_corrected"]
    x = data((8, 4, 8, 8), mean=np.full(4, 2.0, np.float32))
    assert (
        channel_error(m, insert_qdq(fixed, p, {})[0], x).max()
        < channel_error(m, insert_qdq(m, p, {})[0], x).max() / 10
    )


def gemm_model(trans_b, alpha, beta, with_c=True):
    w = (8, 5) if trans_b else (5, 8)
    inputs = ["x", "w"] + (["c"] if with_c else [])
    node = helper.make_node(
        "Gemm", inputs, ["y"], name="fc", transB=trans_b, alpha=alpha, beta=beta
    )
    inits = [models.weight("w", w, 12)]
    if with_c:
        inits.append(numpy_helper.from_array(np.full((1, 8), 0.25, np.float32), "c"))
    return models.model(
        [node], [models.value("x", (None, 5))], [models.value("y", (None, 8))], inits
    )


def matmul_model(with_add):
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m" if with_add else "y"], name="mm")]
    inits = [models.weight("w", (5, 8), 13)]
    if with_add:
        nodes.append(helper.make_node("Add", ["m", "b"], ["y"], name="add"))
        inits.append(numpy_helper.from_array(np.full(8, -0.5, np.float32), "b"))
    return models.model(
        nodes, [models.value("x", (None, 5))], [models.value("y", (None, 8))], inits
    )


@pytest.mark.parametrize(
    "m",
    [
        gemm_model(1, 0.5, 2.0),
        gemm_model(0, 1.5, 1.0),
        gemm_model(1, 1.0, 1.0, with_c=False),
        matmul_model(True),
        matmul_model(False),
    ],
    ids=["gemm-transB", "gemm", "gemm-no-C", "matmul-add", "matmul"],
)
def test_gemm_and_matmul(m):
    p = weights_only(m)
    x = data((64, 5), seed=3)
    layers, _ = bias_layers(m, p)
    fixed, summary = correct_biases(m, p, input_means(m, layers, [{"x": x}]))
    assert len(summary.corrected) == 1
    q = insert_qdq(fixed, p, {})[0]
    assert [o.name for o in q.graph.output] == ["y"]
    before = channel_error(m, insert_qdq(m, p, {})[0], x)
    after = channel_error(m, q, x)
    assert before.max() > 1e-3 and after.max() < 1e-5


def test_quantized_means_also_cancel_activation_clipping():
    """An activation amax that clips the input shifts the mean too; only the correction that
    is given the Q/DQ model's own input means removes that part."""
    m = conv_model(4, 6)
    p = plan(m)
    amax = {"x": 2.0}  # inputs reach ~6: clipping biases the mean down
    x = data((16, 4, 8, 8))
    layers, _ = bias_layers(m, p)
    means = input_means(m, layers, [{"x": x}])
    qmeans = input_means(insert_qdq(m, p, amax)[0], layers, [{"x": x}])
    assert all(qmeans["x"] < means["x"])
    fp32_only, _ = correct_biases(m, p, means)
    both, _ = correct_biases(m, p, means, qmeans)
    err_none = channel_error(m, insert_qdq(m, p, amax)[0], x)
    err_fp32 = channel_error(m, insert_qdq(fp32_only, p, amax)[0], x)
    err_both = channel_error(m, insert_qdq(both, p, amax)[0], x)
    assert err_fp32.max() > err_none.max() / 2  # the weight-only shift leaves clipping alone
    assert err_both.max() < err_none.max() / 50


def test_bias_correct_in_one_call_uses_each_layers_own_input_range():
    m = conv_model(4, 6)
    p = plan(m)
    x = data((16, 4, 8, 8))
    fixed, summary = bias_correct(m, p, [{"x": x}], amax={"x": 2.0})
    assert summary.corrected == ["conv"]
    err = channel_error(m, insert_qdq(fixed, p, {"x": 2.0})[0], x)
    assert err.max() < channel_error(m, insert_qdq(m, p, {"x": 2.0})[0], x).max() / 50


def fake_quant_means(x, amax, axis=1):
    """The definition: per-channel mean of x and of s * clamp(round_half_even(x / s))."""
    s = np.float32(amax / 127.0)
    q = np.clip(np.round(x / s), -128, 127) * np.float64(s)
    axes = tuple(a for a in range(x.ndim) if a != axis)
    return x.astype(np.float64).mean(axis=axes), q.mean(axis=axes)


def test_local_means_are_the_fake_quantized_input_means():
    m = conv_model(4, 6)
    layers, _ = bias_layers(m, plan(m))
    x = data((10, 4, 8, 8), seed=4)
    batches = [{"x": x[i : i + 4]} for i in range(0, 10, 4)]  # 4, 4, 2
    plain = input_means(m, layers, batches)["x"]
    quant = input_means(m, layers, batches, amax={"x": 2.0})["x"]
    ref_plain, ref_quant = fake_quant_means(x, 2.0)
    np.testing.assert_allclose(plain, ref_plain, rtol=1e-12)
    np.testing.assert_allclose(quant, ref_quant, rtol=1e-12)
    assert np.all(ref_plain - ref_quant > 0.02)  # the clipping at 2.0 is in the numbers


class Counted:
    """A re-iterable batch source that counts the batches it hands out."""

    def __init__(self, batches):
        self.batches, self.read = batches, 0

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        for b in self.batches:
            self.read += 1
            yield b


def test_max_samples_takes_the_first_samples_and_reads_no_further():
    m = conv_model(4, 6)
    p = plan(m)
    layers, _ = bias_layers(m, p)
    x = data((16, 4, 8, 8), seed=6)
    src = Counted([{"x": x[i : i + 4]} for i in range(0, 16, 4)])
    got = input_means(m, layers, src, amax={"x": 2.0}, max_samples=6)["x"]
    assert src.read == 2  # 4 + 2 of the second batch; batches 3 and 4 are never read
    np.testing.assert_allclose(got, fake_quant_means(x[:6], 2.0)[1], rtol=1e-12)
    assert not np.allclose(got, fake_quant_means(x, 2.0)[1], rtol=1e-3)
    # bias_correct: the same means, so the same biases as correcting from x[:6] alone
    a, _ = bias_correct(m, p, src, amax={"x": 2.0}, max_samples=6)
    b, _ = bias_correct(m, p, [{"x": x[:6]}], amax={"x": 2.0}, max_samples=None)
    bias = {i.name: numpy_helper.to_array(i) for i in a.graph.initializer}["conv_bias_corrected"]
    ref = {i.name: numpy_helper.to_array(i) for i in b.graph.initializer}["conv_bias_corrected"]
    np.testing.assert_allclose(bias, ref, rtol=1e-6)
    with pytest.raises(ValueError, match="max_samples"):
        input_means(m, layers, src, max_samples=0)


def test_numpy_fallback_gives_the_same_corrections(monkeypatch):
    from int8kit.calib import kernels

    m = conv_model(4, 6, group=2)
    p = plan(m)
    x = data((8, 4, 8, 8), seed=9)
    fast, _ = bias_correct(m, p, [{"x": x}], amax={"x": 2.5})
    monkeypatch.setitem(kernels._compiled, "sums", False)
    slow, _ = bias_correct(m, p, [{"x": x}], amax={"x": 2.5})
    f = {i.name: numpy_helper.to_array(i) for i in fast.graph.initializer}
    s = {i.name: numpy_helper.to_array(i) for i in slow.graph.initializer}
    np.testing.assert_allclose(f["conv_bias_corrected"], s["conv_bias_corrected"], rtol=1e-6)
    assert not np.allclose(f["conv_bias_corrected"], np.linspace(-1, 1, 6), atol=1e-3)


def pad_conv_model(pads, value, pads_as="init"):
    """x (N,4,8,8) -> Pad(pads, value) -> p -> Conv 3x3: the Pad's input is what gets exposed."""
    pads = np.array(pads, np.int64)
    inits = [models.weight("w", (4, 4, 3, 3), 21)]
    nodes = []
    if pads_as == "init":
        inits.append(numpy_helper.from_array(pads, "pads"))
    else:  # computed in the graph: read from ONNX Runtime every batch
        nodes.append(
            helper.make_node("Constant", [], ["pads"], value=numpy_helper.from_array(pads))
        )
    pad_in = ["x", "pads"]
    if value is not None:
        inits.append(numpy_helper.from_array(np.array(value, np.float32), "v"))
        pad_in.append("v")
    nodes += [
        helper.make_node("Pad", pad_in, ["p"], name="pad", mode="constant"),
        helper.make_node("Conv", ["p", "w"], ["y"], name="conv"),
    ]
    return models.model(
        nodes,
        [models.value("x", (None, 4, 8, 8))],
        [models.value("y", (None, 4, None, None))],
        inits,
    )


@pytest.mark.parametrize(
    "pads,value,pads_as",
    [
        ([0, 0, 1, 1, 0, 0, 2, 2], None, "init"),  # zeros, TF "same" style
        ([0, 0, 1, 0, 0, 0, 2, 3], 1.5, "node"),  # a constant that is not zero, pads computed
        ([0, 0, -1, 2, 0, 0, 1, -2], 0.25, "init"),  # cropping: applied for real
    ],
)
def test_padded_inputs_have_the_means_of_the_padded_tensor(pads, value, pads_as):
    m = pad_conv_model(pads, value, pads_as)
    layers, _ = bias_layers(m, plan(m))
    assert [la.input for la in layers] == ["p"]
    x = data((6, 4, 8, 8), seed=12)
    batches = [{"x": x[:4]}, {"x": x[4:]}]
    ref = run_pad(x, pads, value)
    ref_plain, ref_quant = fake_quant_means(ref, 2.0)
    plain = input_means(m, layers, batches)["p"]
    quant = input_means(m, layers, batches, amax={"p": 2.0})["p"]
    np.testing.assert_allclose(plain, ref_plain, rtol=1e-12)
    np.testing.assert_allclose(quant, ref_quant, rtol=1e-12)
    assert not np.allclose(plain, x.mean(axis=(0, 2, 3)), rtol=1e-2)  # the padding counts


def run_pad(x, pads, value):
    """The Pad output, computed by ONNX Runtime itself."""
    m = pad_conv_model(pads, value)
    from int8kit.onnx.observe import expose

    return make_session(expose(m, ["p"]), optimize=False).run(["p"], {"x": x})[0]


def test_batches_are_run_in_parts_with_the_same_means(monkeypatch):
    import int8kit.onnx.bias as bias_mod

    m = conv_model(4, 6)
    layers, _ = bias_layers(m, plan(m))
    x = data((8, 4, 8, 8), seed=13)
    whole = input_means(m, layers, [{"x": x}], amax={"x": 2.0})["x"]
    runs = []
    real = bias_mod._means

    # one exposed sample is 4*8*8 floats = 1 KiB: parts of 3 samples, then 1, 3, 3, 1
    monkeypatch.setattr(bias_mod, "_RUN_BYTES", 3 * 1024)
    from int8kit.onnx import observe

    make = observe.make_session

    def counting_session(*a, **k):
        s = make(*a, **k)

        class Counting:
            def __getattr__(self, name):
                return getattr(s, name)

            def run(self, names, feed):
                runs.append(len(feed["x"]))
                return s.run(names, feed)

        return Counting()

    monkeypatch.setattr(observe, "make_session", counting_session)
    parts = real(m, layers, [{"x": x}], {"x": 2.0})[1]["x"]
    assert runs == [1, 3, 3, 1]
    np.testing.assert_allclose(parts, whole, rtol=1e-12)
    np.testing.assert_allclose(parts, fake_quant_means(x, 2.0)[1], rtol=1e-12)


def test_bias_correct_reads_only_its_default_sample_budget():
    from int8kit.onnx.bias import DEFAULT_MAX_SAMPLES

    m = conv_model(4, 6)
    p = plan(m)
    x = data((DEFAULT_MAX_SAMPLES + 16, 4, 8, 8), seed=14)
    src = Counted([{"x": x[i : i + 8]} for i in range(0, len(x), 8)])
    a, _ = bias_correct(m, p, src, amax={"x": 2.0})
    assert src.read == DEFAULT_MAX_SAMPLES // 8
    b, _ = bias_correct(m, p, [{"x": x[:DEFAULT_MAX_SAMPLES]}], amax={"x": 2.0}, max_samples=None)
    get = {i.name: numpy_helper.to_array(i) for i in a.graph.initializer}
    ref = {i.name: numpy_helper.to_array(i) for i in b.graph.initializer}
    np.testing.assert_allclose(get["conv_bias_corrected"], ref["conv_bias_corrected"], rtol=1e-6)
