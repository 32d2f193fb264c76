"""torch.distributed calibration and DDP QAT with NCCL on CUDA GPUs (world size 1 on one GPU;
two ranks where two GPUs exist). The same worker as the gloo tests (tests/torch)."""

import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(
        not torch.distributed.is_available() or not torch.distributed.is_nccl_available(),
        reason="needs torch.distributed with NCCL",
    ),
]

sys.path.insert(0, str(Path(__file__).parents[1] / "torch"))
import dist_worker  # noqa: E402
from dist_launch import launch  # noqa: E402


@pytest.fixture(scope="module")
def ref():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        return dist_worker.reference("cuda")
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_nccl_world_size_one_is_the_one_process_calibration(tmp_path, ref):
    """One rank that sees both shards: the reduction must change nothing."""
    (r0,) = launch(1, "nccl", "cuda", tmp_path / "r")
    for name, want in ref["amax"].items():
        for method, value in want.items():
            bins = abs(r0["amax"][name][method] - value) / ref["width"][name]
            assert bins <= 1, (name, method)
    for key, value in ref["state"].items():
        torch.testing.assert_close(r0["state"][key], value, rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_nccl_two_gpus_every_rank_gets_the_one_process_amax(tmp_path, ref):
    r0, r1 = launch(2, "nccl", "cuda", tmp_path / "r")
    assert r0["amax"] == r1["amax"]
    for name, want in ref["amax"].items():
        assert r0["amax"][name]["minmax"] == pytest.approx(want["minmax"], rel=1e-6)
        for method in ("entropy", "percentile", "mse"):
            bins = abs(r0["amax"][name][method] - want[method]) / ref["width"][name]
            assert bins <= 2, (name, method)
    for key, value in ref["state"].items():
        torch.testing.assert_close(r0["state"][key], r1["state"][key], rtol=0, atol=0)
        torch.testing.assert_close(r0["state"][key], value, rtol=1e-4, atol=1e-5, msg=key)
