"""The PyTorch path's default recipe (issue 11): ``method="auto"`` is `int8kit.recipes`' row, the
layers reading the network input stay float, and bias correction is gated per layer like the
ONNX path's (`int8kit.torch.bias`, `int8kit.onnx.bias_safe`'s rule); `int8kit torch quantize`
prints the held-out fidelity; the README's worked example runs."""

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import torch_tiny  # noqa: E402
from torch import nn  # noqa: E402

import int8kit.torch as iq  # noqa: E402
from int8kit.recipes import DEFAULTS  # noqa: E402
from int8kit.torch import bias, recipe, stem  # noqa: E402
from int8kit.torch.modules import BIAS_SHIFT  # noqa: E402
from int8kit.torch.quantize import get_config, get_recipe  # noqa: E402

PLANT = 0.4  # every planted weight sits 0.4 of a step above an int8 level: rounding drops it


def _default(model, data):
    return iq.quantize(model, iq.QuantConfig(), lambda m: [m(x) for x in data])


def _names(model) -> set[str]:
    return {n.rsplit(".", 1)[0] for n, _ in iq.quantizers(model)}


# --- the recipe -------------------------------------------------------------------------------


def _lacking(record: dict) -> list[str]:
    """The algorithms of a recipe row that the PyTorch path does not have."""
    on = {"smooth_quant": record["smooth_quant"] is not None, "equalize": record["equalize"]}
    return [k for k, v in on.items() if v]


def test_auto_is_the_onnx_paths_default_recipe_and_is_recorded(tmp_path):
    assert iq.QuantConfig().method == "auto"
    m = _default(torch_tiny.tiny_model(), torch_tiny.batches())
    want = DEFAULTS["conv"]
    assert get_config(m).method == want.method
    record = dict(get_recipe(m))
    missing = record.pop("not_in_torch_path", [])  # named, never silently dropped
    assert record == {"family": "conv", **want.to_dict()}
    assert missing == _lacking(record)  # centring and depthwise equalization are applied
    methods = {q.method for _, q in iq.quantizers(m) if not q.is_weight}
    assert methods == {want.method}
    written = iq.export_onnx(m, torch.zeros(1, 3, 16, 16), tmp_path / "t.int8.onnx")
    ranges = json.loads(Path(written["ranges"]).read_text())
    assert ranges["config"]["method"] == want.method
    assert ranges["recipe"]["family"] == "conv" and ranges["input_layers_float"] == ["conv"]
    # An explicit method is kept as given, with no recipe record.
    m2 = torch_tiny.calibrated("percentile")
    assert get_config(m2).method == "percentile" and get_recipe(m2) == {}


def test_attention_modules_make_a_transformer_and_old_configs_keep_their_meaning():
    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.fc = nn.Linear(8, 3)

    assert recipe.family(Encoder()) == "transformer"
    assert recipe.family(torch_tiny.tiny_model()) == "conv"
    _, record = recipe.resolve(iq.QuantConfig(), Encoder())
    assert record.pop("not_in_torch_path", []) == _lacking(record)
    assert record == {"family": "transformer", **DEFAULTS["transformer"].to_dict()}
    # A config saved before the recipe existed quantized the stem and corrected no bias.
    old = iq.QuantConfig.from_dict({"method": "entropy", "per_channel": True})
    assert old.quantize_input_layers and not old.bias_correction
    new = iq.QuantConfig()
    assert iq.QuantConfig.from_dict(new.to_dict()) == new
    assert not new.quantize_input_layers and new.bias_correction and new.bias_gate


# --- the float stem ---------------------------------------------------------------------------


def test_the_layer_reading_the_input_stays_float_by_default():
    data = torch_tiny.batches()
    m = _default(torch_tiny.tiny_model(), data)
    assert stem.input_layers(m) == ["conv"]
    assert "conv" not in _names(m) and {"conv2", "up", "fc"} <= _names(m)
    assert not m.conv.input_quantizer.enabled and not m.conv.weight_quantizer.enabled
    # It never collected statistics (disabled before the first real forward).
    assert m.conv.input_quantizer.collector.stats.count == 0
    assert m.conv2.input_quantizer.collector.stats.count > 0
    # Quantized, the stem still computes its FP32 output: the first conv of the FP32 model.
    x = torch_tiny.batches(1, seed=3)[0]
    with torch.no_grad():
        assert torch.equal(m.conv(x), torch_tiny.tiny_model().conv(x))
    # The samples of the probe forward are not counted as calibration samples.
    assert m._int8kit_calib_samples == sum(len(b) for b in data)

    q = iq.quantize(
        torch_tiny.tiny_model(),
        iq.QuantConfig(quantize_input_layers=True),
        lambda mm: [mm(x) for x in data],
    )
    assert "conv" in _names(q) and stem.input_layers(q) == []


def test_input_layers_are_found_through_ops_without_weights_and_on_every_input():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.first = nn.Conv2d(3, 4, 3)
            self.second = nn.Conv2d(4, 4, 1)
            self.side = nn.Linear(3, 4)

        def forward(self, x):
            y = nn.functional.pad(x / 255.0 - 0.5, [1, 1, 1, 1])  # no weights: still the input
            y = self.second(torch.relu(self.first(y)))
            return y.mean((2, 3)) + self.side(x.mean((2, 3)))

    data = [torch.rand(2, 3, 8, 8) * 255 for _ in range(3)]
    m = _default(Scaled(), data)
    assert sorted(stem.input_layers(m)) == ["first", "side"]
    assert _names(m) == {"second"}

    k = torch_tiny.AllKinds()
    g = torch.Generator().manual_seed(0)
    pairs = [(torch.randn(2, 2, 9, generator=g), torch.randn(2, 2, 6, 6, 6, generator=g))]
    iq.quantize(k, iq.QuantConfig(), lambda mm: [mm(*d) for d in pairs])
    assert sorted(stem.input_layers(k)) == ["c1", "c3"] and "fc" in _names(k)


def test_export_has_no_qdq_on_the_stem(tmp_path):
    m = _default(torch_tiny.tiny_model(), torch_tiny.batches())
    written = iq.export_onnx(m, torch.zeros(1, 3, 16, 16), tmp_path / "s.int8.onnx")
    model = onnx.load(written["onnx"])
    q_inputs = {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    assert "input" not in q_inputs  # the graph input is read in float
    qdq = [n.name for n in model.graph.node if n.op_type.endswith("QuantizeLinear")]
    assert not [n for n in qdq if n.startswith("/conv/")]  # neither its input nor its weight
    assert "/conv2/input_quantizer/QuantizeLinear" in qdq


# --- bias correction --------------------------------------------------------------------------


class Planted(nn.Module):
    """A float stem (Linear + ReLU: positive activations) and a Linear whose int8 weights are
    all PLANT of a step below FP32: its mean output error is known in closed form."""

    def __init__(self, inputs: int = 6, hidden: int = 48, outputs: int = 4, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.stem = nn.Linear(inputs, hidden)
        self.head = nn.Linear(hidden, outputs)
        with torch.no_grad():
            self.stem.weight.copy_(torch.randn(hidden, inputs, generator=g) * 0.3)
            self.stem.bias.fill_(0.5)
            self.head.weight.copy_(planted_weight(outputs, hidden, g))
            self.head.bias.zero_()

    def forward(self, x):
        return self.head(torch.relu(self.stem(x)))


def planted_weight(rows: int, cols: int, g, plant: float = PLANT) -> torch.Tensor:
    """Row amax 1 (first column), every other weight (k + plant)/127 for an integer k."""
    k = torch.randint(-100, 100, (rows, cols), generator=g).float()
    w = (k + plant) / 127.0
    w[:, 0] = 1.0
    return w


def _mean_output_error(model, data) -> torch.Tensor:
    """Mean over samples of the quantized minus the FP32 output, per output channel."""
    with torch.no_grad():
        iq.set_mode(model, "quantize")
        q = torch.cat([model(x) for x in data])
        iq.set_mode(model, "off")
        f = torch.cat([model(x) for x in data])
        iq.set_mode(model, "quantize")
    return (q - f).mean(0)


def test_bias_correction_removes_a_planted_weight_rounding_bias():
    g = torch.Generator().manual_seed(1)
    calib = [torch.randn(8, 6, generator=g) for _ in range(8)]  # 64 samples: 32 + 16 used
    held = [torch.randn(8, 6, generator=g) for _ in range(8)]
    plain = iq.quantize(
        Planted(), iq.QuantConfig(method="minmax", bias_correction=False), _loop(calib)
    )
    fixed = iq.quantize(Planted(), iq.QuantConfig(method="minmax"), _loop(calib))
    assert stem.input_layers(fixed) == ["stem"]

    # Closed form: E[y_q - y][o] = sum_j (Wq - W)[o, j] E[x_j] = -PLANT/127 * sum_{j>0} E[x_j].
    with torch.no_grad():
        h = torch.cat([torch.relu(fixed.stem(x)) for x in held])
    planted = -PLANT / 127.0 * float(h[:, 1:].mean(0).sum())
    before = _mean_output_error(plain, held)
    torch.testing.assert_close(before, torch.full_like(before, planted), rtol=0.1, atol=0)
    after = _mean_output_error(fixed, held)
    assert float(after.abs().max()) < 0.1 * abs(planted)

    summary = bias.summary_of(fixed)
    assert summary["corrected"] == ["head"] and not summary["dropped"]
    assert summary["estimate_samples"] == 32 and summary["gate_samples"] == 16
    shift = fixed.head.bias_shift
    torch.testing.assert_close(shift, torch.full_like(shift, -planted), rtol=0.1, atol=0)
    # The FP32 function is untouched: quantizers off, the corrected model is the FP32 model.
    iq.set_mode(fixed, "off")
    x = held[0]
    with torch.no_grad():
        torch.testing.assert_close(fixed(x), Planted()(x), rtol=0, atol=0)


def _loop(batches):
    return lambda m: [m(x) for x in batches]


def test_the_gate_refuses_a_correction_that_hurts_on_held_out_samples():
    """Estimate samples have inputs of mean +1, held-out ones of mean -1: the planted error
    flips sign, so the correction doubles the held-out mean error: ratio (2/1)^2 = 4. Batches
    of 12 straddle the 32/16 split: the samples are split inside a batch."""
    g = torch.Generator().manual_seed(2)
    head = nn.Sequential(nn.Linear(24, 3))
    with torch.no_grad():
        head[0].weight.copy_(planted_weight(3, 24, g))
        head[0].bias.zero_()
    x = torch.rand(48, 24, generator=g) * 0.2 + 0.9
    x[32:] *= -1
    data = list(x.split(12))
    config = dict(method="minmax", quantize_input_layers=True)
    gated = iq.quantize(_copy(head), iq.QuantConfig(**config), _loop(data))
    summary = bias.summary_of(gated)
    assert summary["corrected"] == [] and summary["gate_samples"] == 16
    assert summary["dropped"]["0"] == pytest.approx(4.0, rel=0.1)
    assert BIAS_SHIFT not in dict(gated.named_buffers())

    ungated = iq.quantize(_copy(head), iq.QuantConfig(**config, bias_gate=False), _loop(data))
    assert bias.summary_of(ungated)["corrected"] == ["0"]
    assert bias.summary_of(ungated)["estimate_samples"] == 32  # no gate: none held out


def test_a_one_shot_loop_calibrates_and_says_the_correction_saw_no_data():
    data = iter(torch_tiny.batches())  # consumed by the calibration pass
    with pytest.warns(UserWarning, match="bias correction saw no data"):
        m = _default(torch_tiny.tiny_model(), data)
    assert bias.summary_of(m)["corrected"] == []
    assert not [n for n, _ in m.named_buffers() if n.endswith(BIAS_SHIFT)]


def _copy(module):
    import copy

    return copy.deepcopy(module)


class NoBiasNet(nn.Module):
    """A conv without a bias after the stem, a conv -> BN pair, a same-padding subclass."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.plain = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.same = torch_tiny.SamePadConv2d(8, 4, 3)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)
            self.bn.weight.uniform_(-1.5, 1.5)

    def forward(self, x):
        return self.same(torch.relu(self.bn(self.plain(torch.relu(self.stem(x))))))


def test_corrected_biases_are_exported_and_fold_with_batchnorm(tmp_path):
    data = torch_tiny.batches(12, batch=4)
    m = iq.quantize(NoBiasNet().eval(), iq.QuantConfig(bias_gate=False), _loop(data))
    summary = bias.summary_of(m)
    assert summary["corrected"] == ["plain", "same"] and summary["bias_added"] == ["plain"]
    x = torch_tiny.batches(1, seed=9)[0]
    written = iq.export_onnx(m, x[:1], tmp_path / "nb.int8.onnx")
    with torch.no_grad():
        iq.set_mode(m, "quantize")
        want_q = m(x).numpy()
        iq.set_mode(m, "off")
        want_f = m(x).numpy()
        iq.set_mode(m, "quantize")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    run = lambda p: ort.InferenceSession(p, so).run(None, {"input": x.numpy()})[0]  # noqa: E731
    np.testing.assert_allclose(run(written["onnx"]), want_q, atol=1e-4)  # bias + shift
    np.testing.assert_allclose(run(written["fp32"]), want_f, atol=1e-4)  # FP32: no shift
    assert float(m.plain.bias_shift.abs().min()) > 0

    # A saved quantized state dict carries the shifts into a freshly swapped model.
    state = m.state_dict()
    fresh = NoBiasNet().eval()
    iq.replace_modules(fresh, iq.QuantConfig())
    fresh.load_state_dict(state)
    assert torch.equal(fresh.same.bias_shift, state["same.bias_shift"])

    # Folding BN moves the shift with the output channel: shift' = shift * gamma / sigma.
    k = (m.bn.weight / torch.sqrt(m.bn.running_var + m.bn.eps)).detach()
    shift = m.plain.bias_shift.clone()
    iq.prepare_qat(m, fold_bn=True)
    torch.testing.assert_close(m.plain.bias_shift, shift * k)


# --- the CLI ----------------------------------------------------------------------------------


def _cli(argv):
    from int8kit.cli import torch_cmd

    parser = argparse.ArgumentParser()
    torch_cmd.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_prints_the_recipe_bias_correction_and_held_out_fidelity(tmp_path, monkeypatch, capsys):
    images = torch_tiny.cli_inputs(tmp_path, 20)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("INT8KIT_NO_PROGRESS", "1")
    base = ["torch", "quantize", "tinyfactory:build", "--calib", str(images)]
    base += ["--input-shape", "1x3x32x32", "--batch-size", "4", "--holdout", "6"]
    assert _cli(base + ["-o", str(tmp_path / "a" / "t.int8.onnx")]) == 0
    printed = capsys.readouterr().out
    assert f"INT8 (auto (conv): {DEFAULTS['conv'].method})" in printed
    assert "calibration: 14 samples" in printed
    assert "float (read the network input): conv" in printed
    assert re.search(r"bias correction: \d+ layers", printed)
    assert re.search(r"fidelity on 6 held-out samples", printed)
    line = re.search(r"trt-like\s+output: SQNR ([\d.]+) dB", printed)
    assert line and float(line.group(1)) > 15  # TinyNet, 14 crops: ~20-30 dB
    assert "trtexec --onnx=" in printed
    summary = json.loads((tmp_path / "a" / "t.torch.json").read_text())
    sqnr = summary["fidelity"]["trt-like"]["output"]["sqnr_db"]
    assert float(line.group(1)) == pytest.approx(sqnr, abs=1e-3)
    assert summary["holdout_samples"] == 6

    off = ["--method", "entropy", "--quantize-input-layers", "--no-bias-correction"]
    assert _cli(base + off + ["-o", str(tmp_path / "b" / "t.int8.onnx")]) == 0
    printed = capsys.readouterr().out
    assert "INT8 (entropy)" in printed and "bias correction" not in printed
    assert "float (read the network input)" not in printed
    cfg = json.loads((tmp_path / "b" / "t.torch.json").read_text())["config"]
    assert cfg["method"] == "entropy" and cfg["quantize_input_layers"]
    assert not cfg["bias_correction"]


# --- the README's worked example --------------------------------------------------------------


def _readme_example() -> str:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text.split("### PyTorch: PTQ, QAT and export", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_pytorch_example_runs_on_a_tiny_model(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    g = torch.Generator().manual_seed(0)
    loader = [(torch.randn(4, 3, 16, 16, generator=g), None) for _ in range(8)]
    held_loader = [(torch.randn(4, 3, 16, 16, generator=g), None) for _ in range(2)]
    scope = {"build_model": torch_tiny.tiny_model, "loader": loader, "held_loader": held_loader}
    exec(compile(_readme_example(), "README.md", "exec"), scope)
    for name in ("model.int8.onnx", "model.fp32.onnx", "model.ranges.json", "model.calib.cache"):
        assert (tmp_path / name).is_file(), name
    assert re.search(r"-?\d+\.\d+ dB", capsys.readouterr().out)
    assert isinstance(scope["qmodel"].bn, nn.Identity)  # QAT folded BN before the export
