"""Layer sensitivity on a tiny chain whose third conv reads a tensor with a planted outlier
range: per-tensor int8 with that scale wipes the signal, so that layer is known to be worst."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from int8kit.analysis.sensitivity import (
    GatedRunner,
    exclude_patterns,
    gated_model,
    layers_of,
    sensitivity,
)
from int8kit.onnx.observe import make_session
from int8kit.onnx.placement import PlacementConfig, plan
from int8kit.onnx.qdq import insert_qdq

BAD = "conv3"


def outlier_chain(channels=8):
    """x(N,4,8,8) -> conv1 -> relu -> conv2 -> relu -> conv3 -> relu -> conv4 -> y (dynamic N)."""
    rng = np.random.default_rng(0)
    nodes, inits, prev, cin = [], [], "x", 4
    for k in range(1, 5):
        cout = 4 if k == 4 else channels
        w = (rng.standard_normal((cout, cin, 3, 3)) / np.sqrt(cin * 9)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{k}"))
        out = "y" if k == 4 else f"c{k}"
        nodes.append(
            helper.make_node("Conv", [prev, f"w{k}"], [out], name=f"conv{k}", pads=[1] * 4)
        )
        if k < 4:
            nodes.append(helper.make_node("Relu", [out], [f"r{k}"], name=f"relu{k}"))
            prev = f"r{k}"
        cin = cout
    graph = helper.make_graph(
        nodes,
        "outlier_chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])],
        inits,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def batches(n=6, seed=1):
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 4, 8, 8)).astype(np.float32)} for _ in range(n)]


def planted_amax(model, data):
    """minmax ranges, with conv3's input range blown up 300x (the planted outlier)."""
    from int8kit.onnx.observe import activation_tensors, run_exposed

    amax = {}
    for values in run_exposed(model, activation_tensors(model), data):
        for n, v in values.items():
            amax[n] = max(amax.get(n, 0.0), float(np.abs(v).max()))
    amax["r2"] *= 300
    return amax


@pytest.fixture(scope="module")
def setup():
    m = outlier_chain()
    data = batches()
    return m, plan(m), planted_amax(m, data), data


def test_layers_group_activations_and_weights_by_node(setup):
    m, placement, _, _ = setup
    layers = layers_of(m, placement)
    assert [L.node for L in layers] == ["conv1", "conv2", "conv3", "conv4"]
    assert layers[2].activations == ["r2"] and layers[2].weights == ["w3"]


def test_gated_model_equals_the_qdq_model_of_each_subset(setup):
    m, placement, amax, data = setup
    gated, gates = gated_model(m, placement, amax)
    s = make_session(gated, optimize=False)
    feed = data[0]
    on = {g: np.array(True) for g in gates.values()}
    full = make_session(insert_qdq(m, placement, amax)[0], optimize=False).run(None, feed)[0]
    assert np.array_equal(s.run(None, {**feed, **on})[0], full)
    p2 = plan(m, PlacementConfig(exclude=exclude_patterns([BAD])))
    skip = make_session(insert_qdq(m, p2, amax)[0], optimize=False).run(None, feed)[0]
    assert np.array_equal(s.run(None, {**feed, **on, gates[BAD]: np.array(False)})[0], skip)
    off = {g: np.array(False) for g in gates.values()}
    # Both unoptimized: ONNX Runtime's fusions change float rounding (~1e-7) between versions.
    plain = make_session(m, optimize=False).run(None, feed)[0]
    assert np.array_equal(s.run(None, {**feed, **off})[0], plain)


def test_sensitivity_ranks_the_planted_layer_first_in_both_views(setup):
    m, placement, amax, data = setup
    result = sensitivity(m, amax, placement, data)
    rows = result["rows"]
    assert rows[0].node == BAD and rows[0].rank == 1
    assert min(rows, key=lambda r: r.only_sqnr_db).node == BAD
    assert max(rows, key=lambda r: r.gain_db).node == BAD
    bad = rows[0]
    assert bad.only_sqnr_db < 10 < min(r.only_sqnr_db for r in rows[1:])
    assert bad.gain_db > 10
    # 1 baseline + 2 runs per layer, on one session, samples merged into one batch
    assert result["runs"] == 1 + 2 * 4 and result["samples"] == len(data)


def test_runner_merges_samples_into_batches(setup):
    m, placement, amax, data = setup
    runner = GatedRunner(m, placement, amax, data)
    assert len(runner.feeds) == 1 and runner.feeds[0]["x"].shape[0] == len(data)


def test_exclude_patterns_are_anchored_and_escaped():
    import re

    (p,) = exclude_patterns(["/model.22/cv3.0/Conv"])
    assert p == r"^/model\.22/cv3\.0/Conv$"
    assert re.search(p, "/model.22/cv3.0/Conv") and not re.search(p, "/model.22/cv3.0/Conv_1")
    assert not re.search(p, "/model_22/cv3.0/Conv")
