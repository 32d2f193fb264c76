"""Calibration and QAT across processes (torch.distributed, gloo, two CPU processes).

Two ranks on 127.0.0.1 get shards that differ on purpose (rank 0's inputs are 4x larger). Every
rank must end with the amax of one process that saw both shards, rank 0's first (minmax exactly,
histogram methods within a few bins), and one DistributedDataParallel QAT step must equal a
one-process step on the concatenated batch. The opposite case — a rank binned coarser than the
common grid — is tests/calib/test_merge.py's.
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

import dist_worker  # noqa: E402
from dist_launch import launch  # noqa: E402

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed is not available"
)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist") / "result"
    return launch(2, "gloo", "cpu", out)


@pytest.fixture(scope="module")
def ref():
    return dist_worker.reference("cpu")


@pytest.mark.slow
def test_every_rank_gets_the_amax_of_one_process(two_ranks, ref):
    r0, r1 = two_ranks
    assert r0["amax"] == r1["amax"]  # the same on every rank, bit for bit
    # Rank 1 binned its values 4x finer; its histogram is moved onto rank 0's bins, the grid of
    # one process that saw rank 0's shard first.
    fine = dist_worker.run([1], torch.device("cpu"), ddp=False, steps=0)["width"]
    for name, want in ref["amax"].items():
        got = r0["amax"][name]
        assert got["minmax"] == want["minmax"], name
        assert math.isclose(r0["width"][name], ref["width"][name], rel_tol=1e-12)
        assert ref["width"][name] > 2 * fine[name]  # the shards really differ
        for method in ("entropy", "percentile", "mse"):
            bins = abs(got[method] - want[method]) / ref["width"][name]
            assert bins <= 2, (name, method, got[method], want[method])


@pytest.mark.slow
def test_ddp_qat_step_equals_one_process_step_on_the_whole_batch(two_ranks, ref):
    r0, r1 = two_ranks
    want = ref["state"]
    assert r0["state"].keys() == want.keys()
    learned = [k for k in want if k.endswith("input_quantizer.amax")]
    assert learned
    for key, value in want.items():
        torch.testing.assert_close(r0["state"][key], r1["state"][key], rtol=0, atol=0)
        torch.testing.assert_close(r0["state"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    # The step moved the learned amax (their gradients were averaged, not left at zero).
    start = dist_worker.run([0, 1], torch.device("cpu"), ddp=False, steps=0)["state"]
    assert any(not torch.equal(start[k], want[k]) for k in learned)
