"""FP16 conversion of Q/DQ models: runs on ONNX Runtime CPU, stays close to the FP32 Q/DQ model,
keeps the model's input/output types unless asked, and puts FP16 scales on the Q/DQ."""

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).parents[1] / "analysis"))
from test_sensitivity import batches, outlier_chain  # noqa: E402

from int8kit.analysis.metrics import sqnr_db
from int8kit.onnx.fp16 import convert_to_fp16
from int8kit.onnx.observe import make_session
from int8kit.onnx.placement import plan
from int8kit.onnx.qdq import insert_qdq


def _qdq():
    m = outlier_chain()
    data = batches(4)
    from int8kit.onnx.observe import activation_tensors, run_exposed

    amax = {}
    for values in run_exposed(m, activation_tensors(m), data):
        for n, v in values.items():
            amax[n] = max(amax.get(n, 0.0), float(np.abs(v).max()))
    return m, insert_qdq(m, plan(m), amax)[0], data


def test_fp16_qdq_runs_on_ort_close_to_fp32_qdq_and_keeps_io_types():
    fp32, qdq, data = _qdq()
    half, summary = convert_to_fp16(qdq)
    onnx.checker.check_model(half)
    assert summary.opset == 19 and summary.boundary_casts == 2
    assert half.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert half.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    ref_sess, q_sess = make_session(fp32), make_session(qdq, optimize=False)
    h_sess = make_session(half, optimize=False)
    for feed in data:
        ref, q = ref_sess.run(None, feed)[0], q_sess.run(None, feed)[0]
        h = h_sess.run(None, feed)[0]
        assert h.dtype == np.float32
        assert sqnr_db(q, h) > 25  # FP16 rounding flips a few int8 codes, no more
        assert abs(sqnr_db(ref, h) - sqnr_db(ref, q)) < 3
    assert qdq.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT  # input untouched


def test_qdq_scales_are_fp16_and_dq_feeds_compute_directly():
    _, qdq, _ = _qdq()
    half, _ = convert_to_fp16(qdq)
    inits = {i.name: i for i in half.graph.initializer}
    for n in half.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            assert inits[n.input[1]].data_type == TensorProto.FLOAT16
            assert inits[n.input[2]].data_type == TensorProto.INT8
    producer = {o: n for n in half.graph.node for o in n.output}
    convs = [n for n in half.graph.node if n.op_type == "Conv"]
    assert convs and all(producer[n.input[0]].op_type == "DequantizeLinear" for n in convs)
    assert all(producer[n.input[1]].op_type == "DequantizeLinear" for n in convs)


def test_without_keep_io_types_the_model_takes_and_returns_fp16():
    fp32, _, data = _qdq()
    half, summary = convert_to_fp16(fp32, keep_io_types=False)
    assert summary.boundary_casts == 0
    assert half.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    out = make_session(half).run(None, {"x": data[0]["x"].astype(np.float16)})[0]
    assert out.dtype == np.float16
    assert sqnr_db(make_session(fp32).run(None, data[0])[0], out) > 50


def test_resize_scales_stay_fp32():
    nodes = [
        helper.make_node("Resize", ["x", "", "scales"], ["r"], name="up", mode="nearest"),
        helper.make_node("Mul", ["r", "k"], ["y"], name="mul"),
    ]
    inits = [
        numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
        numpy_helper.from_array(np.array(0.5, np.float32), "k"),
    ]
    g = helper.make_graph(
        nodes,
        "resize",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    half, _ = convert_to_fp16(m)
    inits = {i.name: i.data_type for i in half.graph.initializer}
    assert inits["scales"] == TensorProto.FLOAT and inits["k"] == TensorProto.FLOAT16
    x = np.random.default_rng(0).standard_normal((1, 2, 4, 4)).astype(np.float32)
    out = make_session(half).run(None, {"x": x})[0]
    assert np.allclose(out, make_session(m).run(None, {"x": x})[0], atol=1e-2)
