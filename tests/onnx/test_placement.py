import models
import numpy as np
import pytest

from int8kit.errors import ModelError
from int8kit.onnx import rules
from int8kit.onnx.placement import PlacementConfig, plan


def edges(p, tensor):
    return sorted(p.activations.get(tensor, []))


def test_conv_chain_quantizes_compute_and_pool_inputs_not_outputs_or_biases():
    p = plan(models.conv_bn_relu_chain())
    assert edges(p, "x") == [("conv1", 0)]
    assert edges(p, "r1") == [("conv2", 0)]
    assert edges(p, "r2") == [("pool", 0)]
    assert edges(p, "p") == [("gap", 0)]
    assert edges(p, "f") == [("fc", 0)]
    assert "y" not in p.activations  # graph output
    assert "c1" not in p.activations and "bn1" not in p.activations  # BN/Relu stay float
    assert {k: (w.initializer, w.axis) for k, w in p.weights.items()} == {
        ("conv1", 1): ("w1", 0),
        ("conv2", 1): ("w2", 0),
        ("fc", 1): ("wfc", 0),  # transB=1: (N, K), output features on axis 0
    }
    assert not any(name in p.activations for name in ("b1", "bfc"))  # biases stay float


def test_residual_add_quantizes_only_the_identity_branch():
    p = plan(models.residual_block())
    assert edges(p, "x") == [("add", 1), ("conv1", 0)]  # shared Q/DQ: conv input + identity
    assert "c2" not in p.activations  # main branch (a conv output) stays float for fusion


def test_gemm_and_matmul_weight_axes_and_activation_matmul():
    p = plan(models.gemm_matmul())
    w = {k: (v.initializer, v.axis) for k, v in p.weights.items()}
    assert w[("matmul", 1)] == ("wm", 1)  # (K, N): per output column
    assert w[("gemm", 1)] == ("wg", 1)  # transB=0: (K, N)
    assert edges(p, "h") == [("gemm", 0), ("gram", 0)]
    assert edges(p, "ht") == [("gram", 1)]  # both activations of an activation MatMul
    assert "a" not in p.activations  # Add of an activation and a constant is no residual


def test_two_inputs_and_conv_transpose_axis():
    p = plan(models.two_inputs())
    assert edges(p, "a") == [("conv_a", 0)] and edges(p, "b") == [("conv_b", 0)]
    assert "ca" not in p.activations  # Add of two conv outputs: input 1 is the identity
    assert edges(p, "cb") == [("add", 1)]
    q = plan(models.conv_transpose())
    assert [(v.initializer, v.axis) for v in q.weights.values()] == [("wt", 1)]


def test_exclude_and_op_types_narrow_or_widen():
    m = models.conv_bn_relu_chain()
    p = plan(m, PlacementConfig(exclude=["^conv2$", "pool"]))
    assert "r1" not in p.activations and "r2" not in p.activations
    assert ("conv2", 1) not in p.weights and ("conv1", 1) in p.weights
    p = plan(m, PlacementConfig(op_types=["Conv"]))
    assert set(p.activations) == {"x", "r1"}
    p = plan(m, PlacementConfig(op_types=["Conv", "Relu"]))
    assert edges(p, "bn1") == [("relu1", 0)]


def test_layers_reading_the_network_input_can_stay_float():
    from onnx import helper, numpy_helper

    # x -> Transpose -> Div(255) -> conv1 -> Relu -> conv2;  x also feeds conv_side directly
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], name="nhwc2nchw", perm=[0, 3, 1, 2]),
        helper.make_node("Div", ["t", "k"], ["n"], name="div"),
        helper.make_node("Conv", ["n", "w1"], ["c1"], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
        helper.make_node("Conv", ["n", "w3"], ["c3"], name="conv_side"),
        helper.make_node("Add", ["c2", "c3"], ["y"], name="add"),
    ]
    inits = [
        numpy_helper.from_array(np.array(255, np.float32), "k"),
        models.weight("w1", (4, 3, 1, 1), 1),
        models.weight("w2", (4, 4, 1, 1), 2),
        models.weight("w3", (4, 3, 1, 1), 3),
    ]
    m = models.model(
        nodes, [models.value("x", (1, 8, 8, 3))], [models.value("y", (1, 4, 8, 8))], inits
    )
    everything = plan(m)
    assert {"n", "r1"} <= set(everything.activations)
    assert {k[0] for k in everything.weights} == {"conv1", "conv2", "conv_side"}
    p = plan(m, PlacementConfig(quantize_input_layers=False))
    assert set(p.kept_float) == {"conv1", "conv_side"}
    assert "n" not in p.activations and edges(p, "r1") == [("conv2", 0)]
    assert {k[0] for k in p.weights} == {"conv2"}
    cfg = PlacementConfig(quantize_input_layers=False)
    assert PlacementConfig.from_dict(cfg.to_dict()) == cfg


def test_bad_config_and_already_quantized_model_are_refused():
    with pytest.raises(ValueError, match="not a valid regular expression"):
        PlacementConfig(exclude=["("])
    with pytest.raises(ValueError, match="cannot quantize op types"):
        PlacementConfig(op_types=["Shape"])
    from int8kit.onnx.qdq import insert_qdq

    m = models.residual_block()
    q, _ = insert_qdq(m, plan(m), {"x": 1.0})
    with pytest.raises(ModelError, match="already has QuantizeLinear"):
        plan(q)


def test_rules_are_readable_as_one_list():
    text = rules.describe()
    for op in ("Conv", "ConvTranspose", "Gemm", "MatMul", "MaxPool", "Add"):
        assert op in text
    assert "graph outputs" in text
