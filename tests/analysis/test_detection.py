import math

import numpy as np
import pytest

from int8kit.analysis.detection import (
    DetectionStats,
    decode_yolo,
    iou_matrix,
    map50,
    nms,
    resolve_layout,
    select_detections,
    split_yolo_output,
)
from int8kit.analysis.metrics import sqnr_db
from int8kit.errors import DataError


def test_iou_of_known_boxes():
    # 2x2 boxes offset by (1, 1): intersection 1, union 4 + 4 - 1 = 7
    m = iou_matrix(np.array([[0, 0, 2, 2]]), np.array([[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6]]))
    assert m.shape == (1, 3)
    np.testing.assert_allclose(m[0], [1 / 7, 1.0, 0.0])
    assert iou_matrix(np.zeros((0, 6)), np.zeros((2, 6))).shape == (0, 2)


def test_nms_is_class_aware():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [50, 50, 60, 60]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    classes = np.array([0, 0, 1, 0])
    # box 1 overlaps box 0 (IoU 9/11) in the same class: removed; box 2 sits on box 0 but is
    # another class: kept; box 3 is elsewhere: kept
    assert nms(boxes, scores, classes, iou=0.45).tolist() == [0, 2, 3]
    assert nms(boxes, scores, np.zeros(4), iou=0.45).tolist() == [0, 3]
    assert nms(boxes, scores, classes, iou=0.45, max_out=2).tolist() == [0, 2]


def _v8_hand():
    # (N=1, 4+nc=6, A=4); columns are anchors
    anchors = [
        [50, 50, 20, 20, 0.9, 0.1],  # -> (40,40,60,60) class 0, 0.9
        [52, 50, 20, 20, 0.8, 0.0],  # same class, IoU 360/440 with anchor 0: suppressed
        [50, 50, 20, 20, 0.1, 0.7],  # same place, class 1: kept
        [300, 300, 10, 10, 0.2, 0.1],  # below conf 0.25
    ]
    return np.array(anchors, dtype=np.float32).T[None]


def test_decode_v8_hand_tensor():
    out = _v8_hand()
    (det,) = decode_yolo(out, layout="v8", conf=0.25, iou=0.45)
    expected = [[40, 40, 60, 60, 0.9, 0], [40, 40, 60, 60, 0.7, 1]]
    np.testing.assert_allclose(det, expected, rtol=1e-6)
    assert det.dtype == np.float32
    (det_auto,) = decode_yolo(out)  # (1, 6, 4): last axis < 6, so auto picks v8
    np.testing.assert_array_equal(det_auto, det)
    (one,) = decode_yolo(out, layout="v8", max_det=1)
    assert one.shape == (1, 6) and one[0, 4] == pytest.approx(0.9)


def test_decode_v5_hand_tensor():
    anchors = [
        [100, 100, 40, 20, 0.8, 0.25, 0.75],  # score 0.8*0.75 = 0.6, class 1
        [10, 10, 4, 4, 0.5, 0.9, 0.1],  # 0.45, class 0
        [10, 10, 4, 4, 0.2, 1.0, 0.0],  # 0.2 < conf
    ]
    out = np.array([anchors, anchors[::-1]], dtype=np.float32)  # (N=2, A=3, 5+nc=7)
    dets = decode_yolo(out, layout="v5", conf=0.25)
    expected = [[80, 90, 120, 110, 0.6, 1], [8, 8, 12, 12, 0.45, 0]]
    assert len(dets) == 2
    for det in dets:
        np.testing.assert_allclose(det, expected, rtol=1e-6)


def test_select_detections_on_decoded_candidates():
    boxes = np.array([[40, 40, 60, 60], [42, 40, 62, 60], [40, 40, 60, 60], [0, 0, 5, 5]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.2])
    # one class: box 1 (IoU 360/440) and box 2 (IoU 1) fall to box 0, box 3 is below conf
    det = select_detections(boxes, scores, conf=0.25, iou=0.45)
    np.testing.assert_allclose(det, [[40, 40, 60, 60, 0.9, 0]])
    assert det.dtype == np.float32
    # classes keep box 2 apart; a NaN score and an infinite box never pass
    det = select_detections(boxes, scores, np.array([0, 0, 1, 0]), conf=0.25)
    np.testing.assert_allclose(det[:, 4:], [[0.9, 0], [0.7, 1]], rtol=1e-6)
    bad = select_detections([[0, 0, np.inf, 1], [0, 0, 1, 1]], [0.9, np.nan], conf=0.1)
    assert bad.shape == (0, 6)
    with pytest.raises(DataError, match="one of each"):
        select_detections(boxes, scores[:3])


def test_select_detections_matches_decode_yolo():
    rng = np.random.default_rng(3)
    out = _random_v8(rng, 1)
    (expected,) = decode_yolo(out, layout="v8", conf=0.3)
    rows = out[0].T
    cls = np.argmax(rows[:, 4:], axis=1)
    xyxy = np.concatenate([rows[:, :2] - rows[:, 2:4] / 2, rows[:, :2] + rows[:, 2:4] / 2], 1)
    got = select_detections(xyxy, rows[np.arange(len(rows)), 4 + cls], cls, conf=0.3)
    assert len(expected) > 3
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_auto_layout_rule_on_real_shapes():
    assert resolve_layout(np.broadcast_to(np.float32(0), (1, 84, 8400))) == "v8"
    assert resolve_layout(np.broadcast_to(np.float32(0), (1, 25200, 85))) == "v5"
    assert resolve_layout(np.zeros((1, 3, 7)), "yolov5") == "v5"
    with pytest.raises(DataError, match="layout"):
        resolve_layout(np.zeros((1, 84, 10)), "v9")
    with pytest.raises(DataError, match="expected"):
        decode_yolo(np.zeros((84, 10, 1, 1)))


def test_split_yolo_output_parts():
    v8 = _v8_hand()
    boxes, scores = split_yolo_output(v8, "v8")
    assert boxes.shape == (1, 4, 4) and scores.shape == (1, 2, 4)
    np.testing.assert_array_equal(boxes[0, :, 0], [50, 50, 20, 20])
    v5 = np.arange(2 * 3 * 7, dtype=np.float32).reshape(2, 3, 7)
    boxes, scores = split_yolo_output(v5, "v5")
    assert boxes.shape == (2, 3, 4) and scores.shape == (2, 3, 3)
    np.testing.assert_array_equal(scores[0, 0], [4, 5, 6])


def _box(x1, y1, x2, y2, score=1.0, cls=0):
    return [x1, y1, x2, y2, score, cls]


GT = [np.array([_box(0, 0, 10, 10), _box(20, 20, 30, 30)])]


def test_map50_perfect_predictions():
    gt = [
        np.array([_box(0, 0, 10, 10, cls=0), _box(20, 20, 30, 30, cls=1)]),
        np.array([_box(5, 5, 15, 15, cls=1)]),
    ]
    preds = [g.copy() for g in gt]
    preds[0][:, 4] = [0.9, 0.3]
    preds[1][:, 4] = [0.5]
    assert map50(gt, preds) == 1.0


def test_map50_one_of_two_missed():
    # Recall reaches 0.5 at precision 1: thresholds 0.00..0.50 (51 of 101) score 1, the rest 0.
    preds = [np.array([_box(0, 0, 10, 10, 0.9)])]
    assert map50(GT, preds) == pytest.approx(51 / 101)


def test_map50_false_positive_above_true_positive():
    # One GT; FP 0.9 then TP 0.8: precision 0.5 at recall 1, envelope 0.5 everywhere.
    gt = [np.array([_box(0, 0, 10, 10)])]
    preds = [np.array([_box(50, 50, 60, 60, 0.9), _box(0, 0, 10, 10, 0.8)])]
    assert map50(gt, preds) == pytest.approx(0.5)
    # Two GT; TP 0.9, FP 0.8, TP 0.7: recall (.5, .5, 1), precision (1, .5, 2/3);
    # envelope (1, 2/3, 2/3): 51 thresholds <= 0.5 give 1, 50 above give 2/3.
    # (All-points interpolation would give 0.8333; 101-point gives 0.83498.)
    preds = [
        np.array([_box(0, 0, 10, 10, 0.9), _box(50, 50, 60, 60, 0.8), _box(20, 20, 30, 30, 0.7)])
    ]
    assert map50(GT, preds) == pytest.approx((51 + 50 * 2 / 3) / 101)


def test_map50_matching_details():
    # A duplicate of a matched GT box is a false positive; a prediction of a class absent from
    # the ground truth is ignored; a box below IoU 0.5 (here 1/7) does not match.
    gt = [np.array([_box(0, 0, 10, 10)])]
    dup = [
        np.array([_box(0, 0, 10, 10, 0.9), _box(0, 0, 10, 10, 0.8), _box(0, 0, 10, 10, 0.95, 3)])
    ]
    assert map50(gt, dup) == pytest.approx(1.0)  # FP after full recall does not lower AP
    dup_first = [np.array([_box(0, 0, 10, 10, 0.9), _box(1, 0, 11, 10, 0.95)])]
    # 0.95 box matches (IoU 9/11), 0.9 duplicate is FP after recall 1 -> AP 1
    assert map50(gt, dup_first) == pytest.approx(1.0)
    far = [np.array([_box(5, 5, 15, 15, 0.9)])]  # IoU 25/175 = 1/7
    assert map50(gt, far) == 0.0
    assert math.isnan(map50([np.zeros((0, 6))], [np.zeros((0, 6))]))  # no ground truth
    assert math.isnan(map50([np.zeros((0, 6))], far))  # predictions only: nothing to score
    # class 0 AP 1.0, class 1 has GT but no predictions -> AP 0; mean 0.5
    gt2 = [np.array([_box(0, 0, 10, 10, cls=0), _box(20, 20, 30, 30, cls=1)])]
    assert map50(gt2, [np.array([_box(0, 0, 10, 10, 0.9, 0)])]) == pytest.approx(0.5)
    with pytest.raises(DataError, match="one array per image"):
        map50(gt2, [])


def _random_v8(rng, n, nc=3, a=60):
    out = np.zeros((n, 4 + nc, a), dtype=np.float32)
    out[:, 0:2] = rng.uniform(0, 640, size=(n, 2, a))
    out[:, 2:4] = rng.uniform(10, 100, size=(n, 2, a))
    out[:, 4:] = rng.uniform(0, 0.1, size=(n, nc, a))
    for i in range(n):
        hot = rng.choice(a, size=8, replace=False)
        out[i, 4 + rng.integers(0, nc, size=8), hot] = rng.uniform(0.5, 1.0, size=8)
    return out


def test_detection_stats_streaming_equals_one_shot():
    rng = np.random.default_rng(0)
    ref = _random_v8(rng, 4)
    test = ref + rng.normal(scale=0.02, size=ref.shape).astype(np.float32) * np.abs(ref)
    stats = DetectionStats(layout="v8")
    stats.update(ref[:1], test[:1])
    stats.update(ref[1:], test[1:])
    res = stats.result()
    gt = decode_yolo(ref, "v8", conf=0.25)
    pred = decode_yolo(test, "v8", conf=0.001)
    assert res["n_images"] == 4
    assert res["n_gt"] == sum(len(g) for g in gt) > 0
    assert res["n_pred"] == sum(len(p) for p in pred) >= res["n_gt"]
    assert res["map50"] == pytest.approx(map50(gt, pred))
    assert 0.5 < res["map50"] <= 1.0
    assert res["box_sqnr_db"] == pytest.approx(sqnr_db(ref[:, :4], test[:, :4]))
    assert res["score_sqnr_db"] == pytest.approx(sqnr_db(ref[:, 4:], test[:, 4:]))
    assert res["raw_sqnr_db"] == pytest.approx(sqnr_db(ref, test))


def test_detection_stats_exposes_the_concat_trap():
    # One int8 scale (amax 640) over boxes and scores: every score rounds to 0.
    rng = np.random.default_rng(1)
    ref = _random_v8(rng, 2)
    scale = 640 / 127
    test = np.clip(np.round(ref / scale), -128, 127) * scale
    assert not test[:, 4:].any()
    stats = DetectionStats(layout="auto")
    stats.update(ref, test)
    res = stats.result()
    assert res["raw_sqnr_db"] > 30  # looks fine
    assert res["score_sqnr_db"] == pytest.approx(0.0)  # error equals the signal
    assert res["n_pred"] == 0 and res["map50"] == 0.0
