"""Depthwise equalization: the same FP32 function, one range per channel through one scale per
tensor, and a held-out gate that refuses small gains."""

import numpy as np
import pytest
from onnx import helper, numpy_helper
from test_equalize import act, build, conv, run, weights

from int8kit.onnx.dwequalize import (
    MAX_ERROR_RATIO,
    channel_scales,
    depthwise_groups,
    equalize_depthwise,
)
from int8kit.onnx.observe import make_session


def batches(c=3, n=8, size=8, seed=1):
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((size, c, 8, 8)).astype(np.float32)} for _ in range(n)]


def dw_block(middle, spread=None, dw_spread=None):
    """x -> Conv(3->6, output channels spread 0.01..10) -> middle -> depthwise Conv(6) -> y.
    ``dw_spread``: the depthwise weights' per-channel scale (a folded BatchNorm that evens the
    channels out gives the narrow channels the large weights)."""
    c1 = conv("c1", "x", "a", 3, 6, spread=spread)
    dw_spread = np.ones(6) if dw_spread is None else dw_spread
    dw = conv("dw", middle[-1][0].output[0], "y", 6, 6, group=6, seed=2, spread=dw_spread)
    return build([c1, *middle, dw], 3, 6)


def channel_max(model, tensor, data):
    from int8kit.onnx.observe import expose

    s = make_session(expose(model, [tensor]), optimize=False)
    vals = [s.run([tensor], b)[0] for b in data]
    return np.max([np.abs(v).max(axis=(0, 2, 3)) for v in vals], axis=0)


def dw_input(model):
    return next(n for n in model.graph.node if n.name == "dw").input[0]


def test_relu_between_folds_into_the_conv_and_every_channel_spans_the_range():
    m = dw_block([act("Relu", "a", "r")])
    data = batches()
    out, summary = equalize_depthwise(m, data, headroom=1.0)
    assert summary.equalized["r"]["where"] == "Conv c1 through Relu"
    assert [n.op_type for n in out.graph.node] == ["Conv", "Relu", "Conv"]  # nothing inserted
    x = data[0]["x"]
    np.testing.assert_allclose(run(out, x), run(m, x), rtol=1e-4, atol=1e-4)
    # headroom 1: each channel of the dw input reaches the widest channel's range
    before, after = channel_max(m, "r", data), channel_max(out, "r", data)
    live = before > 0  # channel 0 (weights x 0.01, bias -1) never passes the Relu
    assert live.sum() == 5
    np.testing.assert_allclose(after[live], before.max(), rtol=1e-5)
    # ... and the depthwise weights carry the channel's range (s_c = max_c / max)
    dw = next(n for n in out.graph.node if n.name == "dw")
    ratio = weights(out)[dw.input[1]] / weights(m)["dw_w"]
    expect = np.maximum(before / before.max(), 1e-4).reshape(-1, 1, 1, 1)
    np.testing.assert_allclose(ratio, np.broadcast_to(expect, ratio.shape), rtol=1e-5)


def test_clip_between_gets_an_explicit_mul_in_front_of_the_depthwise_layer_only():
    clip = act("Clip", "a", "r", consts=(("lo", 0.0), ("hi", 6.0)))
    m = dw_block([clip])
    data = batches()
    out, summary = equalize_depthwise(m, data, headroom=1.0)
    assert summary.equalized["r"]["where"] == "inserted Mul"
    ops = [n.op_type for n in out.graph.node]
    assert ops == ["Conv", "Clip", "Mul", "Conv"]
    mul = next(n for n in out.graph.node if n.op_type == "Mul")
    assert mul.input[0] == "r" and dw_input(out) == mul.output[0]
    x = data[0]["x"]
    np.testing.assert_allclose(run(out, x), run(m, x), rtol=1e-4, atol=1e-4)


def test_zero_pad_is_looked_through():
    pads = numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")
    pad = helper.make_node("Pad", ["r", "pads"], ["p"], name="pad")
    clip = act("Clip", "a", "r", consts=(("lo", 0.0), ("hi", 6.0)))
    c1 = conv("c1", "x", "a", 3, 6)
    dw = helper.make_node("Conv", ["p", "dw_w"], ["y"], name="dw", group=6, pads=[0, 0, 0, 0])
    w = np.random.default_rng(3).standard_normal((6, 1, 3, 3)).astype(np.float32)
    m = build([c1, clip, (pad, [pads]), (dw, [numpy_helper.from_array(w, "dw_w")])], 3, 6)
    data = batches()
    out, summary = equalize_depthwise(m, data, headroom=1.0)
    assert summary.equalized["p"]["where"] == "inserted Mul (in front of the zero Pad)"
    mul = next(n for n in out.graph.node if n.op_type == "Mul")
    assert mul.input[0] == "r"
    assert next(n for n in out.graph.node if n.op_type == "Pad").input[0] == mul.output[0]
    x = data[0]["x"]
    np.testing.assert_allclose(run(out, x), run(m, x), rtol=1e-4, atol=1e-4)


def test_a_tensor_other_layers_read_keeps_its_values_for_them():
    # r feeds the depthwise conv and a graph output: the 1/s cannot go into c1
    m = dw_block([act("Relu", "a", "r")])
    m.graph.output.append(helper.make_tensor_value_info("r", 1, None))
    out, summary = equalize_depthwise(m, batches(), headroom=1.0)
    assert summary.equalized["r"]["where"] == "inserted Mul"
    x = batches()[0]["x"]
    s0 = make_session(m, optimize=False).run(None, {"x": x})
    s1 = make_session(out, optimize=False).run(None, {"x": x})
    for a, b in zip(s0, s1, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)


def _int8_error(model, data):
    """Squared error of the dw layer's output with its input fake-quantized per tensor (minmax
    over ``data``) and its weights per output channel, vs FP32."""
    from int8kit.onnx.observe import expose

    x_name = dw_input(model)
    s = make_session(expose(model, [x_name]), optimize=False)
    xs = np.concatenate([s.run([x_name], b)[0] for b in data])
    dw = next(n for n in model.graph.node if n.name == "dw")
    w = weights(model)[dw.input[1]]
    amax = np.abs(xs).max()
    xq = np.clip(np.rint(xs / amax * 127), -127, 127) * amax / 127
    wmax = np.abs(w).reshape(6, -1).max(axis=1).reshape(-1, 1, 1, 1)
    wq = np.clip(np.rint(w / wmax * 127), -127, 127) * wmax / 127

    def dwconv(x, k):
        p = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
        out = np.zeros_like(x)
        for i in range(3):
            for j in range(3):
                out += p[:, :, i : i + 8, j : j + 8] * k[None, :, 0, i, j, None, None]
        return out

    return float(((dwconv(xq, wq) - dwconv(xs, w)) ** 2).sum())


def test_spread_channels_are_equalized_by_the_gate_and_the_int8_error_drops():
    # one outlier channel sets the tensor's range (as in PP-LCNet's HardSwish outputs)
    m = dw_block([act("Relu", "a", "r")], spread=np.array([1, 1, 1, 1, 1, 50.0]))
    data = batches()
    out, summary = equalize_depthwise(m, data, num_samples=64)
    assert summary.gate_samples == 32  # of 64: half estimate, half held out
    d = summary.equalized["r"]
    assert d["error_ratio"] <= MAX_ERROR_RATIO and d["spread"] > 10
    assert _int8_error(out, data) < 0.5 * _int8_error(m, data)


def test_channels_of_one_range_are_left_alone_by_the_gate():
    m = dw_block([act("Relu", "a", "r")], spread=np.ones(6))
    out, summary = equalize_depthwise(m, batches(), num_samples=64)
    assert not summary.equalized and "did not cut the held-out error" in summary.skipped["r"]
    assert out is m


def test_channel_scales_headroom_and_floor():
    s = channel_scales(np.array([10.0, 5.0, 1.0, 0.0]), headroom=2.0)
    np.testing.assert_allclose(s, [1.0, 1.0, 0.2, 1e-4])
    assert np.all(channel_scales(np.zeros(3)) == 1.0)


def test_channel_max_is_max_abs_per_channel_with_nonfinite_as_zero():
    from int8kit.onnx.dwequalize import _channel_max

    rng = np.random.default_rng(1)
    v = rng.standard_normal((3, 5, 4, 6)).astype(np.float32)
    v[1, 2, 3, 4] = -9.0  # the widest value of channel 2 is negative
    v[0, 3, 0, 0] = np.nan
    v[2, 4, 1, 1] = -np.inf
    v[:, 0] = -0.0
    m = _channel_max(v)
    expected = np.abs(v).transpose(1, 0, 2, 3).reshape(5, -1).max(axis=1)
    expected[3:] = 0.0
    np.testing.assert_array_equal(m, expected)
    assert m.dtype == np.float32 and m[2] == 9.0 and not np.signbit(m).any()
    flat = v[:, :, 0, 0]  # (N, C): channel 3 holds the NaN
    expected = np.nan_to_num(np.abs(flat).max(axis=0), nan=0.0)
    np.testing.assert_array_equal(_channel_max(flat), expected)


def test_grouped_and_dense_convs_are_not_depthwise():
    m = build([conv("c1", "x", "a", 3, 6), conv("g", "a", "y", 6, 6, group=2)], 3, 6)
    groups, _ = depthwise_groups(m)
    assert groups == []
    m = dw_block([act("Relu", "a", "r")])
    groups, _ = depthwise_groups(m)
    assert [(g.tensor, g.layers, g.channels) for g in groups] == [("r", ["dw"], 6)]


def test_workflow_refuses_a_cache_with_depthwise_equalization(tmp_path):
    from int8kit.data import DataConfig
    from int8kit.workflow import QuantizeConfig

    with pytest.raises(ValueError, match="depthwise equalization"):
        QuantizeConfig(
            model=str(tmp_path / "m.onnx"),
            output=str(tmp_path / "o.onnx"),
            data=DataConfig(source=str(tmp_path)),
            equalize_depthwise=True,
            write_cache=True,
        )


@pytest.fixture
def dw_files(tmp_path):
    import models

    outlier = np.array([1, 1, 1, 1, 1, 50.0])
    m = dw_block([act("Relu", "a", "r")], spread=outlier, dw_spread=1 / outlier)
    model = models.save(m, tmp_path / "dw.onnx")
    data = models.save_npz(tmp_path / "calib.npz", n=64, x=(1, 3, 8, 8))
    return model, data


@pytest.mark.parametrize("flag", ["--equalize-depthwise", "--no-equalize-depthwise"])
def test_cli_flag_equalizes_and_records_it(dw_files, tmp_path, capsys, flag):
    import json

    from int8kit.cli.main import main

    model, data = dw_files
    out = tmp_path / "dw.int8.onnx"
    args = ["quantize", model, "--calib", data, "-o", str(out), "--method", "minmax"]
    assert main([*args, flag, "--json", str(tmp_path / "s.json")]) == 0
    text = capsys.readouterr().out
    s = json.load(open(tmp_path / "s.json"))
    on = flag == "--equalize-depthwise"
    assert s["config"]["equalize_depthwise"] is on
    assert ("depthwise equalization: 1 of 1 depthwise inputs" in text) is on
    assert bool(s["equalize_depthwise"]) is on and (
        not on or "r" in s["equalize_depthwise"]["equalized"]
    )
    # the int8 model's depthwise weights carry the channel scales: the narrow channels' large
    # weights (1 vs 1/50 for the outlier channel) shrink by their range, evening them out
    q = weights(__import__("onnx").load(str(out)))
    w_scale = next(v for k, v in q.items() if k.startswith("dw_w") and k.endswith("_scale"))
    ranges = np.sort(np.asarray(w_scale))
    assert bool(ranges[-1] / ranges[0] > 20) is not on


def test_conv1d_depthwise_gets_a_mul_of_its_own_rank():
    import models

    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((6, 3, 3)) * np.array([1, 1, 1, 1, 1, 40.0])[:, None, None]).astype(
        np.float32
    )
    w2 = rng.standard_normal((6, 1, 3)).astype(np.float32)
    f = numpy_helper.from_array
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], name="c1", pads=[1, 1]),
        helper.make_node("Clip", ["a", "lo", "hi"], ["r"], name="clip"),
        helper.make_node("Conv", ["r", "w2"], ["y"], name="dw", group=6, pads=[1, 1]),
    ]
    inits = [f(w1, "w1"), f(w2, "w2"), f(np.float32(0), "lo"), f(np.float32(6), "hi")]
    m = models.model(
        nodes, [models.value("x", (None, 3, 16))], [models.value("y", (None, 6, 16))], inits
    )
    data = [{"x": rng.standard_normal((4, 3, 16)).astype(np.float32)} for _ in range(4)]
    out, summary = equalize_depthwise(m, data, headroom=1.0)
    assert summary.equalized["r"]["where"] == "inserted Mul"
    inv = next(i for i in out.graph.initializer if i.name.startswith("r_dw_inv_s"))
    assert list(inv.dims) == [1, 6, 1]
    x = data[0]["x"]
    np.testing.assert_allclose(run(out, x), run(m, x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("explicit", [None, False])
def test_the_default_recipe_equalizes_unless_told_not_to(dw_files, tmp_path, explicit):
    from int8kit.data import DataConfig
    from int8kit.workflow import QuantizeConfig, quantize_onnx

    model, data = dw_files
    config = QuantizeConfig(
        model, str(tmp_path / "o.onnx"), data=DataConfig(data), equalize_depthwise=explicit
    )
    r = quantize_onnx(config)
    assert r.recipe["equalize_depthwise"] is True  # what --method auto stands for
    import json

    written = json.load(open(tmp_path / "o.ranges.json"))["config"]  # the resolved run
    assert written["equalize_depthwise"] is (explicit is None)
    assert ("r" in r.equalize_depthwise.get("equalized", {})) is (explicit is None)
