import io
import json

import models
import numpy as np
import pytest
from onnx import helper

from int8kit.cli.quantize import print_summary, summary_dict
from int8kit.data import DataConfig
from int8kit.onnx.placement import PlacementConfig
from int8kit.ranges import Ranges
from int8kit.workflow import CalibConfig, QuantizeConfig, quantize_onnx


def spectrum_model(path) -> str:
    """x(N,64) -> MatMul (a filterbank) -> y(N,8): x is quantized as the MatMul's input."""
    m = models.model(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="filterbank")],
        [models.value("x", ("N", 64))],
        [models.value("y", ("N", 8))],
        [models.weight("w", (64, 8), 0)],
    )
    return models.save(m, path)


def run(tmp_path, x: np.ndarray, method: str = "mse"):
    np.save(tmp_path / "x.npy", x.astype(np.float32))
    cfg = QuantizeConfig(
        spectrum_model(tmp_path / "m.onnx"),
        str(tmp_path / "q.onnx"),
        data=DataConfig(str(tmp_path / "x.npy")),
        calib=CalibConfig(method=method),
        placement=PlacementConfig(quantize_input_layers=True),
        holdout=0,
    )
    return quantize_onnx(cfg)


def test_default_recipe_warns_before_centring_renames_the_tensor(tmp_path):
    x = np.exp(np.random.default_rng(0).normal(6.0, 4.0, (64, 64)))
    r = run(tmp_path, x, method="auto")
    assert r.center.get("centered")  # the one-sided input got a centred copy
    assert list(r.rounds_to_zero) == ["x"] and r.rounds_to_zero["x"]["share"] > 0.85


def test_heavy_tailed_input_warns_with_share_range_and_reader(tmp_path):
    # a power spectrum's range: exp of a wide normal, 2e-3 .. 1e9
    x = np.exp(np.random.default_rng(0).normal(6.0, 4.0, (64, 64)))
    r = run(tmp_path, x)
    found = r.rounds_to_zero
    assert list(found) == ["x"]
    amax = Ranges.read(tmp_path / "q.ranges.json").tensors["x"].amax  # mse's choice
    step = np.float32(amax / 127)
    exact = float((np.rint(x.astype(np.float32) / step) == 0).mean())
    assert exact > 0.85
    assert found["x"]["share"] == pytest.approx(exact, abs=0.02)
    assert found["x"]["amax"] == amax and found["x"]["max"] >= amax
    assert found["x"]["min"] == pytest.approx(float(x.astype(np.float32).min()), rel=1e-6)
    assert found["x"]["readers"] == ["filterbank"]

    out = io.StringIO()
    print_summary(r, out)
    text = out.getvalue()
    assert "WARNING: 1 quantized activations lose most of their values to zero" in text
    assert f"x: {found['x']['share']:.1%} of its non-zero values round to 0" in text
    assert "--exclude '^filterbank$'" in text and "--target-sqnr" in text
    summary = json.loads(json.dumps(summary_dict(r)))
    assert summary["rounds_to_zero"]["x"]["share"] == pytest.approx(found["x"]["share"])
    # the diagnostic writes nothing: the ranges file holds only what it held before
    entry = json.load(open(tmp_path / "q.ranges.json"))["tensors"]["x"]
    assert set(entry) == {"amax", "scale", "method", "count", "min", "max", "nan", "inf"}
    assert Ranges.read(tmp_path / "q.ranges.json").tensors["x"].zero_share is None


def test_ordinary_input_and_relu_zeros_stay_quiet(tmp_path):
    x = np.random.default_rng(1).standard_normal((64, 64))
    r = run(tmp_path, x, method="entropy")
    assert r.rounds_to_zero == {}
    x = np.maximum(x, 0)  # half exact zeros: they stay zero and are not counted
    r = run(tmp_path, x, method="entropy")
    assert r.rounds_to_zero == {}
    out = io.StringIO()
    print_summary(r, out)
    assert "round to 0" not in out.getvalue()


def test_probabilities_from_a_sigmoid_stay_quiet(tmp_path):
    # a detector's class scores: Sigmoid of very negative logits, nearly all ~0, read by a MatMul
    m = models.model(
        [
            helper.make_node("Sigmoid", ["x"], ["p"], name="scores"),
            helper.make_node("MatMul", ["p", "w"], ["y"], name="head"),
        ],
        [models.value("x", ("N", 64))],
        [models.value("y", ("N", 8))],
        [models.weight("w", (64, 8), 0)],
    )
    logits = np.random.default_rng(2).normal(-6.5, 0.5, (64, 64)).astype(np.float32)
    logits[:, 0] = 4.0  # one confident class per row sets the range near 1
    np.save(tmp_path / "x.npy", logits)
    cfg = QuantizeConfig(
        models.save(m, tmp_path / "m.onnx"),
        str(tmp_path / "q.onnx"),
        data=DataConfig(str(tmp_path / "x.npy")),
        calib=CalibConfig(method="mse"),
        placement=PlacementConfig(quantize_input_layers=True),
        holdout=0,
    )
    r = quantize_onnx(cfg)
    p = Ranges.read(tmp_path / "q.ranges.json").tensors["p"]
    sig = 1 / (1 + np.exp(-logits.astype(np.float64)))
    assert (np.rint(sig / (p.amax / 127)) == 0).mean() > 0.6  # most round to 0 ...
    assert r.rounds_to_zero == {}  # ... and it is not reported: [0, 1] is never too wide
