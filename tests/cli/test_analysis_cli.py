"""The eval, layers, lint and bench subcommands, run in-process through main()."""

import json

import numpy as np
import pytest
from analysis_models import (
    add_qdq,
    conv_relu_conv,
    detector_head,
    int8kit_qdq,
    random_batches,
    ranges_for,
    save,
)

from int8kit.cli.main import main


@pytest.fixture
def chain(tmp_path):
    m = conv_relu_conv()
    batches = random_batches(4, seed=5)
    amax = ranges_for(m, batches)
    amax["r1"] *= 0.05  # a planted badly scaled tensor
    np.save(tmp_path / "x.npy", np.concatenate([b["x"] for b in batches]))
    return (
        save(m, tmp_path / "m.onnx"),
        save(int8kit_qdq(m, amax), tmp_path / "q.onnx"),
        str(tmp_path / "x.npy"),
    )


def test_eval_prints_both_backends_and_writes_json(chain, tmp_path, capsys):
    fp32, int8, data = chain
    out = tmp_path / "eval.json"
    assert main(["eval", fp32, int8, "--data", data, "--num-images", "3", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "INT8 vs FP32 on 3 samples" in text
    assert "trt-like (Q/DQ unfused, as TensorRT computes)" in text and "ort-int8" in text
    assert "SQNR" in text and "cos" in text
    result = json.loads(out.read_text())
    assert result["samples"] == 3
    assert set(result["outputs"]) == {"trt-like", "ort-int8"}
    assert result["outputs"]["trt-like"]["y"]["sqnr_db"] < 30


def test_eval_one_backend(chain, capsys):
    fp32, int8, data = chain
    assert main(["eval", fp32, int8, "--data", data, "--backend", "ort-int8"]) == 0
    assert "trt-like" not in capsys.readouterr().out


def test_eval_without_data_is_an_error(chain, capsys):
    fp32, int8, _ = chain
    assert main(["eval", fp32, int8]) == 1
    assert "--data" in capsys.readouterr().err


def test_eval_missing_model(tmp_path, chain, capsys):
    _, int8, data = chain
    assert main(["eval", str(tmp_path / "nope.onnx"), int8, "--data", data]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_layers_puts_the_planted_tensor_on_top(chain, tmp_path, capsys):
    fp32, int8, data = chain
    out = tmp_path / "layers.json"
    assert main(["layers", fp32, int8, "--data", data, "--top", "2", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    top = text.split("layers adding the most error")[1].splitlines()
    assert len(top) == 1 + 1 + 2  # title rest, header, 2 rows
    assert "r1 (Q/DQ)" in top[2]
    result = json.loads(out.read_text())
    assert result["by_added_error"][0]["int8_tensor"] == "r1_dequantized"
    assert len(result["graph_order"]) == 6


def test_lint_exit_codes(tmp_path, capsys):
    clean = save(int8kit_qdq(detector_head()), tmp_path / "clean.onnx")
    assert main(["lint", clean]) == 0
    assert "0 errors, 0 warnings" in capsys.readouterr().out
    trap = save(add_qdq(int8kit_qdq(detector_head()), "cat", 640 / 127), tmp_path / "trap.onnx")
    out = tmp_path / "lint.json"
    assert main(["lint", trap, "--json", str(out)]) == 1
    text = capsys.readouterr().out
    assert "ERROR [concat-range] concat, cat_Q" in text and "fix:" in text
    assert json.loads(out.read_text())["findings"][0]["code"] == "concat-range"
    float_conv = save(
        add_qdq(conv_relu_conv(), "x", 0.03, consumers={"conv1"}), tmp_path / "h.onnx"
    )
    assert main(["lint", float_conv]) == 1
    assert main(["lint", "--explain", clean]) == 0
    assert "concat-range" in capsys.readouterr().out


def test_bench_cli(chain, tmp_path, capsys):
    fp32, int8, _ = chain
    out = tmp_path / "bench.json"
    argv = ["bench", fp32, int8, "--batch", "1", "--runs", "3", "--warmup", "1", "--json", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "CPU:" in text and "integer features" in text and "median ms" in text
    result = json.loads(out.read_text())
    assert [r["model"] for r in result["results"]] == [fp32, int8]
    assert main(["bench", fp32, "--runs", "0"]) == 1
    with pytest.raises(SystemExit):
        main(["bench", fp32, "--batch", "1,x"])
