import pytest
from analysis_models import conv_relu_conv, int8kit_qdq, save

from int8kit.analysis.bench import BenchConfig, bench, cpu_features, latency_stats
from int8kit.errors import DataError


def _dynamic(model):
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for d, name in zip(dims, ["N", None, "H", "W"], strict=True):
        if name:
            d.dim_param = name
    del model.graph.output[0].type.tensor_type.shape.dim[:]
    return model


@pytest.fixture
def paths(tmp_path):
    m = conv_relu_conv()
    return save(m, tmp_path / "m.onnx"), save(int8kit_qdq(m), tmp_path / "q.onnx")


def test_bench_two_models_interleaved(paths):
    result = bench(BenchConfig(list(paths), batches=[1, 2], warmup=1, runs=7, threads=1))
    rows = [r for r in result["results"] if "median_ms" in r]
    assert [(r["model"], r["batch"]) for r in rows] == [(paths[0], 1), (paths[1], 1)]
    for r in rows:
        assert r["median_ms"] > 0 and r["runs"] == 7
        assert r["p99_ms"] >= r["p90_ms"] >= r["median_ms"] >= r["min_ms"]
        assert r["throughput"] > 0
    skipped = [r for r in result["results"] if "skipped" in r]
    assert len(skipped) == 2 and "fixes the batch size at 1" in skipped[0]["skipped"]
    assert result["speedup"]["1"][paths[0]] == pytest.approx(1.0)
    assert set(result["cpu"]["flags"]) == {"avx2", "avx512_vnni", "avx_vnni", "amx_int8"}


def test_dynamic_dims_need_a_shape(tmp_path):
    path = save(_dynamic(conv_relu_conv()), tmp_path / "d.onnx")
    with pytest.raises(DataError, match=r"--shape x:1x3xDxD"):
        bench(BenchConfig([path], runs=1, warmup=0))
    result = bench(BenchConfig([path], batches=[3], runs=2, warmup=0, shapes={"x": (1, 3, 6, 6)}))
    assert result["results"][0]["batch"] == 3 and result["results"][0]["median_ms"] > 0
    with pytest.raises(DataError, match="not model inputs"):
        bench(BenchConfig([path], runs=1, shapes={"images": (1, 3, 6, 6)}))


def test_cpu_features_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\n"
        "processor\t: 1\nmodel name\t: Test CPU\nflags\t\t: fpu\n"
    )
    f = cpu_features(info)
    assert f["model"] == "Test CPU"
    assert f["flags"] == {"avx2": True, "avx512_vnni": True, "avx_vnni": False, "amx_int8": False}
    assert "VNNI" in f["int8_note"]
    info.write_text("model name\t: Old\nflags\t: avx2 fma\n")
    assert "without VNNI" in cpu_features(info)["int8_note"]
    assert cpu_features(tmp_path / "missing")["flags"]["avx2"] is False


def test_latency_stats():
    s = latency_stats([0.001, 0.002, 0.003, 0.004], batch=8)
    assert s["median_ms"] == pytest.approx(2.5)
    assert s["throughput"] == pytest.approx(8 / 0.0025)
    assert s["p99_ms"] >= s["p90_ms"] >= s["median_ms"]


def test_config_validation():
    with pytest.raises(ValueError):
        BenchConfig([], runs=1)
    with pytest.raises(ValueError):
        BenchConfig(["m.onnx"], batches=[0])
