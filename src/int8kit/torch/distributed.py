"""Calibration across the ranks of torch.distributed: statistics travel, data never does.

When a process group is initialised, `int8kit.torch.load_amax` (and so `quantize` / `calibrate`)
calls `reduce_quantizers` before computing any amax: every rank ran ``forward_loop`` over its
own shard, and after three small collectives every rank holds the statistics of one process that
saw all shards, rank 0's first (`int8kit.calib.merge`):

1. all_gather of (number of quantizers, checksum of their names): the ranks must agree;
2. all_gather of each collector's grid and counts (width, bins, max |x|, count, min, max, NaN,
   Inf, zeros seen before a range): every rank computes the same common grid from them — the
   running max is the MAX over ranks, exactly;
3. all_reduce SUM of the histograms, each rank's rebinned onto the common grid (int64 counts).

Then each rank computes the amax from identical histograms with the same numpy code, so the
scales, ranges.json and the calibration cache are the same whichever rank writes them (rank 0
does: `is_main`). Works for any world size, NCCL (tensors on the rank's GPU) or gloo.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable

import numpy as np
import torch

from int8kit.calib import merge
from int8kit.calib.collector import HistogramCollector, TensorStats

_FIELDS = 10  # has_range, width, size, amax, count, min, max, nan, inf, pending zeros


def active() -> bool:
    """True when torch.distributed has an initialised default process group."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank() -> int:
    return torch.distributed.get_rank() if active() else 0


def world_size() -> int:
    return torch.distributed.get_world_size() if active() else 1


def is_main() -> bool:
    """True on rank 0, or when there is no process group: the process that writes outputs."""
    return rank() == 0


def init_from_env(device: str = "auto") -> torch.device:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR/PORT in the
    environment) unless one is initialised already; returns this rank's device.

    ``device``: "auto" takes GPU LOCAL_RANK when CUDA is available (backend NCCL), else the CPU
    (gloo); "cpu" forces gloo on the CPU; "cuda"/"cuda:N" a GPU. Without torchrun's variables it
    only resolves the device (one process, no group)."""
    import os

    local = int(os.environ.get("LOCAL_RANK", 0))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local % max(1, torch.cuda.device_count()))
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if "WORLD_SIZE" in os.environ and "RANK" in os.environ and not active():
        if not torch.distributed.is_available():
            raise RuntimeError("this PyTorch build has no torch.distributed; run one process")
        backend = "nccl" if dev.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend, device_id=dev if backend == "nccl" else None)
    return dev


def shard_sizes_min(n: int) -> int:
    """The smallest ``n`` over the ranks (the number of steps every rank can take together)."""
    if not active():
        return n
    t = torch.tensor([n], dtype=torch.int64, device=_device())
    torch.distributed.all_reduce(t, torch.distributed.ReduceOp.MIN)
    return int(t.item())


def _device() -> torch.device:
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _all_gather(t: torch.Tensor) -> list[torch.Tensor]:
    out = [torch.empty_like(t) for _ in range(world_size())]
    torch.distributed.all_gather(out, t)
    return [o.cpu() for o in out]


def _meta(c: HistogramCollector) -> list[float]:
    g = merge.grid_of(c)
    s = c.stats
    return [
        float(g.width > 0),
        g.width,
        float(g.size),
        c.amax,
        float(s.count),
        s.min,
        s.max,
        float(s.nan),
        float(s.inf),
        float(c._pending_zeros),
    ]


def reduce_collectors(named: Iterable[tuple[str, HistogramCollector]]) -> None:
    """Replace every rank's collectors by the merge of all ranks' (see the module docstring)."""
    named = list(named)
    if not active():
        return
    device = _device()
    names = "\n".join(n for n, _ in named).encode()
    check = torch.tensor([len(named), zlib.crc32(names)], dtype=torch.int64, device=device)
    if any(not torch.equal(o, check.cpu()) for o in _all_gather(check)):
        raise RuntimeError(
            "the ranks calibrate different sets of quantizers; every rank must build the same "
            "model with the same QuantConfig before calibrating"
        )
    if not named:
        return
    mine = torch.tensor([_meta(c) for _, c in named], dtype=torch.float64, device=device)
    metas = [m.numpy() for m in _all_gather(mine)]  # [rank] -> (K, _FIELDS)
    grids, pieces = [], []
    for k, (_, c) in enumerate(named):
        per_rank = [merge.Grid(float(m[k, 1]), int(m[k, 2])) for m in metas]
        amax = max(float(m[k, 3]) for m in metas)
        grid = merge.common_grid(per_rank, amax, c.num_bins)
        grids.append(grid)
        local = np.zeros(grid.size, dtype=np.int64)
        if grid.width > 0:
            if c.counts is not None:
                local = merge.rebin(c.counts, c.width, grid)
            local[0] += c._pending_zeros
        pieces.append(local)
    flat = torch.from_numpy(np.concatenate(pieces) if pieces else np.zeros(0, np.int64))
    flat = flat.to(device)
    torch.distributed.all_reduce(flat)
    total = flat.cpu().numpy()
    offset = 0
    for k, (_, c) in enumerate(named):
        grid = grids[k]
        col = np.stack([m[k] for m in metas])  # (ranks, _FIELDS)
        c.stats = TensorStats(
            count=int(col[:, 4].sum()),
            min=float(col[:, 5].min()) if col[:, 4].sum() else math.inf,
            max=float(col[:, 6].max()) if col[:, 4].sum() else -math.inf,
            nan=int(col[:, 7].sum()),
            inf=int(col[:, 8].sum()),
        )
        c.amax = float(col[:, 3].max())
        if grid.width > 0:
            c.width = grid.width
            c.counts = total[offset : offset + grid.size].copy()
            c._pending_zeros = 0
        else:
            c.width, c.counts = 0.0, None
            c._pending_zeros = int(col[:, 9].sum())
        offset += grid.size
