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
    assert any(
        "1 Conv/ConvTranspose/Gemm/MatMul layers inside If" in w for w in r.target["warnings"]
    )
