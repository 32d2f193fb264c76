"""Loop and If bodies that read outer-scope initializers keep them through Q/DQ insertion and
bias correction (they used to be pruned as unused by the main graph), and ORT runs the result."""

import models
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import subgraph_models

from int8kit.data import DataConfig
from int8kit.onnx.bias import correct_biases
from int8kit.onnx.placement import PlacementConfig, plan
from int8kit.onnx.qdq import insert_qdq
from int8kit.workflow import QuantizeConfig, quantize_onnx

BODY_WEIGHTS = {"if": {"then_w", "else_b"}, "loop": {"loop_w", "loop_b"}}
BUILDERS = {"if": subgraph_models.if_model, "loop": subgraph_models.loop_model}


def _run(m, x):
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {"x": x})[0]


@pytest.mark.parametrize("kind", ["if", "loop"])
def test_quantize_keeps_initializers_subgraphs_read(kind, tmp_path):
    src = models.save(BUILDERS[kind](), tmp_path / f"{kind}.onnx")
    data = models.save_npz(tmp_path / "x.npz", n=12, x=(1, 3, 8, 8))
    out = tmp_path / f"{kind}.int8.onnx"
    result = quantize_onnx(
        QuantizeConfig(model=src, output=str(out), data=DataConfig(source=data), holdout=2)
    )
    q = onnx.load(str(out))
    onnx.checker.check_model(q, full_check=True)
    assert BODY_WEIGHTS[kind] <= {i.name for i in q.graph.initializer}
    assert result.activations_quantized >= 1 and result.weights_quantized >= 1
    x = np.load(data)["x"][:1]
    ref, got = _run(onnx.load(src), x), _run(q, x)
    sqnr = 10 * np.log10((ref**2).sum() / ((ref - got) ** 2).sum())
    assert sqnr > 25, sqnr  # the body still scales/shifts by its weights


@pytest.mark.parametrize("kind", ["if", "loop"])
def test_qdq_and_bias_correction_keep_body_initializers(kind):
    m = BUILDERS[kind]()
    placement = plan(m, PlacementConfig())
    corrected, summary = correct_biases(m, placement, {"b": np.full(4, 0.3), "x": np.zeros(3)})
    assert summary.corrected
    assert BODY_WEIGHTS[kind] <= {i.name for i in corrected.graph.initializer}
    q, _ = insert_qdq(corrected, placement, {"b": 4.0, "x": 3.0})
    assert BODY_WEIGHTS[kind] <= {i.name for i in q.graph.initializer}
    _run(q, np.ones((1, 3, 8, 8), np.float32))
