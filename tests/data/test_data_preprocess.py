"""Geometry and arithmetic of image preprocessing, checked on images with known content."""

import numpy as np
import pytest

from int8kit.data import PreprocessConfig
from int8kit.data.preprocess import apply_recipe, center_crop, letterbox, random_crop, to_tensor

cv2 = pytest.importorskip("cv2")


def test_letterbox_shape_padding_and_placement():
    img = np.full((100, 200, 3), 7, np.uint8)  # wide image into a square: pad top and bottom
    out = letterbox(img, (64, 64), pad_value=114)
    assert out.shape == (64, 64, 3)
    # 200 -> 64 wide, 100 -> 32 high, centred: rows 16..47 hold the image
    assert (out[:16] == 114).all() and (out[48:] == 114).all()
    assert (out[16:48] == 7).all()
    for corner in (out[0, 0], out[0, -1], out[-1, 0], out[-1, -1]):
        assert (corner == 114).all()


def test_letterbox_tall_image_pads_left_right():
    img = np.full((60, 20, 3), 200, np.uint8)
    out = letterbox(img, (30, 40), pad_value=0)
    # scale 0.5 -> 30 x 10, centred in 40 columns: columns 15..24
    assert (out[:, 15:25] == 200).all()
    assert (out[:, :15] == 0).all() and (out[:, 25:] == 0).all()


def test_letterbox_without_size_pads_to_multiple_of_32():
    img = np.full((50, 70, 3), 9, np.uint8)
    out = letterbox(img, None, pad_value=114)
    assert out.shape == (64, 96, 3)
    assert (out == 9).sum() == 50 * 70 * 3  # no resize, only padding


def _bands() -> np.ndarray:
    """100 x 200 image, four vertical colour bands of 50 columns (values 10, 20, 30, 40)."""
    img = np.zeros((100, 200, 3), np.uint8)
    for i in range(4):
        img[:, i * 50 : (i + 1) * 50] = 10 * (i + 1)
    return img


def test_resize_stretches_bands():
    out = apply_recipe(
        _bands(), PreprocessConfig(recipe="resize", interpolation="nearest"), (10, 40)
    )
    assert out.shape == (10, 40, 3)
    assert [int(out[0, c, 0]) for c in (0, 10, 20, 30)] == [10, 20, 30, 40]


def test_center_crop_keeps_middle_bands():
    # short side 100 -> round(50 / 0.5) = 100: no resize; crop 50 x 50 centred -> columns 75..124
    out = center_crop(_bands(), (50, 50), crop_fraction=0.5, interpolation="nearest")
    assert out.shape == (50, 50, 3)
    assert (out[:, :25, 0] == 20).all() and (out[:, 25:, 0] == 30).all()


def test_center_crop_imagenet_geometry():
    img = np.zeros((300, 600, 3), np.uint8)
    img[:, 300:] = 255
    out = center_crop(img, (224, 224), crop_fraction=0.875, interpolation="nearest")
    # short side -> 256 (long 512); the crop is centred so the split sits at column 112
    assert out.shape == (224, 224, 3)
    assert (out[:, :112] == 0).all() and (out[:, 112:] == 255).all()


def test_random_crop_seeded_and_upscales_small_images():
    img = np.arange(100 * 100 * 3, dtype=np.uint32).reshape(100, 100, 3).astype(np.uint8)
    a = random_crop(img, (20, 20), np.random.default_rng(1))
    b = random_crop(img, (20, 20), np.random.default_rng(1))
    assert np.array_equal(a, b)
    small = np.full((10, 5, 3), 3, np.uint8)
    assert random_crop(small, (20, 20), np.random.default_rng(0)).shape == (20, 20, 3)


def test_red_image_rgb_and_bgr_channel_order():
    red_bgr = np.zeros((4, 4, 3), np.uint8)
    red_bgr[..., 2] = 255  # cv2 reads red as B=0, G=0, R=255
    rgb = to_tensor([red_bgr], PreprocessConfig(channel_order="RGB"), "NCHW", "float32")
    bgr = to_tensor([red_bgr], PreprocessConfig(channel_order="BGR"), "NCHW", "float32")
    assert rgb.shape == (1, 3, 4, 4)
    assert rgb[0, 0].min() == 1.0 and rgb[0, 1:].max() == 0.0
    assert bgr[0, 2].min() == 1.0 and bgr[0, :2].max() == 0.0


def test_scale_mean_std_arithmetic_and_layouts():
    img = np.full((2, 3, 3), 102, np.uint8)
    cfg = PreprocessConfig(scale=1 / 255, mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 0.1))
    nchw = to_tensor([img], cfg, "NCHW", "float32")
    nhwc = to_tensor([img], cfg, "NHWC", "float32")
    expected = (0.4 - np.array([0.1, 0.2, 0.3])) / np.array([0.5, 0.25, 0.1])
    assert nchw.shape == (1, 3, 2, 3) and nhwc.shape == (1, 2, 3, 3)
    np.testing.assert_allclose(nchw[0, :, 0, 0], expected, rtol=1e-5)
    np.testing.assert_allclose(nhwc[0, 1, 2, :], expected, rtol=1e-5)
    assert nchw.dtype == np.float32 and nchw.flags.c_contiguous


def test_integer_dtype_is_rounded_and_clipped():
    img = np.full((1, 1, 3), 200, np.uint8)
    out = to_tensor([img], PreprocessConfig(scale=2.0), "NHWC", "uint8")
    assert out.dtype == np.uint8 and int(out.max()) == 255


@pytest.mark.parametrize(
    "kwargs",
    [
        {"recipe": "squash"},
        {"size": (0, 10)},
        {"channel_order": "RBG"},
        {"std": (1.0, 0.0, 1.0)},
        {"mean": (0.1, 0.2)},
        {"crop_fraction": 1.5},
        {"layout": "CHW"},
    ],
)
def test_preprocess_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        PreprocessConfig(**kwargs)


def test_preprocess_config_round_trip():
    cfg = PreprocessConfig(recipe="center-crop", size=(224, 224), mean=(0.485, 0.456, 0.406))
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg
