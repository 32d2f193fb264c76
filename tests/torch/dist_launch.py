"""Start the ranks of dist_worker.py as subprocesses on 127.0.0.1 and collect their results."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

WORKER = Path(__file__).resolve().parent / "dist_worker.py"
SRC = Path(__file__).resolve().parents[2] / "src"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(world: int, backend: str, device: str, out: Path, timeout: float | None = None):
    """Run ``world`` ranks; raise with their output if one fails or the run passes ``timeout``
    seconds (default 60, or INT8KIT_DIST_TIMEOUT on a machine that is busy)."""
    timeout = timeout or float(os.environ.get("INT8KIT_DIST_TIMEOUT", 60))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OMP_NUM_THREADS", "1")
    port = free_port()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                "--rank",
                str(r),
                "--world",
                str(world),
                "--port",
                str(port),
                "--backend",
                backend,
                "--device",
                device,
                "--out",
                str(out),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(world)
    ]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=timeout)[0])
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
            p.communicate()
        raise AssertionError(f"the {world} ranks did not finish within {timeout:.0f} s") from None
    failed = [
        (r, p.returncode, log)
        for r, (p, log) in enumerate(zip(procs, logs, strict=True))
        if p.returncode
    ]
    assert not failed, "\n".join(f"rank {r} exited {rc}:\n{log[-3000:]}" for r, rc, log in failed)
    return [torch.load(f"{out}.rank{r}.pt", weights_only=False) for r in range(world)]
