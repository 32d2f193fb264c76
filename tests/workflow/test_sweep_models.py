"""Graphs found on real models outside the zoo (benchmarks/sweep.py), built tiny in code: an
already-quantized model (ddddocr's common_old.onnx) and layers inside an If (silero-vad)."""

import models
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from int8kit.data import DataConfig
from int8kit.errors import ModelError
from int8kit.workflow import QuantizeConfig, quantize_onnx


def test_an_int8_model_is_refused_with_what_to_do(tmp_path):
    """Quantizing int8kit's own output again: refused, naming the ops found and the way out."""
    path = models.save(models.conv_bn_relu_chain(), tmp_path / "m.onnx")
    data = DataConfig(models.save_npz(tmp_path / "d.npz", n=16, x=(1, 3, 8, 8)))
    quantize_onnx(QuantizeConfig(path, str(tmp_path / "q.onnx"), data=data))
    with pytest.raises(ModelError, match=r"already quantized \(\d+ DequantizeLinear.*FP32 model"):
        quantize_onnx(
            QuantizeConfig(str(tmp_path / "q.onnx"), str(tmp_path / "qq.onnx"), data=data)
        )
    assert not (tmp_path / "qq.onnx").exists()


def _conv_inside_if() -> onnx.ModelProto:
    """y = If(flag) then Conv(x) else Relu(x): the network lives in a branch, as silero-vad's
    model lives in an If on its sample rate."""
    w = models.weight("w", (3, 3, 3, 3), 1)
    then = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["t"], name="conv", pads=[1, 1, 1, 1])],
        "then",
        [],
        [models.value("t", ("N", 3, 8, 8))],
        [w],
    )
    other = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["e"], name="relu")],
        "else",
        [],
        [models.value("e", ("N", 3, 8, 8))],
    )
    nodes = [
        helper.make_node("Cast", ["flag"], ["cond"], name="cast", to=TensorProto.BOOL),
        helper.make_node("If", ["cond"], ["y"], name="if", then_branch=then, else_branch=other),
    ]
    inputs = [models.value("x", ("N", 3, 8, 8)), models.value("flag", (), TensorProto.INT64)]
    return models.model(nodes, inputs, [models.value("y", ("N", 3, 8, 8))], [])


def test_layers_inside_an_if_are_reported_not_silently_left_float(tmp_path):
    path = models.save(_conv_inside_if(), tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((12, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, flag=np.array(1))  # 0-d: the same flag for every sample
    r = quantize_onnx(
        QuantizeConfig(path, str(tmp_path / "q.onnx"), data=DataConfig(str(tmp_path / "d.npz")))
    )
    assert r.weights_quantized == 0
    said = [w for w in r.target["warnings"] if "layers inside If" in w]
    assert len(said) == 1 and said[0].startswith("1 Conv/ConvTranspose/Gemm/MatMul layers")
    # what to do, for a branch (silero-vad) and for a decoder loop (SLANet-plus) alike
    assert "the one branch you run" in said[0] and "its body as a model of its own" in said[0]


def _fp16(m: onnx.ModelProto, io: bool, weight_casts: bool = False) -> onnx.ModelProto:
    """``m`` with its float initializers in FP16, as float16 converters write models: FP16
    inputs and outputs (``io``), or FP32 ones with each FP16 weight read through a
    ``Cast(to=float)`` (``weight_casts``: weights stored in half the bytes, computed in FP32)."""
    from onnx import numpy_helper

    g = m.graph
    for i, t in enumerate(list(g.initializer)):
        g.initializer[i].CopyFrom(
            numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name)
        )
        if weight_casts:
            for node in g.node:
                node.input[:] = [f"{t.name}_f32" if s == t.name else s for s in node.input]
            g.node.insert(
                0, helper.make_node("Cast", [t.name], [f"{t.name}_f32"], to=TensorProto.FLOAT)
            )
    if io:
        for v in (*g.input, *g.output):
            v.type.tensor_type.elem_type = TensorProto.FLOAT16
    onnx.checker.check_model(m, full_check=True)
    return m


def test_an_fp16_model_is_quantized_in_fp32_and_keeps_fp16_inputs_and_outputs(tmp_path):
    """An FP16 model got Q/DQ with FP32 scales on FP16 tensors: a written model ONNX Runtime
    refuses ('tensor(float16) of input parameter of QuantizeLinear is invalid'), fidelity FAILED,
    exit 0. Now it is computed in FP32 inside, FP16 at its boundaries."""
    import onnxruntime as ort

    fp16 = _fp16(models.conv_bn_relu_chain(), io=True)
    path = models.save(fp16, tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((40, 3, 8, 8)).astype(np.float16)
    np.savez(tmp_path / "d.npz", x=x)
    data = DataConfig(str(tmp_path / "d.npz"))
    r = quantize_onnx(QuantizeConfig(path, str(tmp_path / "q.onnx"), data=data, holdout=8))
    assert r.weights_quantized == 2
    assert any("FP16 model" in w for w in r.target["warnings"])
    q = onnx.load(str(tmp_path / "q.onnx"))
    assert q.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert q.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert sum(n.op_type == "QuantizeLinear" for n in q.graph.node) >= 3
    run = {
        p: ort.InferenceSession(p, providers=["CPUExecutionProvider"]).run(None, {"x": x[:8]})[0]
        for p in (path, str(tmp_path / "q.onnx"))
    }
    ref, out = (run[p].astype(np.float64) for p in (path, str(tmp_path / "q.onnx")))
    assert run[str(tmp_path / "q.onnx")].dtype == np.float16
    assert 10 * np.log10((ref**2).sum() / ((out - ref) ** 2).sum()) > 25


def test_fp16_weights_read_through_a_cast_are_quantized(tmp_path):
    """Weights stored in FP16 and cast to FP32 at run time: the layers read a Cast's output,
    not an initializer, and kept FP32 weights (0 quantized); now the Cast folds into an FP32
    initializer and both Conv weights and the Gemm's are int8."""
    path = models.save(_fp16(models.conv_bn_relu_chain(), False, True), tmp_path / "m.onnx")
    data = DataConfig(models.save_npz(tmp_path / "d.npz", n=16, x=(1, 3, 8, 8)))
    r = quantize_onnx(QuantizeConfig(path, str(tmp_path / "q.onnx"), data=data))
    assert r.weights_quantized == 2
    q = onnx.load(str(tmp_path / "q.onnx"))
    assert not any(n.op_type == "Cast" for n in q.graph.node)
    assert {t.data_type for t in q.graph.initializer if t.name.startswith("w")} <= {
        TensorProto.FLOAT,
        TensorProto.INT8,
    }


def _shared_weight_matmuls() -> onnx.ModelProto:
    """x(N,8,16) -> MatMul w0 -> [Relu -> MatMul w] x 3 -> y, the last two reading w through an
    Identity: how PyTorch's TorchScript exporter writes one layer applied repeatedly
    (chython-rxnmap's encoder)."""
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["h0"], name="mm0")]
    for k in range(1, 4):
        w = "w" if k == 1 else f"w_use{k}"
        if k > 1:
            nodes.append(helper.make_node("Identity", ["w"], [w], name=f"id{k}"))
        nodes += [
            helper.make_node("Relu", [f"h{k - 1}"], [f"r{k}"], name=f"relu{k}"),
            helper.make_node("MatMul", [f"r{k}", w], [f"h{k}" if k < 3 else "y"], name=f"mm{k}"),
        ]
    inits = [models.weight("w0", (16, 16), 1), models.weight("w", (16, 16), 2, scale=0.25)]
    return models.model(
        nodes, [models.value("x", ("N", 8, 16))], [models.value("y", ("N", 8, 16))], inits
    )


def test_a_weight_shared_through_identity_nodes_is_quantized_in_every_layer(tmp_path):
    """Before: only mm1 (reading the initializer) had a per-channel int8 weight; mm2 and mm3 read
    an Identity's output, which the placement took for an activation: a per-tensor
    QuantizeLinear on the float weight at run time, with a calibrated scale, no bias correction,
    and not counted among the weights (chython-rxnmap: 8 weights, 53 such "activations")."""
    path = models.save(_shared_weight_matmuls(), tmp_path / "m.onnx")
    data = DataConfig(models.save_npz(tmp_path / "d.npz", n=16, x=(1, 8, 16)))
    r = quantize_onnx(QuantizeConfig(path, str(tmp_path / "q.onnx"), data=data))
    # layers with int8 weights: mm1, mm2, mm3 (mm0 reads the input); one tensor behind them
    assert r.weights_quantized == 3 and r.weight_tensors_quantized == 1
    q = onnx.load(str(tmp_path / "q.onnx"))
    inits = {t.name: t for t in q.graph.initializer}
    made = {o: n for n in q.graph.node for o in n.output}
    for k in (1, 2, 3):
        mm = next(n for n in q.graph.node if n.name == f"mm{k}")
        dq = made[mm.input[1]]
        assert dq.op_type == "DequantizeLinear"
        assert inits[dq.input[0]].data_type == TensorProto.INT8  # stored int8, not quantized at run
        assert list(inits[dq.input[1]].dims) == [16]  # per output channel
    assert not any(
        n.op_type in ("Identity", "QuantizeLinear") and n.input[0] == "w" for n in q.graph.node
    )
    int8 = [
        t for t in q.graph.initializer if t.data_type == TensorProto.INT8 and t.dims == [16, 16]
    ]
    assert len(int8) == 1  # one int8 copy of the shared weight


def test_the_summary_counts_layers_with_int8_weights_and_names_shared_tensors(tmp_path, capsys):
    import json

    from int8kit.cli.main import main

    path = models.save(_shared_weight_matmuls(), tmp_path / "m.onnx")
    data = models.save_npz(tmp_path / "d.npz", n=16, x=(1, 8, 16))
    js = tmp_path / "s.json"
    assert (
        main(["quantize", path, "--calib", data, "-o", str(tmp_path / "q.onnx"), "--json", str(js)])
        == 0
    )
    assert "and the weights of 3 layers (1 tensor shared)\n" in capsys.readouterr().out
    summary = json.loads(js.read_text())
    assert summary["weights_quantized"] == 3 and summary["weight_tensors_quantized"] == 1


def _mlp_with_a_contrib_gelu() -> onnx.ModelProto:
    """x -> MatMul -> com.microsoft BiasGelu -> MatMul -> y: what ONNX Runtime's transformer
    optimizer leaves of a BERT FFN (the zoo's MiniLM through it: Attention,
    SkipLayerNormalization, EmbedLayerNormalization, BiasGelu)."""
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["m"], name="fc1"),
        helper.make_node("BiasGelu", ["m", "b1"], ["g"], name="gelu", domain="com.microsoft"),
        helper.make_node("MatMul", ["g", "w2"], ["y"], name="fc2"),
    ]
    inits = [
        models.weight("w1", (16, 32), 41),
        onnx.numpy_helper.from_array(np.linspace(-0.5, 0.5, 32).astype(np.float32), "b1"),
        models.weight("w2", (32, 8), 42),
    ]
    graph = helper.make_graph(
        nodes, "ffn", [models.value("x", ("N", 16))], [models.value("y", ("N", 8))], inits
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    m = helper.make_model(graph, opset_imports=opsets)
    m.ir_version = 8
    return m


def test_contrib_ops_are_named_as_what_tensorrt_cannot_run(tmp_path):
    """The default target is TensorRT, whose ONNX parser imports no com.microsoft op: the run
    finishes (ONNX Runtime runs the Q/DQ model) and says so, naming the ops and the way out."""
    path = models.save(_mlp_with_a_contrib_gelu(), tmp_path / "m.onnx")
    data = DataConfig(models.save_npz(tmp_path / "d.npz", n=24, x=(1, 16)))
    r = quantize_onnx(QuantizeConfig(path, str(tmp_path / "q.onnx"), data=data, holdout=4))
    said = [w for w in r.target["warnings"] if "outside standard ONNX" in w]
    assert len(said) == 1 and "com.microsoft:BiasGelu x1" in said[0]
    assert "before ONNX Runtime's transformer optimizer" in said[0]
    assert r.weights_quantized == 1  # fc2 (fc1 reads the network input)
    assert r.fidelity["trt-like"]["y"]["cosine"] > 0.99
    ort = QuantizeConfig(path, str(tmp_path / "o.onnx"), data=data, holdout=4, target="ort-cpu")
    assert not [w for w in quantize_onnx(ort).target["warnings"] if "outside standard" in w]


def _ir3(m: onnx.ModelProto) -> onnx.ModelProto:
    """``m`` as IR 3 exporters wrote it (caffe2, the ONNX model zoo's opset 7-9 classics): every
    initializer also a graph input."""
    m.ir_version = 3
    m.graph.input.extend(
        helper.make_tensor_value_info(i.name, i.data_type, list(i.dims))
        for i in m.graph.initializer
    )
    m.opset_import[0].version = 9
    return m


def test_an_ir3_model_with_its_weights_listed_as_inputs_is_quantized(tmp_path):
    """onnx's light_resnet50: the writer's new initializers (scales) were no graph inputs, and
    the checker refused the Q/DQ model ('r2_scale in initializer but not in graph input')."""
    fp32 = _ir3(models.conv_bn_relu_chain())
    onnx.checker.check_model(fp32)
    path = models.save(fp32, tmp_path / "m.onnx")
    data = DataConfig(models.save_npz(tmp_path / "d.npz", n=24, x=(1, 3, 8, 8)))
    r = quantize_onnx(QuantizeConfig(path, str(tmp_path / "q.onnx"), data=data, holdout=4))
    q = onnx.load(str(tmp_path / "q.onnx"))
    onnx.checker.check_model(q)
    assert [i.name for i in q.graph.input] == ["x"]  # the weights are constants, not inputs
    assert r.weights_quantized == 2  # conv2 and fc (conv1 reads the network input)
    assert min(m["cosine"] for m in r.fidelity["trt-like"].values()) > 0.99


def test_a_weight_made_by_constant_of_shape_is_quantized(tmp_path):
    """onnx's light test models make every weight with ConstantOfShape: the layers got int8
    activations and float weights ('the weights of 0 layers')."""
    m = models.conv_bn_relu_chain()
    w2 = next(i for i in m.graph.initializer if i.name == "w2")
    m.graph.initializer.remove(w2)
    m.graph.initializer.append(onnx.numpy_helper.from_array(np.array([4, 4, 3, 3]), "w2_shape"))
    fill = onnx.numpy_helper.from_array(np.array([0.05], np.float32))
    m.graph.node.insert(0, helper.make_node("ConstantOfShape", ["w2_shape"], ["w2"], value=fill))
    path = models.save(m, tmp_path / "m.onnx")
    data = DataConfig(models.save_npz(tmp_path / "d.npz", n=24, x=(1, 3, 8, 8)))
    r = quantize_onnx(QuantizeConfig(path, str(tmp_path / "q.onnx"), data=data, holdout=4))
    assert r.weights_quantized == 2  # conv2 and fc (conv1 reads the network input)
    assert r.fidelity["trt-like"]["y"]["cosine"] > 0.99


def test_trtexec_profile_spans_the_calibration_shapes_of_a_dynamic_input(tmp_path, capsys):
    """MTCNN P-Net calibrated on its image pyramid (H, W dynamic): the trtexec lines gave
    min = opt = max = the first batch's shape, an engine that takes no other size."""
    from int8kit.cli.main import main

    m = models.residual_block()
    m.graph.input[0].CopyFrom(models.value("x", (1, 3, "H", "W")))
    m.graph.output[0].CopyFrom(models.value("y", (1, 3, "H", "W")))
    path = models.save(m, tmp_path / "m.onnx")
    script = tmp_path / "pyramid.py"
    script.write_text(
        "import numpy as np\n\n\n"
        "def load_data():\n"
        "    rng = np.random.default_rng(0)\n"
        "    for i in range(16):\n"
        "        h, w = [(16, 20), (12, 16), (8, 8), (12, 16)][i % 4]\n"
        "        yield {'x': rng.standard_normal((1, 3, h, w)).astype(np.float32)}\n"
    )
    argv = ["quantize", path, "--data-loader-script", str(script), "-o", str(tmp_path / "q.onnx")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "--minShapes=x:1x3x8x8 --optShapes=x:1x3x12x16 --maxShapes=x:1x3x16x20" in out
