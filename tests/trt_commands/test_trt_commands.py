import shlex

import pytest
from trt_tiny_models import conv_model

from int8kit.errors import Int8kitError
from int8kit.trt import commands as c
from int8kit.trt.profiles import derive_profiles


@pytest.fixture
def dyn():
    return derive_profiles(conv_model(batch="batch"), ["images:1x3x8x8/4x3x8x8/8x3x8x8"])


SHAPES = [
    "--minShapes=images:1x3x8x8",
    "--optShapes=images:4x3x8x8",
    "--maxShapes=images:8x3x8x8",
]


@pytest.mark.parametrize("version", ["8.6", "10.3", "10.x"])
def test_implicit_same_line_8_6_to_10(version, dyn):
    argv = c.trtexec_implicit(
        "m.onnx",
        "m.calib.cache",
        "m.engine",
        version,
        profiles=dyn,
        workspace_mib=2048,
        timing_cache="m.timing",
    )
    assert argv == [
        "trtexec",
        "--onnx=m.onnx",
        "--int8",
        "--fp16",
        "--calib=m.calib.cache",
        "--saveEngine=m.engine",
        *SHAPES,
        "--memPoolSize=workspace:2048",
        "--timingCacheFile=m.timing",
    ]


def test_implicit_without_fp16_and_static():
    argv = c.trtexec_implicit("m.onnx", "c", "e", "8.6", fp16=False)
    assert argv == ["trtexec", "--onnx=m.onnx", "--int8", "--calib=c", "--saveEngine=e"]


@pytest.mark.parametrize("version", ["11", "11.0.0"])
def test_implicit_on_11_errors_and_points_to_qdq(version):
    with pytest.raises(Int8kitError, match=r"removed implicit INT8.*int8kit quantize"):
        c.trtexec_implicit("m.onnx", "c", "e", version)
    with pytest.raises(Int8kitError, match="removed implicit INT8"):
        c.polygraphy_implicit("m.onnx", "c", "e", version)


def test_explicit_8_6_uses_int8_fp16_never_strongly_typed(dyn):
    argv = c.trtexec_explicit("m.int8.onnx", "m.engine", "8.6.1", profiles=dyn)
    assert (
        argv
        == ["trtexec", "--onnx=m.int8.onnx", "--int8", "--fp16", "--saveEngine=m.engine"] + SHAPES
    )
    with pytest.raises(Int8kitError, match="strongly typed"):
        c.trtexec_explicit("m.int8.onnx", "m.engine", "8.6", strongly_typed=True)


def test_explicit_10_before_12_is_weak_by_default_strong_on_request():
    assert c.trtexec_explicit("q.onnx", "e", "10.11") == [
        "trtexec",
        "--onnx=q.onnx",
        "--int8",
        "--fp16",
        "--saveEngine=e",
    ]
    assert c.trtexec_explicit("q.onnx", "e", "10.3", strongly_typed=True) == [
        "trtexec",
        "--onnx=q.onnx",
        "--stronglyTyped",
        "--saveEngine=e",
    ]


@pytest.mark.parametrize("version", ["10.12", "10.x"])
def test_explicit_10_12_plus_strongly_typed(version, dyn):
    argv = c.trtexec_explicit("q.onnx", "e", version, profiles=dyn, workspace_mib=512)
    assert argv == [
        "trtexec",
        "--onnx=q.onnx",
        "--stronglyTyped",
        "--saveEngine=e",
        *SHAPES,
        "--memPoolSize=workspace:512",
    ]
    assert "--int8" not in argv and "--fp16" not in argv
    with pytest.raises(Int8kitError, match="fp16"):
        c.trtexec_explicit("q.onnx", "e", version, fp16=True)


def test_explicit_11_has_no_precision_or_typing_flags(dyn):
    argv = c.trtexec_explicit("q.onnx", "e", "11", profiles=dyn, timing_cache="t")
    assert argv == ["trtexec", "--onnx=q.onnx", "--saveEngine=e", *SHAPES, "--timingCacheFile=t"]
    with pytest.raises(Int8kitError, match="no precision flags"):
        c.trtexec_explicit("q.onnx", "e", "11", fp16=True)


def test_polygraphy_implicit_with_loader_and_minmax(dyn):
    argv = c.polygraphy_implicit(
        "m.onnx",
        "m.cache",
        "m.engine",
        "10.x",
        data_loader_script="load.py",
        algorithm="minmax",
        profiles=dyn,
        workspace_mib=1024,
        timing_cache="t.cache",
    )
    assert argv == [
        "polygraphy",
        "convert",
        "m.onnx",
        "--int8",
        "--fp16",
        "--data-loader-script",
        "load.py",
        "--calibration-cache",
        "m.cache",
        "--calib-base-cls",
        "IInt8MinMaxCalibrator",
        "--trt-min-shapes",
        "images:[1,3,8,8]",
        "--trt-opt-shapes",
        "images:[4,3,8,8]",
        "--trt-max-shapes",
        "images:[8,3,8,8]",
        "--pool-limit",
        "workspace:1024M",
        "--load-timing-cache",
        "t.cache",
        "--save-timing-cache",
        "t.cache",
        "-o",
        "m.engine",
    ]


@pytest.mark.parametrize(
    ("version", "flags"),
    [("8.6", ["--int8", "--fp16"]), ("10.x", ["--strongly-typed"]), ("11", [])],
)
def test_polygraphy_explicit(version, flags):
    argv = c.polygraphy_explicit("q.onnx", "e", version)
    assert argv == ["polygraphy", "convert", "q.onnx", *flags, "-o", "e"]


def test_shell_quotes_paths_with_spaces():
    line = c.shell(c.trtexec_explicit("my model.onnx", "out dir/e.engine", "11"))
    assert shlex.split(line) == ["trtexec", "--onnx=my model.onnx", "--saveEngine=out dir/e.engine"]


def test_summary_commands(dyn):
    rows = c.summary_commands("m.onnx", "m.int8.onnx", "m.calib.cache", "out/m", shapes=dyn)
    assert [label for label, _ in rows] == [
        "TensorRT 8.6–10.x (implicit, cache)",
        "TensorRT 10.x (explicit, --stronglyTyped)",
        "TensorRT 11 (explicit)",
    ]
    implicit, strong, v11 = (shlex.split(line) for _, line in rows)
    assert implicit[:5] == ["trtexec", "--onnx=m.onnx", "--int8", "--fp16", "--calib=m.calib.cache"]
    assert strong[:3] == ["trtexec", "--onnx=m.int8.onnx", "--stronglyTyped"]
    assert v11[:3] == ["trtexec", "--onnx=m.int8.onnx", "--saveEngine=out/m.engine"]
    assert all(SHAPES[0] in line for _, line in rows)
    assert not any("--int8" in line for _, line in rows[1:])
