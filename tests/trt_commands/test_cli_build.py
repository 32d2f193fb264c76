"""`int8kit build` where TensorRT is missing: exit code 1 and a trtexec command to run elsewhere."""

import shlex

import onnx
import pytest
from trt_tiny_models import conv_model, qdq_conv_model

from int8kit._deps import available
from int8kit.cli import main as cli_main

pytestmark = pytest.mark.skipif(available("tensorrt"), reason="TensorRT is installed here")


@pytest.fixture(autouse=True)
def only_build(monkeypatch):
    # Other subcommands are written by colleagues; this test needs only `build`.
    monkeypatch.setattr(cli_main, "SUBCOMMANDS", ["int8kit.cli.build"])


def _commands(out: str) -> list[list[str]]:
    return [shlex.split(line) for line in out.splitlines() if line and not line.startswith("#")]


def test_qdq_model_prints_strongly_typed_trtexec(tmp_path, capsys):
    model = tmp_path / "m.int8.onnx"
    onnx.save(qdq_conv_model(), model)
    engine = tmp_path / "m.engine"
    rc = cli_main.main(["build", str(model), "-o", str(engine)])
    out, err = capsys.readouterr()
    assert rc == 1
    assert "TensorRT is not installed" in err and "pip install" in err
    assert _commands(out) == [
        ["trtexec", f"--onnx={model}", "--stronglyTyped", f"--saveEngine={engine}"]
    ]
    assert not engine.exists()


def test_qdq_model_for_8_6(tmp_path, capsys):
    model = tmp_path / "m.int8.onnx"
    onnx.save(qdq_conv_model(), model)
    rc = cli_main.main(["build", str(model), "-o", "e.engine", "--trt-version", "8.6"])
    out, _ = capsys.readouterr()
    assert rc == 1
    assert _commands(out) == [
        ["trtexec", f"--onnx={model}", "--int8", "--fp16", "--saveEngine=e.engine"]
    ]


def test_implicit_with_shapes_workspace_timing_cache(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    onnx.save(conv_model(batch="batch"), model)
    argv = ["build", str(model), "-o", "e.engine", "--int8", "--fp16", "--calib", "images/"]
    argv += ["--shapes", "images:1x3x8x8/4x3x8x8/8x3x8x8", "--workspace", "1024"]
    argv += ["--timing-cache", "t.cache", "--trt-version", "10.3"]
    rc = cli_main.main(argv)
    out, _ = capsys.readouterr()
    assert rc == 1
    assert "int8kit calibrate" in out
    trtexec, polygraphy = _commands(out)
    assert trtexec == [
        "trtexec",
        f"--onnx={model}",
        "--int8",
        "--fp16",
        f"--calib={tmp_path / 'm.calib.cache'}",
        "--saveEngine=e.engine",
        "--minShapes=images:1x3x8x8",
        "--optShapes=images:4x3x8x8",
        "--maxShapes=images:8x3x8x8",
        "--memPoolSize=workspace:1024",
        "--timingCacheFile=t.cache",
    ]
    assert polygraphy[:2] == ["polygraphy", "convert"]


def test_implicit_on_11_is_a_clear_error(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    onnx.save(conv_model(batch=1), model)
    rc = cli_main.main(
        ["build", str(model), "-o", "e.engine", "--calib", "imgs", "--trt-version", "11"]
    )
    _, err = capsys.readouterr()
    assert rc == 1
    assert "removed implicit INT8" in err and "int8kit quantize" in err


def test_dynamic_batch_without_shapes_builds_batch_one_with_a_notice(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    onnx.save(conv_model(batch="batch"), model)
    rc = cli_main.main(["build", str(model), "-o", "e.engine"])
    out, err = capsys.readouterr()
    assert rc == 1  # no TensorRT here: the commands to run elsewhere
    assert "dynamic batch (?x3x8x8) and no --shapes: building for batch 1 (1x3x8x8)" in err
    assert "--shapes images:MIN/OPT/MAX, e.g. images:1x3x8x8/4x3x8x8/8x3x8x8" in err
    trtexec = next(c for c in _commands(out) if c[0] == "trtexec")
    assert "--minShapes=images:1x3x8x8" in trtexec and "--maxShapes=images:1x3x8x8" in trtexec


def test_other_dynamic_dims_without_shapes_say_what_to_pass(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    m = conv_model(batch="batch")
    m.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "height"
    onnx.save(m, model)
    rc = cli_main.main(["build", str(model), "-o", "e.engine", "--cache", "c.cache", "--int8"])
    _, err = capsys.readouterr()
    assert rc == 1
    assert "has dynamic dimensions" in err and "--shapes images:" in err


def test_build_output_may_not_be_the_model(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    onnx.save(conv_model(batch=1), model)
    before = model.read_bytes()
    assert cli_main.main(["build", str(model), "-o", str(model)]) == 1
    assert "-o" in capsys.readouterr().err and model.read_bytes() == before


def test_existing_cache_with_unusable_scales_is_flagged(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    onnx.save(conv_model(batch=1), model)
    cache = tmp_path / "m.cache"
    cache.write_text("TRT-8601-FooCalibration\nimages: 7fc00000\nconv: 3c000000\n")
    cli_main.main(["build", str(model), "-o", "e.engine", "--int8", "--cache", str(cache)])
    err = capsys.readouterr().err
    assert "unknown algorithm 'FooCalibration'" in err
    assert "m.cache:2: tensor 'images' has a NaN scale" in err
