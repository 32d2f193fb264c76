import pytest

torch = pytest.importorskip("torch")

import torch_tiny  # noqa: E402
from torch import nn  # noqa: E402

import int8kit.torch as iq  # noqa: E402


@torch.no_grad()
def test_conv_bn_pairs_found_during_calibration_and_folded_exactly():
    m = torch_tiny.calibrated()
    assert m._int8kit_conv_bn == [("conv", "bn")]
    x = torch_tiny.batches(1, seed=5)[0]
    ref = torch_tiny.tiny_model()(x)
    iq.prepare_qat(m, fold_bn=True)
    assert isinstance(m.bn, nn.Identity) and m.conv.bias is not None
    iq.set_mode(m, "off")
    torch.testing.assert_close(m(x), ref, atol=1e-5, rtol=1e-5)
    iq.set_mode(m, "quantize")
    # The weight quantizer now sees the folded weights (what TensorRT quantizes).
    m(x)
    expected = m.conv.weight.abs().amax(dim=(1, 2, 3))
    torch.testing.assert_close(m.conv.weight_quantizer.amax, expected)


def test_fold_with_example_input_and_freeze_bn():
    m = torch_tiny.tiny_model()
    iq.replace_modules(m, iq.QuantConfig())
    assert iq.find_conv_bn_pairs(m, torch.zeros(1, 3, 8, 8)) == [("conv", "bn")]
    m2 = torch_tiny.calibrated()
    iq.prepare_qat(m2, fold_bn=False, freeze_bn=True)
    m2.train()
    assert not m2.bn.training and m2.conv.training
    mean = m2.bn.running_mean.clone()
    m2(torch_tiny.batches(1)[0])
    assert torch.equal(m2.bn.running_mean, mean)


def test_prepare_qat_without_pairs_explains():
    m = torch_tiny.tiny_model()
    iq.replace_modules(m, iq.QuantConfig())
    with pytest.raises(ValueError, match="example_input"):
        iq.prepare_qat(m)


def test_finetune_distillation_lowers_loss_and_learns_amax(tmp_path):
    torch.manual_seed(0)
    m = torch_tiny.calibrated("entropy")
    teacher = torch_tiny.tiny_model()
    iq.prepare_qat(m, learn_amax=True)
    assert isinstance(m.fc.input_quantizer.amax, nn.Parameter)
    before = float(m.fc.input_quantizer.amax.detach())
    data = torch_tiny.batches(4, batch=8, seed=2)
    result = iq.finetune(m, data, steps=40, lr=1e-3, teacher=teacher, loss="mse")
    assert result["steps"] == 40
    assert result["loss_last"] < result["loss_first"]
    assert float(m.fc.input_quantizer.amax.detach()) != before
    written = iq.export_onnx(m, torch.zeros(1, 3, 16, 16), tmp_path / "qat.int8.onnx")
    import onnx

    onnx.checker.check_model(onnx.load(written["onnx"]), full_check=True)


def test_finetune_default_teacher_and_kl():
    m = iq.prepare_qat(torch_tiny.calibrated())
    out = iq.finetune(m, torch_tiny.batches(2), steps=4, lr=1e-4, loss="kl")
    assert out["loss_first"] >= 0
    with pytest.raises(ValueError, match="yielded nothing"):
        iq.finetune(m, iter([]), steps=2)
