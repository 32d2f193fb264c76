"""int8kit.torch on a GPU: calibration throughput and QAT step time, as ratios to FP32, one run.

    python benchmarks/torch_gpu.py --out gpu.json [--model-code file.py:factory]
           [--batch 64] [--size 224] [--device cuda]

Model: ``--model-code path.py:factory`` (a function returning an nn.Module, input 3xSxS), else
EfficientNet-Lite0 from efficientnet-lite-pytorch when installed, else a built-in
EfficientNet-Lite0-shaped network (MBConv blocks, ReLU6, BN; random weights — speed does not
depend on the weights). Measured in one process, same model and batch:

- inference FP32 (eval, no grad) images/s; calibration (histograms collected on the GPU)
  images/s; fake-quant inference images/s; their ratios;
- training step FP32 vs QAT step (BN folded, fake quant, Adam), ms, and the ratio;
- that GPU histograms equal CPU histograms for the model input, and amax CPU vs GPU for all.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

try:
    import int8kit.torch as iq
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import int8kit.torch as iq


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


def build_model(spec: str | None) -> tuple[nn.Module, str]:
    if spec:
        path, _, func = spec.partition(":")
        module_spec = importlib.util.spec_from_file_location("user_model", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        return getattr(module, func or "build")(), spec
    try:
        from efficientnet_lite_pytorch import EfficientNet

        return EfficientNet.from_name("efficientnet-lite0"), "efficientnet-lite0 (package)"
    except ImportError:
        return LiteNet(), "built-in EfficientNet-Lite0-shaped net (random weights)"


# --- timing -------------------------------------------------------------------------------------
def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, warmup: int, iters: int) -> float:
    """Median seconds per call."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main() -> None:
    p = argparse.ArgumentParser(description="int8kit.torch GPU throughput")
    p.add_argument("--out", required=True, help="JSON result path")
    p.add_argument("--model-code", help="path.py:factory returning an nn.Module")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--calib-batches", type=int, default=8)
    a = p.parse_args()
    device = torch.device(a.device)
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    model, model_name = build_model(a.model_code)
    model = model.to(device).eval()
    x = torch.randn(a.batch, 3, a.size, a.size, device=device)
    batches = [
        torch.randn(a.batch, 3, a.size, a.size, device=device) for _ in range(a.calib_batches)
    ]
    n_img = a.batch * a.calib_batches
    r: dict = {
        "model": model_name,
        "device": str(device),
        "batch": a.batch,
        "size": a.size,
        "torch": torch.__version__,
    }
    if device.type == "cuda":
        r["gpu"] = torch.cuda.get_device_name(device)

    def infer(m):
        with torch.no_grad():
            for b in batches:
                m(b)

    t_fp32 = timed(lambda: infer(model), device, 2, max(3, a.iters // 4))
    qmodel = copy.deepcopy(model)
    iq.replace_modules(qmodel, iq.QuantConfig())

    def calibrate():
        iq.calibrate(qmodel, lambda m: [m(b) for b in batches])

    t0 = time.perf_counter()
    calibrate()  # first pass incl. the amax computation (numpy, on the CPU)
    _sync(device)
    r["calibrate_first_s"] = time.perf_counter() - t0
    iq.set_mode(qmodel, "calibrate")
    t_cal = timed(lambda: infer(qmodel), device, 1, max(3, a.iters // 4))  # collection only
    t0 = time.perf_counter()
    amax = iq.load_amax(qmodel)
    r["amax_compute_s"] = time.perf_counter() - t0
    r["quantizers"] = len(amax)
    t_fq = timed(lambda: infer(qmodel), device, 2, max(3, a.iters // 4))
    r["inference_fp32_img_s"] = n_img / t_fp32
    r["calibration_img_s"] = n_img / t_cal
    r["fake_quant_inference_img_s"] = n_img / t_fq
    r["calibration_over_fp32_time"] = t_cal / t_fp32
    r["fake_quant_over_fp32_time"] = t_fq / t_fp32

    # CPU vs GPU histograms (one batch, model input and every amax), when on a GPU.
    if device.type == "cuda":
        small = [b[:8] for b in batches[:2]]
        cpu_model = copy.deepcopy(model).cpu()
        iq.quantize(cpu_model, iq.QuantConfig(), lambda m: [m(b.cpu()) for b in small])
        gpu_model = copy.deepcopy(model)
        iq.quantize(gpu_model, iq.QuantConfig(), lambda m: [m(b) for b in small])
        qc, qg = dict(iq.quantizers(cpu_model)), dict(iq.quantizers(gpu_model))
        first = next(n for n, q in qc.items() if not q.is_weight)
        r["input_histogram_equal_cpu_gpu"] = bool(
            (qc[first].collector.counts == qg[first].collector.counts).all()
        )
        rel = [
            abs(float(qg[n].amax) - float(q.amax)) / float(q.amax)
            for n, q in qc.items()
            if not q.is_weight
        ]
        r["amax_max_rel_diff_cpu_gpu"] = max(rel)

    # Training steps: FP32 vs QAT, same batch, Adam, MSE to a fixed target.
    target = torch.randn(a.batch, model(x[:1]).shape[-1], device=device)

    def train_step(m, opt):
        opt.zero_grad(set_to_none=True)
        nn.functional.mse_loss(m(x), target).backward()
        opt.step()

    train_fp32 = copy.deepcopy(model).train()
    opt = torch.optim.Adam(train_fp32.parameters(), lr=1e-5)
    t_train = timed(lambda: train_step(train_fp32, opt), device, 3, a.iters)
    iq.prepare_qat(qmodel, fold_bn=True)
    qopt = torch.optim.Adam(qmodel.parameters(), lr=1e-5)
    qmodel.train()
    t_qat = timed(lambda: train_step(qmodel, qopt), device, 3, a.iters)
    r["train_step_fp32_ms"] = t_train * 1e3
    r["qat_step_ms"] = t_qat * 1e3
    r["qat_over_fp32_step"] = t_qat / t_train
    if device.type == "cuda":
        r["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(r, indent=2) + "\n")
    print(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
