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
