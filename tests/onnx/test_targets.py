"""The ort-cpu target: uint8 activations, ONNX Runtime's integer kernels (onnx/targets.py)."""

import json

import models
import numpy as np
import onnx
import pytest
import target_models
from onnx import numpy_helper

from int8kit.cli.main import main
from int8kit.data import DataConfig
from int8kit.onnx.placement import PlacementConfig
from int8kit.onnx.targets import cpu_has_vnni, get_target, u8_quant, u8_range
from int8kit.onnx.targets_ort import integer_ops, plan_ort
from int8kit.workflow import CalibConfig, QuantizeConfig, quantize_onnx


@pytest.fixture
def net(tmp_path):
    model = models.save(target_models.conv_net(), tmp_path / "net.onnx")
    data = models.save_npz(tmp_path / "calib.npz", n=10, x=(1, 3, 16, 16))
    return model, data


def _run(model, data, out, **kw):
    kw = {"holdout": 2, "bias_correction": False, "target": "ort-cpu", **kw}
    return quantize_onnx(QuantizeConfig(model, str(out), data=DataConfig(data), **kw))


def _inits(path):
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(path).graph.initializer}


def test_onnx_runtime_turns_every_layer_into_an_integer_kernel(net, tmp_path):
    model, data = net
    r = _run(model, data, tmp_path / "net.ort.onnx", reduce_range=True)
    ops = integer_ops(r.outputs["qdq_onnx"])
    # conv1..3, SiLU as QLinearSigmoid + QLinearMul, Concat, Add, pooling, the Gemm: all integer;
    # the stem Conv reads the network input and stays float (quantize_input_layers=False).
    assert ops["integer"] == {
        "QGemm": 1,
        "QLinearAdd": 1,
        "QLinearConcat": 1,
        "QLinearConv": 3,
        "QLinearGlobalAveragePool": 1,
        "QLinearMul": 1,
        "QLinearSigmoid": 1,
    }
    assert ops["float_compute"] == {"Conv": 1} and ops["float_islands"] == 0
    assert r.target["name"] == "ort-cpu" and not r.target["warnings"]
    assert set(r.fidelity) == {"ort-int8"}  # the primary (and only) figure: ORT's kernels
    assert r.fidelity["ort-int8"]["y"]["sqnr_db"] > 25


def test_uint8_zero_points_follow_min_max_and_weights_are_7_bit_with_reduce_range(net, tmp_path):
    model, data = net
    minmax = CalibConfig(method="minmax")
    r = _run(model, data, tmp_path / "a.onnx", reduce_range=True, calib=minmax)
    ranges = json.load(open(r.outputs["ranges"]))["tensors"]
    inits = _inits(r.outputs["qdq_onnx"])
    for name in ("r1", "c2", "sg", "silu"):
        t = ranges[name]
        u = t["uint8"]
        lo, hi = min(t["min"], 0.0), max(t["max"], 0.0)
        assert u["scale"] == pytest.approx((hi - lo) / 255, rel=1e-6)
        assert u["zero_point"] == int(np.clip(round(-lo / u["scale"]), 0, 255))
        zp = inits[f"{name}_zero_point"]
        assert zp.dtype == np.uint8 and int(zp) == u["zero_point"]
    assert ranges["r1"]["uint8"]["zero_point"] == 0  # a Relu output: the Q does the Relu
    assert ranges["c2"]["uint8"]["zero_point"] > 0  # signed conv output before SiLU
    assert ranges["p1"]["uint8"] == ranges["silu"]["uint8"]  # MaxPool: its input's scale
    w = inits["w2_quantized"]
    assert w.dtype == np.int8 and np.abs(w).max() == 64  # 7-bit
    b = inits["b2_int32_quantized"]
    assert b.dtype == np.int32
    r2 = _run(model, data, tmp_path / "b.onnx", reduce_range=False, calib=minmax)
    assert np.abs(_inits(r2.outputs["qdq_onnx"])["w2_quantized"]).max() == 127


def test_auto_on_the_ort_cpu_target_is_mse_with_both_sides_clipped(net, tmp_path):
    model, data = net
    r = _run(model, data, tmp_path / "auto.onnx")
    assert r.method == "mse"
    ranges = json.load(open(r.outputs["ranges"]))["tensors"]
    assert {t["method"] for t in ranges.values()} == {"mse"}
    # the uint8 range is the mse threshold on each side, inside [min, max] (u8_range)
    clipped = 0
    for t in ranges.values():
        u = t["uint8"]
        lo, hi = min(t["min"], 0.0), max(t["max"], 0.0)
        assert u["scale"] <= (hi - lo) / 255 * (1 + 1e-6)
        clipped += u["scale"] < (hi - lo) / 255 * (1 - 1e-3)
    assert clipped > 0  # mse clips somewhere on this data; minmax never would


def test_ranges_file_round_trip_reproduces_the_model(net, tmp_path):
    model, data = net
    r = _run(model, data, tmp_path / "a.onnx", reduce_range=True)
    raw = json.load(open(r.outputs["ranges"]))
    assert raw["config"]["target"] == "ort-cpu" and raw["config"]["reduce_range"] is True
    assert QuantizeConfig.from_dict(raw["config"]).to_dict() == raw["config"]
    again = quantize_onnx(
        QuantizeConfig(
            model,
            str(tmp_path / "b.onnx"),
            ranges=str(r.outputs["ranges"]),
            holdout=0,
            bias_correction=False,
            target="ort-cpu",
            reduce_range=True,
        )
    )
    a, b = _inits(r.outputs["qdq_onnx"]), _inits(again.outputs["qdq_onnx"])
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    old = dict(raw["config"])
    del old["target"], old["reduce_range"]
    assert QuantizeConfig.from_dict(old).target == "tensorrt"


def test_u8_ranges_clip_both_sides_at_the_method_threshold():
    stats = {"min": -3.0, "max": 10.0}
    assert u8_range(10.0, stats) == (-3.0, 10.0)  # minmax: [min, max]
    assert u8_range(4.0, stats) == (-3.0, 4.0)  # a clipping threshold cuts the side it reaches
    assert u8_range(2.0, stats) == (-2.0, 2.0)
    q = u8_quant(0.0, 5.1)
    assert q.zero_point == 0 and q.scale == pytest.approx(0.02) and (q.qmin, q.qmax) == (0, 255)
    assert u8_quant(0.0, 0.0).scale == 1.0


def test_bias_correction_models_the_uint8_quantizer(net, tmp_path):
    from int8kit.onnx.bias import _quantizer

    scale, bounds = _quantizer(u8_quant(-1.0, 4.1))
    assert bounds == (-50.0, 205.0) and scale == pytest.approx(0.02)
    model, data = net
    r = _run(model, data, tmp_path / "bc.onnx", bias_correction=True, bias_gate=False)
    assert r.bias_correction["corrected"] or r.bias_correction["dropped"]
    assert r.fidelity["ort-int8"]["y"]["sqnr_db"] > 25


def test_bad_input_cache_unknown_target_and_a_model_without_integer_ops(net, tmp_path, capsys):
    model, data = net
    argv = ["quantize", model, "--calib", data, "-o", str(tmp_path / "c.onnx"), "--cache"]
    assert main([*argv, "--target", "ort-cpu"]) != 0
    assert "the calibration cache is TensorRT's" in capsys.readouterr().err
    with pytest.raises(ValueError, match="known targets: tensorrt, ort-cpu"):
        get_target("openvino")
    with pytest.raises(ValueError, match="known targets: tensorrt, ort-cpu"):
        QuantizeConfig(model, str(tmp_path / "d.onnx"), data=DataConfig(data), target="x")
    ln = models.save(target_models.layernorm_only(), tmp_path / "ln.onnx")
    lnd = models.save_npz(tmp_path / "ln.npz", n=6, x=(1, 16))
    r = _run(ln, lnd, tmp_path / "ln.int8.onnx")
    (warning,) = r.target["warnings"]
    assert "no Conv/MatMul/Gemm" in warning and "LayerNormalization" in warning
    assert r.fidelity["ort-int8"]["y"]["sqnr_db"] > 60  # written, and computes what FP32 does


def test_cpu_vnni_detection_from_flags():
    assert not cpu_has_vnni({"flags": {"avx2": True, "avx512_vnni": False}})
    assert cpu_has_vnni({"flags": {"avx2": True, "avx_vnni": True}})
    assert get_target("ort-cpu", reduce_range=False).weight_qmax == 127
    assert get_target("ort-cpu", reduce_range=True).weight_qmax == 64


def test_concat_of_a_float_and_an_int8_branch_stays_float():
    # The detector-head trap: a Concat whose inputs are not all int8 keeps its inputs float.
    from onnx import helper

    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w"], ["c"], name="conv"),
        n("Sigmoid", ["c"], ["s"], name="sig"),
        n("Mul", ["c", "k"], ["boxes"], name="scale"),
        n("Concat", ["boxes", "s"], ["cat"], name="cat", axis=1),
        n("Relu", ["cat"], ["y"], name="out"),
    ]
    inits = [models.weight("w", (2, 3, 1, 1), 1), numpy_helper.from_array(np.float32(640), "k")]
    m = models.model(
        nodes, [models.value("x", (1, 3, 4, 4))], [models.value("y", (1, 4, 4, 4))], inits
    )
    p = plan_ort(m, PlacementConfig(quantize_input_layers=True))
    assert "c" in p.activations and "s" in p.activations  # conv and sigmoid outputs: uint8
    assert "boxes" not in p.activations and "cat" not in p.activations  # no shared scale


def test_zero_pads_are_folded_into_the_conv_so_no_float_island_is_left(tmp_path):
    import onnxruntime as ort

    from int8kit.onnx.targets_ort_prepare import fold_pads

    m = target_models.pad_conv()
    folded, n = fold_pads(m)
    assert n == 1 and [x.op_type for x in folded.graph.node] == ["Conv", "Relu", "Conv", "Relu"]
    dw = folded.graph.node[2]
    assert [list(a.ints) for a in dw.attribute if a.name == "pads"] == [[0, 0, 1, 1]]
    x = np.random.default_rng(0).standard_normal((2, 4, 8, 8)).astype(np.float32)
    run = lambda mm: ort.InferenceSession(mm.SerializeToString()).run(None, {"x": x})[0]  # noqa: E731
    np.testing.assert_array_equal(run(m), run(folded))
    path = models.save(m, tmp_path / "pad.onnx")
    data = models.save_npz(tmp_path / "pad.npz", n=6, x=(1, 4, 8, 8))
    everything = PlacementConfig(quantize_input_layers=True)
    r = _run(path, data, tmp_path / "pad.int8.onnx", placement=everything)
    assert r.target["pads_folded"] == 1
    ops = integer_ops(r.outputs["qdq_onnx"])
    # Both Convs integer; the one DQ left feeds the last Relu (a graph output stays float).
    assert ops["integer"] == {"QLinearConv": 2} and not ops["float_compute"]
    assert ops["float_islands"] == 1


def test_batchnorm_after_a_conv_is_folded_for_onnx_runtime(tmp_path):
    import onnxruntime as ort

    from int8kit.onnx.targets_ort_prepare import fold_batchnorms

    m = models.conv_bn_relu_chain()
    folded, n = fold_batchnorms(m)
    assert n == 1 and "BatchNormalization" not in {x.op_type for x in folded.graph.node}
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    run = lambda mm: ort.InferenceSession(mm.SerializeToString(), so).run(None, {"x": x})[0]  # noqa: E731
    np.testing.assert_allclose(run(m), run(folded), rtol=1e-5, atol=1e-6)
    path = models.save(m, tmp_path / "chain.onnx")
    data = models.save_npz(tmp_path / "chain.npz", n=6, x=(1, 3, 8, 8))
    everything = PlacementConfig(quantize_input_layers=True)
    r = _run(path, data, tmp_path / "chain.int8.onnx", placement=everything)
    assert r.target["batchnorms_folded"] == 1
    ops = integer_ops(r.outputs["qdq_onnx"])
    assert ops["integer"]["QLinearConv"] == 2 and not ops["float_compute"]


def test_a_weight_shared_through_an_identity_still_gets_integer_convs(tmp_path):
    from onnx import helper

    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
        n("Identity", ["w"], ["w_copy"], name="dedup"),
        n("Conv", ["c0", "w"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
        n("Conv", ["c0", "w_copy"], ["b"], name="conv_b", pads=[1, 1, 1, 1]),
        n("Add", ["a", "b"], ["s"], name="add"),
        n("Relu", ["s"], ["y"], name="relu"),
    ]
    inits = [models.weight("w0", (4, 3, 3, 3), 1), models.weight("w", (4, 4, 3, 3), 2)]
    m = models.model(
        nodes, [models.value("x", (1, 3, 8, 8))], [models.value("y", (1, 4, 8, 8))], inits
    )
    path = models.save(m, tmp_path / "shared.onnx")
    data = models.save_npz(tmp_path / "shared.npz", n=6, x=(1, 3, 8, 8))
    r = _run(path, data, tmp_path / "shared.int8.onnx")
    assert r.target["identities_inlined"] == 0  # inlined when the model is loaded, any target
    ops = integer_ops(r.outputs["qdq_onnx"])
    assert ops["integer"] == {"QLinearAdd": 1, "QLinearConv": 2}  # conv0 reads the input


def test_a_conv_that_feeds_hardswish_stays_float_and_the_run_says_why():
    from onnx import helper

    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
        n("Relu", ["c0"], ["r0"], name="relu0"),
        n("Conv", ["r0", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        n("HardSwish", ["c1"], ["y"], name="hswish"),
    ]
    inits = [models.weight("w0", (4, 3, 3, 3), 1), models.weight("w1", (4, 4, 3, 3), 2)]
    m = models.model(
        nodes, [models.value("x", (1, 3, 8, 8))], [models.value("y", (1, 4, 8, 8))], inits
    )
    from int8kit.onnx.targets_ort import integer_warning

    p = plan_ort(m, PlacementConfig(quantize_input_layers=True))
    assert "HardSwish" in p.kept_float["conv1"] and not any(k[0] == "conv1" for k in p.weights)
    assert "conv0" not in p.kept_float  # a Relu after it: fused by ORT, conv0 is integer
    warning = integer_warning(m, p)
    assert "1 of 2 Conv/MatMul/Gemm layers stay float" in warning and "HardSwish" in warning


def test_a_residual_add_reads_the_float_stems_output_through_the_q_it_already_has(tmp_path):
    # The stem reads the network input and stays float; its output gets a Q for conv1 anyway.
    # The residual Add reads that Q too (QLinearAdd) instead of running in float and making
    # the next Conv's input a float -> uint8 island (U2-Net-p: 38 such Adds/Concats).
    m = target_models.stem_residual()
    p = plan_ort(m, PlacementConfig(quantize_input_layers=False))
    assert p.kept_float == {"stem": "reads the network input (quantize_input_layers=False)"}
    assert ("add", 1) in p.activations["r0"] and ("conv1", 0) in p.activations["r0"]
    assert "s" in p.activations  # the Add's output: uint8
    path = models.save(m, tmp_path / "stem.onnx")
    data = models.save_npz(tmp_path / "stem.npz", n=8, x=(1, 3, 8, 8))
    r = _run(path, data, tmp_path / "stem.int8.onnx")
    ops = integer_ops(r.outputs["qdq_onnx"])
    assert ops["integer"] == {"QLinearAdd": 1, "QLinearConv": 2}
    assert sum(ops["float_compute"].values()) == 1  # the stem
    assert ops["float_islands"] == 1  # the DQ in front of the last Relu (a graph output)
    assert r.fidelity["ort-int8"]["y"]["sqnr_db"] > 25


def test_bias_adds_and_identities_are_folded_so_the_relu_fuses_into_the_int8_conv(tmp_path):
    import onnxruntime as ort

    m = target_models.conv_bias_add()
    prepared, counts = get_target("ort-cpu").prepare(m)
    assert counts["bias_adds_folded"] == 1 and counts["identities_dropped"] == 1
    ops = [x.op_type for x in prepared.graph.node]
    assert ops == ["Conv", "Relu", "Conv", "Add"]  # the [16] Add broadcasts along W: kept
    x = np.random.default_rng(2).standard_normal((2, 8, 16, 16)).astype(np.float32)
    run = lambda mm: ort.InferenceSession(mm.SerializeToString()).run(None, {"x": x})[0]  # noqa: E731
    np.testing.assert_allclose(run(m), run(prepared), rtol=1e-5, atol=1e-5)
    path = models.save(m, tmp_path / "bias.onnx")
    data = models.save_npz(tmp_path / "bias.npz", n=8, x=(1, 8, 16, 16))
    everything = PlacementConfig(quantize_input_layers=True)
    r = _run(path, data, tmp_path / "bias.int8.onnx", placement=everything)
    ops = integer_ops(r.outputs["qdq_onnx"])
    # Both Convs integer, the Relu fused: the one DQ left feeds the last Add (a graph output).
    assert ops["integer"] == {"QLinearConv": 2} and not ops["float_compute"]
    assert ops["float_islands"] == 1


def test_a_depthwise_conv_off_orts_fast_kernel_stays_float_where_it_reads_a_float_tensor(
    tmp_path,
):
    m = target_models.depthwise_widths()
    p = plan_ort(m, PlacementConfig(quantize_input_layers=False))
    assert "multiple of 16" in p.kept_float["dw8a"]  # reads the float pw1's output
    # dw8b reads an int8 tensor: kept float, ORT's WeightBiasQuantization would quantize its
    # weight per tensor between the DQ and the Q anyway; int8kit's per-channel weight it is.
    assert ("dw8b", 1) in p.weights and ("dw16", 1) in p.weights
    path = models.save(m, tmp_path / "dw.onnx")
    data = models.save_npz(tmp_path / "dw.npz", n=8, x=(1, 16, 8, 8))
    r = _run(path, data, tmp_path / "dw.int8.onnx")
    ops = integer_ops(r.outputs["qdq_onnx"])
    assert ops["integer"] == {"QLinearConv": 5}  # pw2, dw16, pw_m, dw8b, pw3
    assert sum(ops["float_compute"].values()) == 2  # pw1 (input layer) and dw8a
    assert ops["float_islands"] == 1
