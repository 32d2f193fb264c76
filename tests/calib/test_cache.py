import struct

import pytest

from int8kit.calib import CalibrationCache
from int8kit.errors import CacheFormatError


def test_hex_is_big_endian_float32_bits_of_scale():
    cache = CalibrationCache({"input": 1.0 / 127.0})
    text = cache.dumps()
    assert text.splitlines()[0] == "TRT-8601-EntropyCalibration2"
    assert text.splitlines()[1] == "input: " + struct.pack(">f", 1.0 / 127.0).hex()
    assert text.splitlines()[1] == "input: 3c010204"


def test_round_trip_with_awkward_names(tmp_path):
    names = ["a b", "x[0]:1", "/model.0/conv/Conv_output_0", "y: z", "ümlaut"]
    cache = CalibrationCache({n: 0.01 * (i + 1) for i, n in enumerate(names)}, version=100300)
    path = tmp_path / "m.cache"
    cache.write(path)
    back = CalibrationCache.read(path)
    assert back.version == 100300 and back.algorithm == "EntropyCalibration2"
    assert list(back.scales) == names
    for n in names:
        assert back.scales[n] == pytest.approx(cache.scales[n], rel=1e-7)


@pytest.mark.parametrize(
    "text, line",
    [
        ("TRT-8601-EntropyCalibration2\ngood: 3c010204\nbad line\n", 3),
        ("TRT-8601-EntropyCalibration2\nx: 3c01020\n", 2),
        ("TRT-8601-EntropyCalibration2\nx: 3c010204\nx: 3c010204\n", 3),
        ("not a header\n", 1),
    ],
)
def test_malformed_cache_names_its_line(text, line):
    with pytest.raises(CacheFormatError, match=f"m.cache:{line}:"):
        CalibrationCache.loads(text, source="m.cache")
