"""`torchrun --nproc_per_node 2 -m int8kit torch quantize ...` on the CPU (gloo, 127.0.0.1):
each rank calibrates its share of the images, rank 0 writes the outputs, and the ranges equal
a one-process run's (minmax: exactly)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import torch_tiny  # noqa: E402
from dist_launch import SRC, free_port  # noqa: E402

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed is not available"
)


def _quantize(tmp_path, images, out, nproc):
    env = dict(os.environ, OMP_NUM_THREADS="1", INT8KIT_NO_PROGRESS="1")
    paths = [str(SRC), str(Path(__file__).parent), str(tmp_path), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    launcher = [sys.executable, "-m", "int8kit"]
    if nproc > 1:
        launcher = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes",
            "1",
            "--nproc_per_node",
            str(nproc),
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(free_port()),
            "-m",
            "int8kit",
        ]
    args = [
        "torch",
        "quantize",
        "tinyfactory:build",
        "--calib",
        str(images),
        "-o",
        str(out),
        "--input-shape",
        "1x3x32x32",
        "--batch-size",
        "2",
        "--method",
        "minmax",
        "--device",
        "cpu",
        "--qat-epochs",
        "1",
        "--holdout",  # every image calibrates (4 a rank); the held-out check is test_torch_recipe's
        "0",
    ]
    timeout = float(os.environ.get("INT8KIT_DIST_TIMEOUT", 60))
    done = subprocess.run(
        launcher + args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_torchrun_two_ranks_write_the_one_process_ranges(tmp_path):
    images = torch_tiny.cli_inputs(tmp_path, 8)
    two = tmp_path / "two" / "tiny.int8.onnx"
    printed = _quantize(tmp_path, images, two, 2)
    assert [line.split()[0] for line in printed.splitlines()].count("ranges") == 1  # rank 0
    summary = json.loads((two.parent / "tiny.torch.json").read_text())
    assert summary["world_size"] == 2 and summary["qat"]["steps"] == 2  # 4 images a rank
    one = tmp_path / "one" / "tiny.int8.onnx"
    _quantize(tmp_path, images, one, 1)
    got = json.loads((two.parent / "tiny.ranges.json").read_text())["tensors"]
    want = json.loads((one.parent / "tiny.ranges.json").read_text())["tensors"]
    assert got.keys() == want.keys()
    for name in want:
        assert got[name]["amax"] == want[name]["amax"], name
        assert got[name]["stats"] == want[name]["stats"], name
    assert sorted(p.name for p in two.parent.iterdir()) == sorted(
        p.name for p in one.parent.iterdir()
    )
