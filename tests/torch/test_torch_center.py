"""Centring one-sided inputs in the PyTorch path (`int8kit.torch.center`): the same FP32
function, half the int8 step of a ReLU output read by a conv or a Linear, a conv that pads with
zeros padding first (its zeros read -c too), nothing for a forward of its own that pads in a way
it cannot see, an export TensorRT builds (Sub -> Q -> DQ -> Conv, or Pad -> Sub -> Q -> DQ ->
Conv without pads; one scale per tensor, the shift in the bias constant), and a shift term that
follows the weights through QAT."""

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
from torch.nn import functional as F  # noqa: E402

import int8kit.torch as iq  # noqa: E402
from int8kit.cli import torch_cmd  # noqa: E402
from int8kit.onnx.center import MAX_NEGATIVE  # noqa: E402
from int8kit.recipes import DEFAULTS  # noqa: E402
from int8kit.torch import center, recipe  # noqa: E402
from int8kit.torch.functional import fake_quant  # noqa: E402
from int8kit.torch.modules import INPUT_SHIFT  # noqa: E402

OFF = {"bias_correction": False}  # the tests compare the centring alone


class ReluBlock(nn.Module):
    """Conv(3->6, 3x3, pads; reads the input: stays float) -> ReLU -> r, read by a 1x1 conv
    and a padded 3x3 conv (centred), a TF-"same" conv with padding=0 that pads in a forward of
    its own (kept), and a 1x1 conv reading the conv's output before the ReLU (two-sided)."""

    def __init__(self, seed=0, bn=False):
        super().__init__()
        torch.manual_seed(seed)
        self.c1 = nn.Conv2d(3, 6, 3, padding=1)
        self.pw = nn.Conv2d(6, 4, 1)
        self.bn = nn.BatchNorm2d(4) if bn else nn.Identity()
        self.c3 = nn.Conv2d(6, 4, 3, padding=1)
        self.same = torch_tiny.SamePadConv2d(6, 4, 3)
        self.pre = nn.Conv2d(6, 4, 1)
        if bn:
            with torch.no_grad():
                self.bn.running_mean.uniform_(-0.5, 0.5)
                self.bn.running_var.uniform_(0.5, 2.0)
                self.bn.weight.uniform_(0.5, 1.5)

    def forward(self, x):
        a = self.c1(x)
        r = torch.relu(a)
        return self.bn(self.pw(r)) + self.c3(r) + self.same(r) + self.pre(a)


class Pointwise(nn.Module):
    """Conv(3->16) -> ReLU -> 1x1 Conv(16->8) whose weights lie on their int8 grid (row amax 1,
    every weight k/127): its int8 error is the activation's alone."""

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.pw = nn.Conv2d(16, 8, 1)
        with torch.no_grad():
            k = torch.randint(-127, 128, (8, 16), generator=g).float() / 127
            k[:, 0] = 1.0
            self.pw.weight.copy_(k.reshape(8, 16, 1, 1))

    def forward(self, x):
        return self.pw(torch.relu(self.c1(x)))


class Tokens(nn.Module):
    """(N, T, 8) -> Linear (reads the input: float) -> GELU -> Linear (centred: GELU's -0.17)."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 5)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x) * 2))


def data(n=8, batch=8, shape=(3, 8, 8), seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, *shape, generator=g) for _ in range(n)]


def quantized(model, batches, **config):
    config = {"method": "minmax", **OFF, **config}
    return iq.quantize(model, iq.QuantConfig(**config), lambda m: [m(x) for x in batches])


def sq_error(model, fp32, batches):
    with torch.no_grad():
        return sum(float(((model(x) - fp32(x)) ** 2).sum()) for x in batches)


@pytest.mark.parametrize("method", ["minmax", "mse", "entropy"])
@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_the_fp32_function_is_unchanged(kind, method):
    fp32 = (ReluBlock() if kind == "conv" else Tokens()).eval()
    d = data() if kind == "conv" else data(shape=(6, 8))
    m = quantized(copy.deepcopy(fp32), d, method=method, center_one_sided=True)
    assert list(center.summary_of(m)["centered"]) == (["pw", "c3"] if kind == "conv" else ["fc2"])
    x = d[0] + 0.5
    for mode in ("off", "calibrate"):  # calibrate: the quantizers record the uncentred input
        iq.set_mode(m, mode)
        with torch.no_grad():
            torch.testing.assert_close(m(x), fp32(x), rtol=1e-5, atol=1e-5)
    iq.set_mode(m, "quantize")
    with torch.no_grad():
        y, ref = m(x), fp32(x)
    assert float((y - ref).norm()) < 0.05 * float(ref.norm())  # int8, close to FP32


def test_the_convs_are_centred_and_a_forward_that_pads_unseen_is_not():
    fp32 = ReluBlock().eval()
    d = data()
    plain = quantized(copy.deepcopy(fp32), d)
    m = quantized(copy.deepcopy(fp32), d, center_one_sided=True)
    summary = center.summary_of(m)
    assert list(summary["centered"]) == ["pw", "c3"]
    assert summary["kept"] == {
        "same": "its class has a forward of its own that pads (or changes) a constant input",
    }  # "pre" reads a two-sided input: not a candidate at all
    assert summary["centered"]["pw"]["zero_pad"] is None
    assert summary["centered"]["c3"]["zero_pad"] == [1, 1, 1, 1]
    for name in ("pw", "c3"):
        layer = getattr(m, name)
        amax = float(getattr(plain, name).input_quantizer.amax)  # ReLU: min 0, c = amax / 2 = a
        rec = summary["centered"][name]
        assert rec["min"] == 0.0 and rec["amax_before"] == pytest.approx(amax, rel=1e-6)
        assert rec["shift"] == pytest.approx(amax / 2, rel=1e-6)
        assert float(layer.input_quantizer.amax) == pytest.approx(amax / 2, rel=1e-6)  # half
        assert float(layer._buffers[INPUT_SHIFT]) == pytest.approx(amax / 2, rel=1e-6)
    for name in ("same", "pre"):
        assert INPUT_SHIFT not in getattr(m, name)._buffers
        assert float(getattr(m, name).input_quantizer.amax) == float(
            getattr(plain, name).input_quantizer.amax
        )
    # The rule is the ONNX path's: a minimum just past -MAX_NEGATIVE x amax is two-sided.
    lo = float(m.pre.input_quantizer.collector.stats.min)
    assert lo < -MAX_NEGATIVE * float(m.pre.input_quantizer.amax)
    assert center.summary_of(plain) == {}


class StaticSame(nn.Conv2d):
    """EfficientNet-PyTorch's Conv2dStaticSamePadding: a fixed zero pad (left, right, top,
    bottom) in a forward of its own, and padding=0."""

    def __init__(self, cin, cout, k, stride=1, pad=(0, 0, 0, 0), groups=1, twice=False):
        super().__init__(cin, cout, k, stride, groups=groups)
        self.static_padding = nn.ZeroPad2d(pad) if any(pad) else nn.Identity()
        self.twice = twice  # a forward that pads twice: not what `zero_pad` says

    def forward(self, x):
        x = self.static_padding(x)
        x = self.static_padding(x) if self.twice else x
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, 1, self.groups)


@pytest.mark.parametrize(
    "layer, centred",
    [
        (StaticSame(6, 4, 1), True),  # a 1x1 "same" conv pads nothing
        # stride 2, pad (0, 1): its zero pad child is seen, and the forward is checked to be
        # the convolution of the padded input
        (StaticSame(6, 4, 3, stride=2, pad=(0, 1, 0, 1)), True),
        (StaticSame(6, 6, 5, stride=2, pad=(1, 2, 1, 2), groups=6), True),  # depthwise
        (nn.Conv2d(6, 4, 3, padding=1, padding_mode="replicate"), True),  # c stays c
        (nn.Conv2d(6, 4, 4, padding="same"), True),  # pads (1, 2): torch's "same"
        (nn.Conv2d(6, 6, 3, stride=2, padding=1, groups=6), True),
        # a zero pad child the forward does not use as `zero_pad` assumes
        (StaticSame(6, 4, 3, pad=(1, 1, 1, 1), twice=True), False),
        (torch_tiny.SamePadConv2d(6, 4, 3), False),  # pads in its forward: not seen
    ],
)
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_a_conv_is_centred_where_it_keeps_a_constant_or_its_zero_padding_is_known(layer, centred):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.c1 = nn.Conv2d(3, 6, 3, padding=1)
            self.layer = layer

        def forward(self, x):
            return self.layer(torch.relu(self.c1(x)))

    fp32 = Net().eval()
    d = data()
    m = quantized(copy.deepcopy(fp32), d, center_one_sided=True)
    summary = center.summary_of(m)
    assert ("layer" in summary["centered"]) is centred
    assert ("layer" in summary["kept"]) is not centred
    for x in (d[0], d[0][..., :7, :7]):  # odd and even sizes (a stride-2 pad's far side)
        iq.set_mode(m, "off")
        with torch.no_grad():
            torch.testing.assert_close(m(x), fp32(x), rtol=1e-5, atol=1e-5)
        iq.set_mode(m, "quantize")
        with torch.no_grad():
            y, ref = m(x), fp32(x)
        assert float((y - ref).norm()) < 0.05 * float(ref.norm())


def test_the_int8_error_of_a_relu_block_drops_with_the_halved_step():
    fp32 = Pointwise().eval()
    d = data(shape=(3, 8, 8))
    plain = quantized(copy.deepcopy(fp32), d)
    m = quantized(copy.deepcopy(fp32), d, center_one_sided=True)
    # The weights are on their grid: the error is the ReLU output's rounding, whose step halves
    # (uniform rounding noise: its power / 4; exact zeros stay exact, at -127 steps now).
    assert float(m.pw.input_quantizer.amax) == pytest.approx(
        float(plain.pw.input_quantizer.amax) / 2, rel=1e-6
    )
    held = data(4, seed=5)
    before, after = sq_error(plain, fp32, held), sq_error(m, fp32, held)
    assert after < 0.4 * before, (before, after)


def _run(path, x):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), so).run(None, {"input": x.numpy()})[0]


@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_export_writes_sub_then_per_tensor_qdq_and_the_shift_in_the_bias(kind, tmp_path):
    fp32 = (ReluBlock() if kind == "conv" else Tokens()).eval()
    d = data() if kind == "conv" else data(shape=(6, 8))
    m = quantized(copy.deepcopy(fp32), d, center_one_sided=True)
    layer = m.pw if kind == "conv" else m.fc2
    c = float(layer._buffers[INPUT_SHIFT])
    written = iq.export_onnx(m, d[0][:1], tmp_path / "c.int8.onnx")
    graph = onnx.load(written["onnx"]).graph
    producer = {o: n for n in graph.node for o in n.output}
    consts = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    scope = "/pw/" if kind == "conv" else "/fc2/"
    op = next(n for n in graph.node if n.name.startswith(scope) and n.op_type in ("Conv", "MatMul"))
    bias = op.input[2] if op.op_type == "Conv" else None
    if op.op_type == "MatMul":  # (N, T, C) input: MatMul, then Add of the bias
        add = next(n for n in graph.node if op.output[0] in n.input and n.op_type == "Add")
        bias = next(i for i in add.input if i != op.output[0])
    dq = producer[op.input[0]]
    q = producer[dq.input[0]]
    sub = producer[q.input[0]]
    assert (dq.op_type, q.op_type, sub.op_type) == ("DequantizeLinear", "QuantizeLinear", "Sub")
    assert producer[sub.input[0]].op_type == ("Relu" if kind == "conv" else "Mul")  # GELU's
    np.testing.assert_allclose(consts[sub.input[1]], c, rtol=1e-6)
    assert consts[q.input[1]].shape == ()  # one scale per activation tensor
    np.testing.assert_allclose(consts[q.input[1]], float(layer.input_quantizer.amax) / 127, 1e-6)
    # The bias is a constant holding b + c x (sum of the weights over the inputs).
    w = layer.weight.detach()
    want = layer.bias.detach() + c * w.flatten(1).sum(1)
    np.testing.assert_allclose(consts[bias], want.numpy(), rtol=1e-5, atol=1e-6)
    assert not [n for n in graph.node if n.op_type == "ReduceSum"]
    x = data(1, shape=d[0].shape[1:], seed=9)[0]
    with torch.no_grad():
        want_q, ref = m(x).numpy(), fp32(x).numpy()
    np.testing.assert_allclose(_run(written["onnx"], x), want_q, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(_run(written["fp32"], x), ref, rtol=1e-4, atol=1e-4)
    # ranges.json names the shift; the cache scales the tensor the FP32 export's layer reads.
    name = ("pw" if kind == "conv" else "fc2") + ".input_quantizer"
    entry = json.loads(open(written["ranges"]).read())["tensors"][name]
    assert entry["shift"] == pytest.approx(c) and entry["method"] == "minmax+centered"
    assert entry["onnx_tensor"] == sub.output[0]
    assert f"{sub.output[0]}: " in open(written["cache"]).read()


def test_qat_keeps_the_fp32_function_as_the_weights_change():
    fp32 = ReluBlock(bn=True).eval()
    d = data()
    m = quantized(copy.deepcopy(fp32), d, center_one_sided=True)
    assert list(center.summary_of(m)["centered"]) == ["pw", "c3"]
    iq.prepare_qat(m, fold_bn=True)  # the BN after pw folds into its weights and bias
    assert isinstance(m.bn, nn.Identity)
    w0 = m.pw.weight.detach().clone()
    g = torch.Generator().manual_seed(3)
    targets = [torch.randn(8, 4, 8, 8, generator=g) for _ in d]  # far from the model: big steps
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for x, t in zip(d, targets, strict=True):
        loss = F.mse_loss(m(x), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float((m.pw.weight.detach() - w0).abs().max()) > 1e-3  # the weights moved
    assert m.pw.bias.grad is not None and m.pw.weight.grad is not None
    assert m.c3.weight.grad is not None

    def plain(x):  # the FP32 network of the current weights, without any shift
        a = m.c1(x)
        r = torch.relu(a)
        return (
            F.conv2d(r, m.pw.weight, m.pw.bias)
            + F.conv2d(r, m.c3.weight, m.c3.bias, padding=1)
            + F.conv2d(F.pad(r, [1, 1, 1, 1]), m.same.weight, m.same.bias)
            + F.conv2d(a, m.pre.weight, m.pre.bias)
        )

    x = data(1, seed=11)[0]
    iq.set_mode(m, "off")
    with torch.no_grad():
        torch.testing.assert_close(m(x), plain(x), rtol=1e-5, atol=1e-5)
    # Quantized: the centred input, its weights' int8 grid, and c x the current float weights.
    # The padded conv: its zeros padded first, then shifted with the rest, no padding after.
    iq.set_mode(m, "quantize")
    with torch.no_grad():
        r = torch.relu(m.c1(x))
        for layer, pad in ((m.pw, [0, 0, 0, 0]), (m.c3, [1, 1, 1, 1])):
            c, q, w = layer._buffers[INPUT_SHIFT], layer.input_quantizer, layer.weight
            wq = fake_quant(w, layer.weight_quantizer.weight_amax(w), 0)
            xq = fake_quant(F.pad(r, pad) - c, q.amax)
            want = F.conv2d(xq, wq, layer.bias + c * w.flatten(1).sum(1))
            torch.testing.assert_close(layer(r), want, rtol=1e-5, atol=1e-5)


def test_recalibration_state_dict_and_standalone_call():
    fp32 = ReluBlock().eval()
    d = data()
    m = quantized(copy.deepcopy(fp32), d, center_one_sided=True)
    amax, c = float(m.pw.input_quantizer.amax), float(m.pw._buffers[INPUT_SHIFT])
    # Called again: the same choice (the shift undone first, not applied twice).
    again = center.center_one_sided(m)
    assert list(again.centered) == ["pw", "c3"]
    assert float(m.pw.input_quantizer.amax) == pytest.approx(amax, rel=1e-6)
    assert float(m.pw._buffers[INPUT_SHIFT]) == pytest.approx(c, rel=1e-6)
    # A fresh quantized model takes the shift from the state dict.
    fresh = iq.quantize(copy.deepcopy(fp32), iq.QuantConfig(method="minmax", **OFF))
    fresh.load_state_dict(m.state_dict())
    iq.set_mode(fresh, "quantize")
    x = d[0]
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), m(x))
    # Calibrated afresh (load_amax), the old shift goes: it was chosen on the old ranges.
    iq.set_mode(m, "calibrate")
    with torch.no_grad():
        [m(x) for x in d]
    iq.load_amax(m)
    assert INPUT_SHIFT not in m.pw._buffers
    assert float(m.pw.input_quantizer.amax) == pytest.approx(2 * c, rel=1e-6)


def test_recipe_config_and_cli_flag():
    # None: the recipe's value with method auto, off with an explicit method.
    resolved, record = recipe.resolve(iq.QuantConfig(), ReluBlock())
    assert resolved.center_one_sided is DEFAULTS["conv"].center_one_sided
    assert "center_one_sided" not in record.get("not_in_torch_path", [])
    for given in (True, False):
        resolved, _ = recipe.resolve(iq.QuantConfig(center_one_sided=given), ReluBlock())
        assert resolved.center_one_sided is given
    resolved, _ = recipe.resolve(iq.QuantConfig(method="mse"), ReluBlock())
    assert resolved.center_one_sided is False
    c = iq.QuantConfig(center_one_sided=True)
    assert iq.QuantConfig.from_dict(c.to_dict()) == c
    old = iq.QuantConfig(method="mse").to_dict()
    del old["center_one_sided"]
    assert iq.QuantConfig.from_dict(old).center_one_sided is False
    # The default recipe centres (it is the conv row's choice).
    m = iq.quantize(ReluBlock().eval(), iq.QuantConfig(**OFF), lambda mm: [mm(x) for x in data()])
    assert bool(center.summary_of(m).get("centered")) is DEFAULTS["conv"].center_one_sided
    parser = argparse.ArgumentParser()
    torch_cmd.register(parser.add_subparsers())
    base = ["torch", "quantize", "f:g", "--calib", "c", "-o", "o.onnx"]
    assert parser.parse_args(base).center_one_sided is None
    assert parser.parse_args([*base, "--center-one-sided"]).center_one_sided is True
    assert parser.parse_args([*base, "--no-center-one-sided"]).center_one_sided is False


FACTORY = """
import test_torch_center

def build():
    return test_torch_center.ReluBlock().eval()
"""


def test_cli_records_the_centring(tmp_path, monkeypatch, capsys):
    images = torch_tiny.cli_inputs(tmp_path, 6)
    (tmp_path / "ctrfactory.py").write_text(FACTORY)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out" / "c.int8.onnx"
    argv = ["torch", "quantize", "ctrfactory:build", "--calib", str(images), "-o", str(out)]
    argv += ["--input-shape", "1x3x16x16", "--batch-size", "3", "--method", "minmax"]
    parser = argparse.ArgumentParser()
    torch_cmd.register(parser.add_subparsers())
    args = parser.parse_args([*argv, "--center-one-sided"])
    assert args.func(args) == 0
    assert "one-sided inputs centred: 2 layers (int8 step x0.5, median)" in capsys.readouterr().out
    summary = json.loads((out.parent / "c.torch.json").read_text())
    assert summary["config"]["center_one_sided"] is True
    assert list(summary["center_one_sided"]["centered"]) == ["pw", "c3"]
    assert "same" in summary["center_one_sided"]["kept"]


class PadsInput(nn.Module):
    """The network input read by a depthwise 3x3 conv with stride 2 that pads (1, 1) and a 1x1
    conv: with the input layers quantized, the calibrated input is the one the convs read."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.dw = nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4)
        self.pw = nn.Conv2d(4, 3, 1)
        with torch.no_grad():  # weights on their int8 grid (amax 1 per output channel)
            for layer in (self.dw, self.pw):
                w = layer.weight
                k = torch.randint(-127, 128, w.shape, generator=g).float() / 127
                k.flatten(1)[:, 0] = 1.0
                w.copy_(k)

    def forward(self, x):
        return self.dw(x), self.pw(x)


def test_a_padded_conv_quantizes_its_padded_zeros_as_minus_c():
    """Inputs of 0 and 4 only: c = a = 2, so x - c = +-2 and the pad value -2 are all on the
    int8 grid (+-127 steps) like the weights, and the int8 conv equals the FP32 conv at every
    output, the border ones included; a pad value of 0 after the shift would be off there."""
    g = torch.Generator().manual_seed(2)
    d = [4.0 * (torch.rand(4, 4, 10, 10, generator=g) > 0.5) for _ in range(4)]
    fp32 = PadsInput().eval()
    m = quantized(copy.deepcopy(fp32), d, center_one_sided=True, quantize_input_layers=True)
    rec = center.summary_of(m)["centered"]
    assert rec["dw"]["zero_pad"] == [1, 1, 1, 1] and rec["pw"]["zero_pad"] is None
    assert rec["dw"]["shift"] == pytest.approx(2.0) and rec["pw"]["shift"] == pytest.approx(2.0)
    x = 4.0 * (torch.rand(2, 4, 10, 10, generator=g) > 0.5)
    iq.set_mode(m, "quantize")
    with torch.no_grad():
        y, ref = m(x)[0], fp32(x)[0]
        torch.testing.assert_close(y, ref, rtol=0, atol=1e-5)
        # What a pad value of 0 (zeros padded after the shift) would compute instead:
        # c x the weights that read the padding more at every border output.
        w = m.dw.weight
        b = m.dw.bias + 2.0 * w.sum((1, 2, 3))
        shifted = F.conv2d(F.pad(x - 2.0, [1, 1, 1, 1]), w, b, 2, groups=4)
    off = (shifted - ref).abs()
    assert float(off[..., 1:, 1:].max()) < 1e-5  # stride 2 from 10x10: only top / left pad read
    assert float(off[..., 0, :].min()) > 1e-3 and float(off[..., :, 0].min()) > 1e-3


def test_a_padded_conv_counts_its_zeros_in_the_range_like_the_onnx_path(tmp_path):
    """An input with min > 0 (a sigmoid): a conv that pads reads zeros too, so its range is
    [0, amax] (c = a = amax / 2, the pad value -c = -a on the grid); a 1x1 conv reading the same
    input gets c = (amax + min) / 2. The ONNX path, given this network's FP32 export (Pad ->
    Conv for the static "same" conv), picks the same shifts: it observes the Pad's output."""
    from int8kit.data import DataConfig
    from int8kit.workflow import CalibConfig, QuantizeConfig, quantize_onnx

    class Sig(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.c1 = nn.Conv2d(3, 6, 3, padding=1)
            self.dw = StaticSame(6, 6, 3, stride=2, pad=(0, 1, 0, 1), groups=6)
            self.pw = nn.Conv2d(6, 4, 1)

        def forward(self, x):
            s = torch.sigmoid(self.c1(x) * 0.5)
            return torch.cat([self.dw(s).flatten(1), self.pw(s).flatten(1)], 1)

    fp32 = Sig().eval()
    d = data(8, batch=4)
    m = quantized(copy.deepcopy(fp32), d, center_one_sided=True)
    rec = center.summary_of(m)["centered"]
    lo, amax = rec["pw"]["min"], rec["pw"]["amax_before"]
    assert lo > 0.01 and rec["dw"]["min"] == lo and rec["dw"]["amax_before"] == amax
    assert rec["dw"]["shift"] == pytest.approx(amax / 2, rel=1e-6)
    assert float(m.dw.input_quantizer.amax) == pytest.approx(amax / 2, rel=1e-6)
    assert rec["pw"]["shift"] == pytest.approx((amax + lo) / 2, rel=1e-6)
    assert float(m.pw.input_quantizer.amax) == pytest.approx((amax - lo) / 2, rel=1e-6)
    iq.set_mode(m, "off")
    with torch.no_grad():
        torch.testing.assert_close(m(d[0]), fp32(d[0]), rtol=1e-5, atol=1e-5)

    path = tmp_path / "sig.onnx"
    torch.onnx.export(fp32, (d[0][:1],), str(path), dynamo=False, input_names=["input"])
    assert "Pad" in [n.op_type for n in onnx.load(str(path)).graph.node]
    np.savez(tmp_path / "d.npz", input=torch.cat(d).numpy())
    config = QuantizeConfig(
        str(path),
        str(tmp_path / "sig.int8.onnx"),
        data=DataConfig(str(tmp_path / "d.npz")),
        calib=CalibConfig(method="minmax"),
        holdout=0,
        bias_correction=False,
        equalize_depthwise=False,
        center_one_sided=True,
    )
    shifts = sorted(r["shift"] for r in quantize_onnx(config).center["centered"].values())
    want = sorted([rec["dw"]["shift"], rec["pw"]["shift"]])
    np.testing.assert_allclose(shifts, want, rtol=1e-5)


def test_export_of_a_padded_conv_pads_then_subtracts_before_its_qdq(tmp_path):
    """Pad(zeros) -> Sub(c) -> Q -> DQ -> Conv without pads, the pads and the bias constants,
    one scale for the tensor; ONNX Runtime computes what the module computes, FP32 and int8."""
    fp32 = ReluBlock().eval()
    d = data()
    m = quantized(copy.deepcopy(fp32), d, center_one_sided=True)
    c = float(m.c3._buffers[INPUT_SHIFT])
    written = iq.export_onnx(m, d[0][:1], tmp_path / "p.int8.onnx")
    graph = onnx.load(written["onnx"]).graph
    producer = {o: n for n in graph.node for o in n.output}
    consts = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    conv = next(n for n in graph.node if n.name.startswith("/c3/") and n.op_type == "Conv")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in conv.attribute}
    assert not any(attrs.get("pads", []))
    dq = producer[conv.input[0]]
    q = producer[dq.input[0]]
    sub = producer[q.input[0]]
    pad = producer[sub.input[0]]
    assert [n.op_type for n in (dq, q, sub, pad)] == [
        "DequantizeLinear",
        "QuantizeLinear",
        "Sub",
        "Pad",
    ]
    assert producer[pad.input[0]].op_type == "Relu"
    # ONNX pads: (begin of each axis, end of each axis), constants; pad value 0 (no input, or 0)
    np.testing.assert_array_equal(consts[pad.input[1]], [0, 0, 1, 1, 0, 0, 1, 1])
    assert len(pad.input) < 3 or not pad.input[2] or float(consts[pad.input[2]]) == 0.0
    np.testing.assert_allclose(consts[sub.input[1]], c, rtol=1e-6)
    assert consts[q.input[1]].shape == ()
    np.testing.assert_allclose(consts[q.input[1]], float(m.c3.input_quantizer.amax) / 127, 1e-6)
    w = m.c3.weight.detach()
    want = m.c3.bias.detach() + c * w.flatten(1).sum(1)
    np.testing.assert_allclose(consts[conv.input[2]], want.numpy(), rtol=1e-5, atol=1e-6)
    x = data(1, shape=(3, 8, 8), seed=9)[0]
    with torch.no_grad():
        want_q, ref = m(x).numpy(), fp32(x).numpy()
    np.testing.assert_allclose(_run(written["onnx"], x), want_q, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(_run(written["fp32"], x), ref, rtol=1e-4, atol=1e-4)
