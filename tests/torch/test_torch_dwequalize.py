"""Depthwise equalization in the PyTorch path (`int8kit.torch.dwequalize`): the same FP32
function, the ONNX path's gate, and an export TensorRT builds (Mul -> Q -> DQ -> Conv with one
scale per activation tensor)."""

import argparse
import copy
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import torch_tiny  # noqa: E402
from torch import nn  # noqa: E402

import int8kit.torch as iq  # noqa: E402
from int8kit.cli import torch_cmd  # noqa: E402
from int8kit.onnx.dwequalize import MAX_ERROR_RATIO  # noqa: E402
from int8kit.recipes import DEFAULTS  # noqa: E402
from int8kit.torch import dwequalize, recipe  # noqa: E402
from int8kit.torch.modules import INPUT_INV_SCALE  # noqa: E402

OFF = {"bias_correction": False}  # the tests compare the equalization alone


class DwBlock(nn.Module):
    """Conv(3->C, its last output channel scaled by ``outlier``) -> act -> depthwise Conv(C,
    multiplier m) whose output channels have weights of one energy (each channel's error counts
    alike). The first conv reads the input: it stays float, and the depthwise conv is
    quantized."""

    def __init__(self, channels=6, outlier=50.0, act=nn.ReLU, dims=2, multiplier=1, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        conv = (nn.Conv1d, nn.Conv2d)[dims - 1]
        c = channels
        self.c1 = conv(3, c, 1)
        self.act = act()
        self.dw = conv(c, c * multiplier, 3, padding=1, groups=c)
        with torch.no_grad():
            k = torch.ones(c)
            k[-1] = outlier
            self.c1.weight.mul_(k.reshape([-1] + [1] * (dims + 1)))
            self.c1.bias.mul_(k)
            w = self.dw.weight
            w.div_(w.flatten(1).norm(dim=1).reshape([-1] + [1] * (dims + 1)))

    def forward(self, x):
        return self.dw(self.act(self.c1(x)))


def data(n=8, batch=8, size=8, dims=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, *([size] * dims), generator=g) for _ in range(n)]


def quantized(model, batches, **config):
    config = {"method": "minmax", **OFF, **config}
    return iq.quantize(model, iq.QuantConfig(**config), lambda m: [m(x) for x in batches])


def int8_error(model, fp32, batches):
    """Squared error of the quantized model's output vs the FP32 model's."""
    with torch.no_grad():
        return sum(float(((model(x) - fp32(x)) ** 2).sum()) for x in batches)


@pytest.mark.parametrize(
    "kind",
    [
        {"dims": 2},
        {"dims": 1},
        {"dims": 2, "multiplier": 2},
        {"dims": 2, "act": nn.Hardswish},  # not scale-invariant: the Mul stays explicit anyway
    ],
)
def test_the_fp32_function_is_unchanged(kind):
    fp32 = DwBlock(**kind).eval()
    d = data(dims=kind["dims"])
    m = quantized(copy.deepcopy(fp32), d, equalize_depthwise=True)
    summary = dwequalize.summary_of(m)
    assert list(summary["equalized"]) == ["dw"]
    inv = m.dw._buffers[INPUT_INV_SCALE]
    assert inv.shape == (6,) + (1,) * kind["dims"] and float(inv.min()) == 1.0
    iq.set_mode(m, "off")
    x = data(1, dims=kind["dims"], seed=7)[0]
    with torch.no_grad():
        torch.testing.assert_close(m(x), fp32(x), rtol=1e-5, atol=1e-5)
    # The weights of output channel o carry s of input channel o // multiplier.
    s = 1.0 / inv.reshape(-1)
    ratio = (m.dw.weight / fp32.dw.weight).reshape(m.dw.weight.shape[0], -1)
    want = s.repeat_interleave(kind.get("multiplier", 1))[:, None].expand_as(ratio)
    torch.testing.assert_close(ratio, want, rtol=1e-5, atol=1e-6)


def test_an_outlier_channel_is_equalized_by_the_gate_and_the_int8_error_drops():
    # Conv(3->16) with one channel x50: the other 15 get a handful of int8 levels.
    fp32 = DwBlock(channels=16).eval()
    d = data()  # 64 samples: the first 32 decide (half of them)
    plain = quantized(copy.deepcopy(fp32), d, equalize_depthwise=False)
    eq = quantized(copy.deepcopy(fp32), d, equalize_depthwise=True)
    summary = dwequalize.summary_of(eq)
    assert summary["gate_samples"] == 32
    rec = summary["equalized"]["dw"]
    assert rec["error_ratio"] <= MAX_ERROR_RATIO and rec["spread"] > 10
    assert rec["headroom"] in (1.0, 2.0, 4.0, 8.0, 16.0)
    # The input quantizer was recalibrated on x / s: its range is the outlier channel's,
    # which x / s keeps (s = 1 for the widest channel).
    assert float(eq.dw.input_quantizer.amax) == pytest.approx(
        float(plain.dw.input_quantizer.amax), rel=1e-6
    )
    held = data(4, seed=5)
    before, after = int8_error(plain, fp32, held), int8_error(eq, fp32, held)
    assert after < 0.5 * before, (before, after)
    assert dwequalize.summary_of(plain) == {}


def test_channels_of_one_range_are_left_alone():
    fp32 = DwBlock(outlier=1.0).eval()
    d = data()
    m = quantized(copy.deepcopy(fp32), d, equalize_depthwise=True)
    summary = dwequalize.summary_of(m)
    assert not summary["equalized"]
    assert "did not cut the held-out error" in summary["skipped"]["dw"]
    assert INPUT_INV_SCALE not in m.dw._buffers
    assert torch.equal(m.dw.weight, fp32.dw.weight)


def test_a_float_depthwise_layer_and_per_tensor_weights_are_skipped():
    d = data(2)
    m = quantized(DwBlock().eval(), d, equalize_depthwise=True, exclude=["^dw$"])
    assert dwequalize.summary_of(m)["equalized"] == {}  # excluded: not even a quantized layer
    m = quantized(DwBlock().eval(), d, equalize_depthwise=True, per_channel=False)
    assert "per tensor" in dwequalize.summary_of(m)["skipped"]["dw"]
    assert INPUT_INV_SCALE not in m.dw._buffers


def test_standalone_call_redoes_previous_scales_and_state_dict_round_trip():
    fp32 = DwBlock().eval()
    d = data()
    m = quantized(copy.deepcopy(fp32), d, equalize_depthwise=True)
    w1, inv1 = m.dw.weight.clone(), m.dw._buffers[INPUT_INV_SCALE].clone()
    amax1 = float(m.dw.input_quantizer.amax)
    # Called again (its own pass collects the ranges): the same choice, not scaled twice.
    again = dwequalize.equalize_depthwise(m, lambda mm: [mm(x) for x in d])
    assert list(again.equalized) == ["dw"]
    torch.testing.assert_close(m.dw.weight, w1)
    torch.testing.assert_close(m.dw._buffers[INPUT_INV_SCALE], inv1)
    assert float(m.dw.input_quantizer.amax) == pytest.approx(amax1, rel=1e-6)
    assert m.dw.input_quantizer.mode == "quantize"
    # ... and with a headroom of its own: no gate.
    dwequalize.equalize_depthwise(m, lambda mm: [mm(x) for x in d], headroom=16.0)
    assert dwequalize.summary_of(m)["gate_samples"] == 0
    assert dwequalize.summary_of(m)["equalized"]["dw"]["headroom"] == 16.0
    with torch.no_grad():
        a = torch.stack([fp32.act(fp32.c1(x)).abs().amax(dim=(0, 2, 3)) for x in d]).amax(0)
    want = torch.clamp(16 * a / a.max(), max=1.0).reshape(-1, 1, 1, 1).expand_as(w1)
    torch.testing.assert_close(m.dw.weight / fp32.dw.weight, want, rtol=1e-5, atol=1e-6)
    # A fresh quantized model takes the buffer from the state dict.
    fresh = iq.quantize(copy.deepcopy(fp32), iq.QuantConfig(method="minmax", **OFF))
    fresh.load_state_dict(m.state_dict())
    iq.set_mode(fresh, "quantize")
    x = d[0]
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), m(x))


def test_export_writes_mul_then_per_tensor_qdq_and_runs_in_onnxruntime(tmp_path):
    fp32 = DwBlock().eval()
    d = data()
    m = quantized(copy.deepcopy(fp32), d, equalize_depthwise=True)
    written = iq.export_onnx(m, torch.zeros(1, 3, 8, 8), tmp_path / "dw.int8.onnx")
    graph = onnx.load(written["onnx"]).graph
    producer = {o: n for n in graph.node for o in n.output}
    consts = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    dw = next(n for n in graph.node if n.op_type == "Conv" and n.input[0] not in ("input",))
    dq = producer[dw.input[0]]
    q = producer[dq.input[0]]
    mul = producer[q.input[0]]
    assert (dq.op_type, q.op_type, mul.op_type) == ("DequantizeLinear", "QuantizeLinear", "Mul")
    assert producer[mul.input[0]].op_type == "Relu"
    assert consts[q.input[1]].shape == ()  # one scale per activation tensor
    np.testing.assert_allclose(
        consts[q.input[1]], float(m.dw.input_quantizer.amax) / 127, rtol=1e-6
    )
    inv = consts[mul.input[1]]
    assert inv.shape == (6, 1, 1)
    np.testing.assert_allclose(inv, m.dw._buffers[INPUT_INV_SCALE].numpy(), rtol=1e-6)
    x = data(1, seed=9)[0]
    sess = ort.InferenceSession(written["onnx"], providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        want, ref = m(x).numpy(), fp32(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert np.linalg.norm(got - ref) < 0.05 * np.linalg.norm(ref)  # int8, close to FP32
    fp = ort.InferenceSession(written["fp32"], providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(fp.run(None, {"input": x.numpy()})[0], ref, rtol=1e-4, atol=1e-4)


def test_recipe_config_and_cli_flag():
    # None: the recipe's value with method auto, off with an explicit method.
    resolved, record = recipe.resolve(iq.QuantConfig(), DwBlock())
    assert resolved.equalize_depthwise is DEFAULTS["conv"].equalize_depthwise
    assert "equalize_depthwise" not in record.get("not_in_torch_path", [])
    for given in (True, False):
        resolved, _ = recipe.resolve(iq.QuantConfig(equalize_depthwise=given), DwBlock())
        assert resolved.equalize_depthwise is given
    resolved, _ = recipe.resolve(iq.QuantConfig(method="mse"), DwBlock())
    assert resolved.equalize_depthwise is False
    # Saved configs: round trip, and a config from before the field means no equalization.
    c = iq.QuantConfig(equalize_depthwise=True)
    assert iq.QuantConfig.from_dict(c.to_dict()) == c
    old = iq.QuantConfig(method="mse").to_dict()
    del old["equalize_depthwise"]
    assert iq.QuantConfig.from_dict(old).equalize_depthwise is False
    parser = argparse.ArgumentParser()
    torch_cmd.register(parser.add_subparsers())
    base = ["torch", "quantize", "f:g", "--calib", "c", "-o", "o.onnx"]
    assert parser.parse_args(base).equalize_depthwise is None
    assert parser.parse_args([*base, "--equalize-depthwise"]).equalize_depthwise is True
    assert parser.parse_args([*base, "--no-equalize-depthwise"]).equalize_depthwise is False


FACTORY = """
import test_torch_dwequalize

def build():
    return test_torch_dwequalize.DwBlock().eval()
"""


def test_cli_records_the_equalization(tmp_path, monkeypatch, capsys):
    images = torch_tiny.cli_inputs(tmp_path, 6)
    (tmp_path / "dwfactory.py").write_text(FACTORY)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out" / "dw.int8.onnx"
    argv = ["torch", "quantize", "dwfactory:build", "--calib", str(images), "-o", str(out)]
    argv += ["--input-shape", "1x3x16x16", "--batch-size", "3", "--equalize-depthwise"]
    parser = argparse.ArgumentParser()
    torch_cmd.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    assert "depthwise equalization: 1 of 1" in capsys.readouterr().out
    summary = json.loads((out.parent / "dw.torch.json").read_text())
    assert summary["config"]["equalize_depthwise"] is True
    assert list(summary["equalize_depthwise"]["equalized"]) == ["dw"]
    assert summary["equalize_depthwise"]["gate_samples"] == 0  # 6 samples: too few for a gate


def _rank(rank: int, port: int, out: str) -> None:
    """One of two gloo ranks: rank 0 takes the first batch, rank 1 the other seven, so the 16
    held-out samples (the first) span both ranks."""
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2
    )
    try:
        d = data()
        mine = d[:1] if rank == 0 else d[1:]
        m = quantized(DwBlock(channels=16).eval(), mine, equalize_depthwise=True)
        torch.save(
            {
                "summary": dwequalize.summary_of(m),
                "inv": m.dw._buffers.get(INPUT_INV_SCALE),
                "amax": float(m.dw.input_quantizer.amax),
            },
            f"{out}.{rank}",
        )
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_two_ranks_choose_what_one_process_chooses(tmp_path):
    from dist_launch import free_port

    out = str(tmp_path / "r")
    torch.multiprocessing.spawn(_rank, args=(free_port(), out), nprocs=2)
    ranks = [torch.load(f"{out}.{r}", weights_only=False) for r in range(2)]
    one = quantized(DwBlock(channels=16).eval(), data(), equalize_depthwise=True)
    want = dwequalize.summary_of(one)
    for r in ranks:
        assert r["summary"]["gate_samples"] == want["gate_samples"] == 32
        got, ref = r["summary"]["equalized"]["dw"], want["equalized"]["dw"]
        assert got["headroom"] == ref["headroom"]
        assert got["error_ratio"] == pytest.approx(ref["error_ratio"], rel=1e-9)
        torch.testing.assert_close(r["inv"], one.dw._buffers[INPUT_INV_SCALE], rtol=0, atol=0)
        assert r["amax"] == float(one.dw.input_quantizer.amax)  # minmax: exact across ranks
