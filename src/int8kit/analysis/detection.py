"""Detection fidelity for YOLO-style detectors: decode, NMS, mAP@0.5 of INT8 against FP32.

Pure numpy. The FP32 model's detections (at a normal confidence, 0.25) serve as ground truth and
the INT8 model's detections (at 0.001, as in mAP evaluation) as predictions, so no labelled data
set is needed to see what quantization cost.

Raw output layouts (a 3-D tensor, batch first; a 2-D tensor is taken as one image):
- "v8": YOLOv8/v11 `(N, 4 + nc, A)`: cx, cy, w, h, then nc class scores; no objectness.
- "v5": YOLOv5/v7 `(N, A, 5 + nc)`: cx, cy, w, h, objectness, nc class probabilities;
  score = objectness * class probability.
- "auto": for a tensor `(N, d1, d2)`, "v5" when d2 < d1 and d2 >= 6 (anchors outnumber
  channels on the last axis, e.g. (1, 25200, 85)), otherwise "v8" (e.g. (1, 84, 8400)).
  Tiny hand-built tensors can fool the rule; pass the layout explicitly then.

Detectors whose boxes are decoded outside the model (anchor priors as in RetinaFace, grids
and strides as in YOLOX exports) decode their own candidates and pass them to
`select_detections`, which applies the same threshold and NMS as `decode_yolo`.

The box coordinates (0..640) and the scores (0..1) of one raw tensor must be measured apart:
a single int8 scale on their concat zeroes every score while the raw-output SQNR still looks
fine, because the boxes dominate it. `split_yolo_output` and `DetectionStats` do that.
"""

from __future__ import annotations

import numpy as np

from int8kit.analysis.metrics import OutputStats
from int8kit.errors import DataError

__all__ = [
    "DetectionStats",
    "decode_yolo",
    "iou_matrix",
    "map50",
    "nms",
    "resolve_layout",
    "select_detections",
    "split_yolo_output",
]

_LAYOUTS = {"v8": "v8", "yolov8": "v8", "v5": "v5", "yolov5": "v5", "auto": "auto"}
_MAX_NMS = 30_000  # candidates kept (by score) before NMS, as Ultralytics does


def _batched(output: np.ndarray) -> np.ndarray:
    a = np.asarray(output)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise DataError(
            f"detector output has shape {np.shape(output)}; expected (N, 4+nc, A) for YOLOv8 "
            "or (N, A, 5+nc) for YOLOv5"
        )
    return a


def resolve_layout(output: np.ndarray, layout: str = "auto") -> str:
    """'v8' or 'v5' for this raw output; 'auto' applies the rule in the module docstring."""
    key = _LAYOUTS.get(str(layout).lower())
    if key is None:
        raise DataError(f"unknown layout {layout!r}; use 'auto', 'v8' or 'v5'")
    _, d1, d2 = _batched(output).shape
    if key == "auto":
        key = "v5" if d2 < d1 and d2 >= 6 else "v8"
    if key == "v8" and d1 < 5:
        raise DataError(f"a v8 output needs 4+nc >= 5 rows on axis 1; got shape {(d1, d2)}")
    if key == "v5" and d2 < 6:
        raise DataError(f"a v5 output needs 5+nc >= 6 columns on the last axis; got {(d1, d2)}")
    return key


def split_yolo_output(output: np.ndarray, layout: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """(boxes, scores) parts of a raw output, in its own axis order.

    v8: boxes `(N, 4, A)`, scores `(N, nc, A)`. v5: boxes `(N, A, 4)`, scores `(N, A, 1+nc)`
    (objectness and class probabilities: everything in 0..1).
    """
    a = _batched(output)
    if resolve_layout(a, layout) == "v8":
        return a[:, :4, :], a[:, 4:, :]
    return a[..., :4], a[..., 4:]


def _anchor_rows(a: np.ndarray, layout: str) -> tuple[np.ndarray, np.ndarray]:
    """Per image: boxes cxcywh `(N, A, 4)` and per-class scores `(N, A, nc)`."""
    if layout == "v8":
        rows = np.swapaxes(a, 1, 2)
        return rows[..., :4], rows[..., 4:]
    return a[..., :4], a[..., 5:] * a[..., 4:5]


def _xyxy(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return np.zeros((0, 4))
    return np.atleast_2d(x)[:, :4]


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of `a` (M, >=4) with every box of `b` (K, >=4), xyxy; (M, K) float64."""
    a, b = _xyxy(a), _xyxy(b)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    iou: float = 0.45,
    max_out: int | None = None,
) -> np.ndarray:
    """Class-aware greedy NMS; indices of the kept boxes, best score first, at most `max_out`.

    A box is dropped when its IoU with a better-scoring kept box of the same class exceeds
    `iou`. Classes are kept apart by shifting each class's boxes to its own region of the
    plane, so one vectorised IoU row per kept box serves all classes. Stopping at `max_out`
    bounds the loop when thousands of low-confidence candidates come in.
    """
    boxes = _xyxy(boxes)
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    span = float(np.max(boxes) - np.min(boxes)) + 1.0
    b = boxes + (np.asarray(classes, dtype=np.float64) * span)[:, None]
    area = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    order = np.argsort(-np.asarray(scores), kind="stable")
    limit = len(order) if max_out is None else max_out
    keep = []
    while order.size and len(keep) < limit:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.minimum(b[i, 2], b[rest, 2]) - np.maximum(b[i, 0], b[rest, 0])
        h = np.minimum(b[i, 3], b[rest, 3]) - np.maximum(b[i, 1], b[rest, 1])
        inter = np.clip(w, 0, None) * np.clip(h, 0, None)
        union = area[i] + area[rest] - inter
        with np.errstate(invalid="ignore", divide="ignore"):
            overlap = np.where(union > 0, inter / union, 0.0)
        order = rest[overlap <= iou]
    return np.asarray(keep, dtype=np.int64)


def decode_yolo(
    output: np.ndarray,
    layout: str = "auto",
    conf: float = 0.25,
    iou: float = 0.45,
    max_det: int = 300,
) -> list[np.ndarray]:
    """Detections per image: float32 rows (x1, y1, x2, y2, score, class), best score first.

    Each anchor takes its best class; anchors with score > `conf` go through class-aware NMS
    (IoU > `iou` suppresses) and at most `max_det` remain. Coordinates stay in the model's
    input pixels (no letterbox undo).
    """
    a = _batched(output)
    cxcywh, cls_scores = _anchor_rows(a, resolve_layout(a, layout))
    results = []
    for box, sc in zip(cxcywh, cls_scores, strict=True):
        cls = np.argmax(sc, axis=1)
        score = np.take_along_axis(sc, cls[:, None], axis=1)[:, 0]
        box = box.astype(np.float64)
        xyxy = np.concatenate([box[:, :2] - box[:, 2:] / 2, box[:, :2] + box[:, 2:] / 2], axis=1)
        results.append(select_detections(xyxy, score, cls, conf, iou, max_det))
    return results


def select_detections(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray | None = None,
    conf: float = 0.25,
    iou: float = 0.45,
    max_det: int = 300,
) -> np.ndarray:
    """Detections of one image from already-decoded candidates, as `decode_yolo` makes them.

    `boxes` (A, 4) xyxy, `scores` (A,), `classes` (A,) (None: one class, 0). Candidates with
    score > `conf` and finite coordinates go through class-aware NMS (IoU > `iou` suppresses);
    at most `max_det` float32 rows (x1, y1, x2, y2, score, class) remain, best score first.
    For detectors whose decoding (anchors, priors, grids) happens outside the model.
    """
    box = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    score = np.asarray(scores).reshape(-1)
    cls = np.zeros(len(score)) if classes is None else np.asarray(classes).reshape(-1)
    if not len(box) == len(score) == len(cls):
        raise DataError(
            f"{len(box)} boxes, {len(score)} scores and {len(cls)} classes; pass one of each "
            "per candidate"
        )
    with np.errstate(invalid="ignore"):
        mask = (score > conf) & np.isfinite(box).all(axis=1)  # NaN scores never pass
    box, score, cls = box[mask], score[mask], cls[mask]
    if score.size > _MAX_NMS:
        top = np.argsort(-score, kind="stable")[:_MAX_NMS]
        box, score, cls = box[top], score[top], cls[top]
    keep = nms(box, score, cls, iou, max_out=max_det)
    det = np.concatenate([box[keep], score[keep, None], cls[keep, None]], axis=1)
    return det.astype(np.float32).reshape(-1, 6)


def _average_precision(tp: np.ndarray, scores: np.ndarray, n_gt: int) -> float:
    """COCO 101-point interpolated AP of one class from per-detection TP flags."""
    order = np.argsort(-scores, kind="mergesort")
    tp = tp[order]
    tps = np.cumsum(tp)
    fps = np.cumsum(~tp)
    recall = tps / n_gt
    precision = tps / np.maximum(tps + fps, np.finfo(np.float64).eps)
    # Precision envelope: the best precision at this recall or any higher one.
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    thresholds = np.linspace(0.0, 1.0, 101)
    idx = np.searchsorted(recall, thresholds, side="left")
    sampled = np.where(idx < len(recall), precision[np.minimum(idx, len(recall) - 1)], 0.0)
    return float(sampled.mean())


def _match(gt: np.ndarray, pred: np.ndarray, iou_thr: float) -> np.ndarray:
    """TP flag per prediction of one image and class, COCO-style greedy by score.

    Each prediction, best score first, takes the still-unmatched ground truth box it overlaps
    most (IoU >= iou_thr); without one it is a false positive.
    """
    tp = np.zeros(len(pred), dtype=bool)
    if len(gt) == 0 or len(pred) == 0:
        return tp
    order = np.argsort(-pred[:, 4], kind="mergesort")
    ious = iou_matrix(pred[order], gt)
    taken = np.zeros(len(gt), dtype=bool)
    for rank, row in enumerate(ious):
        row = np.where(taken, -1.0, row)
        j = int(np.argmax(row))
        if row[j] >= iou_thr:
            taken[j] = True
            tp[order[rank]] = True
            if taken.all():
                break  # every later prediction is a false positive
    return tp


def _rows(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.size == 0:
        return np.zeros((0, 6))
    if a.ndim != 2 or a.shape[1] < 6:
        raise DataError(f"detections have shape {a.shape}; expected rows (x1,y1,x2,y2,score,cls)")
    return a


def map50(
    ground_truth: list[np.ndarray], predictions: list[np.ndarray], iou_thr: float = 0.5
) -> float:
    """mAP at IoU `iou_thr` (0.5), COCO-style 101-point interpolation.

    Rows are (x1, y1, x2, y2, score, class), one array per image; the score of a ground truth
    row is ignored. AP is computed per class and averaged over the classes present in the
    ground truth (a class with ground truth but no predictions scores 0; predictions of classes
    absent from the ground truth are ignored). nan when there is no ground truth at all.
    """
    if len(ground_truth) != len(predictions):
        raise DataError(
            f"{len(ground_truth)} ground-truth images but {len(predictions)} prediction images; "
            "pass one array per image to both"
        )
    # Group once by (class, image) so the cost follows the detections, not classes x images.
    n_gt: dict[float, int] = {}
    flags: dict[float, list[np.ndarray]] = {}
    scores: dict[float, list[np.ndarray]] = {}
    for g, p in zip(ground_truth, predictions, strict=True):
        g, p = _rows(g), _rows(p)
        for c in np.unique(np.concatenate([g[:, 5], p[:, 5]])):
            g_c, p_c = g[g[:, 5] == c], p[p[:, 5] == c]
            n_gt[c] = n_gt.get(c, 0) + len(g_c)
            flags.setdefault(c, []).append(_match(g_c, p_c, iou_thr))
            scores.setdefault(c, []).append(p_c[:, 4])
    aps = []
    for c, count in n_gt.items():
        if count == 0:
            continue  # class only predicted, never in the ground truth
        tp, sc = np.concatenate(flags[c]), np.concatenate(scores[c])
        aps.append(_average_precision(tp, sc, count) if tp.size else 0.0)
    return float(np.mean(aps)) if aps else float("nan")


class DetectionStats:
    """Streaming detection fidelity of a test (INT8) detector against a reference (FP32) one.

    `update(ref_output, test_output)` takes raw outputs of one batch, decodes both (reference at
    `conf_gt`, test at `conf_pred`) and keeps only the detections; box and score parts of the
    raw tensors are compared separately through `OutputStats`, never stored.
    """

    def __init__(
        self,
        conf_gt: float = 0.25,
        conf_pred: float = 0.001,
        layout: str = "auto",
        iou: float = 0.45,
        max_det: int = 300,
        iou_thr: float = 0.5,
    ) -> None:
        if _LAYOUTS.get(str(layout).lower()) is None:
            raise DataError(f"unknown layout {layout!r}; use 'auto', 'v8' or 'v5'")
        self.conf_gt, self.conf_pred = conf_gt, conf_pred
        self.layout, self.iou, self.max_det, self.iou_thr = layout, iou, max_det, iou_thr
        self.reset()

    def reset(self) -> None:
        self.ground_truth: list[np.ndarray] = []
        self.predictions: list[np.ndarray] = []
        self.boxes = OutputStats()
        self.scores = OutputStats()
        self.raw = OutputStats()

    def update(self, ref_output: np.ndarray, test_output: np.ndarray) -> None:
        ref, test = _batched(ref_output), _batched(test_output)
        if ref.shape != test.shape:
            raise DataError(f"reference output {ref.shape} and test output {test.shape} differ")
        layout = resolve_layout(ref, self.layout)
        self.ground_truth += decode_yolo(ref, layout, self.conf_gt, self.iou, self.max_det)
        self.predictions += decode_yolo(test, layout, self.conf_pred, self.iou, self.max_det)
        ref_boxes, ref_scores = split_yolo_output(ref, layout)
        test_boxes, test_scores = split_yolo_output(test, layout)
        self.boxes.update(ref_boxes, test_boxes)
        self.scores.update(ref_scores, test_scores)
        self.raw.update(ref, test)

    def result(self) -> dict[str, float]:
        """{'map50', 'n_images', 'n_gt', 'n_pred', 'box_sqnr_db', 'score_sqnr_db', 'raw_sqnr_db'}."""
        return {
            "map50": map50(self.ground_truth, self.predictions, self.iou_thr),
            "n_images": len(self.ground_truth),
            "n_gt": int(sum(len(g) for g in self.ground_truth)),
            "n_pred": int(sum(len(p) for p in self.predictions)),
            "box_sqnr_db": self.boxes.result()["sqnr_db"],
            "score_sqnr_db": self.scores.result()["sqnr_db"],
            "raw_sqnr_db": self.raw.result()["sqnr_db"],
        }
