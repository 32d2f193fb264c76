"""A tiny BERT-style encoder block built in code, for the transformer placement tests.

ids (B,S) int64 -> embedding Gather -> Q/K/V projections (MatMul + bias; Q scaled by 1/sqrt(D)
so the scores come straight from a MatMul) -> Q·K^T -> + additive mask computed from the
attention_mask input, (1 - mask) * fill -> Softmax -> ·V -> output projection (no bias) ->
residual Add -> decomposed LayerNorm (or the LayerNormalization op) -> FFN with Erf GELU ->
residual Add -> y (B,S,D).
"""

from __future__ import annotations

import numpy as np
from models import model, value, weight
from onnx import TensorProto, helper, numpy_helper

VOCAB, D, F = 50, 16, 32


def _c(name, v, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(v, dtype), name)


def _layernorm(x, out, decomposed, nodes, inits):
    if not decomposed:
        nodes.append(
            helper.make_node("LayerNormalization", [x, "ln_g", "ln_b"], [out], name="ln", axis=-1)
        )
        return
    nodes += [
        helper.make_node("ReduceMean", [x], ["ln_mu"], name="ln_mean", axes=[-1]),
        helper.make_node("Sub", [x, "ln_mu"], ["ln_d"], name="ln_sub"),
        helper.make_node("Pow", ["ln_d", "two"], ["ln_d2"], name="ln_pow"),
        helper.make_node("ReduceMean", ["ln_d2"], ["ln_var"], name="ln_var_mean", axes=[-1]),
        helper.make_node("Add", ["ln_var", "eps"], ["ln_ve"], name="ln_add_eps"),
        helper.make_node("Sqrt", ["ln_ve"], ["ln_std"], name="ln_sqrt"),
        helper.make_node("Div", ["ln_d", "ln_std"], ["ln_n"], name="ln_div"),
        helper.make_node("Mul", ["ln_n", "ln_g"], ["ln_ng"], name="ln_mul"),
        helper.make_node("Add", ["ln_ng", "ln_b"], [out], name="ln_add"),
    ]
    inits += [_c("two", 2.0), _c("eps", 1e-5)]


def attention_block(
    fill: float = -1e4,
    decomposed_ln: bool = True,
    batch: int | str = "B",
    seq: int | str = "S",
    pre_ln: bool = False,
    out_bias: bool = False,
):
    """The block; ``fill`` is the mask's constant (-1e4, or -3.4e38 as Hugging Face exports).
    ``pre_ln``: a LayerNorm between the embedding and the Q/K/V projections (the pattern ONNX
    Runtime's attention fusions look for, with ``out_bias``: a bias on the output projection)."""
    h0 = "h" if not pre_ln else "h_emb"
    nodes = [helper.make_node("Gather", ["emb", "input_ids"], [h0], name="embedding")]
    inits = [weight("emb", (VOCAB, D), 10, scale=1.0)]
    if pre_ln:
        nodes.append(
            helper.make_node("LayerNormalization", [h0, "pg", "pb"], ["h"], name="pre_ln", axis=-1)
        )
        inits += [_c("pg", np.ones(D)), _c("pb", np.zeros(D))]
    for k, name in enumerate("qkv"):
        nodes += [
            helper.make_node("MatMul", ["h", f"w{name}"], [f"{name}m"], name=f"{name}_proj"),
            helper.make_node("Add", [f"b{name}", f"{name}m"], [f"{name}0"], name=f"{name}_bias"),
        ]
        inits += [weight(f"w{name}", (D, D), 11 + k), weight(f"b{name}", (D,), 21 + k, 0.1)]
    nodes += [
        helper.make_node("Mul", ["q0", "inv_sqrt_d"], ["q"], name="q_scale"),
        helper.make_node("Transpose", ["k0"], ["kt"], name="k_t", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["scores"], name="qk"),
        # the mask: (1 - mask) * fill, from the attention_mask input
        helper.make_node("Unsqueeze", ["attention_mask", "axis1"], ["m3"], name="mask_unsq"),
        helper.make_node("Cast", ["m3"], ["mf"], name="mask_cast", to=TensorProto.FLOAT),
        helper.make_node("Sub", ["one", "mf"], ["inv"], name="mask_sub"),
        helper.make_node("Mul", ["inv", "fill"], ["neg"], name="mask_mul"),
        helper.make_node("Add", ["scores", "neg"], ["masked"], name="add_mask"),
        helper.make_node("Softmax", ["masked"], ["probs"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["probs", "v0"], ["ctx"], name="pv"),
        helper.make_node("MatMul", ["ctx", "wo"], ["o" if not out_bias else "om"], name="out_proj"),
        helper.make_node("Add", ["o", "h"], ["r1"], name="residual1"),
    ]
    if out_bias:
        nodes.insert(-1, helper.make_node("Add", ["om", "bo"], ["o"], name="out_bias"))
        inits.append(weight("bo", (D,), 24, 0.1))
    inits += [
        _c("inv_sqrt_d", 1.0 / np.sqrt(D)),
        _c("axis1", [1], np.int64),
        _c("one", 1.0),
        _c("fill", fill),
        weight("wo", (D, D), 14),
        _c("ln_g", np.linspace(0.8, 1.2, D)),
        _c("ln_b", np.linspace(-0.1, 0.1, D)),
    ]
    _layernorm("r1", "ln1", decomposed_ln, nodes, inits)
    nodes += [
        helper.make_node("MatMul", ["ln1", "w1"], ["f1m"], name="ffn1"),
        helper.make_node("Add", ["f1m", "b1"], ["f1"], name="ffn1_bias"),
        helper.make_node("Div", ["f1", "sqrt2"], ["f1s"], name="gelu_div"),
        helper.make_node("Erf", ["f1s"], ["erf"], name="gelu_erf"),
        helper.make_node("Add", ["erf", "one"], ["erf1"], name="gelu_add"),
        helper.make_node("Mul", ["f1", "erf1"], ["g0"], name="gelu_mul"),
        helper.make_node("Mul", ["g0", "half"], ["g"], name="gelu_half"),
        helper.make_node("MatMul", ["g", "w2"], ["f2m"], name="ffn2"),
        helper.make_node("Add", ["f2m", "b2"], ["f2"], name="ffn2_bias"),
        helper.make_node("Add", ["f2", "ln1"], ["y"], name="residual2"),
    ]
    inits += [
        weight("w1", (D, F), 15),
        weight("b1", (F,), 25, 0.1),
        _c("sqrt2", np.sqrt(2.0)),
        _c("half", 0.5),
        weight("w2", (F, D), 16),
        weight("b2", (D,), 26, 0.1),
    ]
    ids = value("input_ids", (batch, seq), TensorProto.INT64)
    mask = value("attention_mask", (batch, seq), TensorProto.INT64)
    return model(nodes, [ids, mask], [value("y", (batch, seq, D))], inits, "attention")


def attention_data(n: int = 16, seq: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """Random token ids and attention masks with padding (some trailing zeros)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB, (n, seq)).astype(np.int64)
    mask = np.ones((n, seq), np.int64)
    for i in range(n):
        mask[i, rng.integers(seq // 2, seq + 1) :] = 0
    return {"input_ids": ids, "attention_mask": mask}
