"""benchmarks/zoo/minilm.py's metrics and the sentence sources of benchmarks/zoo/text.py."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from zoo import minilm, text  # noqa: E402


def _sample(emb, mask):
    """One sample's outputs in the model's graph order: ids, mask, tokens, sentence."""
    tokens = np.repeat(emb[None, None, :], mask.size, axis=1).astype(np.float32)
    return [np.zeros((1, mask.size), np.int64), mask[None], tokens, emb[None].astype(np.float32)]


def test_score_identical_and_perturbed():
    mask = np.array([1, 1, 1, 0], np.int64)
    # 0 and 1 are each other's nearest, 2 and 3 too
    emb = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0.9, 0.1]], np.float32)
    fp32 = [_sample(e, mask) for e in emb]
    same = minilm.score(fp32, fp32)
    assert same["nn_agreement"] == 1.0 and same["cosine"] == pytest.approx(1.0)
    assert same["sqnr_db"] == float("inf")

    moved = emb.copy()
    moved[1] = [0.02, 0.95, 0.05]  # sentence 1 moves into the other pair
    got = minilm.score(fp32, [_sample(e, mask) for e in moved])
    # nearest by FP32: 0->1, 1->0, 2->3, 3->2; by "INT8": 0->1 (the only one with cos > 0),
    # 1->2, 2->1, 3->1: only sentence 0 keeps its neighbour
    assert got["nn_agreement"] == pytest.approx(1 / 4)
    diff = emb[1] - moved[1]
    sqnr = 10 * np.log10(np.sum(emb.astype(np.float64) ** 2) / np.sum(diff.astype(np.float64) ** 2))
    assert got["sqnr_db"] == pytest.approx(sqnr, rel=1e-6)
    # tokens: 3 unmasked positions per sample, the same error at each: same SQNR
    assert got["token_sqnr_db"] == pytest.approx(sqnr, rel=1e-6)
    cos1 = float(emb[1] @ moved[1] / np.linalg.norm(emb[1]) / np.linalg.norm(moved[1]))
    assert got["cosine"] == pytest.approx((3 + cos1) / 4, rel=1e-6)
    assert got["cosine_min"] == pytest.approx(cos1, rel=1e-6)


def test_sentence_filter_keeps_prose_only():
    para = (
        "The value is stored in a list and returned to the caller. Use x.append(y) to add. "
        "Short one. This sentence has code = 3 in it for sure. "
        "Another plain sentence follows here without any code at all."
    )
    assert list(text.split_sentences(para)) == [
        "The value is stored in a list and returned to the caller.",
        "Another plain sentence follows here without any code at all.",
    ]


@pytest.mark.slow  # imports ~60 standard-library modules for their docstrings
def test_calibration_and_evaluation_sentences_are_disjoint():
    calib, evaluation = text.reference_sentences(), text.docstring_sentences()
    assert len(calib) >= 128 and len(evaluation) >= 128
    assert not set(calib) & set(evaluation)
    for s in text.spread(calib, 128) + text.spread(evaluation, 128):
        assert text.MIN_WORDS <= len(s.split()) <= text.MAX_WORDS
