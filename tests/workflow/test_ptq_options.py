"""quantize_onnx and `int8kit quantize` with the robust ranges, the gated / empirical bias
correction and cross-layer equalization (issue 11, algorithms 2, 3 and 5)."""

import json

import models
import numpy as np
import pytest
from onnx import helper, numpy_helper

from int8kit.cli.main import main
from int8kit.data import DataConfig
from int8kit.workflow import CalibConfig, QuantizeConfig, quantize_onnx


def relu_chain():
    """x -> conv1 -> Relu -> conv2 -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> y, with
    conv1's output channels of very different ranges (what equalization evens out)."""
    w1 = (
        np.random.default_rng(1).standard_normal((6, 3, 3, 3))
        * np.geomspace(0.05, 5, 6)[:, None, None, None]
    )
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1] * 4),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1] * 4),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wfc", "bfc"], ["y"], name="fc", transB=1),
    ]
    inits = [
        numpy_helper.from_array(w1.astype(np.float32), "w1"),
        numpy_helper.from_array(np.linspace(-0.2, 0.2, 6).astype(np.float32), "b1"),
        models.weight("w2", (4, 6, 3, 3), 2),
        numpy_helper.from_array(np.full(4, 0.1, np.float32), "b2"),
        models.weight("wfc", (10, 4), 3),
        numpy_helper.from_array(np.zeros(10, np.float32), "bfc"),
    ]
    return models.model(
        nodes, [models.value("x", ("N", 3, 8, 8))], [models.value("y", ("N", 10))], inits
    )


@pytest.fixture
def chain(tmp_path):
    model = models.save(relu_chain(), tmp_path / "chain.onnx")
    data = models.save_npz(tmp_path / "calib.npz", n=20, x=(1, 3, 8, 8))
    return model, data


def test_every_option_together_runs_and_is_recorded(chain, tmp_path):
    model, data = chain
    cfg = QuantizeConfig(
        model,
        str(tmp_path / "o.int8.onnx"),
        data=DataConfig(data, batch_size=4),
        holdout=4,
        calib=CalibConfig(method="mean-max"),
        bias_stats="empirical",
        equalize=True,
    )
    r = quantize_onnx(cfg)
    assert r.method == "mean-max"
    assert r.equalize["pairs"] == [["conv1", "conv2"]] or r.equalize["pairs"] == [
        ("conv1", "conv2")
    ]
    assert r.equalize["range_spread_after"] < r.equalize["range_spread_before"] / 5
    bc = r.bias_correction
    assert bc["stats"] == "empirical" and bc["gate_samples"] == 5  # 16 samples: a third held out
    assert bc["estimate_samples"] == 11 and bc["passes"] == 3  # FP32 + one per stage (2 layers)
    assert set(bc["corrected"]) | set(bc["dropped"]) == {"conv2", "fc"}  # conv1 reads the input
    assert r.fidelity["trt-like"]["y"]["sqnr_db"] > 15
    raw = json.load(open(cfg.ranges_path))["config"]
    assert raw["equalize"] and raw["bias_gate"] and raw["bias_stats"] == "empirical"
    assert QuantizeConfig.from_dict(raw).to_dict() == raw


def test_old_ranges_files_keep_the_ungated_correction(tmp_path):
    old = QuantizeConfig("m.onnx", str(tmp_path / "o.onnx"), ranges="r.json").to_dict()
    for key in ("bias_gate", "bias_stats", "equalize"):
        del old[key]
    old["bias_correction"] = True
    back = QuantizeConfig.from_dict(old)
    assert back.bias_correction and not back.bias_gate and back.bias_stats == "local"
    assert not back.equalize


def test_equalize_refuses_the_cache(tmp_path):
    with pytest.raises(ValueError, match="drop --cache"):
        QuantizeConfig(
            "m.onnx", str(tmp_path / "o.onnx"), ranges="r", equalize=True, write_cache=True
        )


def test_cli_flags(chain, tmp_path, capsys):
    model, data = chain
    out = tmp_path / "c.int8.onnx"
    rc = main(
        ["quantize", model, "--calib", data, "-o", str(out), "--method", "quantile-max",
         "--sample-quantile", "0.5", "--no-bias-gate", "--equalize", "--json", str(tmp_path / "s.json")]
    )  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    assert "equalization: 1 Conv pairs" in text and "bias correction: " in text
    s = json.load(open(tmp_path / "s.json"))
    cfg = s["config"]
    assert cfg["calib"]["method"] == "quantile-max" and cfg["calib"]["sample_quantile"] == 0.5
    assert not cfg["bias_gate"] and cfg["equalize"]
    assert s["bias_correction"]["corrected"] and "dropped" not in s["bias_correction"]
    # quantile 0.5 of per-sample maxima: below the global max of every tensor it clipped
    ranges = json.load(open(tmp_path / "c.int8.ranges.json"))["tensors"]
    r = ranges["r1"]
    assert r["method"] == "quantile-max" and r["amax"] < max(-r["min"], r["max"])
    assert np.isfinite(r["amax"])
