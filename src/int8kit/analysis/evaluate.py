"""`evaluate`: FP32 vs INT8 model files on the same data, per output and per backend.

Backends (analysis.fidelity.BACKENDS): "trt-like" runs the Q/DQ graph unfused — what TensorRT
computes; "ort-int8" runs ONNX Runtime's fused integer kernels, which can differ on CPUs without
VNNI. Detector outputs are scored as in analysis.detection: the FP32 detections are the ground
truth; the thresholds used are stated in the result.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from int8kit.analysis.detection import DetectionStats
from int8kit.analysis.fidelity import (
    BACKENDS,
    TASKS,
    compare_models,
    embedding_outputs,
    open_sessions,
)
from int8kit.data import DataConfig
from int8kit.errors import DataError

__all__ = ["BACKEND_LABELS", "detection_thresholds", "evaluate"]

BACKEND_LABELS = {
    "trt-like": "Q/DQ unfused, as TensorRT computes",
    "ort-int8": "ONNX Runtime fused integer kernels",
}


def detection_thresholds() -> dict[str, float]:
    """The thresholds DetectionStats uses by default, for the report."""
    d = DetectionStats()
    return {
        "conf_fp32_ground_truth": d.conf_gt,
        "conf_int8_predictions": d.conf_pred,
        "nms_iou": d.iou,
        "max_det": d.max_det,
        "match_iou": d.iou_thr,
    }


def evaluate(
    fp32_model,
    int8_model,
    data: DataConfig | Iterable[dict[str, np.ndarray]],
    task: str = "auto",
    layout: str = "auto",
    backends: tuple[str, ...] = tuple(BACKENDS),
) -> dict:
    """Run both models (paths or ModelProtos) on ``data`` and compare every output.

    Returns ``{"outputs": {backend: {output: metrics}}, "backends": {label: meaning},
    "samples", "task", "detection_thresholds", ...}`` — plain JSON types.
    """
    from int8kit.data import make_source
    from int8kit.onnx.model_io import input_specs, load_model
    from int8kit.onnx.observe import make_session

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise ValueError(f"unknown backends {unknown}; choose from {', '.join(BACKENDS)}")
    fp32 = load_model(fp32_model) if not hasattr(fp32_model, "graph") else fp32_model
    int8 = load_model(int8_model) if not hasattr(int8_model, "graph") else int8_model
    fp32_inputs = sorted(s.name for s in input_specs(fp32))
    int8_inputs = sorted(s.name for s in input_specs(int8))
    if fp32_inputs != int8_inputs:
        raise DataError(
            f"the models take different inputs (FP32 {fp32_inputs}, INT8 {int8_inputs}); "
            "compare an INT8 model with the FP32 model it was made from"
        )
    batches = make_source(data, input_specs(fp32)) if isinstance(data, DataConfig) else data
    sessions = open_sessions(int8, backends)  # a refused backend is reported as failed
    outputs = compare_models(
        make_session(fp32), sessions, batches, task, layout, embeddings=embedding_outputs(fp32)
    )
    stats = getattr(batches, "stats", None)
    used = getattr(stats, "used", None)
    if used == 0:
        raise DataError("the data source produced no samples; check --data and --num-images")
    result = {
        "fp32_model": str(fp32_model) if not hasattr(fp32_model, "graph") else None,
        "int8_model": str(int8_model) if not hasattr(int8_model, "graph") else None,
        "samples": used,
        "skipped_files": [list(x) for x in getattr(stats, "skipped_files", [])],
        "task": task,
        "layout": layout,
        "backends": {b: BACKEND_LABELS[b] for b in backends},
        "outputs": outputs,
    }
    if any(m.get("task") == "detect" for per in outputs.values() for m in per.values()):
        result["detection_thresholds"] = detection_thresholds()
    return result
