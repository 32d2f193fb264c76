import pytest

torch = pytest.importorskip("torch")

from int8kit.torch import fake_quant  # noqa: E402


def test_forward_is_symmetric_int8_with_scale_amax_over_127():
    amax = torch.tensor(1.27)
    x = torch.tensor([-2.0, -1.28, -1.0, -0.004, 0.0, 0.006, 0.5, 1.27, 3.0])
    y = fake_quant(x, amax)
    q = torch.round(y / 0.01)
    assert q.min() == -128 and q.max() == 127  # int8 range, -128 reachable
    assert torch.allclose(y, torch.clamp(torch.round(x / 0.01), -128, 127) * 0.01)


def test_ste_gradient_is_identity_inside_and_zero_outside():
    amax = torch.tensor(1.0)
    x = torch.tensor([-3.0, -1.0, -0.5, 0.0, 0.3, 0.999, 1.0, 1.001, 5.0], requires_grad=True)
    fake_quant(x, amax).backward(torch.arange(1.0, 10.0))
    expected = torch.tensor([0, 2, 3, 4, 5, 6, 7, 0, 0], dtype=torch.float32)
    assert torch.equal(x.grad, expected)


def test_learned_amax_gradient_sign():
    # Values above amax: growing amax moves the output up -> d sum(y) / d amax > 0.
    amax = torch.tensor(1.0, requires_grad=True)
    fake_quant(torch.full((10,), 4.0), amax, learn_amax=True).sum().backward()
    assert amax.grad > 0
    # Values below -amax: the output moves down as amax grows.
    amax = torch.tensor(1.0, requires_grad=True)
    fake_quant(torch.full((10,), -4.0), amax, learn_amax=True).sum().backward()
    assert amax.grad < 0
    # Loss pushing clipped outputs down (toward a target below them) shrinks amax.
    amax = torch.tensor(1.0, requires_grad=True)
    y = fake_quant(torch.full((10,), 4.0), amax, learn_amax=True)
    ((y - 0.5) ** 2).sum().backward()
    assert amax.grad > 0  # gradient descent lowers amax toward the target
    # Inside the range, the gradient is LSQ's (q - x/s)/127 per element.
    amax = torch.tensor(1.27, requires_grad=True)
    x = torch.tensor([0.004])  # x/s = 0.4 -> q = 0
    fake_quant(x, amax, learn_amax=True).sum().backward()
    assert amax.grad == pytest.approx((0.0 - 0.4) / 127, rel=1e-4)


def test_learned_amax_gradient_matches_finite_difference_for_clipped_values():
    x = torch.tensor([3.0, -3.0, 2.5])
    amax = torch.tensor(1.0, requires_grad=True)
    fake_quant(x, amax, learn_amax=True).sum().backward()
    eps = 1e-3
    fd = (
        fake_quant(x, torch.tensor(1.0 + eps)).sum() - fake_quant(x, torch.tensor(1.0)).sum()
    ) / eps
    assert float(amax.grad) == pytest.approx(float(fd), rel=0.02)


def test_per_channel_axis():
    w = torch.tensor([[1.0, -0.5], [10.0, 5.0]])
    amax = torch.tensor([1.0, 10.0])
    y0 = fake_quant(w, amax, axis=0)
    assert torch.allclose(y0, w, atol=10 / 127 / 2 + 1e-6)
    y1 = fake_quant(w, amax, axis=1)  # channel 0 clips at 1: 10 -> 1
    assert y1[1, 0] == pytest.approx(1.0)
