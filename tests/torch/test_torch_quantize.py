import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch_tiny  # noqa: E402
from torch import nn  # noqa: E402

import int8kit.torch as iq  # noqa: E402
from int8kit.calib import methods  # noqa: E402
from int8kit.calib.collector import HistogramCollector  # noqa: E402


def test_swap_covers_every_kind_and_keeps_modules_in_place():
    m = torch_tiny.tiny_model()
    names = iq.replace_modules(m, iq.QuantConfig())
    assert names == ["conv", "conv2", "add", "up", "maxpool", "avgpool", "gap", "fc"]
    assert type(m.conv2).__name__ == "QuantSamePadConv2d"  # subclass keeps its own forward
    assert isinstance(m.conv2, torch_tiny.SamePadConv2d)
    assert m.up.weight_quantizer.axis == 1  # ConvTranspose: output channels on axis 1
    assert m.conv.weight_quantizer.axis == 0 and m.fc.weight_quantizer.axis == 0
    assert not hasattr(m.maxpool, "weight_quantizer") and hasattr(m.gap, "input_quantizer")
    assert not isinstance(m.bn, iq.TensorQuantizer) and type(m.bn) is nn.BatchNorm2d

    k = torch_tiny.AllKinds()
    assert iq.replace_modules(k, iq.QuantConfig()) == ["c1", "p1", "c3", "p3", "fc"]
    assert {type(k.c1).__name__, type(k.c3).__name__} == {"QuantConv1d", "QuantConv3d"}


def test_exclude_regex_and_op_types():
    m = torch_tiny.tiny_model()
    names = iq.replace_modules(
        m, iq.QuantConfig(exclude=[r"^fc$", "pool"], op_types=["Conv2d", "Linear", "MaxPool"])
    )
    assert names == ["conv", "conv2"]
    assert type(m.fc) is nn.Linear and type(m.up) is nn.ConvTranspose2d


def test_config_validation_and_round_trip():
    c = iq.QuantConfig(method="percentile", percentile=99.9, exclude=["head"], per_channel=False)
    assert iq.QuantConfig.from_dict(c.to_dict()) == c
    for bad in (
        {"method": "kl"},
        {"percentile": 0},
        {"num_bins": 64},
        {"exclude": ["("]},
        {"op_types": ["Conv4d"]},
    ):
        with pytest.raises(ValueError):
            iq.QuantConfig(**bad)
    with pytest.raises(ValueError, match="no fields"):
        iq.QuantConfig.from_dict({"methd": "entropy"})


@pytest.mark.parametrize("method", methods.METHODS)
def test_calibrated_amax_equals_numpy_method_on_the_same_histogram(method):
    m = torch_tiny.calibrated(method)
    data = torch_tiny.batches()
    # The input of conv is the model input: rebuild its histogram with the numpy collector.
    ref = HistogramCollector(2048)
    for x in data:
        ref.collect(x.numpy())
    q = m.conv.input_quantizer
    counts, edges = q.collector.histogram
    np.testing.assert_array_equal(counts, ref.counts)
    np.testing.assert_array_equal(edges, ref.edges)
    expected = ref.amax if method == "minmax" else methods.compute_amax(method, counts, edges)
    assert float(q.amax) == pytest.approx(expected, rel=1e-6)


def test_torch_collector_growth_and_nonfinite_match_numpy():
    from int8kit.torch import TorchHistogramCollector

    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(1000, generator=g) * s for s in (0.0, 1.0, 3.0, 0.5, 40.0)]
    xs[2][:3] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    t, n = TorchHistogramCollector(256), HistogramCollector(256)
    for x in xs:
        t.collect(x)
        n.collect(x.numpy())
    np.testing.assert_array_equal(t.counts, n.counts)
    assert t.width == n.width and t.amax == n.amax
    assert t.stats.to_dict() == n.stats.to_dict()
    assert t.stats.nan == 1 and t.stats.inf == 2


@torch.no_grad()
def test_modes_off_quantize_calibrate():
    m = torch_tiny.calibrated("minmax")
    x = torch_tiny.batches(1, seed=7)[0]
    ref = torch_tiny.tiny_model()(x)
    iq.set_mode(m, "off")
    assert torch.equal(m(x), ref)
    iq.set_mode(m, "quantize")
    y = m(x)
    assert not torch.equal(y, ref)
    assert torch.allclose(y, ref, atol=0.05 * float(ref.abs().max()))
    iq.set_mode(m, "calibrate")  # passes tensors through while collecting
    assert torch.equal(m(x), ref)
    with pytest.raises(ValueError, match="mode"):
        iq.set_mode(m, "train")


def test_same_pad_subclass_reads_the_quantized_weight():
    m = torch_tiny.calibrated()
    conv = m.conv2
    x = torch.randn(1, 8, 6, 6)
    iq.set_mode(m, "quantize")
    w = conv.weight_quantizer(conv.weight)
    assert not torch.equal(w, conv.weight)
    qx = conv.input_quantizer(x)
    expected = torch.nn.functional.conv2d(torch.nn.functional.pad(qx, [1] * 4), w, conv.bias)
    assert torch.allclose(conv(x), expected, atol=1e-6)
    assert "weight" not in conv.__dict__  # the override lasts for the call only


def test_unused_quantizer_raises_with_advice():
    with pytest.raises(RuntimeError, match="forward_loop"):
        iq.quantize(torch_tiny.tiny_model(), forward_loop=lambda m: None)


def test_quantizers_of_unused_modules_stay_float_with_one_warning():
    m = torch_tiny.tiny_model()
    m.spare = nn.Linear(3, 3)  # defined, never called
    data = torch_tiny.batches(2)
    with pytest.warns(UserWarning, match="1 quantizers saw no calibration data.*spare"):
        iq.quantize(m, forward_loop=lambda mm: [mm(x) for x in data])
    assert m.spare.input_quantizer.mode == "off"
    assert "spare.input_quantizer" not in dict(iq.quantizers(m))


def test_quant_add_is_a_plain_add_until_configured():
    add = iq.QuantAdd()
    a, b = torch.randn(3), torch.randn(3)
    assert torch.equal(add(a, b), a + b)
    assert list(iq.quantizers(add)) == []


def test_import_int8kit_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, int8kit, int8kit.calib; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_repr_names_mode_and_amax():
    m = torch_tiny.calibrated()
    assert re.search(r"input, per-tensor, mode=quantize, method=entropy, amax=", repr(m.conv))
