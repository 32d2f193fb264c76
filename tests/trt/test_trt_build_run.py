"""Engine build and run with real TensorRT (skipped where TensorRT or a GPU is missing)."""

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

trt = pytest.importorskip("tensorrt")
torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

sys.path.insert(0, str(Path(__file__).parents[1] / "trt_commands"))
from trt_tiny_models import conv_model, qdq_conv_model  # noqa: E402

from int8kit.trt.build import BuildConfig, build_engine  # noqa: E402
from int8kit.trt.runner import TrtRunner  # noqa: E402
from int8kit.trt.version import installed_version  # noqa: E402

pytestmark = [
    pytest.mark.trt,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _ort_fp32(model: onnx.ModelProto, feed: dict) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feed)[0]


def _batches(n: int, batch: int = 1):
    rng = np.random.default_rng(1)
    return [{"images": rng.uniform(-1, 1, (batch, 3, 8, 8)).astype(np.float32)} for _ in range(n)]


def test_qdq_engine_matches_fp32(tmp_path):
    path = tmp_path / "m.int8.onnx"
    onnx.save(qdq_conv_model(batch=1), path)
    engine = build_engine(BuildConfig(path, tmp_path / "m.engine", timing_cache=tmp_path / "t"))
    assert engine.stat().st_size > 0
    assert (tmp_path / "t").stat().st_size > 0
    feed = _batches(1)[0]
    got = TrtRunner(engine).run(feed)["out"]
    want = _ort_fp32(conv_model(batch=1), feed)
    assert got.shape == want.shape == (1, 4, 8, 8)
    # int8 activations with scale 4/127 and per-channel int8 weights: errors of a few percent
    assert np.abs(got - want).max() < 0.1 * np.abs(want).max()


def test_implicit_calibration_writes_cache_then_builds_from_it(tmp_path):
    if not installed_version(trt).implicit_int8:
        pytest.skip("TensorRT 11 has no implicit INT8")
    path = tmp_path / "m.onnx"
    onnx.save(conv_model(batch="batch"), path)
    cache = tmp_path / "m.calib.cache"
    shapes = ["images:1x3x8x8/2x3x8x8/4x3x8x8"]
    config = BuildConfig(
        path,
        tmp_path / "a.engine",
        int8=True,
        calib_batches=_batches(8, batch=2),
        cache_path=cache,
        shapes=shapes,
        workspace_mib=256,
    )
    build_engine(config)
    text = cache.read_text(errors="replace")
    assert text.startswith("TRT-") and "EntropyCalibration2" in text.splitlines()[0]
    assert "images:" in text
    # From the cache alone, no batches:
    engine = build_engine(
        BuildConfig(path, tmp_path / "b.engine", int8=True, cache_path=cache, shapes=shapes)
    )
    feed = _batches(1, batch=3)[0]
    got = TrtRunner(engine).run(feed)["out"]
    want = _ort_fp32(conv_model(batch="batch"), feed)
    assert got.shape == (3, 4, 8, 8)
    assert np.abs(got - want).max() < 0.1 * np.abs(want).max()


def test_parser_errors_are_reported(tmp_path):
    from int8kit.errors import ModelError

    bad = conv_model(batch=1)
    bad.graph.node[1].op_type = "NoSuchOp"
    path = tmp_path / "bad.onnx"
    onnx.save(bad, path)
    with pytest.raises(ModelError, match="ONNX parser rejected"):
        build_engine(BuildConfig(path, tmp_path / "bad.engine"))
    assert not (tmp_path / "bad.engine").exists()
