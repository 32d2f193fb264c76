import json

import models
import numpy as np
import onnx
import pytest
from onnx import helper

from int8kit.calib.cache import CalibrationCache
from int8kit.data import DataConfig
from int8kit.errors import DataError
from int8kit.onnx.placement import PlacementConfig
from int8kit.ranges import Ranges
from int8kit.recipes import DEFAULTS
from int8kit.workflow import CalibConfig, QuantizeConfig, calibrate_onnx, quantize_onnx


@pytest.fixture
def chain(tmp_path):
    model = models.save(models.conv_bn_relu_chain(), tmp_path / "chain.onnx")
    data = models.save_npz(tmp_path / "calib.npz", n=12, x=(1, 3, 8, 8))
    return model, data


def test_quantize_writes_three_outputs_and_leaves_the_input_alone(chain, tmp_path):
    model, data = chain
    before = open(model, "rb").read()
    cfg = QuantizeConfig(
        model,
        str(tmp_path / "out" / "chain.int8.onnx"),
        data=DataConfig(data),
        holdout=3,
        write_cache=True,
    )
    r = quantize_onnx(cfg)
    assert open(model, "rb").read() == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "chain.int8.calib.cache",
        "chain.int8.onnx",
        "chain.int8.ranges.json",
    ]
    assert r.images_used == 9 and r.holdout_images == 3
    onnx.checker.check_model(onnx.load(cfg.output))

    cache = CalibrationCache.read(cfg.cache_path)
    ranges = Ranges.read(cfg.ranges_path)
    want = DEFAULTS["conv"].method  # what --method auto resolves to for a conv net
    # The cache covers every float activation: input, every node output (BN, Relu, ... too).
    expected = {"x", "c1", "bn1", "r1", "c2", "r2", "p", "gap", "f", "y"}
    assert set(cache.scales) == expected == set(ranges.tensors)
    for name, t in ranges.tensors.items():
        assert cache.scales[name] == pytest.approx(t.amax / 127, rel=1e-6)
        # a MaxPool input the recipe raised to its output's range (max_pool_max) says so
        raised = f"{want}, raised to its MaxPool output's"
        assert t.method == (raised if name in r.max_pool_max else want)
        assert t.stats["count"] > 0 and t.stats["nan"] == 0
    raw = json.load(open(cfg.ranges_path))
    # auto is written resolved (recipes.py), so the ranges file repeats the run exactly
    assert raw["config"]["calib"]["method"] == want and r.method == want
    assert r.recipe["family"] == "conv"
    assert QuantizeConfig.from_dict(raw["config"]).to_dict() == raw["config"]  # repeatable
    fid = r.fidelity["trt-like"]["y"]
    assert 15 < fid["sqnr_db"] < 80 and fid["task"] == "classify"


def test_without_the_cache_only_qdq_tensors_are_calibrated_to_the_same_model(chain, tmp_path):
    model, data = chain
    full = QuantizeConfig(
        model, str(tmp_path / "full.onnx"), data=DataConfig(data), holdout=0, write_cache=True
    )
    lean = QuantizeConfig(model, str(tmp_path / "lean.onnx"), data=DataConfig(data), holdout=0)
    quantize_onnx(full)
    r = quantize_onnx(lean)
    assert "cache" not in r.outputs and not lean.cache_path.exists()
    full_ranges, lean_ranges = Ranges.read(full.ranges_path), Ranges.read(lean.ranges_path)
    # Only the tensors that feed a Q/DQ pair (Conv/Pool/Gemm inputs here), with the same amax;
    # a centred tensor (onnx/center.py) is derived from its source's range, not calibrated.
    calibrated = {n: t for n, t in lean_ranges.tensors.items() if "shift" not in t.stats}
    assert len(calibrated) == r.activations_quantized < len(full_ranges.tensors)
    # (equal up to float rounding: ONNX Runtime fuses differently when fewer tensors are exposed)
    for name, t in calibrated.items():
        assert t.amax == pytest.approx(full_ranges.tensors[name].amax, rel=1e-5)
    # Such a ranges file cannot make a cache: TensorRT would miss most tensors' scales.
    again = QuantizeConfig(
        model, str(tmp_path / "c.onnx"), ranges=str(lean.ranges_path), write_cache=True
    )
    with pytest.raises(DataError, match="no range for .* --cache"):
        quantize_onnx(again)


def test_minmax_amax_is_the_observed_max_of_the_calibration_part(chain, tmp_path):
    model, data = chain
    cfg = QuantizeConfig(
        model,
        str(tmp_path / "m.int8.onnx"),
        data=DataConfig(data),
        calib=CalibConfig(method="minmax"),
        placement=PlacementConfig(quantize_input_layers=True),
        holdout=2,
    )
    quantize_onnx(cfg)
    x = np.load(data)["x"][:10]  # the held-out samples are the last two
    assert Ranges.read(cfg.ranges_path).tensors["x"].amax == pytest.approx(np.abs(x).max())


def test_reusing_ranges_reproduces_the_same_model(chain, tmp_path):
    model, data = chain
    a = QuantizeConfig(model, str(tmp_path / "a.onnx"), data=DataConfig(data), holdout=0)
    quantize_onnx(a)
    # the same data again: bias correction measures the same means
    b = QuantizeConfig(
        model, str(tmp_path / "b.onnx"), data=DataConfig(data), ranges=str(a.ranges_path), holdout=0
    )
    quantize_onnx(b)
    assert open(a.output, "rb").read() == open(b.output, "rb").read()
    # without data there is nothing to correct the biases with: said, not silently different
    c = QuantizeConfig(model, str(tmp_path / "c.onnx"), ranges=str(a.ranges_path), holdout=0)
    assert quantize_onnx(c).bias_correction == {"not_run": "no calibration data"}


def test_calibrate_only_writes_cache_and_ranges(chain, tmp_path):
    model, data = chain
    out = tmp_path / "chain.calib.cache"
    r = calibrate_onnx(QuantizeConfig(model, str(out), data=DataConfig(data)))
    assert r.method == "entropy"  # auto: what TensorRT's EntropyCalibration2 computes
    assert sorted(
        p.name for p in tmp_path.iterdir() if "calib" in p.name and p.suffix != ".npz"
    ) == ["chain.calib.cache", "chain.calib.ranges.json"]
    assert CalibrationCache.read(out).header == "TRT-8601-EntropyCalibration2"


def test_two_input_model_with_npz(tmp_path):
    model = models.save(models.two_inputs(), tmp_path / "two.onnx")
    data = models.save_npz(tmp_path / "d.npz", n=6, a=(1, 3, 8, 8), b=(1, 3, 8, 8))
    r = quantize_onnx(
        QuantizeConfig(model, str(tmp_path / "two.int8.onnx"), data=DataConfig(data), holdout=1)
    )
    # both convs read a network input: by default they stay float, only the Add is quantized
    assert r.activations_quantized == 1 and r.weights_quantized == 0
    r = quantize_onnx(
        QuantizeConfig(
            model,
            str(tmp_path / "all.int8.onnx"),
            data=DataConfig(data),
            placement=PlacementConfig(quantize_input_layers=True),
            holdout=1,
        )
    )
    assert r.activations_quantized == 3 and r.weights_quantized == 2


def test_failed_run_keeps_an_existing_output_untouched(chain, tmp_path):
    model, _ = chain
    wrong = models.save_npz(tmp_path / "wrong.npz", n=4, images=(1, 3, 8, 8))
    out = tmp_path / "chain.int8.onnx"
    out.write_bytes(b"previous result")
    with pytest.raises(DataError, match="images"):
        quantize_onnx(QuantizeConfig(model, str(out), data=DataConfig(wrong), holdout=0))
    assert out.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["chain.onnx", "calib.npz", "wrong.npz", "chain.int8.onnx"]
    )


def test_nan_and_inf_activations_are_reported(tmp_path):
    m = models.model(
        [
            helper.make_node("Log", ["x"], ["l"], name="log"),
            helper.make_node("Conv", ["l", "w"], ["y"], name="conv"),
        ],
        [models.value("x", (1, 2, 4, 4))],
        [models.value("y", (1, 2, 4, 4))],
        [models.weight("w", (2, 2, 1, 1), 0)],
    )
    path = models.save(m, tmp_path / "log.onnx")
    x = np.abs(np.random.default_rng(0).standard_normal((4, 2, 4, 4))).astype(np.float32) + 0.5
    x[0, 0, 0, 0] = 0.0  # log(0) = -inf
    x[1, 0, 0, 0] = -1.0  # log(-1) = nan
    np.save(tmp_path / "x.npy", x)
    r = quantize_onnx(
        QuantizeConfig(
            path,
            str(tmp_path / "q.onnx"),
            data=DataConfig(str(tmp_path / "x.npy")),
            placement=PlacementConfig(quantize_input_layers=True),
            holdout=0,
        )
    )
    assert r.nonfinite["l"] == (1, 1)
    assert Ranges.read(tmp_path / "q.ranges.json").tensors["l"].stats["count"] == 4 * 32 - 2


def test_search_never_does_worse_than_its_starting_point(chain, tmp_path):
    model, data = chain
    cfg = QuantizeConfig(
        model,
        str(tmp_path / "s.onnx"),
        data=DataConfig(data),
        calib=CalibConfig(method="search", search_samples=4),
        holdout=0,
    )
    r = quantize_onnx(cfg)
    assert r.search["error_after"] <= r.search["error_before"]
    ranges = Ranges.read(cfg.ranges_path)
    searched = [t for t in ranges.tensors.values() if t.method.startswith("search:")]
    assert len(searched) == r.activations_quantized
    for t in searched:
        assert t.amax in t.candidates.values()


def test_config_validation_messages(tmp_path):
    with pytest.raises(
        ValueError,
        match="choose one of auto, entropy, minmax, percentile, mse, mean-max, quantile-max, search",
    ):
        CalibConfig(method="kl")
    with pytest.raises(ValueError, match="give calibration data"):
        QuantizeConfig("m.onnx", "o.onnx")
    with pytest.raises(ValueError, match="input stays as it is"):
        QuantizeConfig("m.onnx", "m.onnx", data=DataConfig("d.npz"))


def conv_relu_maxpool_conv():
    """x -> Conv -> Relu -> MaxPool(2x2) -> Conv: the Relu output is a quantized MaxPool input."""
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node(
            "MaxPool", ["r1"], ["p1"], name="pool", kernel_shape=[2, 2], strides=[2, 2]
        ),
        helper.make_node("Conv", ["p1", "w2"], ["y"], name="conv2"),
    ]
    inits = [models.weight("w1", (8, 3, 3, 3), 1), models.weight("w2", (4, 8, 1, 1), 2)]
    return models.model(
        nodes, [models.value("x", ("N", 3, 16, 16))], [models.value("y", ("N", 4, 8, 8))], inits
    )


@pytest.mark.parametrize("flag", [None, False])
def test_the_default_recipe_gives_max_pool_inputs_the_range_of_what_the_pool_passes_on(
    tmp_path, flag
):
    # Gaussian inputs, 65k Relu outputs: mse clips their thin tail. A 2x2 max pool passes on the
    # largest of every four values, whose own mse range reaches further: the default recipe
    # (max_pool_max) raises the pool's input to its output's range, so what goes on is not
    # saturated; the output keeps its mse range. Turned off, the input keeps its own.
    model = models.save(conv_relu_maxpool_conv(), tmp_path / "pool.onnx")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 3, 16, 16)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    out = tmp_path / "pool.int8.onnx"
    r = quantize_onnx(
        QuantizeConfig(
            model,
            str(out),
            data=DataConfig(str(tmp_path / "calib.npz")),
            holdout=0,
            max_pool_max=flag,
        )
    )
    ranges = Ranges.read(out.with_suffix(".ranges.json"))
    relu, pooled = ranges.tensors["r1"], ranges.tensors["p1"]
    top = max(abs(relu.stats["min"]), abs(relu.stats["max"]))
    assert json.loads(out.with_suffix(".ranges.json").read_text())["config"]["max_pool_max"] is (
        flag is None
    )
    assert pooled.method == "mse" and pooled.amax < top
    if flag is None:
        own = r.max_pool_max["r1"][0]  # what mse had picked for the input
        assert own < pooled.amax  # the pooled values reach further
        assert relu.amax == pytest.approx(pooled.amax) and relu.method.startswith("mse, raised")
    else:
        assert relu.amax < pooled.amax and relu.method == "mse" and not r.max_pool_max
