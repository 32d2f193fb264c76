"""quantize_onnx and `int8kit quantize` with SmoothQuant and AdaRound (issue 11, algorithms 1
and 4)."""

import json

import models
import numpy as np
import pytest
from onnx import helper, numpy_helper

from int8kit.cli.main import main
from int8kit.data import DataConfig
from int8kit.workflow import QuantizeConfig, quantize_onnx


def attention_like():
    """x(N,8) -> LayerNorm (gamma with one outlier channel) -> MatMul -> Add bias -> Relu ->
    MatMul -> y; the LayerNorm output also feeds a residual Add (a second output)."""
    rng = np.random.default_rng(0)
    gamma = np.ones(8, np.float32)
    gamma[2] = 50.0
    nodes = [
        helper.make_node("LayerNormalization", ["x", "g", "b"], ["ln"], name="ln", axis=-1),
        helper.make_node("MatMul", ["ln", "w1"], ["m1"], name="mm1"),
        helper.make_node("Add", ["m1", "b1"], ["a1"], name="bias1"),
        helper.make_node("Relu", ["a1"], ["h"], name="relu"),
        helper.make_node("MatMul", ["h", "w2"], ["y"], name="mm2"),
        helper.make_node("Add", ["ln", "x"], ["r"], name="residual"),
    ]
    f = numpy_helper.from_array
    inits = [
        f(gamma, "g"),
        f((rng.standard_normal(8) * 0.1).astype(np.float32), "b"),
        models.weight("w1", (8, 16), 1),
        f(np.full(16, 0.1, np.float32), "b1"),
        models.weight("w2", (16, 4), 2),
    ]
    return models.model(
        nodes,
        [models.value("x", ("N", 8))],
        [models.value("y", ("N", 4)), models.value("r", ("N", 8))],
        inits,
    )


@pytest.fixture
def block(tmp_path):
    model = models.save(attention_like(), tmp_path / "block.onnx")
    data = models.save_npz(tmp_path / "calib.npz", n=40, x=(4, 8))
    return model, data


def test_smooth_quant_and_adaround_run_and_are_recorded(block, tmp_path):
    model, data = block
    base = dict(data=DataConfig(data, batch_size=4), holdout=8)
    plain = quantize_onnx(QuantizeConfig(model, str(tmp_path / "p.int8.onnx"), **base))
    cfg = QuantizeConfig(
        model,
        str(tmp_path / "s.int8.onnx"),
        smooth_quant="auto",
        adaround=True,
        adaround_seconds=0.5,
        **base,
    )
    r = quantize_onnx(cfg)
    assert r.smooth_quant["smoothed"]["ln"]["where"] == "inserted Mul"  # the residual reads ln
    assert r.adaround["layers"]  # (its seconds overrun 0.5 on a loaded machine: session start)
    sqnr = lambda res: res.fidelity["trt-like"]["y"]["sqnr_db"]  # noqa: E731
    assert sqnr(r) > sqnr(plain) + 6, (sqnr(plain), sqnr(r))  # the outlier channel smoothed
    raw = json.load(open(cfg.ranges_path))["config"]
    assert raw["smooth_quant"] == "auto" and raw["adaround"] and raw["adaround_seconds"] == 0.5
    assert QuantizeConfig.from_dict(raw).to_dict() == raw


def test_old_configs_and_validation(tmp_path):
    old = QuantizeConfig("m.onnx", str(tmp_path / "o.onnx"), ranges="r.json").to_dict()
    for key in ("smooth_quant", "adaround", "adaround_seconds"):
        del old[key]
    back = QuantizeConfig.from_dict(old)
    assert back.smooth_quant is None and not back.adaround
    out = str(tmp_path / "o.onnx")
    with pytest.raises(ValueError, match="alpha in"):
        QuantizeConfig("m.onnx", out, data=DataConfig("d.npz"), smooth_quant=1.5)
    with pytest.raises(ValueError, match="need calibration data"):
        QuantizeConfig("m.onnx", out, ranges="r.json", adaround=True)
    with pytest.raises(ValueError, match="drop --cache"):
        QuantizeConfig("m.onnx", out, data=DataConfig("d.npz"), smooth_quant=0.5, write_cache=True)


def test_cli_flags(block, tmp_path, capsys):
    model, data = block
    out = tmp_path / "c.int8.onnx"
    rc = main(
        ["quantize", model, "--calib", data, "-o", str(out), "--smooth-quant", "0.6",
         "--adaround", "--adaround-seconds", "0.5", "--json", str(tmp_path / "s.json")]
    )  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    assert "SmoothQuant (0.6): 2 activations smoothed" in text and "AdaRound: " in text
    cfg = json.load(open(tmp_path / "s.json"))["config"]
    assert cfg["smooth_quant"] == 0.6 and cfg["adaround"] and cfg["adaround_seconds"] == 0.5
    rc = main(["quantize", model, "--calib", data, "-o", str(out), "--smooth-quant"])
    assert rc == 0 and "SmoothQuant (auto)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["quantize", model, "--calib", data, "-o", str(out), "--smooth-quant", "big"])
