"""Inputs a user can get wrong end in one clear message, and nothing is lost or silently wrong
(issue 15): outputs never land on inputs, every amax read is checked, caches with unusable scales
are flagged, a loader script's own errors are framed, OS errors name the path and what to do."""

import json
import math
import os
import struct

import models
import numpy as np
import pytest

from int8kit.cli.main import main


@pytest.fixture
def chain(tmp_path):
    model = models.save(models.conv_bn_relu_chain(batch=1), tmp_path / "chain.onnx")
    data = models.save_npz(tmp_path / "x.npz", n=10, x=(1, 3, 8, 8))
    return model, data


def _quantize(model, data, out, *extra):
    return main(["quantize", model, "--calib", data, "-o", str(out), "--holdout", "2", *extra])


def _bytes(path):
    with open(path, "rb") as f:
        return f.read()


# --- output paths that name an input or another output ---------------------------------------


@pytest.mark.parametrize(
    "flags, what",
    [
        (["--json", "{model}"], "--json"),
        (["--json", "{data}"], "--json"),
        (["--report", "{model}"], "--report"),
        (["--json", "{out}"], "--json"),
        (["--cache", "--json", "{cache}"], "--json"),
    ],
)
def test_quantize_refuses_output_on_an_input_or_output(chain, tmp_path, capsys, flags, what):
    model, data = chain
    out = tmp_path / "chain.int8.onnx"
    cache = tmp_path / "chain.int8.calib.cache"
    before = {p: _bytes(p) for p in (model, data)}
    flags = [f.format(model=model, data=data, out=out, cache=cache) for f in flags]
    assert _quantize(model, data, out, *flags) == 1
    err = capsys.readouterr().err
    assert err.startswith("int8kit: error:") and what in err
    assert {p: _bytes(p) for p in (model, data)} == before  # inputs untouched
    assert not out.exists()  # refused before any work


def test_ranges_output_may_not_overwrite_the_ranges_input(chain, tmp_path, capsys):
    model, data = chain
    out = tmp_path / "chain.int8.onnx"
    assert _quantize(model, data, out) == 0
    ranges = tmp_path / "chain.int8.ranges.json"
    before = _bytes(ranges)
    assert main(["quantize", model, "--ranges", str(ranges), "-o", str(out)]) == 1
    assert "the ranges file" in capsys.readouterr().err and _bytes(ranges) == before
    # through another spelling of the same path, and a hard link
    link = tmp_path / "sub" / "link.onnx"
    link.parent.mkdir()
    os.link(model, link)
    assert _quantize(model, data, tmp_path / "sub" / ".." / "sub" / "link.onnx") == 1
    assert "is the input the model" in capsys.readouterr().err


def test_calibrate_and_eval_refuse_outputs_on_inputs(chain, tmp_path, capsys):
    model, data = chain
    before = _bytes(model)
    assert main(["calibrate", model, "--calib", data, "-o", model]) == 1
    assert "-o" in capsys.readouterr().err
    out = tmp_path / "chain.int8.onnx"
    assert _quantize(model, data, out) == 0
    capsys.readouterr()
    assert main(["eval", model, str(out), "--data", data, "--json", model]) == 1
    assert "--json" in capsys.readouterr().err and _bytes(model) == before
    assert main(["eval", model, str(out), "--data", data, "--json", str(out)]) == 1
    for cmd in (
        ["layers", model, str(out), "--data", data, "--json", data],
        ["lint", str(out), "--json", str(out)],
        ["sensitivity", model, "--calib", data, "--json", model],
        ["bench", model, "--json", model],
    ):
        assert main(cmd) == 1, cmd
        assert "--json" in capsys.readouterr().err
    assert _bytes(model) == before


# --- amax values read from --ranges ---------------------------------------------------------


@pytest.fixture
def ranges_file(chain, tmp_path):
    model, data = chain
    assert _quantize(model, data, tmp_path / "first.int8.onnx") == 0
    return tmp_path / "first.int8.ranges.json"


@pytest.mark.parametrize("bad", [-1.0, 0.0, "nan", "inf", "1.5", None, True])
def test_every_amax_read_is_checked(chain, ranges_file, tmp_path, capsys, bad):
    model, _ = chain
    d = json.loads(ranges_file.read_text())
    name = next(iter(d["tensors"]))
    d["tensors"][name]["amax"] = {"nan": math.nan, "inf": math.inf}.get(bad, bad)
    ranges_file.write_text(json.dumps(d))
    out = tmp_path / "again.int8.onnx"
    capsys.readouterr()
    assert main(["quantize", model, "--ranges", str(ranges_file), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert repr(name) in err and str(ranges_file) in err and "positive finite" in err
    assert not out.exists()


@pytest.mark.parametrize(
    "tensors",
    [[1, 2], {"x": 3.0}, {"x": {"scale": 0.1}}, {"x": {"amax": 1.0, "candidates": [1]}}],
)
def test_ranges_of_the_wrong_structure(chain, tmp_path, capsys, tensors):
    model, _ = chain
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"format": "int8kit-ranges/1", "tensors": tensors}))
    assert main(["quantize", model, "--ranges", str(path), "-o", str(tmp_path / "q.onnx")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("int8kit: error:") and str(path) in err
    path.write_text("[1, 2, 3]")
    assert main(["quantize", model, "--ranges", str(path), "-o", str(tmp_path / "q.onnx")]) == 1
    assert "not an int8kit ranges file" in capsys.readouterr().err


def test_zero_amax_of_an_always_zero_tensor_is_what_calibration_writes(chain, tmp_path):
    from int8kit.ranges import Ranges

    path = tmp_path / "r.json"
    entry = {"amax": 0.0, "count": 64, "min": 0.0, "max": 0.0, "nan": 0, "inf": 0}
    path.write_text(json.dumps({"format": "int8kit-ranges/1", "tensors": {"dead": entry}}))
    assert Ranges.read(path).tensors["dead"].amax == 0.0


def test_ranges_missing_a_qdq_tensor_is_an_error_naming_it(chain, ranges_file, tmp_path, capsys):
    model, _ = chain
    d = json.loads(ranges_file.read_text())
    dropped = sorted(d["tensors"])[0]
    del d["tensors"][dropped]
    ranges_file.write_text(json.dumps(d))
    out = tmp_path / "again.int8.onnx"
    capsys.readouterr()
    assert main(["quantize", model, "--ranges", str(ranges_file), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert repr(dropped) in err and "no range for 1 of the" in err
    assert not out.exists()


# --- calibration caches ---------------------------------------------------------------------


def _hex(x):
    return struct.pack(">f", x).hex()


def test_cache_show_flags_unusable_scales_with_their_line(tmp_path, capsys):
    path = tmp_path / "c.cache"
    path.write_text(
        "TRT-8601-EntropyCalibration2\n"
        f"good: {_hex(0.01)}\nnan: 7fc00000\nzero: 00000000\nneg: bf800000\n"
    )
    assert main(["cache", "show", str(path)]) == 1
    captured = capsys.readouterr()
    assert "c.cache:3: tensor 'nan' has a NaN scale" in captured.err
    assert "c.cache:4: tensor 'zero' has a zero scale" in captured.err
    assert "c.cache:5: tensor 'neg' has a negative scale" in captured.err
    assert "good" not in captured.err
    assert "<- line 3: NaN scale" in captured.out


def test_cache_diff_counts_nan_as_a_difference(tmp_path, capsys):
    a, b = tmp_path / "a.cache", tmp_path / "b.cache"
    a.write_text(f"TRT-8601-EntropyCalibration2\nx: {_hex(0.01)}\ny: {_hex(0.5)}\n")
    b.write_text(f"TRT-8601-EntropyCalibration2\nx: 7fc00000\ny: {_hex(-0.5)}\n")
    assert main(["cache", "diff", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "2 tensors with different scales" in out and "caches are equal" not in out
    assert main(["cache", "diff", str(b), str(b)]) == 1  # equal, but unusable
    assert "caches are equal" not in capsys.readouterr().out


def test_unknown_cache_algorithm_warns(tmp_path, capsys):
    path = tmp_path / "c.cache"
    path.write_text(f"TRT-8601-FooCalibration\nx: {_hex(0.01)}\n")
    assert main(["cache", "show", str(path)]) == 0
    err = capsys.readouterr().err
    assert "unknown algorithm 'FooCalibration'" in err and "EntropyCalibration2" in err


def test_cache_show_of_a_missing_or_binary_file(tmp_path, capsys):
    assert main(["cache", "show", str(tmp_path / "nope.cache")]) == 1
    assert "nope.cache does not exist" in capsys.readouterr().err
    engine = tmp_path / "model.engine"
    engine.write_bytes(bytes(range(256)) * 8)
    assert main(["cache", "show", str(engine)]) == 1
    assert "model.engine is not a text file" in capsys.readouterr().err
    assert main(["cache", "show", str(tmp_path)]) == 1
    assert str(tmp_path) in capsys.readouterr().err


# --- loader scripts -------------------------------------------------------------------------

RAISES_LATER = """
import numpy as np
def load_data():
    yield {'x': np.zeros((1, 3, 8, 8), np.float32)}
    raise RuntimeError('camera disconnected')
"""


@pytest.mark.parametrize(
    "body, expected",
    [
        (RAISES_LATER, "RuntimeError: camera disconnected (while producing batch 1 at line 5)"),
        ("def load_data():\n    return None\n", "returned NoneType, which is not iterable"),
        ("def load_data():\n    return 42\n", "returned int, which is not iterable"),
        (
            "def load_data():\n    raise KeyError('cfg')\n",
            "KeyError: 'cfg' (when called at line 2)",
        ),
    ],
)
def test_loader_script_errors_are_framed(chain, tmp_path, capsys, body, expected):
    model, _ = chain
    script = tmp_path / "loader.py"
    script.write_text(body)
    argv = ["calibrate", model, "--data-loader-script", str(script), "-o", str(tmp_path / "c")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"int8kit: error: loader script {script}") and expected in err
    assert "Traceback" not in err


# --- OS errors on outputs -------------------------------------------------------------------


def test_output_folder_that_is_a_file(chain, tmp_path, capsys):
    model, data = chain
    blocker = tmp_path / "results"
    blocker.write_text("not a folder")
    assert _quantize(model, data, blocker / "chain.int8.onnx") == 1
    err = capsys.readouterr().err
    assert f"{blocker} is a file, not a folder" in err and "Traceback" not in err
    assert main(["calibrate", model, "--calib", data, "-o", str(blocker / "sub" / "c.cache")]) == 1
    assert f"{blocker} is a file, not a folder" in capsys.readouterr().err


def test_read_only_output_folder(chain, tmp_path, capsys):
    model, data = chain
    if os.geteuid() == 0:  # root writes anywhere chmod allows nothing; sysfs refuses root too
        folder = "/sys"
    else:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
    try:
        assert _quantize(model, data, f"{folder}/chain.int8.onnx") == 1
    finally:
        if folder != "/sys":
            folder.chmod(0o755)
    err = capsys.readouterr().err
    assert f"the folder {folder} is not writable" in err and "Traceback" not in err


def test_output_that_is_a_folder(chain, tmp_path, capsys):
    model, data = chain
    assert _quantize(model, data, tmp_path / "out.onnx", "--json", str(tmp_path)) == 1
    assert f"{tmp_path} is a folder: give a file name" in capsys.readouterr().err


# --- smaller things -------------------------------------------------------------------------


def test_errors_name_the_cli_flag(chain, tmp_path, capsys):
    model, data = chain
    out = str(tmp_path / "q.onnx")
    assert _quantize(model, data, out, "--num-images", "0") == 1
    err = capsys.readouterr().err
    assert "--num-images must be >= 1, got 0" in err and "num_samples" not in err
    assert _quantize(model, data, out, "--batch-size", "0") == 1
    assert "--batch-size must be >= 1" in capsys.readouterr().err
    assert _quantize(model, data, out, "--holdout", "-1") == 1
    assert "--holdout must be >= 0" in capsys.readouterr().err
    assert _quantize(model, data, out, "--num-bins", "10") == 1
    assert "--num-bins must be at least 128" in capsys.readouterr().err


def test_uint8_arrays_get_a_note(tmp_path, caplog):
    from int8kit.data import DataConfig, make_source
    from int8kit.onnx.model_io import input_specs

    m = models.conv_bn_relu_chain(batch=1)
    path = tmp_path / "u8.npz"
    np.savez(path, x=np.full((4, 3, 8, 8), 200, np.uint8))
    with caplog.at_level("WARNING"):
        src = make_source(DataConfig(source=str(path)), input_specs(m))
        batch = next(iter(src))
    assert batch["x"].dtype == np.float32 and batch["x"].max() == 200.0
    assert "uint8" in caplog.text and "0-255" in caplog.text and "x" in caplog.text


def test_internal_error_shows_traceback_and_asks_for_a_report(chain, capsys, monkeypatch):
    import int8kit.cli.lint as lint_cli

    def broken(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(lint_cli, "run", broken)
    model, _ = chain
    assert main(["lint", model]) == 70
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError: a bug" in err
    assert "bug in int8kit" in err and "report" in err


def test_every_declared_dependency_is_imported():
    """onnx-graphsurgeon was declared and never imported: each dependency must be used."""
    import pathlib

    tomllib = pytest.importorskip("tomllib")
    root = pathlib.Path(__file__).parents[2]
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    imports = {"opencv-python-headless": "cv2", "onnx-graphsurgeon": "onnx_graphsurgeon"}
    source = "\n".join(p.read_text() for p in (root / "src").rglob("*.py") if p.name != "_deps.py")
    for dep in deps:
        name = dep.split(">")[0].split("=")[0].split("<")[0].strip()
        module = imports.get(name, name.replace("-", "_"))
        used = (f"import {module}", f"from {module}", f'require("{module}"')
        assert any(u in source for u in used), f"{name} is declared but never imported"


def test_sensitivity_ranks_what_quantize_would_quantize(chain, tmp_path, capsys):
    model, data = chain
    out = tmp_path / "s.json"
    argv = ["sensitivity", model, "--calib", data, "--samples", "2", "--mode", "only"]
    assert main([*argv, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    ranked = [r["node"] for r in result["rows"]]
    assert "conv1" not in ranked and {"conv2", "fc"} <= set(ranked)
    assert "conv1" in result["left_out"] and "reads the network input" in printed
    assert "not ranked: 1 layer(s)" in printed
    assert main([*argv, "--json", str(out), "--quantize-input-layers"]) == 0
    assert "conv1" in [r["node"] for r in json.loads(out.read_text())["rows"]]


def test_unknown_input_name_is_refused_for_every_source(chain, tmp_path, capsys):
    model, data = chain
    assert _quantize(model, data, tmp_path / "q.onnx", "--input-name", "images") == 1
    assert "--input-name 'images' is not a model input; the inputs are x" in capsys.readouterr().err


def test_dropped_samples_are_counted(tmp_path, capsys):
    model = models.save(models.conv_bn_relu_chain(batch=2), tmp_path / "b2.onnx")
    data = models.save_npz(tmp_path / "x.npz", n=9, x=(2, 3, 8, 8))  # 7 after the holdout
    out = tmp_path / "b2.int8.onnx"
    argv = ["quantize", model, "--calib", data, "-o", str(out), "--batch-size", "2"]
    assert main([*argv, "--holdout", "2", "--json", str(tmp_path / "s.json")]) == 0
    assert "6 samples used, 0 skipped, 1 dropped (a short final batch" in capsys.readouterr().out
    assert json.loads((tmp_path / "s.json").read_text())["images_dropped"] == 1
