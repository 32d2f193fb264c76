"""Fidelity metrics: how close an INT8 model's outputs are to the FP32 reference.

Pure numpy, accumulated in float64. Every metric has a streaming form (`OutputStats`,
`ClassifyStats`) because evaluation runs over many images and must not keep them: the streamed
result over all batches equals the one-shot result over the concatenated data.

Conventions:
- SQNR = 10*log10(sum ref^2 / sum (ref - test)^2) in dB; +inf when identical, -inf when the
  reference is all zero and the test is not; nan when either side contains NaN.
- cosine of two all-zero arrays is 1.0 (identical); of one all-zero array and a non-zero one, 0.0.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from int8kit.errors import DataError

__all__ = [
    "ClassifyStats",
    "OutputStats",
    "compare_outputs",
    "cosine",
    "max_abs_error",
    "mean_abs_error",
    "sqnr_db",
    "topk_agreement",
    "topk_overlap",
]


def _pair(reference: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both arrays flattened to float64; shapes must match."""
    r = np.asarray(reference)
    t = np.asarray(test)
    if r.shape != t.shape:
        raise DataError(
            f"reference shape {r.shape} and test shape {t.shape} differ; compare outputs of "
            "the same model on the same inputs"
        )
    return r.astype(np.float64, copy=False).ravel(), t.astype(np.float64, copy=False).ravel()


def _sqnr_from_sums(signal: float, noise: float) -> float:
    if np.isnan(signal) or np.isnan(noise):
        return float("nan")
    if noise == 0.0:
        return float("inf")
    if signal == 0.0:
        return float("-inf")
    with np.errstate(over="ignore", invalid="ignore"):
        return float(10.0 * np.log10(signal / noise))


def _cosine_from_sums(dot: float, ref_sq: float, test_sq: float) -> float:
    if np.isnan(dot) or np.isnan(ref_sq) or np.isnan(test_sq):
        return float("nan")
    if ref_sq == 0.0 and test_sq == 0.0:
        return 1.0
    if ref_sq == 0.0 or test_sq == 0.0:
        return 0.0
    return float(dot / (np.sqrt(ref_sq) * np.sqrt(test_sq)))


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """Sum of a*b of two flat float64 arrays, without BLAS: on a busy machine a multi-threaded
    BLAS dot of a few thousand values waits for its threads (80 ms instead of 3 ms)."""
    return float(np.einsum("i,i->", a, b))


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of `test` against `reference`, in dB."""
    r, t = _pair(reference, test)
    with np.errstate(over="ignore", invalid="ignore"):
        e = r - t
        return _sqnr_from_sums(_dot(r, r), _dot(e, e))


def cosine(reference: np.ndarray, test: np.ndarray) -> float:
    """Cosine similarity of the two arrays, flattened."""
    r, t = _pair(reference, test)
    with np.errstate(over="ignore", invalid="ignore"):
        return _cosine_from_sums(_dot(r, t), _dot(r, r), _dot(t, t))


def max_abs_error(reference: np.ndarray, test: np.ndarray) -> float:
    """Largest |reference - test|; nan if either contains NaN; 0.0 for empty arrays."""
    r, t = _pair(reference, test)
    if r.size == 0:
        return 0.0
    with np.errstate(invalid="ignore"):
        return float(np.max(np.abs(r - t)))


def mean_abs_error(reference: np.ndarray, test: np.ndarray) -> float:
    """Mean |reference - test|; nan for empty arrays or when either contains NaN."""
    r, t = _pair(reference, test)
    if r.size == 0:
        return float("nan")
    with np.errstate(invalid="ignore"):
        return float(np.mean(np.abs(r - t)))


class OutputStats:
    """Streaming SQNR, cosine, max and mean absolute error of one output over many batches.

    Keeps five float64 sums and a count, never the data, so memory does not grow with the
    number of images. `result()` over several `update` calls equals the one-shot metrics over
    the concatenated batches.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self._ref_sq = 0.0
        self._test_sq = 0.0
        self._dot = 0.0
        self._err_sq = 0.0
        self._abs_sum = 0.0
        self._max_abs = 0.0

    def update(self, reference: np.ndarray, test: np.ndarray) -> None:
        r, t = _pair(reference, test)
        if r.size == 0:
            return
        with np.errstate(over="ignore", invalid="ignore"):
            e = r - t
            a = np.abs(e)
            self._ref_sq += _dot(r, r)
            self._test_sq += _dot(t, t)
            self._dot += _dot(r, t)
            self._err_sq += _dot(e, e)
            self._abs_sum += float(a.sum())
            m = float(a.max())
        # max() would silently drop a NaN; keep it visible like the one-shot function does.
        if not np.isnan(self._max_abs):
            self._max_abs = m if np.isnan(m) else max(self._max_abs, m)
        self.count += r.size

    def result(self) -> dict[str, float]:
        """{'sqnr_db', 'cosine', 'max_abs', 'mean_abs', 'count'} over everything seen."""
        return {
            "sqnr_db": _sqnr_from_sums(self._ref_sq, self._err_sq),
            "cosine": _cosine_from_sums(self._dot, self._ref_sq, self._test_sq),
            "max_abs": self._max_abs,
            "mean_abs": self._abs_sum / self.count if self.count else float("nan"),
            "count": self.count,
        }


def compare_outputs(
    ref: Mapping[str, np.ndarray], test: Mapping[str, np.ndarray]
) -> dict[str, dict[str, float]]:
    """Per output name of `ref`: sqnr_db, cosine, max_abs, mean_abs (and element count)."""
    missing = [name for name in ref if name not in test]
    if missing:
        raise DataError(
            f"test outputs lack {missing}; run both models with the same output names "
            f"(test has {sorted(test)})"
        )
    out = {}
    for name, r in ref.items():
        stats = OutputStats()
        stats.update(r, test[name])
        out[name] = stats.result()
    return out


# ---------------------------------------------------------------- classification


def _logits(x: np.ndarray, what: str) -> np.ndarray:
    """(N, C) or (N, C, 1, 1) -> (N, C)."""
    a = np.asarray(x)
    if a.ndim == 4 and a.shape[2:] == (1, 1):
        a = a.reshape(a.shape[0], a.shape[1])
    if a.ndim != 2:
        raise DataError(
            f"{what} logits have shape {np.shape(x)}; expected (N, C) or (N, C, 1, 1) "
            "(pass the classifier output, not a feature map)"
        )
    return a


def _topk(logits: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest per row, best first; ties go to the lower class index."""
    if not 1 <= k <= logits.shape[1]:
        raise DataError(f"k={k} must be between 1 and the number of classes {logits.shape[1]}")
    return np.argsort(-logits, axis=1, kind="stable")[:, :k]


def _logit_pair(ref_logits, test_logits) -> tuple[np.ndarray, np.ndarray]:
    r = _logits(ref_logits, "reference")
    t = _logits(test_logits, "test")
    if r.shape != t.shape:
        raise DataError(f"reference logits {r.shape} and test logits {t.shape} differ")
    return r, t


def _agree_count(r: np.ndarray, t: np.ndarray, k: int) -> int:
    ref_top1 = _topk(r, 1)[:, 0]
    return int(np.any(_topk(t, k) == ref_top1[:, None], axis=1).sum())


def _overlap_sum(r: np.ndarray, t: np.ndarray, k: int) -> int:
    in_ref = np.zeros(r.shape, dtype=bool)
    np.put_along_axis(in_ref, _topk(r, k), True, axis=1)
    return int(np.take_along_axis(in_ref, _topk(t, k), axis=1).sum())


def topk_agreement(ref_logits: np.ndarray, test_logits: np.ndarray, k: int = 1) -> float:
    """Fraction of samples whose reference top-1 class is among the test's top-k classes.

    k=1: the fraction whose top-1 class is the same ("top-1 agreement"); k=5 is top-5 accuracy
    with the FP32 predictions as labels.
    """
    r, t = _logit_pair(ref_logits, test_logits)
    if r.shape[0] == 0:
        return float("nan")
    return _agree_count(r, t, k) / r.shape[0]


def topk_overlap(ref_logits: np.ndarray, test_logits: np.ndarray, k: int = 5) -> float:
    """Mean over samples of |top-k(ref) ∩ top-k(test)| / k (order inside the top-k ignored)."""
    r, t = _logit_pair(ref_logits, test_logits)
    if r.shape[0] == 0:
        return float("nan")
    return _overlap_sum(r, t, k) / (r.shape[0] * k)


class ClassifyStats:
    """Streaming top-1 agreement, top-k agreement/overlap and logit SQNR over many batches."""

    def __init__(self, k: int = 5) -> None:
        if k < 1:
            raise DataError(f"k={k} must be at least 1")
        self.k = k
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self._top1 = 0
        self._topk = 0
        self._overlap = 0
        self._logits = OutputStats()

    def update(self, ref_logits: np.ndarray, test_logits: np.ndarray) -> None:
        r, t = _logit_pair(ref_logits, test_logits)
        # a 4-way classifier (an orientation model) has no top-5: its top-k is all k classes
        self.k = min(self.k, r.shape[1])
        self._top1 += _agree_count(r, t, 1)
        self._topk += _agree_count(r, t, self.k)
        self._overlap += _overlap_sum(r, t, self.k)
        self._logits.update(r, t)
        self.n += r.shape[0]

    def result(self) -> dict[str, float]:
        """{'n', 'k', 'top1_agreement', 'topk_agreement', 'topk_overlap', 'sqnr_db', 'cosine'}."""
        n = self.n
        logits = self._logits.result()
        return {
            "n": n,
            "k": self.k,
            "top1_agreement": self._top1 / n if n else float("nan"),
            "topk_agreement": self._topk / n if n else float("nan"),
            "topk_overlap": self._overlap / (n * self.k) if n else float("nan"),
            "sqnr_db": logits["sqnr_db"],
            "cosine": logits["cosine"],
        }
