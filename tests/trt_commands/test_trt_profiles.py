import pytest
from trt_tiny_models import conv_model, two_input_model

from int8kit.errors import Int8kitError
from int8kit.trt.profiles import derive_profiles, model_inputs, parse_shapes, shape_flags


def test_model_inputs_marks_dynamic_dims_and_skips_initializers():
    inputs = model_inputs(conv_model(batch="batch"))
    assert [i.name for i in inputs] == ["images"]  # w and b are initializers
    assert inputs[0].dims == (None, 3, 8, 8)
    assert inputs[0].is_dynamic


def test_parse_shapes_forms():
    shapes = parse_shapes(["a:1x4/2x4/8x4", "b:1x4", "c:2x3/4x3"])
    assert shapes == {"a": ((1, 4), (2, 4), (8, 4)), "b": ((1, 4),), "c": ((2, 3), (4, 3))}
    # comma-separated in one spec, and a name with a colon in it
    assert parse_shapes(["x:y:1x2,z:3x4"]) == {"x:y": ((1, 2),), "z": ((3, 4),)}


@pytest.mark.parametrize("spec", ["images", "images:1x3xAx8", "images:0x3x8x8", "a:1/2/3/4"])
def test_parse_shapes_rejects(spec):
    with pytest.raises(Int8kitError):
        parse_shapes([spec])


def test_dynamic_batch_min_opt_max():
    (p,) = derive_profiles(conv_model(batch="batch"), ["images:1x3x8x8/4x3x8x8/16x3x8x8"])
    assert (p.min, p.opt, p.max, p.dynamic) == ((1, 3, 8, 8), (4, 3, 8, 8), (16, 3, 8, 8), True)


def test_opt_max_form_gives_min_batch_one():
    (p,) = derive_profiles(conv_model(batch="batch"), ["images:4x3x8x8/8x3x8x8"])
    assert p.min == (1, 3, 8, 8)
    assert p.opt == (4, 3, 8, 8)
    assert p.max == (8, 3, 8, 8)


def test_static_inputs_need_no_shapes_and_give_no_flags():
    profiles = derive_profiles(conv_model(batch=2))
    assert profiles[0].min == profiles[0].max == (2, 3, 8, 8)
    assert not profiles[0].dynamic
    assert shape_flags(profiles) == {}


def test_mixed_inputs_flags_only_for_dynamic():
    profiles = derive_profiles(two_input_model(), ["a:1x4/2x4/8x4"])
    assert [p.name for p in profiles] == ["a", "b"]
    assert shape_flags(profiles) == {"min": "a:1x4", "opt": "a:2x4", "max": "a:8x4"}


def test_dynamic_without_shape_says_what_to_pass():
    with pytest.raises(Int8kitError, match=r"--shapes images:1x3x8x8/4x3x8x8/8x3x8x8"):
        derive_profiles(conv_model(batch="batch"))


def test_unknown_input_name_lists_the_real_ones():
    with pytest.raises(Int8kitError, match=r"unknown input.*'imgs'.*images \(\?x3x8x8\)"):
        derive_profiles(conv_model(batch="batch"), ["imgs:1x3x8x8"])


def test_rank_mismatch():
    with pytest.raises(Int8kitError, match="rank 3"):
        derive_profiles(conv_model(batch="batch"), ["images:3x8x8"])


def test_static_dim_mismatch():
    with pytest.raises(Int8kitError, match="axis 1 to 1"):
        derive_profiles(conv_model(batch="batch"), ["images:1x1x8x8"])


def test_min_opt_max_order():
    with pytest.raises(Int8kitError, match="min <= opt <= max"):
        derive_profiles(conv_model(batch="batch"), ["images:4x3x8x8/2x3x8x8/8x3x8x8"])
    with pytest.raises(Int8kitError, match="min <= opt <= max"):
        derive_profiles(conv_model(batch="batch"), ["images:1x3x8x8/8x3x8x8/4x3x8x8"])
