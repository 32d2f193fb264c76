"""--method auto: the default recipe of the graph's family (int8kit/recipes.py)."""

import json

import models
import numpy as np
import pytest
from transformer_models import attention_block, attention_data

from int8kit.data import DataConfig
from int8kit.recipes import DEFAULTS, family
from int8kit.workflow import QuantizeConfig, quantize_onnx


def test_family_tells_attention_from_a_conv_net_and_a_plain_matmul():
    assert family(attention_block()) == "transformer"
    assert family(attention_block(decomposed_ln=False)) == "transformer"
    assert family(models.conv_bn_relu_chain()) == "conv"
    assert family(models.gemm_matmul()) == "conv"  # MatMul with a weight, no attention


def test_attention_fused_by_onnx_runtime_is_a_transformer():
    from onnx import helper

    model = models.gemm_matmul()
    model.graph.node.append(
        helper.make_node("Attention", ["x", "w", "b"], ["y"], domain="com.microsoft")
    )
    assert family(model) == "transformer"
    model.graph.node[-1].domain = ""  # an op of that name outside com.microsoft is not ONNX Runtime's
    assert family(model) == "conv"


@pytest.fixture
def attention(tmp_path):
    path = models.save(attention_block(), tmp_path / "attn.onnx")
    data = tmp_path / "calib.npz"
    np.savez(data, **attention_data(n=24))
    return path, str(data)


def test_auto_on_a_transformer_applies_its_recipe_and_writes_it_resolved(attention, tmp_path):
    path, data = attention
    cfg = QuantizeConfig(path, str(tmp_path / "a.int8.onnx"), data=DataConfig(data), holdout=4)
    r = quantize_onnx(cfg)
    want = DEFAULTS["transformer"]
    assert r.recipe["family"] == "transformer" and r.method == want.method
    assert bool(r.smooth_quant) == (want.smooth_quant is not None)
    raw = json.load(open(cfg.ranges_path))["config"]
    # the ranges file repeats the run exactly: no "auto" left to resolve differently later
    assert raw["calib"]["method"] == want.method and raw["smooth_quant"] == want.smooth_quant
    assert cfg.calib.method == "auto" and cfg.smooth_quant is None  # the caller's config as given


def test_explicit_options_win_over_the_recipe(attention, tmp_path):
    path, data = attention
    base = dict(data=DataConfig(data), holdout=0)
    off = quantize_onnx(QuantizeConfig(path, str(tmp_path / "o.onnx"), smooth_quant="off", **base))
    assert off.recipe["family"] == "transformer" and not off.smooth_quant
    mse = quantize_onnx(_with_method(path, tmp_path / "m.onnx", "mse", base))
    assert mse.method == "mse" and not mse.recipe and not mse.smooth_quant


def _with_method(path, out, method, base):
    from int8kit.workflow import CalibConfig

    return QuantizeConfig(path, str(out), calib=CalibConfig(method=method), **base)


def test_auto_on_a_conv_net_is_the_conv_row(tmp_path):
    path = models.save(models.conv_bn_relu_chain(), tmp_path / "c.onnx")
    data = models.save_npz(tmp_path / "c.npz", n=12, x=(1, 3, 8, 8))
    r = quantize_onnx(QuantizeConfig(path, str(tmp_path / "c.int8.onnx"), data=DataConfig(data)))
    assert r.recipe["family"] == "conv" and r.method == DEFAULTS["conv"].method
