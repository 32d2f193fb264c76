"""Metrics of dense maps (saliency masks, heatmaps) vs FP32: SQNR over all pixels of all samples
(int8kit.analysis.metrics) and the mean per-sample IoU of the maps binarised at a threshold."""

from __future__ import annotations

import numpy as np

from int8kit.analysis.metrics import OutputStats


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean maps; 1.0 when both are empty."""
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def map_scores(maps32: list[np.ndarray], maps8: list[np.ndarray], thresholds) -> dict[str, float]:
    """``thresholds``: a float, or a function of the FP32 map giving its threshold."""
    stats = OutputStats()
    ious, fg = [], []
    for r, t in zip(maps32, maps8, strict=True):
        stats.update(r, t)
        thr = thresholds(r) if callable(thresholds) else thresholds
        ious.append(iou(r > thr, t > thr))
        fg.append(float(np.mean(r > thr)))
    res = stats.result()
    return {
        "iou": float(np.mean(ious)),
        "sqnr_db": res["sqnr_db"],
        "cosine": res["cosine"],
        "iou_min": float(np.min(ious)),
        "fp32_foreground": float(np.mean(fg)),
    }
