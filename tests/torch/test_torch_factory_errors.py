"""`int8kit torch quantize` with a model factory that raises, returns something that is not an
nn.Module, or fails on import: one int8kit message naming the factory, the user's error shown."""

import pytest

pytest.importorskip("torch")

from int8kit.cli.main import main  # noqa: E402

FACTORIES = """
import torch

def raises():
    raise ValueError("num_classes missing")

def returns_dict():
    return {"conv": torch.nn.Conv2d(3, 4, 3)}

def returns_none():
    pass
"""


@pytest.mark.parametrize(
    "func, expected",
    [
        ("raises", "raised ValueError: num_classes missing (at "),
        ("returns_dict", "returned dict, not a torch.nn.Module"),
        ("returns_none", "returned NoneType, not a torch.nn.Module"),
    ],
)
def test_factory_errors_are_messages(tmp_path, monkeypatch, capsys, func, expected):
    (tmp_path / "userfactories.py").write_text(FACTORIES)
    (tmp_path / "images").mkdir()
    monkeypatch.chdir(tmp_path)
    argv = ["torch", "quantize", f"userfactories:{func}", "--calib", "images", "-o", "m.onnx"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"int8kit: error: model factory userfactories:{func}") and expected in err
    assert "Traceback" not in err
    if func == "raises":
        assert "userfactories.py, line 5" in err


def test_factory_module_that_fails_on_import(tmp_path, monkeypatch, capsys):
    (tmp_path / "brokenfactory.py").write_text("import torch\nraise RuntimeError('no GPU')\n")
    (tmp_path / "images").mkdir()
    monkeypatch.chdir(tmp_path)
    argv = ["torch", "quantize", "brokenfactory:make", "--calib", "images", "-o", "m.onnx"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "importing 'brokenfactory' for the model factory raised RuntimeError: no GPU" in err


def test_torch_outputs_may_not_overwrite_the_weights(tmp_path, monkeypatch, capsys):
    (tmp_path / "userfactories.py").write_text(FACTORIES)
    (tmp_path / "images").mkdir()
    weights = tmp_path / "m.fp32.onnx"  # what -o m.onnx would write its FP32 model to
    weights.write_bytes(b"weights")
    monkeypatch.chdir(tmp_path)
    argv = ["torch", "quantize", "userfactories:raises", "--calib", "images", "-o", "m.onnx"]
    assert main([*argv, "--weights", str(weights)]) == 1
    assert "is the input --weights" in capsys.readouterr().err
    assert weights.read_bytes() == b"weights"
