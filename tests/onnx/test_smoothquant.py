import models
import numpy as np
import pytest
from onnx import helper, numpy_helper

from int8kit.onnx.observe import make_session
from int8kit.onnx.placement import plan
from int8kit.onnx.qdq import insert_qdq
from int8kit.onnx.smoothquant import (
    apply_smoothing,
    smooth_groups,
    smooth_quant,
    smoothing_scales,
)
from int8kit.workflow import CalibConfig, calibrate

K = 8


def encoder_block(residual: bool = False):
    """x(N,T,8) -> LayerNorm -> {MatMul wq, MatMul wk} (one activation, two readers)
    -> Add bias -> Mul 0.5 (a GELU's last op, a Constant node) -> MatMul wo -> y;
    with ``residual`` the LayerNorm output also feeds an Add (a BERT's residual): no fold."""
    rng = np.random.default_rng(0)
    f = lambda a, n: numpy_helper.from_array(np.asarray(a, np.float32), n)  # noqa: E731
    nodes = [
        helper.make_node("LayerNormalization", ["x", "g", "b"], ["ln"], name="ln", axis=-1),
        helper.make_node("MatMul", ["ln", "wq"], ["q"], name="mm_q"),
        helper.make_node("MatMul", ["ln", "wk"], ["k"], name="mm_k"),
        helper.make_node("Add", ["q", "k"], ["qk"], name="add_qk"),
        helper.make_node("Add", ["bias", "qk"], ["h"], name="bias"),
        helper.make_node("Constant", [], ["half"], name="half", value=f(0.5, "half_v")),
        helper.make_node("Mul", ["h", "half"], ["a"], name="gelu_mul"),
        helper.make_node("MatMul", ["a", "wo"], ["y"], name="mm_o"),
    ]
    outputs = [models.value("y", ("N", "T", 5))]
    if residual:
        nodes.append(helper.make_node("Add", ["ln", "x"], ["r"], name="residual"))
        outputs.append(models.value("r", ("N", "T", K)))
    inits = [
        f(rng.uniform(0.5, 2.0, K), "g"),
        f(rng.standard_normal(K) * 0.1, "b"),
        models.weight("wq", (K, 6), 1),
        models.weight("wk", (K, 6), 2),
        f(rng.standard_normal(6) * 0.1, "bias"),
        models.weight("wo", (6, 5), 3),
    ]
    return models.model(nodes, [models.value("x", ("N", "T", K))], outputs, inits, "block")


def outlier_data(n=8, seed=0, channel=3, size=60.0):
    """LayerNorm inputs whose channel ``channel`` is ~``size`` times the others after the
    LayerNorm (via a large gamma below): the outlier channel of a transformer activation."""
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((2, 16, K)).astype(np.float32)} for _ in range(n)]


def with_outlier_gamma(m, channel=3, size=60.0):
    g = numpy_helper.to_array(next(i for i in m.graph.initializer if i.name == "g")).copy()
    g[channel] *= size
    for i in m.graph.initializer:
        if i.name == "g":
            i.CopyFrom(numpy_helper.from_array(g, "g"))
    return m


def run(m, batch, optimize=True):
    return make_session(m, optimize=optimize).run(None, batch)


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("alpha", [0.5, 0.8, "auto"])
def test_smoothed_fp32_model_computes_the_same_function(residual, alpha):
    m = with_outlier_gamma(encoder_block(residual))
    data = outlier_data()
    smoothed, summary = smooth_quant(m, data, alpha)
    assert summary.smoothed  # something was smoothed (auto: the outlier makes it worth it)
    for batch in outlier_data(2, seed=5):
        for a, b in zip(run(m, batch), run(smoothed, batch), strict=True):
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * np.abs(a).max())
    where = {t: d["where"] for t, d in summary.smoothed.items()}
    if alpha != "auto":  # every eligible activation is smoothed
        assert where["a"] == "Mul gelu_mul"  # GELU's * 0.5 took 1/s
        assert where["ln"] == ("inserted Mul" if residual else "LayerNormalization ln")


def test_scales_follow_the_formula():
    m = encoder_block()
    data = outlier_data(4)
    smoothed, summary = smooth_quant(m, data, 0.5)
    x_amax = np.zeros(K, np.float32)
    sess = make_session(m)
    from int8kit.onnx.observe import expose

    ln = make_session(expose(m, ["ln"]))
    for batch in data:
        x_amax = np.maximum(x_amax, np.abs(ln.run(None, batch)[0]).reshape(-1, K).max(0))
    del sess
    w = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    w_amax = np.maximum(np.abs(w["wq"]).max(1), np.abs(w["wk"]).max(1))
    s = np.sqrt(x_amax) / np.sqrt(w_amax)  # alpha 0.5
    np.testing.assert_allclose(smoothing_scales(x_amax, w_amax, 0.5), s, rtol=1e-5)
    new = {i.name: numpy_helper.to_array(i) for i in smoothed.graph.initializer}
    ln_node = next(n for n in smoothed.graph.node if n.name == "ln")
    q_node = next(n for n in smoothed.graph.node if n.name == "mm_q")
    np.testing.assert_allclose(new[ln_node.input[1]], w["g"] / s, rtol=1e-4)
    np.testing.assert_allclose(new[ln_node.input[2]], w["b"] / s, rtol=1e-4)
    np.testing.assert_allclose(new[q_node.input[1]], w["wq"] * s[:, None], rtol=1e-4)


def test_groups_and_an_explicit_mul_only_for_the_smoothed_readers():
    m = encoder_block(residual=True)
    groups, _ = smooth_groups(m)
    assert {g.tensor: g.layers for g in groups} == {"ln": ["mm_q", "mm_k"], "a": ["mm_o"]}
    s = np.linspace(0.5, 2.0, K).astype(np.float32)
    out, where = apply_smoothing(m, [g for g in groups if g.tensor == "ln"], {"ln": s})
    assert where == {"ln": "inserted Mul"}
    residual = next(n for n in out.graph.node if n.name == "residual")
    assert residual.input[0] == "ln"  # the residual still reads the unsmoothed tensor
    readers = [n.input[0] for n in out.graph.node if n.name in ("mm_q", "mm_k")]
    assert readers == ["ln_smoothed", "ln_smoothed"]


def int8_error(m, calib, evals, tensor="q"):
    """Relative squared error of ``tensor`` (the first MatMul's output) in the Q/DQ model."""
    from int8kit.onnx.observe import expose

    placement = plan(m)
    amax = calibrate(m, calib, CalibConfig(method="minmax"), names=list(placement.activations))
    q, _ = insert_qdq(m, placement, amax.amax())
    m, q = expose(m, [tensor]), expose(q, [tensor])
    err = ref = 0.0
    for batch in evals:
        a, b = run(m, batch)[0], run(q, batch, optimize=False)[0]
        err += float(((a - b) ** 2).sum())
        ref += float((a**2).sum())
    return err / ref


def test_an_outlier_channel_quantizes_much_better_after_smoothing():
    m = with_outlier_gamma(encoder_block(), size=100.0)
    calib, evals = outlier_data(8), outlier_data(4, seed=9)
    before = int8_error(m, calib, evals)
    smoothed, summary = smooth_quant(m, calib, "auto")
    after = int8_error(smoothed, calib, evals)
    assert summary.smoothed["ln"]["alpha"] >= 0.3
    assert after < before / 5, (before, after)  # ~10x here
