import numpy as np
import pytest
from analysis_models import (
    add_qdq,
    conv_relu_conv,
    detector_head,
    int8kit_qdq,
    quantize_weight,
    residual_block,
    sigmoid_add,
)
from onnx import numpy_helper

from int8kit.analysis.lint import CHECKS, has_errors, lint


def codes(findings):
    return sorted((f.severity, f.code) for f in findings)


@pytest.mark.parametrize("build", [conv_relu_conv, residual_block, detector_head, sigmoid_add])
def test_int8kit_models_are_clean(build):
    assert lint(int8kit_qdq(build())) == []


def test_half_quantized_conv_is_an_error_and_float_conv_a_warning():
    m = add_qdq(conv_relu_conv(), "x", 0.03, consumers={"conv1"})  # weight stays float
    findings = lint(m)
    assert codes(findings) == [("error", "half-quantized"), ("warning", "float-compute")]
    err = findings[0]
    assert err.nodes == ["conv1"] and err.tensors == ["w1"]
    assert "weight 'w1'" in err.message and err.fix
    assert findings[1].nodes == ["conv2"]
    assert has_errors(findings)


def test_quantized_weight_with_float_activation_is_an_error():
    m = quantize_weight(conv_relu_conv(), "conv1")
    findings = lint(m)
    assert ("error", "half-quantized") in codes(findings)
    assert next(f for f in findings if f.code == "half-quantized").tensors == ["x"]


def test_qdq_on_graph_output():
    m = add_qdq(int8kit_qdq(conv_relu_conv()), "y", 0.05, consumers={"<output>"})
    findings = lint(m)
    assert codes(findings) == [("error", "qdq-on-output")]
    assert findings[0].nodes == ["y_DQ"] and findings[0].tensors == ["y_dequantized"]


def test_residual_add_quantized_on_one_side_without_a_conv():
    m = add_qdq(sigmoid_add(), "x", 0.03, consumers={"add"})
    findings = lint(m)
    assert codes(findings) == [("warning", "residual-one-side")]
    assert findings[0].nodes == ["add"] and findings[0].tensors == ["s"]
    assert not has_errors(findings)


def test_residual_add_next_to_a_conv_is_fine():
    # int8kit quantizes only the identity branch x; the other side is conv2's output.
    m = int8kit_qdq(residual_block())
    add = next(n for n in m.graph.node if n.op_type == "Add")
    assert list(add.input) == ["c2", "x_dequantized"]
    assert lint(m) == []


def test_concat_of_differently_scaled_inputs():
    m = int8kit_qdq(detector_head())
    m = add_qdq(m, "boxes", 640 / 127, consumers={"concat"})
    m = add_qdq(m, "scores", 1 / 127, consumers={"concat"})
    findings = lint(m)
    assert codes(findings) == [("warning", "concat-scales")]
    assert "640x" in findings[0].message
    assert sorted(findings[0].tensors) == ["boxes_dequantized", "scores_dequantized"]


def test_similar_concat_scales_pass():
    m = int8kit_qdq(detector_head())
    m = add_qdq(m, "boxes", 3 / 127, consumers={"concat"})
    m = add_qdq(m, "scores", 1 / 127, consumers={"concat"})
    assert lint(m) == []


def test_detector_trap_one_scale_over_boxes_and_scores():
    m = add_qdq(int8kit_qdq(detector_head()), "cat", 640 / 127)
    findings = lint(m)
    assert codes(findings) == [("error", "concat-range")]
    f = findings[0]
    assert f.nodes == ["concat", "cat_Q"] and f.tensors == ["scores"]
    assert "0.2 of 127 steps" in f.message  # 127 * 1 / 640


def test_moderate_range_gap_is_a_warning():
    m = add_qdq(int8kit_qdq(detector_head()), "cat", 10 / 127)  # scores get 12.7 steps
    assert codes(lint(m)) == [("warning", "concat-range")]


def _set(model, name, value):
    init = next(i for i in model.graph.initializer if i.name == name)
    init.CopyFrom(numpy_helper.from_array(np.asarray(value), name))


@pytest.mark.parametrize("scale", [0.0, -0.1, float("nan")])
def test_bad_scale(scale):
    m = int8kit_qdq(conv_relu_conv())
    _set(m, "r1_scale", np.float32(scale))
    findings = lint(m)
    assert codes(findings) == [("error", "bad-scale"), ("error", "bad-scale")]  # Q and DQ
    assert {f.nodes[0] for f in findings} == {"r1_QuantizeLinear", "r1_DequantizeLinear"}


@pytest.mark.parametrize(("value", "dtype"), [(3, np.int8), (0, np.uint8), (128, np.uint8)])
def test_bad_zero_point(value, dtype):
    m = int8kit_qdq(conv_relu_conv())
    _set(m, "x_zero_point", np.array(value, dtype))
    findings = lint(m)
    assert codes(findings) == [("error", "bad-zero-point")] * 2


def test_findings_are_sorted_errors_first_and_serialise():
    m = add_qdq(sigmoid_add(), "x", 0.03, consumers={"add"})
    m = add_qdq(m, "y", 0.05, consumers={"<output>"})
    findings = lint(m)
    assert [f.severity for f in findings] == ["error", "warning"]
    d = findings[0].to_dict()
    assert set(d) == {"severity", "code", "nodes", "message", "fix", "tensors"}
    assert all(f.code in CHECKS for f in findings)


def test_lint_reads_a_path(tmp_path):
    from analysis_models import save

    path = save(add_qdq(int8kit_qdq(detector_head()), "cat", 640 / 127), tmp_path / "m.onnx")
    assert codes(lint(path)) == [("error", "concat-range")]
