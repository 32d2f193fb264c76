import math

import numpy as np
import pytest
from analysis_models import (
    add_qdq,
    conv_relu_conv,
    int8kit_qdq,
    random_batches,
    ranges_for,
    residual_block,
    save,
)

from int8kit.analysis.layers import (
    analyze_layers,
    by_added_error,
    compare_layers,
    dequantized_names,
    layer_rows,
)
from int8kit.analysis.metrics import sqnr_db
from int8kit.onnx.observe import expose, make_session


def test_dequantized_names_found_by_structure():
    q = add_qdq(conv_relu_conv(), "r1", 0.02)  # hand-made names ("r1_Q", "r1_DQ")
    assert dequantized_names(q) == {"r1": "r1_dequantized"}
    assert dequantized_names(int8kit_qdq(conv_relu_conv())) == {
        "x": "x_dequantized",
        "r1": "r1_dequantized",
    }


def test_rows_follow_graph_order_with_qdq_rows():
    m = conv_relu_conv()
    rows = compare_layers(m, int8kit_qdq(m), random_batches())
    assert [(r.tensor, r.op) for r in rows] == [
        ("x", "input"),
        ("x", "Q/DQ"),
        ("c1", "Conv"),
        ("r1", "Relu"),
        ("r1", "Q/DQ"),
        ("y", "Conv"),
    ]
    assert [r.order for r in rows] == list(range(6))
    assert rows[0].sqnr_db == math.inf and rows[0].added_sqnr_db == math.inf
    # conv1 reads x's dequantized value: its input SQNR is that row's
    assert rows[2].input_sqnr_db == rows[1].sqnr_db
    assert rows[5].input_sqnr_db == rows[4].sqnr_db
    assert 20 < rows[5].sqnr_db < rows[2].sqnr_db  # error grows along the chain


def test_row_metrics_equal_metrics_on_the_same_arrays():
    m = conv_relu_conv()
    q = int8kit_qdq(m)
    batches = random_batches(4, seed=3)
    rows = compare_layers(m, q, batches)
    ref = make_session(expose(m, ["c1", "y"]))
    test = make_session(expose(q, ["c1", "r1_dequantized", "y"]), optimize=False)
    r_c1, r_y, t_c1, t_dq, t_y = [], [], [], [], []
    for b in batches:
        a, c = ref.run(["c1", "y"], b)
        r_c1.append(a), r_y.append(c)
        a, d, c = test.run(["c1", "r1_dequantized", "y"], b)
        t_c1.append(a), t_dq.append(d), t_y.append(c)
    by = {(r.tensor, r.op): r for r in rows}
    assert by["c1", "Conv"].sqnr_db == pytest.approx(sqnr_db(np.stack(r_c1), np.stack(t_c1)))
    assert by["y", "Conv"].sqnr_db == pytest.approx(sqnr_db(np.stack(r_y), np.stack(t_y)))
    relu = np.maximum(np.stack(r_c1), 0)
    assert by["r1", "Q/DQ"].sqnr_db == pytest.approx(sqnr_db(relu, np.stack(t_dq)))


def test_planted_bad_scale_is_the_worst_added_error():
    m = conv_relu_conv()
    batches = random_batches()
    amax = ranges_for(m, batches)
    amax["r1"] *= 0.05  # clips r1 hard
    rows = compare_layers(m, int8kit_qdq(m, amax), batches)
    worst = by_added_error(rows)[0]
    assert (worst.tensor, worst.op) == ("r1", "Q/DQ")
    assert worst.sqnr_drop_db > 20
    # the conv after it inherits the error but adds little of its own
    y = next(r for r in rows if r.tensor == "y")
    assert y.added_sqnr_db > worst.added_sqnr_db + 10


def test_added_error_is_relative_noise_beyond_the_inputs():
    shared = ["x", "a", "b"]
    made_by = {"x": ("input", "", []), "a": ("Conv", "n1", ["x"]), "b": ("Relu", "n2", ["a"])}
    res = {
        n: {"sqnr_db": s, "cosine": 1.0, "max_abs": 0.0, "mean_abs": 0.0}
        for n, s in {"x": math.inf, "a": 30.0, "b": 20.0}.items()
    }
    rows = layer_rows(shared, {}, made_by, res)
    assert rows[1].added_sqnr_db == pytest.approx(30.0)  # input exact: all noise is its own
    assert rows[2].sqnr_drop_db == pytest.approx(10.0)
    assert rows[2].added_sqnr_db == pytest.approx(-10 * math.log10(1e-2 - 1e-3))
    assert [r.tensor for r in by_added_error(rows)] == ["b", "a", "x"]


def test_residual_block_compares_the_add(tmp_path):
    from int8kit.data import DataConfig

    m = residual_block()
    q = int8kit_qdq(m)
    x = np.concatenate([b["x"] for b in random_batches(3)])
    np.save(tmp_path / "x.npy", x)
    result = analyze_layers(
        save(m, tmp_path / "m.onnx"),
        save(q, tmp_path / "q.onnx"),
        DataConfig(str(tmp_path / "x.npy")),
    )
    assert result["samples"] == 3 and result["backend"] == "trt-like"
    names = [(r["tensor"], r["op"]) for r in result["graph_order"]]
    assert ("s", "Add") in names and ("x", "Q/DQ") in names
    assert len(result["by_added_error"]) == len(result["graph_order"])
    add = next(r for r in result["graph_order"] if r["op"] == "Add")
    # the Add reads c2 and x's dequantized value: its input SQNR is the worse of the two
    sq = {(r["tensor"], r["op"]): r["sqnr_db"] for r in result["graph_order"]}
    assert add["input_sqnr_db"] == min(sq["c2", "Conv"], sq["x", "Q/DQ"])
