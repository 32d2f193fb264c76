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
from int8kit.torch import histogram, stem  # noqa: E402


@pytest.fixture(autouse=True)
def no_tf32():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


BACKENDS = ["cuda", "torch", "triton", "triton-atomic"]


def _use(backend, monkeypatch):
    if backend.startswith("triton"):
        pytest.importorskip("triton")
    monkeypatch.setenv("INT8KIT_TORCH_HIST", backend)
    if backend == "cuda" and not histogram.device_rule(torch.zeros(1, device="cuda")):
        pytest.fail(f"the CUDA kernels did not compile: {histogram._FAILED.get('cuda')}")


def _assert_same(gpu, cpu):
    assert (gpu.counts is None) == (cpu.counts is None)
    if cpu.counts is not None:
        np.testing.assert_array_equal(gpu.counts, cpu.counts)
    assert gpu.width == cpu.width and gpu.amax == cpu.amax
    assert gpu._pending_zeros == cpu._pending_zeros
    assert gpu.stats.to_dict() == cpu.stats.to_dict()


@pytest.mark.parametrize("backend", BACKENDS)
def test_gpu_histogram_equals_cpu_numpy_histogram(backend, monkeypatch):
    _use(backend, monkeypatch)
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(100_000, generator=g) * s for s in (0.0, 1.0, 4.0, 0.3, 50.0)]
    xs[1][:5] = torch.tensor([float("nan")] * 3 + [float("inf"), -float("inf")])
    gpu, cpu = iq.TorchHistogramCollector(2048), HistogramCollector(2048)
    for x in xs:
        gpu.collect(x.cuda())
        cpu.collect(x.numpy())
    _assert_same(gpu, cpu)
    for method in ("entropy", "percentile", "mse", "minmax"):
        assert gpu.compute_amax(method) == cpu.compute_amax(method)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hot_bins_and_growth_equal_numpy(backend, monkeypatch):
    """ReLU6-like data (a third zeros, a spike at the range's upper edge), 2**24+ values in one
    bin, and growth past the Triton kernel's bin limit: the same counts as numpy."""
    _use(backend, monkeypatch)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(40_000_000, generator=g) * 6.0
    x[:18_000_000] = 0.0
    x[18_000_000:19_000_000] = 6.0
    gpu, cpu = iq.TorchHistogramCollector(2048), HistogramCollector(2048)
    for batch in (x, x[-1_000_000:] * 3.0, x[-1_000_000:] * 7.0):
        gpu.collect(batch.cuda())
        cpu.collect(batch.numpy())
    assert cpu.counts.size > 8192 and cpu.counts[0] > 2**24
    _assert_same(gpu, cpu)
    assert gpu.compute_amax("entropy") == cpu.compute_amax("entropy")


def _random_batches(seed: int) -> list[torch.Tensor]:
    """Batches that walk every branch of the range rule: zeros before a range, NaN/Inf (and a
    batch of nothing else), ReLU6 plateaus, growth, merging past MAX_BINS (outliers 100x to 1e7x
    the first range), tiny and misaligned tensors, values on bin edges."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for k in range(int(torch.randint(4, 9, (1,), generator=g))):
        kind = int(torch.randint(0, 8, (1,), generator=g))
        n = int(torch.randint(1, 300_000, (1,), generator=g)) if k else 500_000
        x = torch.randn(n + 1, generator=g)[1:]  # a view one float past the start: misaligned
        if kind == 0:
            x = torch.zeros(n)
        elif kind == 1:
            x = (x * 2).clamp(0, 6)  # ReLU6
        elif kind == 2:
            x = x * float(10 ** torch.randint(1, 8, (1,), generator=g))
        elif kind == 3:
            x = x.clone()
            x[:: max(1, n // 7)] = float("nan")
            x[1 :: max(1, n // 5)] = -float("inf")
        elif kind == 4:
            x = torch.full((n,), float("nan"))
        elif kind == 5:  # multiples of a width: values on bin edges
            x = torch.randint(-4096, 4096, (n,), generator=g).float() * (3.0 / 2048)
        elif kind == 6:
            x = x[: int(torch.randint(1, 6, (1,), generator=g))]
        out.append(x)
    return out


@pytest.mark.parametrize("seed", range(12))
def test_device_range_rule_equals_numpy_on_random_batch_sequences(seed, monkeypatch):
    _use("cuda", monkeypatch)
    for bins in (2048, 128):
        gpu, cpu = iq.TorchHistogramCollector(bins), HistogramCollector(bins)
        for x in _random_batches(seed):
            gpu.collect(x.cuda())
            cpu.collect(x.numpy())
        _assert_same(gpu, cpu)


def test_merging_past_max_bins_and_reading_midway_equal_numpy(monkeypatch):
    """Outliers that merge neighbouring bins (x4, then x2**20), a read in the middle (the device
    state is rebuilt from the host one), a half-precision batch, keep_histogram=False."""
    _use("cuda", monkeypatch)
    g = torch.Generator().manual_seed(3)
    xs = [torch.randn(1_000_000, generator=g) for _ in range(5)]
    xs[1][7] = 1.5e3
    xs[3][9] = -3e9
    gpu, cpu = iq.TorchHistogramCollector(2048), HistogramCollector(2048)
    for i, x in enumerate(xs):
        gpu.collect(x.cuda())
        cpu.collect(x.numpy())
        if i == 2:
            _assert_same(gpu, cpu)
    _assert_same(gpu, cpu)
    assert cpu.counts.size <= histogram.MAX_BINS and cpu.width > 1e3 / 2048
    h = torch.randn(300_000, generator=g).half()
    gpu.collect(h.cuda())
    cpu.collect(h.float().numpy())
    _assert_same(gpu, cpu)
    gpu, cpu = (
        iq.TorchHistogramCollector(2048, keep_histogram=False),
        HistogramCollector(2048, keep_histogram=False),
    )
    for x in xs:
        gpu.collect(x.cuda())
        cpu.collect(x.numpy())
    _assert_same(gpu, cpu)


def test_collect_never_waits_for_the_gpu():
    """No host read per batch: collecting under CUDA's sync-debug mode "error" raises nothing
    (growth, merging and NaN included); reading the result copies the state back once."""
    if not histogram.device_rule(torch.zeros(1, device="cuda")):
        pytest.fail(f"the CUDA kernels did not compile: {histogram._FAILED.get('cuda')}")
    g = torch.Generator(device="cuda").manual_seed(0)
    xs = [torch.randn(1_000_000, device="cuda", generator=g) * s for s in (1, 3, 500, 0.1)]
    xs[2][0] = float("nan")
    c, ref = iq.TorchHistogramCollector(2048), HistogramCollector(2048)
    c.collect(torch.zeros(10, device="cuda"))  # makes the device state (a host-to-device copy)
    ref.collect(np.zeros(10, np.float32))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for x in xs:
            c.collect(x)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert isinstance(c.__dict__["_device"], histogram.DeviceHistogram)
    for x in xs:
        ref.collect(x.cpu().numpy())
    _assert_same(c, ref)
    assert c.__dict__["_device"] is None


def test_model_calibration_on_cuda_matches_cpu():
    data = torch_tiny.batches(4, batch=8)
    # minmax: deeper tensors compare by the exact running max; the stem conv quantized (its
    # input is the model input, the same tensor on both devices) and no bias-correction pass.
    config = iq.QuantConfig(method="minmax", quantize_input_layers=True, bias_correction=False)
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


def test_every_tensor_stays_on_the_gpu_with_the_default_recipe():
    """The float stem's quantizers never run and a bias shift can be loaded from a CPU state
    dict: neither may leave a tensor on the CPU (DDP's NCCL broadcast of buffers refuses it)."""
    data = [x.cuda() for x in torch_tiny.batches(2, batch=8)]
    m = iq.quantize(torch_tiny.tiny_model().cuda(), forward_loop=lambda mm: [mm(x) for x in data])
    assert stem.input_layers(m) == ["conv"] and not m.conv.input_quantizer.enabled
    state = {k: v.cpu() for k, v in m.state_dict().items()}
    assert any(k.endswith(".bias_shift") for k in state)
    iq.prepare_qat(m, fold_bn=True, learn_amax=True)
    fresh = iq.quantize(torch_tiny.tiny_model().cuda())
    fresh.load_state_dict(state)
    for model in (m, fresh):
        tensors = list(model.named_parameters()) + list(model.named_buffers())
        off = [name for name, t in tensors if t.device.type != "cuda"]
        assert not off, off
