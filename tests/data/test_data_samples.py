"""Example photo crops and the progress wrapper."""

import hashlib

import numpy as np
import pytest

from int8kit.data import PHOTOS, photo, progress, split_photos, write_photo_crops

pytest.importorskip("skimage")
cv2 = pytest.importorskip("cv2")


def _digests(paths):
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


def test_write_photo_crops_count_size_and_determinism(tmp_path):
    a = write_photo_crops(tmp_path / "a", 5, size=(64, 48), seed=7, photos=("coffee", "camera"))
    b = write_photo_crops(tmp_path / "b", 5, size=(64, 48), seed=7, photos=("coffee", "camera"))
    c = write_photo_crops(tmp_path / "c", 5, size=(64, 48), seed=8, photos=("coffee", "camera"))
    assert len(a) == 5 and sorted(p.name for p in (tmp_path / "a").iterdir()) == [p.name for p in a]
    assert _digests(a) == _digests(b) and _digests(a) != _digests(c)
    img = cv2.imread(str(a[0]))
    assert img.shape == (64, 48, 3)


def test_photo_is_rgb_uint8_and_gray_becomes_three_channels():
    coffee, camera = photo("coffee"), photo("camera")
    assert coffee.dtype == np.uint8 and coffee.shape == (400, 600, 3)
    assert camera.shape == (512, 512, 3) and np.array_equal(camera[..., 0], camera[..., 2])
    assert photo("stereo_motorcycle").shape == (500, 741, 3)
    with pytest.raises(ValueError, match="unknown photo"):
        photo("cat")


def test_split_photos_disjoint_and_complete():
    calib, held = split_photos(n_eval_photos=4)
    assert len(held) == 4 and not set(calib) & set(held)
    assert set(calib) | set(held) == set(PHOTOS)


def test_progress_is_passthrough_when_disabled(monkeypatch):
    monkeypatch.setenv("INT8KIT_NO_PROGRESS", "1")
    it = progress([1, 2, 3], total=3, desc="x")
    assert list(it) == [1, 2, 3] and not hasattr(it, "n")


def test_import_needs_numpy_only():
    import subprocess
    import sys

    code = (
        "import sys, int8kit.data; "
        "print([m for m in ('cv2', 'tqdm', 'skimage', 'onnxruntime') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
