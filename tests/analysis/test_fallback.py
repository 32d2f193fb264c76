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


def _bias_corrected(m, placement, amax, calib):
    from int8kit.onnx.bias import bias_correct

    return bias_correct(m, placement, calib, amax=amax)


def _run(model, feed, optimize=False):
    from int8kit.onnx.observe import make_session

    return make_session(model, optimize=optimize).run(None, feed)[0]


def test_gated_bias_shifts_give_the_written_model_of_each_subset(setup):
    from int8kit.analysis.fallback import correction_shifts
    from int8kit.analysis.sensitivity import exclude_patterns, gated_model
    from int8kit.onnx.placement import PlacementConfig
    from int8kit.onnx.qdq import insert_qdq

    m, placement, amax, calib, holdout = setup
    corrected, summary = _bias_corrected(m, placement, amax, calib)
    shifts = correction_shifts(m, corrected, summary.corrected)
    assert sorted(shifts) == ["conv1", "conv2", "conv3", "conv4"]  # none had a bias: all added
    assert shifts["conv3"].shape == (8, 1, 1) and np.abs(shifts["conv3"]).max() > 0
    gated, gates = gated_model(m, placement, amax, shifts)
    feed = holdout[0]
    on = {g: np.array(True) for g in gates.values()}
    full = _run(insert_qdq(corrected, placement, amax)[0], feed)
    assert np.allclose(_run(gated, {**feed, **on}), full, rtol=0, atol=1e-5)
    # conv3 float: its shift is off, the others' are what a correction without it computes
    p2 = plan(m, PlacementConfig(exclude=exclude_patterns([BAD])))
    skip = _run(insert_qdq(_bias_corrected(m, p2, amax, calib)[0], p2, amax)[0], feed)
    assert np.allclose(_run(gated, {**feed, **on, gates[BAD]: np.array(False)}), skip, atol=1e-5)
    # without the shifts the same subset is farther from the written model
    plain_gated, _ = gated_model(m, placement, amax)
    assert np.abs(_run(plain_gated, {**feed, **on}) - full).max() > 1e-3
    off = {g: np.array(False) for g in gates.values()}
    assert np.array_equal(_run(gated, {**feed, **off}), _run(m, feed))


def test_the_fallback_checks_the_bias_corrected_model_it_writes(setup):
    from int8kit.analysis.fallback import correction_shifts
    from int8kit.analysis.sensitivity import Scorer
    from int8kit.onnx.qdq import insert_qdq

    m, placement, amax, calib, holdout = setup
    corrected, summary = _bias_corrected(m, placement, amax, calib)
    shifts = correction_shifts(m, corrected, summary.corrected)
    qdq = insert_qdq(corrected, placement, amax)[0]
    scorer = Scorer()
    for feed in holdout:
        scorer.update({"y": _run(m, feed)}, {"y": _run(qdq, feed)})
    written = scorer.result()["sqnr_db"]
    r, _ = find_fallback(
        m, amax, placement, calib, holdout, Target(sqnr_db=99), correction=lambda _: shifts
    )
    plain, _ = find_fallback(m, amax, placement, calib, holdout, Target(sqnr_db=99))
    assert r.before["sqnr_db"] == pytest.approx(written, abs=0.01)
    assert abs(plain.before["sqnr_db"] - written) > 0.1


def near_tie_classifier():
    """x(N,8) -> Gemm -> Relu -> Gemm -> logits(N,4); classes 0 and 1 have weights 1e-4 apart,
    so every sample is a near-tie between them (FP32 margin ~1e-4)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    w1 = rng.standard_normal((16, 8)).astype(np.float32)
    w2 = rng.standard_normal((4, 16)).astype(np.float32)
    w2[0] = np.abs(w2[0]) + 1  # classes 0/1 win every sample
    w2[1] = w2[0] + 1e-4 * rng.standard_normal(16).astype(np.float32)
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")]
    nodes = [
        helper.make_node("Gemm", ["x", "w1"], ["h"], name="fc1", transB=1),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Gemm", ["r", "w2"], ["logits"], name="fc2", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "near_tie",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])],
        inits,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    data = [{"x": rng.standard_normal((1, 8)).astype(np.float32)} for _ in range(24)]
    return m, data


def test_a_top1_miss_on_near_ties_says_so_in_figures():
    from int8kit.onnx.qdq import insert_qdq

    m, data = near_tie_classifier()
    placement = plan(m)
    amax = {"x": 4.0, "r": 40.0}  # coarse: the margin noise is far above 1e-4
    holdout = data[12:]
    r, _ = find_fallback(
        m, amax, placement, data[:12], holdout, Target(top1=1.0), task="classify", max_float=0
    )
    ref = np.concatenate([_run(m, f) for f in holdout])
    test = np.concatenate([_run(insert_qdq(m, placement, amax)[0], f) for f in holdout])
    flipped = int((ref.argmax(1) != test.argmax(1)).sum())
    assert flipped > 0 and not r.reached and r.excluded == []
    f = r.flips
    assert f["samples"] == 12 and f["flipped"] == flipped == len(f["flip_margins"])
    assert r.before["top1"] == pytest.approx(1 - flipped / 12)
    assert max(f["flip_margins"]) < 1e-3 and 2 * max(f["flip_margins"]) < f["margin_noise"]
    assert "all are near-ties" in r.why and f"{flipped} of 12 held-out samples" in r.why


def test_explain_tells_near_ties_from_flips_more_float_could_fix():
    from int8kit.analysis.fallback import explain

    t = Target(top1=0.99)
    before = {"sqnr_db": 20.0, "top1": 0.9, "nsr": 0.01}
    after = {"sqnr_db": 23.0, "top1": 0.94, "nsr": 0.005}
    ties = {"samples": 32, "flipped": 2, "flip_margins": [0.01, 0.02], "median_margin": 1.0}
    text = explain(t, before, after, {**ties, "margin_noise": 0.2}, 3)
    assert "all are near-ties" in text and "about 20 dB less noise" in text  # 20 log10(0.2/0.02)
    assert "from 20.0 to 23.0 dB with 3 float layers" in text and "tried" not in text
    text = explain(t, before, after, {}, 3, tried=5)
    assert text.endswith("with 3 float layers (the best held-out state of 5 tried)")
    text = explain(t, before, after, {**ties, "margin_noise": 0.015}, 3)
    assert "1 are near-ties, 1 are not" in text and "--max-float-layers" in text
    assert explain(t, before, {**after, "top1": 1.0}, {}, 3) == ""


@pytest.mark.parametrize("max_float", [0, 1])
def test_quantize_checks_the_model_it_writes_with_bias_correction(tmp_path, max_float):
    """quantize_onnx: the fallback's held-out result is the written (bias-corrected) model's
    held-out fidelity, with no layer float and with the one float layer the budget allows."""
    import onnx
    from test_sensitivity import outlier_chain

    from int8kit.data import DataConfig
    from int8kit.workflow import QuantizeConfig, quantize_onnx

    onnx.save(outlier_chain(), tmp_path / "m.onnx")
    x = np.random.default_rng(3).standard_normal((48, 4, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    config = QuantizeConfig(
        str(tmp_path / "m.onnx"),
        str(tmp_path / "q.onnx"),
        data=DataConfig(source=str(tmp_path / "x.npy")),
        holdout=8,
        target_sqnr=99.0,
        max_float_layers=max_float,
    )
    r = quantize_onnx(config)
    fb = r.fallback
    assert r.bias_correction.get("corrected") and not fb["reached"]
    assert len(fb["excluded"]) == max_float
    written = next(iter(r.fidelity["trt-like"].values()))["sqnr_db"]
    assert fb["after"]["sqnr_db"] == pytest.approx(written, abs=0.05)
    assert fb["why"].startswith("the budget is spent") and "sqnr_db" in fb["missed"]
    assert [p["float"] for p in fb["path"]] == list(range(max_float + 1))
    assert fb["after"]["sqnr_db"] == max(p["sqnr_db"] for p in fb["path"])


def _matmul_add_classifier():
    """The near-tie classifier with its second layer as MatMul + Add (a bias to shift)."""
    from onnx import helper, numpy_helper

    m, data = near_tie_classifier()
    g = m.graph
    w2 = numpy_helper.to_array(next(i for i in g.initializer if i.name == "w2"))
    g.initializer.remove(next(i for i in g.initializer if i.name == "w2"))
    g.initializer.extend(
        [numpy_helper.from_array(w2.T.copy(), "w2t"), numpy_helper.from_array(w2[:, 0], "b2")]
    )
    g.node.pop()
    g.node.extend(
        [
            helper.make_node("MatMul", ["r", "w2t"], ["mm"], name="fc2"),
            helper.make_node("Add", ["mm", "b2"], ["logits"], name="fc2_add"),
        ]
    )
    return m, data


@pytest.mark.parametrize("build", [near_tie_classifier, _matmul_add_classifier])
def test_correction_shifts_of_gemm_and_matmul_give_the_corrected_model(build):
    from int8kit.analysis.fallback import correction_shifts
    from int8kit.analysis.sensitivity import gated_model
    from int8kit.onnx.qdq import insert_qdq

    m, data = build()
    placement = plan(m)
    amax = {"x": 4.0, "r": 40.0}
    corrected, summary = _bias_corrected(m, placement, amax, data)
    shifts = correction_shifts(m, corrected, summary.corrected)
    assert sorted(shifts) == ["fc1", "fc2"] and shifts["fc2"].shape == (4,)
    gated, gates = gated_model(m, placement, amax, shifts)
    feed = {"x": np.concatenate([d["x"] for d in data])}
    on = {g: np.array(True) for g in gates.values()}
    want = _run(insert_qdq(corrected, placement, amax)[0], feed)
    assert np.allclose(_run(gated, {**feed, **on}), want, rtol=0, atol=1e-5)
    assert not np.allclose(
        _run(gated_model(m, placement, amax)[0], {**feed, **on}), want, atol=1e-3
    )
