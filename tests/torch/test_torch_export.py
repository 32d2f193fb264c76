import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import torch_tiny  # noqa: E402
from onnx import numpy_helper  # noqa: E402

import int8kit.torch as iq  # noqa: E402
from int8kit.calib.cache import CalibrationCache  # noqa: E402


def _session(path, optimized=False):
    so = ort.SessionOptions()
    if not optimized:  # unfused Q/DQ in float: what TensorRT computes
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    m = torch_tiny.calibrated("entropy")
    out = tmp_path_factory.mktemp("export") / "tiny.int8.onnx"
    written = iq.export_onnx(m, torch.zeros(1, 3, 16, 16), out)
    return m, written


def _initializers(model):
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def _const(model, name):
    inits = _initializers(model)
    if name in inits:
        return inits[name]
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            return numpy_helper.to_array(n.attribute[0].t)
    raise KeyError(name)


def test_export_writes_all_outputs_and_passes_checker(exported):
    _, written = exported
    assert set(written) == {"onnx", "fp32", "ranges", "cache"}
    for key in ("onnx", "fp32"):
        model = onnx.load(written[key])
        onnx.checker.check_model(model, full_check=True)
        assert model.opset_import[0].version == 17
    assert written["ranges"].endswith("tiny.ranges.json")
    assert written["cache"].endswith("tiny.calib.cache")
    assert not any(
        p.name.endswith(".tmp")
        for p in __import__("pathlib").Path(written["onnx"]).parent.iterdir()
    )


def test_fake_quant_forward_equals_onnxruntime(exported):
    m, written = exported
    x = torch_tiny.batches(1, batch=3, seed=11)[0]  # batch 3: the batch dim is dynamic
    with torch.no_grad():
        ref = m(x).numpy()
    got = _session(written["onnx"]).run(None, {"input": x.numpy()})[0]
    # One quantization step of the output: the fc input step times the largest |w| row sum.
    fc_step = (
        float(m.fc.input_quantizer.amax.detach())
        / 127
        * float(m.fc.weight.detach().abs().sum(1).max())
    )
    assert np.abs(got - ref).max() <= fc_step
    assert np.abs(got - ref).max() < 1e-4  # in practice the same float arithmetic
    # The optimized (integer-kernel) session runs too.
    assert _session(written["onnx"], optimized=True).run(None, {"input": x.numpy()})[0].shape == (
        3,
        5,
    )


def test_qdq_nodes_scales_axes_and_zero_points(exported):
    m, written = exported
    model = onnx.load(written["onnx"])
    q_nodes = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    dq_nodes = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert len(q_nodes) == len(dq_nodes) == 8 + 4  # 8 inputs + 4 weights (conv, conv2, up, fc)
    by_scope = {n.name.rsplit("/", 1)[0].strip("/").replace("/", "."): n for n in q_nodes}
    for name, q in iq.quantizers(m):
        node = by_scope[name]
        scale = _const(model, node.input[1])
        zp = _const(model, node.input[2])
        assert zp.dtype == np.int8 and not zp.any()
        axis = {a.name: a.i for a in node.attribute}.get("axis")
        if q.is_weight:
            expected = q.weight_amax(
                dict(m.named_parameters())[name.replace("weight_quantizer", "weight")]
            )
            assert axis == q.axis
            np.testing.assert_allclose(scale, expected.numpy() / 127, rtol=1e-6)
        else:
            assert scale.shape == () and axis is None
            assert float(scale) == pytest.approx(float(q.amax) / 127, rel=1e-6)
    up = by_scope["up.weight_quantizer"]
    assert {a.name: a.i for a in up.attribute}["axis"] == 1  # ConvTranspose: axis 1
    assert _const(model, up.input[1]).shape == (6,)


def test_ranges_json_and_cache_name_fp32_tensors(exported):
    m, written = exported
    ranges = json.loads(open(written["ranges"]).read())
    assert ranges["config"]["method"] == "entropy"
    conv = ranges["tensors"]["conv.input_quantizer"]
    assert conv["onnx_tensor"] == "input"
    assert conv["amax"] == pytest.approx(float(m.conv.input_quantizer.amax))
    cache = CalibrationCache.read(written["cache"])
    assert cache.algorithm == "EntropyCalibration2"
    assert cache.amax("input") == pytest.approx(conv["amax"], rel=1e-6)
    fp32 = onnx.load(written["fp32"])
    names = {i.name for i in fp32.graph.input} | {o for n in fp32.graph.node for o in n.output}
    assert set(cache.scales) <= names and len(cache.scales) >= 5
    assert not any(n.op_type == "QuantizeLinear" for n in fp32.graph.node)


def test_fp32_export_matches_model_with_quantizers_off(exported):
    m, written = exported
    x = torch_tiny.batches(1, batch=2, seed=3)[0]
    iq.set_mode(m, "off")
    try:
        with torch.no_grad():
            ref = m(x).numpy()
    finally:
        iq.set_mode(m, "quantize")
    got = _session(written["fp32"]).run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_export_other_kinds_and_opset_13(tmp_path):
    m = torch_tiny.AllKinds().eval()
    data = [(torch.randn(2, 2, 10), torch.randn(2, 2, 6, 6, 6)) for _ in range(2)]
    iq.quantize(
        m, iq.QuantConfig(method="percentile"), forward_loop=lambda mm: [mm(*d) for d in data]
    )
    x = (torch.randn(1, 2, 10), torch.randn(1, 2, 6, 6, 6))
    written = iq.export_onnx(m, x, tmp_path / "kinds.onnx", opset=13, write_fp32=False)
    assert set(written) == {"onnx", "ranges"}
    model = onnx.load(written["onnx"])
    onnx.checker.check_model(model, full_check=True)
    got = _session(written["onnx"]).run(None, {"input_0": x[0].numpy(), "input_1": x[1].numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, m(*x).numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="opset"):
        iq.export_onnx(m, x, tmp_path / "old.onnx", opset=12)


def test_export_refuses_uncalibrated(tmp_path):
    m = torch_tiny.tiny_model()
    iq.replace_modules(m, iq.QuantConfig())
    with pytest.raises(RuntimeError, match="calibrate"):
        iq.export_onnx(m, torch.zeros(1, 3, 16, 16), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_per_tensor_weights_export(tmp_path):
    m = torch_tiny.calibrated("mse", per_channel=False)
    assert m.conv.weight_quantizer.axis is None
    written = iq.export_onnx(m, torch.zeros(1, 3, 16, 16), tmp_path / "pt.onnx", write_fp32=False)
    model = onnx.load(written["onnx"])
    onnx.checker.check_model(model, full_check=True)
    node = next(n for n in model.graph.node if n.name == "/conv/weight_quantizer/QuantizeLinear")
    assert _const(model, node.input[1]).shape == () and not node.attribute
    x = torch_tiny.batches(1, seed=4)[0]
    with torch.no_grad():
        ref = m(x).numpy()
    np.testing.assert_allclose(
        _session(written["onnx"]).run(None, {"input": x.numpy()})[0], ref, atol=1e-4
    )
