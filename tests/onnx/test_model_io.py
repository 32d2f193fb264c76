import models
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from int8kit.errors import ModelError
from int8kit.onnx import model_io


def _with_external(tmp_path, location):
    m = models.conv_transpose()
    d = tmp_path / "m"
    d.mkdir()
    onnx.save(m, d / "m.onnx", save_as_external_data=True, location="w.bin", size_threshold=0)
    if location != "w.bin":  # point the tensor somewhere else
        m2 = onnx.load(d / "m.onnx", load_external_data=False)
        for e in m2.graph.initializer[0].external_data:
            if e.key == "location":
                e.value = location
        onnx.save(m2, d / "m.onnx")
    return d / "m.onnx"


def test_external_data_inside_the_folder_loads(tmp_path):
    path = _with_external(tmp_path, "w.bin")
    m = model_io.load_model(path)
    w = numpy_helper.to_array(m.graph.initializer[0])
    assert w.shape == (4, 2, 2, 2)


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd"])
def test_external_data_outside_the_folder_is_refused(tmp_path, location):
    (tmp_path / "secret.bin").write_bytes(b"\0" * 256)
    path = _with_external(tmp_path, location)
    with pytest.raises(ModelError, match="outside the model's folder"):
        model_io.load_model(path)


def test_missing_and_corrupt_models_are_clear_errors(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        model_io.load_model(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not protobuf \xff\xff")
    with pytest.raises(ModelError, match="not a readable ONNX model"):
        model_io.load_model(bad)


def test_large_model_is_saved_with_external_data(tmp_path, monkeypatch):
    # The 2 GB protobuf limit is a constant of the format; lower it to exercise the path.
    monkeypatch.setattr(model_io, "_PROTOBUF_LIMIT", 100)
    m = models.conv_bn_relu_chain()
    m.graph.initializer[0].CopyFrom(models.weight("w1", (64, 3, 3, 3), 1))  # > 1 KB: external
    m.graph.node[1].input[1:] = []  # drop BN (shapes changed); keep the test about saving
    out = tmp_path / "big.onnx"
    model_io.save_model(m, out)
    assert (tmp_path / "big.onnx.data").is_file()
    back = model_io.load_model(out)
    np.testing.assert_array_equal(
        numpy_helper.to_array(back.graph.initializer[0]),
        numpy_helper.to_array(m.graph.initializer[0]),
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "big.onnx",
        "big.onnx.data",
    ]  # no temp left


def test_input_specs_skip_initializers_and_keep_dynamic_dims():
    specs = model_io.input_specs(models.conv_bn_relu_chain())
    assert [(s.name, s.shape, s.dtype) for s in specs] == [("x", ("N", 3, 8, 8), "float32")]


def test_saved_bytes_are_what_onnx_writes(tmp_path):
    m = models.conv_bn_relu_chain()
    model_io.save_model(m, tmp_path / "ours.onnx")
    model_io.save_model(m, tmp_path / "given.onnx", data=m.SerializeToString())  # the caller's
    onnx.save_model(m, tmp_path / "onnx.onnx")
    expected = (tmp_path / "onnx.onnx").read_bytes()
    assert (tmp_path / "ours.onnx").read_bytes() == expected
    assert (tmp_path / "given.onnx").read_bytes() == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["given.onnx", "onnx.onnx", "ours.onnx"]


def test_unused_initializers_are_dropped_and_the_rest_keep_their_order():
    m = models.conv_bn_relu_chain()
    g = m.graph
    used = [i.name for i in g.initializer]
    mixed = []
    for k, init in enumerate(g.initializer):
        mixed.append(init)
        if k % 3 == 0:  # an unused one after every third
            mixed.append(numpy_helper.from_array(np.full(4, k, np.float32), f"unused{k}"))
    del g.initializer[:]
    g.initializer.extend(mixed)
    g.input.append(onnx.helper.make_tensor_value_info("unused3", onnx.TensorProto.FLOAT, [4]))
    expected = models.conv_bn_relu_chain()
    assert model_io.drop_unused_initializers(g) == {"unused0", "unused3", "unused6"}
    assert [i.name for i in g.initializer] == used
    assert [i.name for i in g.input] == ["x"]
    assert m.SerializeToString() == expected.SerializeToString()
    assert model_io.drop_unused_initializers(g) == set()


def _as_constant_nodes(m: onnx.ModelProto, keep_output: str | None = None) -> onnx.ModelProto:
    """``m`` as paddle2onnx writes it: every initializer a Constant node, none left."""
    from onnx import helper

    m2 = onnx.ModelProto()
    m2.CopyFrom(m)
    consts = [
        helper.make_node("Constant", [], [t.name], name=f"const_{t.name}", value=t)
        for t in m2.graph.initializer
    ]
    del m2.graph.initializer[:]
    nodes = consts + list(m2.graph.node)
    if keep_output:  # a Constant that is also a graph output stays a node
        m2.graph.output.append(models.value(keep_output, (4,)))
    del m2.graph.node[:]
    m2.graph.node.extend(nodes)
    onnx.checker.check_model(m2)
    return m2


def test_constant_nodes_become_initializers_with_the_same_function():
    from onnx import helper

    m = _as_constant_nodes(models.conv_bn_relu_chain(), keep_output="b1")
    n_const = sum(n.op_type == "Constant" for n in m.graph.node)
    scalar = helper.make_tensor("eps", onnx.TensorProto.FLOAT, [], [1e-5])
    shape = helper.make_tensor("shape", onnx.TensorProto.INT64, [2], [1, -1])
    m.graph.node.insert(0, helper.make_node("Constant", [], ["eps"], value=scalar))
    m.graph.node.insert(0, helper.make_node("Constant", [], ["shape"], value=shape))
    moved = model_io.constants_to_initializers(m)
    assert moved == n_const - 1 == 8  # every weight, bias and BN parameter but the output
    kept = [n.output[0] for n in m.graph.node if n.op_type == "Constant"]
    assert sorted(kept) == ["b1", "eps", "shape"]  # graph output, scalar, integer tensor
    assert "w2" in {i.name for i in m.graph.initializer}
    onnx.checker.check_model(m)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    from int8kit.onnx.observe import make_session

    ref = make_session(models.conv_bn_relu_chain(), optimize=False).run(["y"], {"x": x})[0]
    got = make_session(m, optimize=False).run(["y"], {"x": x})[0]
    np.testing.assert_array_equal(got, ref)


def test_quantize_finds_weights_held_in_constant_nodes(tmp_path):
    """paddle2onnx keeps every weight in a Constant node: quantize must still quantize them."""
    from int8kit.data import DataConfig
    from int8kit.workflow import QuantizeConfig, quantize_onnx

    path = tmp_path / "m.onnx"
    onnx.save(_as_constant_nodes(models.conv_bn_relu_chain()), path)
    before = path.read_bytes()
    data = models.save_npz(tmp_path / "d.npz", n=16, x=(1, 3, 8, 8))
    r = quantize_onnx(QuantizeConfig(str(path), str(tmp_path / "q.onnx"), data=DataConfig(data)))
    assert r.weights_quantized == 2  # conv2 and fc (conv1 reads the input: float)
    q = onnx.load(tmp_path / "q.onnx")
    dq_out = {n.output[0] for n in q.graph.node if n.op_type == "DequantizeLinear"}
    conv2 = next(n for n in q.graph.node if n.name == "conv2")
    assert conv2.input[1] in dq_out
    assert path.read_bytes() == before  # the input model is not modified


def _one_channel_head(bias_from_node: bool = False) -> onnx.ModelProto:
    """x -> Conv(4) -> Relu -> Conv(1 channel) -> y, the head's weight and its one-element bias in
    Constant nodes (as silero-vad's OpenVINO export keeps its decoder); or the bias computed."""
    from onnx import helper

    w2 = models.weight("w2", (1, 4, 1, 1), 2)
    b2 = helper.make_tensor("b2", onnx.TensorProto.FLOAT, [1], [0.25])
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["h"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h"], ["r"], name="relu1"),
        helper.make_node("Constant", [], ["w2"], name="const_w2", value=w2),
        helper.make_node("Constant", [], ["b2"], name="const_b2", value=b2),
    ]
    bias = "b2"
    if bias_from_node:
        nodes.append(helper.make_node("Neg", ["b2"], ["b2_neg"], name="neg_b2"))
        bias = "b2_neg"
    nodes.append(helper.make_node("Conv", ["r", "w2", bias], ["y"], name="conv2"))
    inits = [models.weight("w1", (4, 3, 3, 3), 1), models.weight("b1", (4,), 3)]
    return models.model(
        nodes, [models.value("x", ("N", 3, 8, 8))], [models.value("y", ("N", 1, 8, 8))], inits
    )


def test_one_element_bias_of_a_conv_in_a_constant_becomes_an_initializer():
    m = _one_channel_head()
    assert model_io.constants_to_initializers(m) == 2
    assert {i.name for i in m.graph.initializer} == {"w1", "b1", "w2", "b2"}
    assert not [n for n in m.graph.node if n.op_type == "Constant"]


@pytest.mark.parametrize("bias_from_node", [False, True])
def test_quantize_one_channel_head_with_constant_or_computed_bias(tmp_path, bias_from_node):
    """silero-vad's OpenVINO export crashed in bias correction (KeyError: the one-element bias
    stayed a Constant node); a bias computed in the graph is left alone, with the reason."""
    from int8kit.data import DataConfig
    from int8kit.workflow import QuantizeConfig, quantize_onnx

    path = models.save(_one_channel_head(bias_from_node), tmp_path / "m.onnx")
    data = models.save_npz(tmp_path / "d.npz", n=24, x=(1, 3, 8, 8))
    r = quantize_onnx(QuantizeConfig(path, str(tmp_path / "q.onnx"), data=DataConfig(data)))
    assert r.weights_quantized == 1  # conv2 (conv1 reads the input: float)
    bc = r.bias_correction
    if bias_from_node:
        assert "conv2" in bc["skipped"] and "not a constant" in bc["skipped"]["conv2"]
    else:
        assert "conv2" not in bc.get("skipped", {})


def test_one_graph_index_serves_the_placement_rules_and_the_rewrites():
    """placement's index (consumers with input indices, constants and their values) and the
    rewrites' (readers, initializers, the model) are one class, from a model or its graph."""
    from onnx import helper

    from int8kit.onnx import placement, smoothquant

    assert placement.GraphIndex is model_io.GraphIndex
    assert issubclass(smoothquant._Editor, model_io.GraphIndex)
    m = models.gemm_matmul()
    c = helper.make_node("Constant", [], ["two"], value=numpy_helper.from_array(np.float32(2)))
    m.graph.node.insert(0, c)
    m.graph.node.append(helper.make_node("Mul", ["y", "two"], ["y2"], name="double"))
    for source, model in ((m, m), (m.graph, None)):
        index = model_io.GraphIndex(source)
        assert index.model is model and index.graph is m.graph
        # h is read by the Gemm, the Transpose and the Gram MatMul, at input 0 each
        assert [(n.name, i) for n, i in index.consumers["h"]] == [
            ("gemm", 0), ("t", 0), ("gram", 0)
        ]  # fmt: skip
        assert [n.name for n in index.readers["ht"]] == ["gram"]
        assert index.producer["a"].name == "bias" and index.inits is index.initializers
        assert index.is_constant("two") and index.is_constant("wm") and not index.is_constant("h")
        assert float(index.value("two")) == 2.0 and index.value("h") is None
        assert index.value("bm").tolist() == [np.float32(0.1)] * 8
        assert index.only_read_by("ht", {"gram"}) and not index.only_read_by("y", {"double"})
