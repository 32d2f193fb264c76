"""observe(): every tensor's collector equals one fed that tensor's values directly, also for
the tensors it derives instead of exposing (a zero Pad's output, a Reshape's output)."""

import models
import numpy as np
import pytest
from onnx import helper, numpy_helper

from int8kit.calib import HistogramCollector
from int8kit.onnx import observe as ob


def padded_chain(pad_value=0.0):
    """x -> Relu -> Pad(1 px) -> Conv -> Reshape: the Conv reads the Pad's output."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Pad", ["r", "pads", "v"], ["p"], name="pad", mode="constant"),
        helper.make_node("Conv", ["p", "w"], ["c"], name="conv"),
        helper.make_node("Reshape", ["c", "shape"], ["y"], name="flat"),
    ]
    inits = [
        numpy_helper.from_array(np.array([0, 0, 1, 2, 0, 0, 1, 2], np.int64), "pads"),
        numpy_helper.from_array(np.array(pad_value, np.float32), "v"),
        models.weight("w", (2, 3, 3, 3), 1),
        numpy_helper.from_array(np.array([2, -1], np.int64), "shape"),
    ]
    return models.model(
        nodes, [models.value("x", (2, 3, 5, 6))], [models.value("y", (2, 2 * 5 * 8))], inits
    )


@pytest.mark.parametrize("pad_value", [0.0, 1.5])
def test_derived_collectors_equal_direct_ones(pad_value):
    m = padded_chain(pad_value)
    rng = np.random.default_rng(0)
    batches = [{"x": rng.normal(1, 2, (2, 3, 5, 6)).astype(np.float32)} for _ in range(3)]
    names = ["r", "p", "y"]
    got = ob.observe(m, batches, HistogramCollector, names=names)
    direct = {n: HistogramCollector() for n in names}
    for values in ob.run_exposed(m, names, batches):
        for n, v in values.items():
            direct[n].collect(v)
    for n in names:
        np.testing.assert_array_equal(got[n].counts, direct[n].counts)
        assert got[n].stats == direct[n].stats and got[n].amax == direct[n].amax
    # the zero Pad is derived (its output not exposed, so ONNX Runtime can fold it); a Pad of
    # 1.5 is not zeros and is observed itself
    assert set(ob.zero_pads(m, names)) == ({"p"} if pad_value == 0.0 else set())
    zeros = got["p"].counts[0] - got["r"].counts[0]
    assert zeros == (3 * 2 * 3 * (7 * 10 - 5 * 6) if pad_value == 0.0 else 0)


def test_pads_an_exporter_computes_from_constants_are_derived_too():
    # torch.nn.functional.pad exports its pads as a chain of Constant/Concat/Cast nodes
    m = padded_chain()
    pads = [i for i in m.graph.initializer if i.name == "pads"][0]
    m.graph.initializer.remove(pads)
    half = numpy_helper.from_array(np.array([0, 0, 1, 2], np.float32), "half")
    m.graph.node.insert(0, helper.make_node("Constant", [], ["half_c"], value=half))
    m.graph.node.insert(1, helper.make_node("Concat", ["half_c", "half_c"], ["both"], axis=0))
    m.graph.node.insert(2, helper.make_node("Cast", ["both"], ["pads"], to=7))  # int64
    np.testing.assert_array_equal(ob.constant_value(m, "pads"), [0, 0, 1, 2, 0, 0, 1, 2])
    assert ob.constant_value(m, "r") is None  # depends on the input
    assert set(ob.zero_pads(m, ["r", "p"])) == {"p"}
    rng = np.random.default_rng(1)
    batches = [{"x": rng.normal(size=(2, 3, 5, 6)).astype(np.float32)}]
    got = ob.observe(m, batches, HistogramCollector, names=["p"])["p"]
    direct = HistogramCollector()
    for values in ob.run_exposed(m, ["p"], batches):
        direct.collect(values["p"])
    np.testing.assert_array_equal(got.counts, direct.counts)


def test_sessions_from_bytes_and_from_the_model_agree():
    m = padded_chain()
    data = ob.serialized(m)
    assert data == m.SerializeToString()
    x = {"x": np.random.default_rng(1).normal(size=(2, 3, 5, 6)).astype(np.float32)}
    a, b = ob.make_session(m).run(None, x)[0], ob.make_session(data).run(None, x)[0]
    np.testing.assert_array_equal(a, b)


def test_observe_announces_its_work_to_the_kernels(monkeypatch):
    from int8kit.calib import kernels

    monkeypatch.setattr(kernels, "_planned", None)
    m = padded_chain()
    batches = [{"x": np.ones((2, 3, 5, 6), np.float32)} for _ in range(3)]
    ob.observe(m, batches, HistogramCollector, names=["r", "p"], total=3)
    assert kernels._planned == 3 * 2 * 3 * 5 * 6  # "p" is derived from "r": only "r" is exposed


@pytest.mark.parametrize("optimize", [True, False])
def test_sessions_with_weights_in_memory_compute_the_same(monkeypatch, optimize):
    # Large initializers go to ONNX Runtime as OrtValues (add_external_initializers) instead of
    # inside the serialized model: the same outputs, bit for bit, also for an exposed session
    # whose pruned nodes leave initializers unread.
    import onnxruntime as ort

    m = models.conv_bn_relu_chain()
    x = {"x": np.random.default_rng(0).normal(size=(2, 3, 8, 8)).astype(np.float32)}
    names = [n.output[0] for n in m.graph.node]

    def reference(model):
        so = ort.SessionOptions()
        if not optimize:
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return ort.InferenceSession(model.SerializeToString(), so, ["CPUExecutionProvider"])

    expected_all = reference(m).run(None, x)
    expected_exposed = reference(ob.expose(m, names[:2])).run(None, x)
    before = m.SerializeToString()
    monkeypatch.setattr(ob, "EXTERNAL_FROM", 16)
    monkeypatch.setattr(ob, "EXTERNAL_TOTAL", 16)
    whole = ob.make_session(m, optimize=optimize)
    exposed = ob.make_session(m, optimize=optimize, outputs=names[:2])
    assert len(whole.int8kit_weights) >= 2 and len(exposed.int8kit_weights) >= 1
    for got, want in ((whole.run(None, x), expected_all), (exposed.run(None, x), expected_exposed)):
        assert len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)
    assert [o.name for o in exposed.get_outputs()] == names[:2]
    assert m.SerializeToString() == before  # the caller's model is not touched


def matmul_chain(layers: int, width: int):
    """x(rows, width) -> ``layers`` MatMuls by width x width weights, a Relu between each."""
    nodes, prev = [], "x"
    for i in range(layers):
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"], name=f"mm{i}"))
        nodes.append(helper.make_node("Relu", [f"m{i}"], [f"r{i}"], name=f"relu{i}"))
        prev = f"r{i}"
    inits = [
        models.weight(f"w{i}", (width, width), i, scale=1 / np.sqrt(width)) for i in range(layers)
    ]
    return models.model(
        nodes, [models.value("x", ("N", width))], [models.value(prev, ("N", width))], inits
    )


def forward(m, x):
    w = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    out = {}
    for k in range(len(w)):
        x = np.maximum(x @ w[f"w{k}"], 0)
        out[f"r{k}"] = x
    return out


@pytest.mark.skipif(ob._ort_threads(leave_one_core=False) < 2, reason="needs 2 cores")
@pytest.mark.parametrize("slow_caller", [False, True])
def test_run_exposed_gives_onnx_runtime_every_core_when_its_passes_are_the_slow_part(
    monkeypatch, slow_caller
):
    # A forward pass of ~0.4 GFLOP against a caller that does nothing: ONNX Runtime is the
    # slower part by far, and after ADAPT_AT batches it gets a session with every core. A
    # caller that takes 30 ms a batch on a model of a few kFLOP keeps the core it has.
    import time

    cores = ob._ort_threads(leave_one_core=False)
    threads = []
    make = ob.make_session

    def recording(*args, **kwargs):
        threads.append(kwargs.get("threads"))
        return make(*args, **kwargs)

    monkeypatch.setattr(ob, "make_session", recording)
    width = 8 if slow_caller else 1024
    m = matmul_chain(3, width)
    rng = np.random.default_rng(0)
    batches = [{"x": rng.normal(size=(64, width)).astype(np.float32)} for _ in range(10)]
    names = ["r0", "r2"]
    got = []
    for values in ob.run_exposed(m, names, batches):
        got.append(values)
        if slow_caller:
            time.sleep(0.03)
    assert len(got) == len(batches)
    for b, values in zip(batches, got, strict=True):  # every batch once, in order
        ref = forward(m, b["x"])
        for n in names:
            np.testing.assert_allclose(values[n], ref[n], rtol=1e-3, atol=1e-3)
    assert threads == ([cores - 1] if slow_caller else [cores - 1, cores])


def test_onnx_runtime_is_the_slow_part_by_medians_without_the_first_batch():
    # the first batch (session warm-up, numba's load in the caller) does not count
    assert ob._ort_bound([0.01, 0.5, 0.5, 0.5], [9.0, 0.2, 0.2]) is True
    assert ob._ort_bound([5.0, 0.3, 0.3, 0.3], [0.01, 0.2, 0.2]) is False  # 1.5x < 2x
    assert ob._ort_bound([0.5, 0.5], [0.1]) is False  # no timed caller batch yet
