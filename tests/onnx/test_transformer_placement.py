"""Transformer placement on a tiny attention block built in code (tests/transformer_models.py):
MatMuls quantized, the attention mask and Softmax/LayerNorm/Erf/Gather float, lint on a mask
Q/DQ, INT8 close to FP32, ONNX Runtime loads what int8kit writes, refusals reported."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
from analysis_models import add_qdq
from models import model, value
from onnx import helper, numpy_helper
from transformer_models import attention_block, attention_data

from int8kit.analysis.fidelity import compare_models, failure, open_sessions
from int8kit.analysis.lint import has_errors, lint
from int8kit.onnx.model_io import GraphIndex
from int8kit.onnx.observe import make_session
from int8kit.onnx.placement import PlacementConfig, mask_path, plan
from int8kit.onnx.qdq import ORT_GENERATED, insert_qdq

MASK_TENSORS = {"m3", "mf", "inv", "neg", "fill"}
FLOAT_OPS = {"Softmax", "LayerNormalization", "Erf", "Gather", "ReduceMean", "Pow", "Sqrt"}


def _qdq(m, config=None, amax=4.0):
    p = plan(m, config or PlacementConfig(quantize_input_layers=False))  # quantize's default
    return p, insert_qdq(m, p, {t: amax for t in p.activations})[0]


def _dq_inputs(q):
    dq = {n.output[0] for n in q.graph.node if n.op_type == "DequantizeLinear"}
    return {(n.name, n.op_type, i) for n in q.graph.node for i in n.input if i in dq}


@pytest.mark.parametrize("fill", [-1e4, -3.4e38])
@pytest.mark.parametrize("decomposed", [True, False])
def test_matmuls_quantized_mask_and_float_ops_left_alone(fill, decomposed):
    m = attention_block(fill, decomposed_ln=decomposed)
    p, q = _qdq(m)
    # both activations of Q·K^T and softmax·V; activation + per-channel weight of projections
    assert {"q", "kt", "probs", "v0", "h", "ctx", "ln1", "g"} <= set(p.activations)
    assert {n for n, _ in p.weights} == {"q_proj", "k_proj", "v_proj", "out_proj", "ffn1", "ffn2"}
    assert not MASK_TENSORS & set(p.activations)
    assert "o" not in p.activations and "h" not in dict(p.activations).get("residual1", [])
    read_dq = _dq_inputs(q)
    assert {op for _, op, _ in read_dq} == {"MatMul"}  # nothing else reads a dequantized value
    assert not {op for _, op, _ in read_dq} & FLOAT_OPS
    findings = lint(q)
    assert not has_errors(findings), [str(f) for f in findings]
    assert not [f for f in findings if f.code == "float-compute"]


def test_mask_is_detected_and_never_quantized_even_when_asked():
    m = attention_block(-3.4e38)
    index = GraphIndex(m.graph)
    assert all(mask_path(index, t) for t in ("neg", "fill"))
    assert not any(mask_path(index, t) for t in ("scores", "h", "probs", "r1", "q"))
    # -1e3 is no mask constant: the same graph with a small fill is a plain computation
    assert not mask_path(GraphIndex(attention_block(-1e3).graph), "neg")
    p = plan(m, PlacementConfig(op_types=["MatMul", "Add", "Mul", "Sub", "Softmax"]))
    assert "neg" not in p.activations  # the additive mask (its 0/1 source may be quantized)
    assert {"q0", "mf"} <= set(p.activations)  # the asked-for Mul/Sub inputs elsewhere


@pytest.mark.parametrize("fill", [-1e4, -3.4e38])
def test_lint_flags_a_qdq_planted_on_the_mask(fill):
    _, q = _qdq(attention_block(fill))
    planted = add_qdq(q, "neg", abs(fill) / 127.0, consumers={"add_mask"})
    findings = [f for f in lint(planted) if f.code == "qdq-on-mask"]
    assert len(findings) == 1 and findings[0].severity == "error"
    assert findings[0].tensors == ["neg"] and "attention mask" in findings[0].message
    # a mask constant stored as int8 with a DequantizeLinear (no Q) is flagged as well
    m = attention_block(fill)
    k = next(i for i, t in enumerate(m.graph.initializer) if t.name == "fill")
    m.graph.initializer[k].CopyFrom(numpy_helper.from_array(np.array(-127, np.int8), "fill_q"))
    m.graph.initializer.extend([numpy_helper.from_array(np.float32(abs(fill) / 127), "fill_s")])
    m.graph.node.insert(0, helper.make_node("DequantizeLinear", ["fill_q", "fill_s"], ["fill"]))
    assert [f.code for f in lint(m) if f.severity == "error"] == ["qdq-on-mask"]


def test_int8_block_close_to_fp32_and_ort_loads_it_optimized():
    m = attention_block(-3.4e38)
    data = attention_data(n=24)
    calib = [{k: v[i : i + 4] for k, v in data.items()} for i in range(0, 16, 4)]
    fp32 = make_session(m, optimize=False)
    amax = {}
    p = plan(m, PlacementConfig(quantize_input_layers=False))
    for batch in calib:
        outs = _run_tensors(m, list(p.activations), batch)
        for name, out in zip(p.activations, outs, strict=True):
            amax[name] = max(amax.get(name, 0.0), float(np.abs(out).max()))
    q, _ = insert_qdq(m, p, amax)
    held = [{k: v[16:] for k, v in data.items()}]
    result = compare_models(fp32, open_sessions(q, ("trt-like", "ort-int8")), held)
    for backend in ("trt-like", "ort-int8"):
        assert not failure(result[backend]), result[backend]
        assert result[backend]["y"]["cosine"] > 0.99


def _run_tensors(m, names, feed):
    probe = onnx.ModelProto()
    probe.CopyFrom(m)
    probe.graph.output.extend([helper.make_empty_tensor_value_info(n) for n in names])
    return make_session(probe, optimize=False).run(names, feed)


def _ort_optimized(tmp_path):
    """(the block, the block as ONNX Runtime saves it after optimizing it: static shapes, BASIC
    level). The second carries initializers ORT named itself (gemm_input_shape, ...), and ORT
    1.32 refuses to load even that FP32 file with optimizations on."""
    ort = pytest.importorskip("onnxruntime")
    m = attention_block(-1e4, decomposed_ln=False, batch=1, seq=8, pre_ln=True, out_bias=True)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    opt = onnx.load(so.optimized_model_filepath)
    if not any(ORT_GENERATED.match(i.name) for i in opt.graph.initializer):
        pytest.skip("this ONNX Runtime names its fused initializers differently")
    for k, node in enumerate(opt.graph.node):
        node.name = node.name or f"n{k}"
    return m, opt


def test_ort_loads_what_int8kit_writes_from_an_ort_optimized_model(tmp_path):
    _, opt = _ort_optimized(tmp_path)
    _, q = _qdq(opt, PlacementConfig(quantize_input_layers=True))
    assert not any(ORT_GENERATED.match(i.name) for i in q.graph.initializer)
    make_session(q)  # ... and so does the Q/DQ model (it raised AddInitializedOrtValue before)


def test_a_backend_refusal_is_reported_not_raised(tmp_path):
    from int8kit.cli.quantize import print_summary
    from int8kit.workflow import QuantizeConfig, QuantizeResult, fidelity

    fp32, opt = _ort_optimized(tmp_path)
    _, q = _qdq(opt, PlacementConfig(quantize_input_layers=True))
    for init in q.graph.initializer:  # undo the writer's renaming: the model ORT refuses
        if init.name.startswith("int8kit_gemm_"):
            old = init.name
            init.name = old[len("int8kit_") :]
            for node in q.graph.node:
                node.input[:] = [init.name if i == old else i for i in node.input]
    data = attention_data(n=4)
    result = fidelity(fp32, q, [{k: v[i : i + 1] for k, v in data.items()} for i in range(4)])
    assert "AddInitializedOrtValue" in failure(result["ort-int8"])
    assert result["trt-like"]["y"]["cosine"] > 0.9  # the other backend is still measured
    run = QuantizeResult(QuantizeConfig("a.onnx", "b.onnx", ranges="r.json"), outputs={})
    run.fidelity, run.holdout_images = result, 4
    out = io.StringIO()
    print_summary(run, out=out)
    assert "ort-int8  FAILED: ONNX Runtime refused the model" in out.getvalue()


def test_a_model_that_fails_at_run_time_is_reported():
    x = value("x", ("N", 4))
    fp32 = model([helper.make_node("Relu", ["x"], ["y"])], [x], [value("y", ("N", 4))], [])
    shape3 = numpy_helper.from_array(np.array([-1, 3], np.int64), "s3")
    shape4 = numpy_helper.from_array(np.array([-1, 4], np.int64), "s4")
    bad = model(
        [
            helper.make_node("Reshape", ["x", "s3"], ["r"]),  # 4 values do not make rows of 3
            helper.make_node("Reshape", ["r", "s4"], ["y"]),
        ],
        [x],
        [value("y", ("N", 4))],
        [shape3, shape4],
    )
    feed = [{"x": np.ones((1, 4), np.float32)}]
    result = compare_models(make_session(fp32), open_sessions(bad, ("trt-like", "ort-int8")), feed)
    for backend in ("trt-like", "ort-int8"):
        assert failure(result[backend]).startswith("ONNX Runtime could not run the model")


def test_lint_flags_the_mask_qdq_of_onnx_runtimes_quantizer(tmp_path):
    q = pytest.importorskip("onnxruntime.quantization")
    onnx.save(attention_block(-3.4e38), tmp_path / "fp32.onnx")
    data = attention_data(n=4)

    class Reader(q.CalibrationDataReader):
        def __init__(self):
            self.it = iter([{k: v[i : i + 1] for k, v in data.items()} for i in range(4)])

        def get_next(self):
            return next(self.it, None)

    q.quantize_static(
        str(tmp_path / "fp32.onnx"),
        str(tmp_path / "ort.onnx"),
        Reader(),
        quant_format=q.QuantFormat.QDQ,
        activation_type=q.QuantType.QInt8,
        weight_type=q.QuantType.QInt8,
        per_channel=True,
        extra_options={"ActivationSymmetric": True},
    )
    flagged = {
        t for f in lint(str(tmp_path / "ort.onnx")) if f.code == "qdq-on-mask" for t in f.tensors
    }
    assert "neg" in flagged  # ORT puts a Q/DQ with a ±3.4e38 range on the mask


def test_eval_summary_prints_a_failed_backend():
    from int8kit.cli.eval import print_eval

    out = io.StringIO()
    result = {"samples": 1, "backends": {"ort-int8": "fused"}, "outputs": {"ort-int8": {}}}
    result["outputs"]["ort-int8"] = {"failed": "ONNX Runtime refused the model: Fail: x"}
    print_eval(result, out=out)
    assert "FAILED: ONNX Runtime refused the model" in out.getvalue()
