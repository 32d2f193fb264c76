"""The default recipe (``--method auto``: depthwise equalization, centring, bias correction) on
graphs PyTorch's exporter writes: a MobileNetV3-style block (HardSwish, depthwise convs without
bias, squeeze-excite, a Linear head) and a BERT-style block (GELU, LayerNorm, attention). The
rewrites keep the FP32 function, so the int8 model stays close to FP32; a rewrite that broke the
function would leave SQNR far below these bounds."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from int8kit.data import DataConfig  # noqa: E402
from int8kit.workflow import QuantizeConfig, quantize_onnx  # noqa: E402


class MobileBlock(nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish()
        )
        self.expand = nn.Sequential(
            nn.Conv2d(16, 48, 1, bias=False), nn.BatchNorm2d(48), nn.Hardswish()
        )
        self.dw = nn.Sequential(
            nn.Conv2d(48, 48, 5, 1, 2, groups=48, bias=False), nn.BatchNorm2d(48), nn.ReLU()
        )
        self.se1, self.se2 = nn.Conv2d(48, 12, 1), nn.Conv2d(12, 48, 1)
        self.project = nn.Sequential(nn.Conv2d(48, 24, 1, bias=False), nn.BatchNorm2d(24))
        self.dw2 = nn.Conv2d(24, 24, 3, 1, 1, groups=24)  # with bias, reading a two-sided tensor
        self.head = nn.Linear(24, 10)
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.5, 0.5, generator=g)
                    m.running_var.uniform_(0.5, 2.0, generator=g)
                    m.weight.uniform_(0.2, 3.0, generator=g)  # channel ranges spread
                    m.bias.uniform_(-0.5, 0.5, generator=g)

    def forward(self, x):
        y = self.dw(self.expand(self.stem(x)))
        s = torch.sigmoid(self.se2(torch.relu(self.se1(y.mean((2, 3), keepdim=True)))))
        z = self.dw2(self.project(y * s))
        return self.head(z.mean((2, 3)))


class EncoderBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
        self.ln1, self.ln2 = nn.LayerNorm(32), nn.LayerNorm(32)
        self.ff = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32))

    def forward(self, x):
        h = self.ln1(x + self.attn(x, x, x, need_weights=False)[0])
        return self.ln2(h + self.ff(h))


def _export(module, shape, path):
    torch.manual_seed(0)
    module.eval()
    torch.onnx.export(module, torch.randn(*shape), str(path), input_names=["x"], dynamo=False)
    return str(path)


@pytest.mark.parametrize(
    "make,shape,min_sqnr",
    [(MobileBlock, (1, 3, 32, 32), 38.0), (EncoderBlock, (1, 8, 32), 40.0)],  # measured 43.5, 45.8
)
def test_default_recipe_keeps_exported_graphs_close_to_fp32(tmp_path, make, shape, min_sqnr):
    model = _export(make(), shape, tmp_path / "m.onnx")
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "d.npz", x=rng.standard_normal((80, *shape[1:])).astype(np.float32))
    r = quantize_onnx(
        QuantizeConfig(
            model,
            str(tmp_path / "m.int8.onnx"),
            data=DataConfig(str(tmp_path / "d.npz")),
            holdout=16,
        )
    )
    assert r.recipe["equalize_depthwise"] and r.recipe["center_one_sided"]
    assert "failed" not in r.equalize_depthwise and "failed" not in r.center
    # MobileBlock: both depthwise inputs (BN scales spread 15x) and the HardSwish/ReLU outputs
    # read by 1x1 convs; EncoderBlock: the GELU output read by the second Linear
    assert len(r.equalize_depthwise.get("equalized", {})) == (2 if make is MobileBlock else 0)
    assert r.center.get("centered")
    sqnr = min(v["sqnr_db"] for v in r.fidelity["trt-like"].values())
    assert sqnr > min_sqnr
