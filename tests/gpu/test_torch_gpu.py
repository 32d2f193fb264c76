"""int8kit.torch on a CUDA GPU: histograms built on the GPU equal the CPU ones; QAT runs there."""

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

sys.path.insert(0, str(Path(__file__).parents[1] / "torch"))
import torch_tiny  # noqa: E402

import int8kit.torch as iq  # noqa: E402
from int8kit.calib.collector import HistogramCollector  # noqa: E402


@pytest.fixture(autouse=True)
def no_tf32():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


BACKENDS = ["torch", "triton", "triton-atomic"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_gpu_histogram_equals_cpu_numpy_histogram(backend, monkeypatch):
    if backend.startswith("triton"):
        pytest.importorskip("triton")
    monkeypatch.setenv("INT8KIT_TORCH_HIST", backend)
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(100_000, generator=g) * s for s in (0.0, 1.0, 4.0, 0.3, 50.0)]
    xs[1][:5] = torch.tensor([float("nan")] * 3 + [float("inf"), -float("inf")])
    gpu, cpu = iq.TorchHistogramCollector(2048), HistogramCollector(2048)
    for x in xs:
        gpu.collect(x.cuda())
        cpu.collect(x.numpy())
    np.testing.assert_array_equal(gpu.counts, cpu.counts)
    assert gpu.width == cpu.width and gpu.amax == cpu.amax
    assert gpu.stats.to_dict() == cpu.stats.to_dict()
    for method in ("entropy", "percentile", "mse", "minmax"):
        assert gpu.compute_amax(method) == cpu.compute_amax(method)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hot_bins_and_growth_equal_numpy(backend, monkeypatch):
    """ReLU6-like data (a third zeros, a spike at the range's upper edge), 2**24+ values in one
    bin, and growth past the Triton kernel's bin limit: the same counts as numpy."""
    if backend.startswith("triton"):
        pytest.importorskip("triton")
    monkeypatch.setenv("INT8KIT_TORCH_HIST", backend)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(40_000_000, generator=g) * 6.0
    x[:18_000_000] = 0.0
    x[18_000_000:19_000_000] = 6.0
    gpu, cpu = iq.TorchHistogramCollector(2048), HistogramCollector(2048)
    for batch in (x, x[-1_000_000:] * 3.0, x[-1_000_000:] * 7.0):
        gpu.collect(batch.cuda())
        cpu.collect(batch.numpy())
    assert cpu.counts.size > 8192 and cpu.counts[0] > 2**24
    np.testing.assert_array_equal(gpu.counts, cpu.counts)
    assert gpu.compute_amax("entropy") == cpu.compute_amax("entropy")


def test_collect_does_not_wait_for_the_histogram():
    """One host read per batch (min and max); the counts stay on the GPU until read."""
    c = iq.TorchHistogramCollector(2048)
    x = torch.randn(1_000_000, device="cuda")
    c.collect(x)
    assert c._device_counts is not None and c._counts.sum() == 0
    assert c.counts.sum() == x.numel() and c._device_counts is None


def test_model_calibration_on_cuda_matches_cpu():
    data = torch_tiny.batches(4, batch=8)
    config = iq.QuantConfig(method="minmax")  # deeper tensors: compare the exact running max
    cpu = iq.quantize(torch_tiny.tiny_model(), config, lambda m: [m(x) for x in data])
    gpu_model = torch_tiny.tiny_model().cuda()
    gpu = iq.quantize(gpu_model, config, lambda m: [m(x.cuda()) for x in data])
    qc, qg = dict(iq.quantizers(cpu)), dict(iq.quantizers(gpu))
    # The model input is the same tensor: identical histogram and amax.
    np.testing.assert_array_equal(
        qc["conv.input_quantizer"].collector.counts, qg["conv.input_quantizer"].collector.counts
    )
    for name, q in qc.items():
        if not q.is_weight:  # deeper tensors differ by conv rounding only
            assert float(qg[name].amax) == pytest.approx(float(q.amax), rel=1e-4), name
            a, b = q.collector.counts, qg[name].collector.counts
            assert a.size == b.size and np.abs(a - b).sum() <= 1e-3 * a.sum(), name
    assert qg["conv.input_quantizer"].amax.device.type == "cuda"


def test_qat_step_and_export_on_gpu(tmp_path):
    data = [x.cuda() for x in torch_tiny.batches(2, batch=8)]
    m = iq.quantize(torch_tiny.tiny_model().cuda(), forward_loop=lambda mm: [mm(x) for x in data])
    iq.prepare_qat(m, fold_bn=True, learn_amax=True)
    out = iq.finetune(m, data, steps=5, lr=1e-3, loss="mse")
    assert np.isfinite(out["loss_last"])
    assert m.fc.input_quantizer.amax.device.type == "cuda"
    written = iq.export_onnx(m, torch.zeros(1, 3, 16, 16, device="cuda"), tmp_path / "g.int8.onnx")
    assert Path(written["onnx"]).stat().st_size > 0
