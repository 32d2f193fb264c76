"""Fallback on the outlier chain: the planted layer is the one (and only one) left in float."""

import numpy as np
import pytest
from test_sensitivity import BAD, batches, outlier_chain, planted_amax

from int8kit.analysis.fallback import Target, find_fallback, spread_samples
from int8kit.errors import DataError
from int8kit.onnx.placement import plan


@pytest.fixture(scope="module")
def setup():
    m = outlier_chain()
    calib = batches(6, seed=1)
    return m, plan(m), planted_amax(m, calib), calib, batches(6, seed=2)


def test_fallback_excludes_only_the_planted_layer(setup):
    m, placement, amax, calib, holdout = setup
    r = find_fallback(m, amax, placement, calib, holdout, Target(sqnr_db=25))
    assert r.reached and r.excluded == [BAD] and r.exclude == [f"^{BAD}$"]
    assert r.before["sqnr_db"] < 5 and r.after["sqnr_db"] >= 25
    assert r.sensitivity["rows"][0]["node"] == BAD


def test_a_target_already_met_excludes_nothing(setup):
    m, placement, amax, calib, holdout = setup
    r = find_fallback(m, amax, placement, calib, holdout, Target(sqnr_db=-10))
    assert r.reached and r.excluded == [] and r.evaluations == 1


def test_a_high_target_needs_more_layers_and_keeps_the_worst(setup):
    m, placement, amax, calib, holdout = setup
    r = find_fallback(m, amax, placement, calib, holdout, Target(sqnr_db=45))
    assert r.reached and BAD in r.excluded and len(r.excluded) >= 2
    assert r.after["sqnr_db"] >= 45


def test_top1_target_needs_a_classifier(setup):
    m, placement, amax, calib, holdout = setup
    with pytest.raises(DataError, match="classifier"):
        find_fallback(m, amax, placement, calib, holdout, Target(top1=0.99))


def test_target_validation():
    with pytest.raises(ValueError):
        Target()
    with pytest.raises(ValueError):
        Target(top1=1.5)
    assert Target(sqnr_db=20).met({"sqnr_db": 20.0, "top1": None})
    assert not Target(sqnr_db=20, top1=0.9).met({"sqnr_db": 30.0, "top1": 0.8})


def test_spread_samples_covers_the_whole_source():
    src = [{"x": np.full((1,), k)} for k in range(10)]
    assert [int(b["x"][0]) for b in spread_samples(src, 3)] == [0, 3, 6]
