"""One rank of the torch.distributed tests (tests/torch/test_torch_distributed.py, tests/gpu).

    python dist_worker.py --rank R --world W --port P --backend gloo|nccl --device cpu|cuda --out F

Two data shards that differ on purpose (shard 0's inputs are 4x larger, so rank 0's histograms
are 4x coarser than rank 1's); rank r of W takes the shards k with k % W == r, so one rank alone
sees both, in order. The rank:

1. calibrates TinyNet on its shards (`int8kit.torch.quantize`, entropy; the statistics are
   reduced across ranks) and records every activation quantizer's amax by each method;
2. calibrates a second TinyNet with minmax (exact across ranks), folds BN, learns amax, wraps it
   in DistributedDataParallel and takes one SGD step on its shards' step batches;

and saves the results to ``F.rank<R>.pt``. `reference()` computes the same in one process.
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch_tiny  # noqa: E402

import int8kit.torch as iq  # noqa: E402

METHODS = ("minmax", "entropy", "percentile", "mse")
SHARDS = 2


def calib_shard(k: int) -> list[torch.Tensor]:
    scale = 4.0 if k == 0 else 1.0
    return [x * scale for x in torch_tiny.batches(4, batch=8, size=32, seed=10 + k)]


def step_shard(k: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch_tiny.batches(1, batch=4, seed=50 + k)[0] * (4.0 if k == 0 else 1.0)
    target = torch.randn(4, 5, generator=torch.Generator().manual_seed(70 + k))
    return x, target


def run(shards: list[int], device: torch.device, ddp: bool, steps: int = 1) -> dict:
    """What one rank (or, with all shards and ddp=False, one process) computes."""
    data = [x.to(device) for k in shards for x in calib_shard(k)]
    model = torch_tiny.tiny_model().to(device)
    iq.quantize(model, iq.QuantConfig(method="entropy"), lambda m: [m(x) for x in data])
    amax, width = {}, {}
    for name, q in iq.quantizers(model):
        if not q.is_weight:
            amax[name] = {m: q.collector.compute_amax(m) for m in METHODS}
            width[name] = q.collector.width
            assert float(q.amax) == float(torch.tensor(amax[name]["entropy"]))

    qat = torch_tiny.tiny_model().to(device)
    iq.quantize(qat, iq.QuantConfig(method="minmax"), lambda m: [m(x) for x in data])
    iq.prepare_qat(qat, fold_bn=True, learn_amax=True)
    qat.train()
    net = qat
    if ddp:
        ids = [device.index] if device.type == "cuda" else None
        net = torch.nn.parallel.DistributedDataParallel(qat, device_ids=ids)
    xs, ts = zip(*(step_shard(k) for k in shards), strict=True)
    x, t = torch.cat(xs).to(device), torch.cat(ts).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        F.mse_loss(net(x), t).backward()
        opt.step()
    state = {k: v.detach().cpu().clone() for k, v in qat.state_dict().items()}
    return {"amax": amax, "width": width, "state": state}


def reference(device: str = "cpu") -> dict:
    return run(list(range(SHARDS)), torch.device(device), ddp=False)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rank", type=int, required=True)
    p.add_argument("--world", type=int, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--backend", default="gloo")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    device = torch.device(a.device)
    if a.device == "cuda":
        device = torch.device("cuda", a.rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    torch.distributed.init_process_group(
        a.backend,
        init_method=f"tcp://127.0.0.1:{a.port}",
        rank=a.rank,
        world_size=a.world,
        timeout=timedelta(seconds=60),
    )
    try:
        shards = [k for k in range(SHARDS) if k % a.world == a.rank]
        result = run(shards, device, ddp=True)
        torch.save(result, f"{a.out}.rank{a.rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
