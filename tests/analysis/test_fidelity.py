"""Fidelity of outputs whose shape depends on the values: an autoregressive decoder that stops at
its end token (PaddleOCR's SLANet in a Loop) can run more or fewer steps in INT8 than in FP32."""

from __future__ import annotations

import json

import numpy as np
from models import model, save, value, weight
from onnx import helper, numpy_helper

from int8kit.analysis.fidelity import compare_models, open_sessions
from int8kit.analysis.metrics import OutputStats
from int8kit.cli.main import main
from int8kit.onnx.observe import make_session


def _keep_above(threshold: float, width: int = 6):
    """x(1, width) -> Compress(x, x > threshold): a 1-D output as long as the values above it."""
    nodes = [
        helper.make_node("Greater", ["x", "t"], ["keep"]),
        helper.make_node("Flatten", ["keep"], ["k2"], axis=0),
        helper.make_node("Squeeze", ["k2", "zero"], ["k1"]),
        helper.make_node("Compress", ["x", "k1"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(threshold, np.float32), "t"),
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
    ]
    return model(nodes, [value("x", (1, width))], [value("y", ("K",))], inits, "keep")


def test_an_output_of_another_length_is_compared_on_the_common_part():
    x = np.array([[0.9, 0.4, 0.7, 0.35, 0.6, 0.1]], np.float32)
    fp32 = make_session(_keep_above(0.5))  # [0.9, 0.7, 0.6]
    other = open_sessions(_keep_above(0.3), ("trt-like",))  # [0.9, 0.4, 0.7, 0.35, 0.6]
    same = [{"x": np.full((1, 6), 0.8, np.float32)}]  # both keep all six
    out = compare_models(fp32, other, same + [{"x": x}])["trt-like"]["y"]
    assert out["shape_differs"] == 1 and out["batches"] == 2
    expect = OutputStats()
    expect.update(np.full(6, 0.8), np.full(6, 0.8))
    expect.update(np.array([0.9, 0.7, 0.6]), np.array([0.9, 0.4, 0.7]))
    assert np.isclose(out["sqnr_db"], expect.result()["sqnr_db"])
    assert out["count"] == 9
    same_len = compare_models(fp32, other, same)["trt-like"]["y"]
    assert "shape_differs" not in same_len  # said only when it happened


def _relu_mlp_then_keep_positive(width: int = 256):
    """x -> MatMul -> Relu -> MatMul -> h -> Compress(h, h > 0): the second MatMul is INT8 by
    default, and its outputs near 0 fall on either side of the threshold."""
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["a"], name="mm1"),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w2"], ["h"], name="mm2"),
        helper.make_node("Greater", ["h", "t"], ["keep"]),
        helper.make_node("Flatten", ["keep"], ["k2"], axis=0),
        helper.make_node("Squeeze", ["k2", "zero"], ["k1"]),
        helper.make_node("Compress", ["h", "k1"], ["y"]),
    ]
    inits = [
        weight("w1", (32, 64), 31),
        weight("w2", (64, width), 32),
        numpy_helper.from_array(np.array(0.0, np.float32), "t"),
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
    ]
    return model(nodes, [value("x", (1, 32))], [value("y", ("K",))], inits, "mlp_keep")


def test_quantize_finishes_when_int8_changes_an_output_length(tmp_path, capsys):
    # It stopped with "reference shape (1, 19, 8) and test shape (1, 22, 8) differ" after the
    # whole calibration, and wrote no model.
    src = save(_relu_mlp_then_keep_positive(), tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((12, 1, 32)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x)  # 12 whole feeds of batch 1
    out, js = tmp_path / "m.int8.onnx", tmp_path / "m.json"
    argv = ["quantize", src, "--calib", str(tmp_path / "d.npz"), "-o", str(out)]
    assert main([*argv, "--holdout", "4", "--json", str(js)]) == 0
    assert out.is_file()
    y = json.loads(js.read_text())["fidelity"]["trt-like"]["y"]
    assert y["batches"] == 4 and 1 <= y["shape_differs"] <= 4
    assert y["cosine"] > 0.5  # the common part still matches
    assert "shape differs from FP32 on" in capsys.readouterr().out


def test_the_sensitivity_scorer_compares_another_length_on_the_common_part():
    # sensitivity / fallback scored with OutputStats.update(r, t) directly and stopped with
    # "reference shape (141,) and test shape (140,) differ"
    from int8kit.analysis.sensitivity import Scorer

    scorer = Scorer()
    scorer.update({"y": np.array([0.9, 0.7, 0.6])}, {"y": np.array([0.9, 0.4, 0.7, 0.35])})
    scorer.update({"y": np.full(6, 0.8)}, {"y": np.full(6, 0.8)})
    expect = OutputStats()
    expect.update(np.array([0.9, 0.7, 0.6]), np.array([0.9, 0.4, 0.7]))
    expect.update(np.full(6, 0.8), np.full(6, 0.8))
    assert np.isclose(scorer.result()["sqnr_db"], expect.result()["sqnr_db"])
    assert scorer.shape_differs == {"y": 1}


def test_a_fidelity_target_runs_when_int8_changes_an_output_length(tmp_path):
    src = save(_relu_mlp_then_keep_positive(), tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((24, 1, 32)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x)
    out = tmp_path / "m.int8.onnx"
    argv = ["quantize", src, "--calib", str(tmp_path / "d.npz"), "-o", str(out)]
    assert main([*argv, "--holdout", "8", "--target-sqnr", "60"]) == 0  # a target it misses
    assert out.is_file()
