import pytest

from int8kit.errors import Int8kitError
from int8kit.trt.version import LATEST_MINOR, TrtVersion, parse_version


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8.6.1", TrtVersion(8, 6, 1)),
        ("8.6.1.6", TrtVersion(8, 6, 1)),
        ("10.3", TrtVersion(10, 3)),
        ("10.12", TrtVersion(10, 12)),
        ("11.0", TrtVersion(11, 0)),
        ("10.x", TrtVersion(10, LATEST_MINOR[10])),
        ("11", TrtVersion(11, LATEST_MINOR[11])),
        ("v10.0.1", TrtVersion(10, 0, 1)),
    ],
)
def test_parse_version(text, expected):
    assert parse_version(text) == expected


@pytest.mark.parametrize("text", ["", "ten", "10.a", "7.2", "8.4.3", "12"])
def test_parse_version_rejects(text):
    with pytest.raises(Int8kitError):
        parse_version(text)


def test_capabilities_per_version():
    v86, v103, v1012, v11 = (parse_version(t) for t in ("8.6", "10.3", "10.12", "11.0"))
    assert [v.implicit_int8 for v in (v86, v103, v1012, v11)] == [True, True, True, False]
    assert [v.strongly_typed_flag for v in (v86, v103, v1012, v11)] == [False, True, True, True]
    assert [v.strongly_typed_preferred for v in (v86, v103, v1012, v11)] == [
        False,
        False,
        True,
        True,
    ]
    assert [v.strongly_typed_always for v in (v86, v103, v1012, v11)] == [
        False,
        False,
        False,
        True,
    ]
    assert [v.explicit_batch_flag for v in (v86, v103, v1012, v11)] == [True, False, False, False]
    assert all(v.mem_pool_flag and v.tensor_api for v in (v86, v103, v1012, v11))


def test_boundary_10_11_vs_10_12():
    assert not parse_version("10.11").strongly_typed_preferred
    assert parse_version("10.12").strongly_typed_preferred
    assert parse_version("10.16").implicit_int8
