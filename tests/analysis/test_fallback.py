"""Fallback on the outlier chain: the planted layer is the one (and only one) left in float, or
its range is repaired when the calibration pass recorded a better candidate; a budget caps it."""

import numpy as np
import pytest
from test_sensitivity import BAD, batches, outlier_chain, planted_amax

from int8kit.analysis.fallback import Target, budget_of, find_fallback, spread_samples
from int8kit.errors import DataError
from int8kit.onnx.placement import plan


@pytest.fixture(scope="module")
def setup():
    m = outlier_chain()
    calib = batches(6, seed=1)
    return m, plan(m), planted_amax(m, calib), calib, batches(6, seed=2)


def test_fallback_excludes_only_the_planted_layer(setup):
    m, placement, amax, calib, holdout = setup
    r, out = find_fallback(m, amax, placement, calib, holdout, Target(sqnr_db=25))
    assert out == amax and r.ranges == {}  # no candidates recorded: nothing to repair
    assert r.reached and r.excluded == [BAD] and r.exclude == [f"^{BAD}$"]
    assert r.before["sqnr_db"] < 5 and r.after["sqnr_db"] >= 25
    assert r.sensitivity["rows"][0]["node"] == BAD


def test_a_target_already_met_excludes_nothing(setup):
    m, placement, amax, calib, holdout = setup
    r, _ = find_fallback(m, amax, placement, calib, holdout, Target(sqnr_db=-10))
    assert r.reached and r.excluded == [] and r.evaluations == 1


def test_a_high_target_needs_more_layers_and_keeps_the_worst(setup):
    m, placement, amax, calib, holdout = setup
    r, _ = find_fallback(m, amax, placement, calib, holdout, Target(sqnr_db=45), max_float=4)
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


def _candidates(amax):
    """What the calibration pass records: conv3's input has its true range as a candidate."""
    return {"r2": {"minmax": amax["r2"] / 300, "entropy": amax["r2"] / 600}}


def test_a_bad_range_is_repaired_before_any_layer_goes_float(setup):
    m, placement, amax, calib, holdout = setup
    r, out = find_fallback(
        m, amax, placement, calib, holdout, Target(sqnr_db=25), candidates=_candidates(amax)
    )
    assert r.reached and r.excluded == [] and r.ranges == {"r2": "minmax"}
    assert out["r2"] == pytest.approx(amax["r2"] / 300)
    assert {k: v for k, v in out.items() if k != "r2"} == {
        k: v for k, v in amax.items() if k != "r2"
    }
    assert r.before["sqnr_db"] < 5 <= 25 <= r.after_ranges["sqnr_db"] == r.after["sqnr_db"]


def test_the_budget_stops_the_fallback_and_says_what_was_missed(setup):
    m, placement, amax, calib, holdout = setup
    r, _ = find_fallback(m, amax, placement, calib, holdout, Target(sqnr_db=45), max_float=1)
    assert not r.reached and len(r.excluded) == 1 and r.max_float == 1
    assert r.excluded == [BAD]  # the one float layer the budget allows is the worst one
    assert set(r.missed) == {"sqnr_db"} and r.missed["sqnr_db"]["target"] == 45
    assert r.missed["sqnr_db"]["reached"] == r.after["sqnr_db"] < 45


def test_budget_of_counts_and_shares():
    assert budget_of(None, 60) == 6 and budget_of(None, 4) == 1
    assert budget_of("10%", 61) == 7 and budget_of(0.25, 8) == 2
    assert budget_of("3", 60) == 3 and budget_of(100, 60) == 60 and budget_of(0, 60) == 0
    with pytest.raises(ValueError, match="share"):
        budget_of("ten", 60)
    with pytest.raises(ValueError, match=">= 0"):
        budget_of(-1, 60)


def test_shortfall_orders_held_out_states_by_distance_to_the_target():
    from int8kit.analysis.fallback import shortfall

    t = Target(sqnr_db=20, top1=0.99)
    met = {"sqnr_db": 25.0, "top1": 1.0, "nsr": 0.003}
    assert shortfall(t, met) == (0.0, 0.003)
    # 5 dB short counts 0.5; 3 points of top-1 short count 0.3; then the noise breaks ties
    assert shortfall(t, {"sqnr_db": 15.0, "top1": 1.0, "nsr": 0.03}) == pytest.approx((0.5, 0.03))
    a = {"sqnr_db": 21.0, "top1": 0.96, "nsr": 0.01}
    b = {"sqnr_db": 19.0, "top1": 0.99, "nsr": 0.012}
    assert shortfall(t, a)[0] == pytest.approx(0.3) and shortfall(t, b)[0] == pytest.approx(0.1)
    assert min([a, b], key=lambda m: shortfall(t, m)) is b
