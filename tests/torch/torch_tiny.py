"""Tiny PyTorch models for the int8kit.torch tests, built in code."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import int8kit.torch as iq


class SamePadConv2d(nn.Conv2d):
    """A Conv2d subclass with its own forward (TF 'same' padding), like EfficientNet's."""

    def forward(self, x):
        x = F.pad(x, [1, 1, 1, 1])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class TinyNet(nn.Module):
    """conv-bn-relu, residual QuantAdd, ConvTranspose, max/avg pools, linear head."""

    def __init__(self, classes: int = 5):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = SamePadConv2d(8, 8, 3)
        self.add = iq.QuantAdd()
        self.up = nn.ConvTranspose2d(8, 6, 2, stride=2)
        self.maxpool = nn.MaxPool2d(2)
        self.avgpool = nn.AvgPool2d(2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, classes)

    def forward(self, x):
        y = F.relu(self.bn(self.conv(x)))
        y = self.add(self.conv2(y), y)
        y = self.avgpool(self.maxpool(self.up(y)))
        return self.fc(self.gap(y).flatten(1))


class AllKinds(nn.Module):
    """One of each swappable module kind: Conv1d, Conv3d beside TinyNet's."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(2, 4, 3)
        self.p1 = nn.AvgPool1d(2)
        self.c3 = nn.Conv3d(2, 4, 3)
        self.p3 = nn.MaxPool3d(2)
        self.fc = nn.Linear(4, 3)

    def forward(self, x1, x3):
        a = self.p1(self.c1(x1)).mean(-1)
        b = self.p3(self.c3(x3)).flatten(2).mean(-1)
        return self.fc(a + b)


def tiny_model(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    m = TinyNet()
    with torch.no_grad():  # non-trivial BN statistics so folding changes weights
        m.bn.running_mean.uniform_(-0.5, 0.5)
        m.bn.running_var.uniform_(0.5, 2.0)
        m.bn.weight.uniform_(0.5, 1.5)
        m.bn.bias.uniform_(-0.2, 0.2)
    return m.eval()


def batches(n: int = 4, batch: int = 4, size: int = 16, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, size, size, generator=g) for _ in range(n)]


def calibrated(method: str = "entropy", seed: int = 0, **config) -> TinyNet:
    """TinyNet calibrated on `batches()`. The stem is quantized and biases are not corrected
    unless ``config`` says otherwise: the mechanics tests read the stem conv's quantizers and
    the exact quantized formula (tests/torch/test_torch_recipe.py covers the defaults)."""
    config = {"quantize_input_layers": True, "bias_correction": False, **config}
    data = batches()
    return iq.quantize(
        tiny_model(seed),
        iq.QuantConfig(method=method, **config),
        forward_loop=lambda m: [m(x) for x in data],
    )


FACTORY = """
import torch_tiny

def build():
    return torch_tiny.tiny_model()
"""


def cli_inputs(folder, n_images: int):
    """Photo crops and a ``tinyfactory:build`` module in ``folder``, for ``int8kit torch
    quantize`` tests; the images folder (skips where opencv or scikit-image is missing)."""
    import pytest

    data = pytest.importorskip("int8kit.data")
    pytest.importorskip("cv2")
    pytest.importorskip("skimage")
    images = folder / "images"
    data.write_photo_crops(images, n_images, size=(40, 40), seed=0)
    (folder / "tinyfactory.py").write_text(FACTORY)
    return images
