import math

import numpy as np
import pytest

from int8kit.analysis.metrics import (
    ClassifyStats,
    OutputStats,
    compare_outputs,
    cosine,
    max_abs_error,
    mean_abs_error,
    sqnr_db,
    topk_agreement,
    topk_overlap,
)
from int8kit.errors import DataError


def test_sqnr_hand_value():
    # signal 3^2 + 4^2 = 25, noise 0^2 + 1^2 = 1 -> 10 log10(25) = 13.979 dB
    assert sqnr_db(np.array([3.0, 4.0]), np.array([3.0, 3.0])) == pytest.approx(13.9794, abs=1e-4)


def test_sqnr_special_values():
    x = np.array([1.0, -2.0], dtype=np.float32)
    assert sqnr_db(x, x) == math.inf
    assert sqnr_db(np.zeros(2), np.zeros(2)) == math.inf
    assert sqnr_db(np.zeros(2), np.array([0.0, 1.0])) == -math.inf
    assert math.isnan(sqnr_db(np.array([1.0, np.nan]), np.array([1.0, 1.0])))
    assert math.isnan(sqnr_db(np.array([1.0, 1.0]), np.array([np.nan, 1.0])))


def test_sqnr_accumulates_in_float64():
    # Squares of 1e20 overflow float32 (max 3.4e38); in float64 the ratio is exact: 60 dB.
    ref = np.array([1e20, -1e20], dtype=np.float32)
    test = (ref.astype(np.float64) * (1 + 1e-3)).astype(np.float32)
    assert sqnr_db(ref, test) == pytest.approx(60.0, abs=1e-3)


def test_sqnr_shape_mismatch_raises():
    with pytest.raises(DataError, match="shape"):
        sqnr_db(np.zeros(3), np.zeros(4))


def test_cosine_and_abs_errors():
    assert cosine(np.array([1.0, 0.0]), np.array([0.0, 5.0])) == 0.0
    assert cosine(np.array([1.0, 2.0]), np.array([2.0, 4.0])) == pytest.approx(1.0)
    assert cosine(np.array([1.0, 2.0]), np.array([-1.0, -2.0])) == pytest.approx(-1.0)
    assert cosine(np.zeros(2), np.zeros(2)) == 1.0
    assert cosine(np.zeros(2), np.ones(2)) == 0.0
    assert max_abs_error(np.array([1.0, 2.0, 3.0]), np.array([1.5, 0.0, 3.0])) == 2.0
    assert mean_abs_error(np.array([1.0, 2.0, 3.0]), np.array([1.5, 0.0, 3.0])) == pytest.approx(
        2.5 / 3
    )


def test_compare_outputs_per_name():
    ref = {"a": np.array([3.0, 4.0]), "b": np.array([1.0, 0.0])}
    test = {"a": np.array([3.0, 3.0]), "b": np.array([0.0, 1.0]), "extra": np.zeros(1)}
    res = compare_outputs(ref, test)
    assert set(res) == {"a", "b"}
    assert res["a"]["sqnr_db"] == pytest.approx(13.9794, abs=1e-4)
    assert res["a"]["max_abs"] == 1.0 and res["a"]["mean_abs"] == 0.5
    assert res["b"]["cosine"] == 0.0
    with pytest.raises(DataError, match="lack"):
        compare_outputs(ref, {"a": test["a"]})


def test_output_stats_streaming_equals_one_shot():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(6, 10)).astype(np.float32)
    test = ref + rng.normal(scale=0.1, size=ref.shape).astype(np.float32)
    stats = OutputStats()
    stats.update(ref[:2], test[:2])
    stats.update(ref[2:], test[2:])
    got = stats.result()
    assert got["sqnr_db"] == pytest.approx(sqnr_db(ref, test), rel=1e-12)
    assert got["cosine"] == pytest.approx(cosine(ref, test), rel=1e-12)
    assert got["max_abs"] == pytest.approx(max_abs_error(ref, test), rel=1e-12)
    assert got["mean_abs"] == pytest.approx(mean_abs_error(ref, test), rel=1e-12)
    assert got["count"] == 60


def test_output_stats_is_not_mean_of_batch_sqnr():
    # Batch 1: SQNR 10log10(100/1) = 20 dB; batch 2: 10log10(1/1) = 0 dB -> mean 10 dB.
    # Accumulated: 10log10(101/2) = 17.03 dB.
    stats = OutputStats()
    stats.update(np.array([10.0]), np.array([9.0]))
    stats.update(np.array([1.0]), np.array([0.0]))
    assert stats.result()["sqnr_db"] == pytest.approx(10 * math.log10(101 / 2))


def test_output_stats_keeps_nan_visible():
    stats = OutputStats()
    stats.update(np.array([np.nan]), np.array([1.0]))
    stats.update(np.array([1.0]), np.array([3.0]))
    res = stats.result()
    assert math.isnan(res["max_abs"]) and math.isnan(res["sqnr_db"])


LOGITS_REF = np.array(
    [
        [5.0, 1.0, 0.0],  # top-1 0
        [0.0, 3.0, 1.0],  # top-1 1
        [0.0, 1.0, 2.0],  # top-1 2
        [4.0, 3.0, 0.0],  # top-1 0
    ]
)
LOGITS_TEST = np.array(
    [
        [4.0, 2.0, 0.0],  # 0 agrees
        [0.0, 2.0, 1.0],  # 1 agrees
        [0.0, 1.5, 1.0],  # 1 differs (ref 2); ref top-1 is test's 2nd
        [5.0, 1.0, 0.0],  # 0 agrees
    ]
)


def test_top1_agreement_hand_case():
    assert topk_agreement(LOGITS_REF, LOGITS_TEST) == 0.75
    # Ref top-1 is within the test top-2 for every row.
    assert topk_agreement(LOGITS_REF, LOGITS_TEST, k=2) == 1.0
    # (N, C, 1, 1) is accepted
    assert topk_agreement(LOGITS_REF[:, :, None, None], LOGITS_TEST[:, :, None, None]) == 0.75


def test_top5_overlap_hand_case():
    ref = np.array([[6, 5, 4, 3, 2, 1], [1, 2, 3, 4, 5, 6]], dtype=np.float32)
    test = np.array([[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]], dtype=np.float32)
    # Row 0: {0,1,2,3,4} ∩ {5,4,3,2,1} = 4 -> 0.8; row 1 identical -> 1.0; mean 0.9
    assert topk_overlap(ref, test, k=5) == pytest.approx(0.9)


def test_topk_rejects_bad_shapes_and_k():
    with pytest.raises(DataError, match=r"\(N, C\)"):
        topk_agreement(np.zeros((2, 3, 4, 4)), np.zeros((2, 3, 4, 4)))
    with pytest.raises(DataError, match="k=5"):
        topk_overlap(np.zeros((2, 3)), np.zeros((2, 3)), k=5)


def test_classify_stats_streaming_equals_one_shot():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(10, 8))
    test = ref + rng.normal(scale=0.5, size=ref.shape)
    stats = ClassifyStats(k=5)
    stats.update(ref[:4], test[:4])
    stats.update(ref[4:, :, None, None], test[4:, :, None, None])
    res = stats.result()
    assert res["n"] == 10
    assert res["top1_agreement"] == topk_agreement(ref, test, k=1)
    assert res["topk_agreement"] == topk_agreement(ref, test, k=5)
    assert res["topk_overlap"] == pytest.approx(topk_overlap(ref, test, k=5))
    assert res["sqnr_db"] == pytest.approx(sqnr_db(ref, test))


def test_classify_stats_of_fewer_classes_than_k_uses_every_class():
    from int8kit.analysis.metrics import ClassifyStats

    rng = np.random.default_rng(0)
    ref = rng.standard_normal((6, 4))
    stats = ClassifyStats(k=5)
    stats.update(ref, ref[:, ::-1])  # every class reversed: top-1 never agrees
    r = stats.result()
    assert r["k"] == 4 and r["top1_agreement"] == 0.0 and r["topk_agreement"] == 1.0
