import cv2
import models
import numpy as np
import pytest

from int8kit.calib.cache import CalibrationCache
from int8kit.cli.main import main


@pytest.fixture
def image_model(tmp_path):
    """A conv chain fed 8x8 RGB images from a folder with one corrupt file."""
    path = models.save(models.conv_bn_relu_chain(batch=1), tmp_path / "chain.onnx")
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(7):
        cv2.imwrite(
            str(folder / ("sub" if k % 2 else "") / f"img{k}.png"),
            rng.integers(0, 255, (12, 16, 3), np.uint8),
        )
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return path, folder


def test_quantize_cli_summary(image_model, tmp_path, capsys):
    model, folder = image_model
    out = tmp_path / "o" / "chain.int8.onnx"
    assert (
        main(
            [
                "quantize",
                model,
                "--calib",
                str(folder),
                "-o",
                str(out),
                "--holdout",
                "2",
                "--method",
                "percentile",
                "--cache",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "5 samples used, 1 skipped" in text
    assert "broken.jpg" in text
    assert "--calib=" in text and "--stronglyTyped" in text  # trtexec lines for 8.6-10 and 10.x
    assert "as TensorRT computes" in text
    assert out.exists() and (tmp_path / "o" / "chain.int8.calib.cache").exists()


def test_calibrate_and_cache_show_diff(image_model, tmp_path, capsys):
    model, folder = image_model
    a, b = tmp_path / "a.cache", tmp_path / "b.cache"
    assert (
        main(
            ["calibrate", model, "--calib", str(folder), "-o", str(a), "--cache-version", "100300"]
        )
        == 0
    )
    assert (
        main(["calibrate", model, "--calib", str(folder), "-o", str(b), "--method", "minmax"]) == 0
    )
    assert CalibrationCache.read(a).header == "TRT-100300-EntropyCalibration2"
    printed = capsys.readouterr().out
    assert "(auto: entropy)" in printed and "Q/DQ on" not in printed  # a cache-only run
    assert main(["cache", "show", str(a)]) == 0
    shown = capsys.readouterr().out
    scale = CalibrationCache.read(a).scales["x"]
    assert f"{scale:12.6g}" in shown and f"{scale * 127:12.6g}" in shown
    assert main(["cache", "diff", str(a), str(a)]) == 0
    assert "caches are equal" in capsys.readouterr().out
    assert main(["cache", "diff", str(a), str(b)]) == 1
    assert "headers differ: TRT-100300" in capsys.readouterr().out


def test_errors_are_one_clear_line(image_model, tmp_path, capsys):
    model, _ = image_model
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["quantize", model, "--calib", str(empty), "-o", str(tmp_path / "q.onnx")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("int8kit: error:") and "no readable images" in err
    bad = tmp_path / "bad.cache"
    bad.write_text("TRT-8601-EntropyCalibration2\nx: zz\n")
    assert main(["cache", "show", str(bad)]) == 1
    assert "bad.cache:2:" in capsys.readouterr().err
    assert main(["quantize", model, "-o", str(tmp_path / "q.onnx")]) == 1
    assert "give calibration data" in capsys.readouterr().err


def test_loader_script_runs_only_when_named(image_model, tmp_path, capsys):
    model, _ = image_model
    marker = tmp_path / "ran"
    script = tmp_path / "loader.py"
    script.write_text(
        "import numpy as np, pathlib\n"
        f"pathlib.Path({str(marker)!r}).write_text('yes')\n"
        "def load_data():\n"
        "    for i in range(4):\n"
        "        yield {'x': np.full((1, 3, 8, 8), i, np.float32)}\n"
    )
    # Named as a plain data source, it is refused, never imported.
    assert main(["calibrate", model, "--calib", str(script), "-o", str(tmp_path / "c.cache")]) == 1
    assert not marker.exists()
    assert (
        main(
            [
                "calibrate",
                model,
                "--data-loader-script",
                str(script),
                "-o",
                str(tmp_path / "c.cache"),
                "--method",
                "minmax",
            ]
        )
        == 0
    )
    assert marker.exists()
    assert CalibrationCache.read(tmp_path / "c.cache").amax("x") == pytest.approx(3.0)


def test_quantize_warns_when_only_an_input_layer_exists(tmp_path, capsys):
    from onnx import helper

    m = models.model(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")],
        [models.value("x", (1, 3, 8, 8))],
        [models.value("y", (1, 2, 6, 6))],
        [models.weight("w", (2, 3, 3, 3), 0)],
    )
    path = models.save(m, tmp_path / "one.onnx")
    data = models.save_npz(tmp_path / "d.npz", n=4, x=(1, 3, 8, 8))
    out = str(tmp_path / "one.int8.onnx")
    assert main(["quantize", path, "--calib", data, "-o", out, "--holdout", "0"]) == 0
    assert "WARNING: nothing was quantized" in capsys.readouterr().out
    argv = ["quantize", path, "--calib", data, "-o", out, "--holdout", "0"]
    assert main([*argv, "--quantize-input-layers"]) == 0
    text = capsys.readouterr().out
    assert (
        "nothing was quantized" not in text
        and "Q/DQ on 1 activations and the weights of 1 layer\n" in text
    )
    assert "bias correction: 1 layers" in text


def test_quantize_summary_prints_top1_only_for_class_scores(tmp_path, capsys):
    from analysis_models import encoder

    path = models.save(encoder(), tmp_path / "enc.onnx")
    data = models.save_npz(tmp_path / "d.npz", n=12, x=(1, 4, 16))
    assert main(["quantize", path, "--calib", data, "-o", str(tmp_path / "q.onnx")]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "SQNR" in ln and "cos" in ln]
    top1 = {ln.split()[1].rstrip(":") for ln in lines if "top-1 agree" in ln}
    # one line per backend and output; the two embeddings keep SQNR/cosine, without top-1
    assert len(lines) == 8 and top1 == {"logits", "scaled"}
