"""Calibration statistics and range methods (numpy only), and the TensorRT cache format."""

from int8kit.calib.cache import CalibrationCache
from int8kit.calib.collector import HistogramCollector, TensorStats, safe_amax
from int8kit.calib.methods import METHODS, compute_amax, weight_amax

__all__ = [
    "METHODS",
    "CalibrationCache",
    "HistogramCollector",
    "TensorStats",
    "compute_amax",
    "safe_amax",
    "weight_amax",
]
