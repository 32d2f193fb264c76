import argparse

import pytest

torch = pytest.importorskip("torch")

import torch_tiny  # noqa: E402

from int8kit.cli import torch_cmd  # noqa: E402
from int8kit.errors import Int8kitError, ModelError  # noqa: E402
from int8kit.torch.workflow import load_weights  # noqa: E402


class Payload:
    """An arbitrary object: weights_only loading must refuse to unpickle it."""

    def __reduce__(self):
        return (print, ("payload ran",))


def _run(argv):
    parser = argparse.ArgumentParser()
    torch_cmd.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_weights_only_refuses_a_pickled_object(tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    torch.save({"weight": Payload()}, bad)
    with pytest.raises(ModelError, match="weights_only"):
        load_weights(torch_tiny.tiny_model(), bad)
    assert "payload ran" not in capsys.readouterr().out


def test_load_weights_accepts_nested_state_dict_and_rejects_mismatch(tmp_path):
    src = torch_tiny.tiny_model(seed=3)
    path = tmp_path / "w.pth"
    torch.save({"state_dict": src.state_dict()}, path)
    dst = load_weights(torch_tiny.tiny_model(seed=4), path)
    assert torch.equal(dst.conv.weight, src.conv.weight)
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(ModelError, match="does not fit"):
        load_weights(torch_tiny.tiny_model(), path)


def test_parse_shape_and_factory_errors():
    assert torch_cmd.parse_shape("2x3x32x32") == (2, 3, 32, 32)
    with pytest.raises(Int8kitError):
        torch_cmd.parse_shape("3x224")
    with pytest.raises(ModelError, match="pkg.module:function"):
        torch_cmd.load_factory("nofunction")


def test_cli_quantize_end_to_end(tmp_path, monkeypatch, capsys):
    images = torch_tiny.cli_inputs(tmp_path, 6)
    weights = tmp_path / "w.pth"
    torch.save(torch_tiny.tiny_model(seed=9).state_dict(), weights)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out" / "tiny.int8.onnx"
    rc = _run(
        [
            "torch",
            "quantize",
            "tinyfactory:build",
            "--weights",
            str(weights),
            "--calib",
            str(images),
            "-o",
            str(out),
            "--input-shape",
            "1x3x32x32",
            "--batch-size",
            "3",
            "--method",
            "percentile",
            "--qat-epochs",
            "1",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "qat" in printed
    for name in (
        "tiny.int8.onnx",
        "tiny.fp32.onnx",
        "tiny.calib.cache",
        "tiny.ranges.json",
        "tiny.torch.json",
    ):
        assert (out.parent / name).exists(), name

    bad = tmp_path / "bad.pth"
    torch.save({"weight": Payload()}, bad)
    with pytest.raises(ModelError, match="weights_only"):
        _run(
            [
                "torch",
                "quantize",
                "tinyfactory:build",
                "--weights",
                str(bad),
                "--calib",
                str(images),
                "-o",
                str(tmp_path / "bad.onnx"),
                "--input-shape",
                "1x3x32x32",
            ]
        )
    assert not (tmp_path / "bad.onnx").exists()
