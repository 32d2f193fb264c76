import pytest
from trt_tiny_models import conv_model, qdq_conv_model

from int8kit.errors import Int8kitError
from int8kit.trt.build import BuildConfig, equivalent_commands, is_qdq_model, plan_build


def cfg(**kw):
    return BuildConfig(onnx_path="m.onnx", output="m.engine", **kw)


def test_is_qdq_model():
    assert is_qdq_model(qdq_conv_model())
    assert not is_qdq_model(conv_model())


@pytest.mark.parametrize(
    ("version", "strong", "int8", "fp16", "explicit_batch"),
    [
        ("8.6", False, True, True, True),
        ("10.11", False, True, True, False),
        ("10.12", True, False, False, False),
        ("11.0", True, False, False, False),
    ],
)
def test_explicit_plan_per_version(version, strong, int8, fp16, explicit_batch):
    plan = plan_build(cfg(), qdq_conv_model(), version)
    assert plan.mode == "explicit"
    assert (plan.strongly_typed, plan.int8_flag, plan.fp16_flag) == (strong, int8, fp16)
    assert plan.explicit_batch_flag == explicit_batch
    assert not plan.calibrate


def test_explicit_rejects_calibration_inputs():
    with pytest.raises(Int8kitError, match="already has Q/DQ"):
        plan_build(cfg(calib_batches=[]), qdq_conv_model(), "10.x")


def test_implicit_plan_sets_calibration_profile_inputs():
    plan = plan_build(
        cfg(int8=True, calib_batches=[], shapes=["images:1x3x8x8/2x3x8x8/4x3x8x8"]),
        conv_model(batch="batch"),
        "10.3",
    )
    assert (plan.mode, plan.int8_flag, plan.calibrate, plan.strongly_typed) == (
        "implicit",
        True,
        True,
        False,
    )
    assert plan.dynamic and plan.profiles[0].opt == (2, 3, 8, 8)


def test_implicit_needs_data_or_cache(tmp_path):
    with pytest.raises(Int8kitError, match="--calib DIR"):
        plan_build(cfg(int8=True), conv_model(batch=1), "8.6")
    cache = tmp_path / "m.calib.cache"
    cache.write_text("TRT-8601-EntropyCalibration2\n")
    assert plan_build(cfg(int8=True, cache_path=cache), conv_model(batch=1), "8.6").calibrate


def test_implicit_on_11_says_use_qdq():
    with pytest.raises(Int8kitError, match="int8kit quantize"):
        plan_build(cfg(int8=True, calib_batches=[]), conv_model(batch=1), "11")


def test_float_fp16_on_11_errors():
    with pytest.raises(Int8kitError, match="no FP16 flag"):
        plan_build(cfg(fp16=True), conv_model(batch=1), "11")
    assert plan_build(cfg(fp16=True), conv_model(batch=1), "10.x").fp16_flag


def test_config_validation_and_dict():
    with pytest.raises(Int8kitError, match="entropy or minmax"):
        cfg(algorithm="percentile")
    with pytest.raises(Int8kitError, match="positive"):
        cfg(workspace_mib=0)
    d = cfg(int8=True, calib_batches=[{}], shapes=["a:1x2"], workspace_mib=64).to_dict()
    assert "calib_batches" not in d
    assert d["onnx_path"] == "m.onnx" and d["workspace_mib"] == 64


def test_equivalent_commands_match_plan():
    config = cfg(int8=True, calib_batches=[], workspace_mib=256)
    plan = plan_build(config, conv_model(batch=1), "8.6")
    (label, argv), (_, poly) = equivalent_commands(config, plan)
    assert argv == [
        "trtexec",
        "--onnx=m.onnx",
        "--int8",
        "--calib=m.calib.cache",
        "--saveEngine=m.engine",
        "--memPoolSize=workspace:256",
    ]
    assert poly[:4] == ["polygraphy", "convert", "m.onnx", "--int8"]
    plan = plan_build(cfg(), qdq_conv_model(), "10.x")
    ((_, argv),) = equivalent_commands(cfg(), plan)
    assert argv == ["trtexec", "--onnx=m.onnx", "--stronglyTyped", "--saveEngine=m.engine"]
