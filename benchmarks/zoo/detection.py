"""What the zoo's detectors with decoding outside the graph share (RetinaFace priors, YOLOX grids):
scikit-image's bundled photos as RGB arrays, and scoring INT8 against FP32.

Scoring follows int8kit.analysis.detection (as yolov8n does): the FP32 model's detections at the
package's own confidence threshold are the reference, the INT8 model's detections at 0.001 are the
predictions, AP@0.5 with COCO 101-point interpolation (`map50`); candidates are thresholded and
NMS'd by `select_detections`. Box and score SQNR are taken over the raw outputs (the regression
deltas and the probabilities the model emits), each part on its own, so the scores are not drowned
by the boxes. Most anchors see background, where the box deltas mean nothing and no NMS ever
reads them; ``box_fg_sqnr_db`` is the box SQNR over the anchors the FP32 model scores above its
reference threshold only.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from int8kit.analysis.detection import map50
from int8kit.analysis.metrics import OutputStats

CONF_PRED = 0.001  # INT8 detections as in mAP evaluation


def skimage_rgb(name: str) -> np.ndarray:
    """A photo bundled with scikit-image (no download) as HxWx3 uint8 RGB."""
    import skimage.data

    img = (
        skimage.data.stereo_motorcycle()[0]
        if name == "motorcycle"
        else getattr(skimage.data, name)()
    )
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    if img.dtype != np.uint8:
        img = np.clip(np.asarray(img, dtype=np.float64) * 255.0, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img[..., :3])


def random_crop(rng: np.random.Generator, img: np.ndarray, h: int, w: int) -> np.ndarray:
    """An ``h`` x ``w`` crop of ``img`` at a random place and scale (resized with cv2)."""
    import cv2

    H, W = img.shape[:2]
    s = rng.uniform(0.4, 1.0) * min(H / h, W / w)
    ch, cw = max(8, int(h * s)), max(8, int(w * s))
    y, x = int(rng.integers(0, H - ch + 1)), int(rng.integers(0, W - cw + 1))
    return cv2.resize(img[y : y + ch, x : x + cw], (w, h), interpolation=cv2.INTER_AREA)


Split = Callable[[list[np.ndarray]], tuple[np.ndarray, np.ndarray, np.ndarray]]
Decode = Callable[[list[np.ndarray], float], np.ndarray]


def score_detector(
    fp32: list[list[np.ndarray]],
    int8: list[list[np.ndarray]],
    split: Split,
    decode: Decode,
    conf_ref: float,
    conf_pred: float = CONF_PRED,
) -> dict[str, float]:
    """ap50, box_sqnr_db, score_sqnr_db, box_fg_sqnr_db, n_ref (FP32 detections), n_pred.

    ``split(outputs)`` gives one sample's raw parts per anchor: boxes (A, 4), scores (A, k) or
    (A,), and the detection score (A,) that ``conf_ref`` thresholds; ``decode(outputs, conf)``
    its detections, rows (x1, y1, x2, y2, score, class).
    """
    boxes, scores, fg = OutputStats(), OutputStats(), OutputStats()
    ref, pred = [], []
    for r, t in zip(fp32, int8, strict=True):
        (rb, rs, r_score), (tb, ts, _) = split(r), split(t)
        boxes.update(rb, tb)
        scores.update(rs, ts)
        hot = r_score > conf_ref
        fg.update(rb[hot], tb[hot])
        ref.append(decode(r, conf_ref))
        pred.append(decode(t, conf_pred))
    return {
        "ap50": map50(ref, pred),
        "box_sqnr_db": boxes.result()["sqnr_db"],
        "score_sqnr_db": scores.result()["sqnr_db"],
        "box_fg_sqnr_db": fg.result()["sqnr_db"],
        "n_ref": int(sum(len(g) for g in ref)),
        "n_pred": int(sum(len(p) for p in pred)),
    }
