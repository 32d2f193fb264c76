"""Image folders, arrays and loader scripts as DataSources: order, errors, stats, splits."""

import numpy as np
import pytest

from int8kit.data import DataConfig, InputSpec, PreprocessConfig, make_source, split
from int8kit.errors import DataError

cv2 = pytest.importorskip("cv2")

NCHW = [InputSpec("images", (1, 3, 32, 32))]
DYNAMIC = [InputSpec("images", ("batch", 3, "h", "w"))]


def _folder(tmp_path, n=10, size=(40, 60)):
    """n images whose pixel value encodes their index: image i is filled with 10 * i."""
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    for i in range(n):
        sub = d / "sub" if i % 2 else d
        cv2.imwrite(
            str(sub / f"im{i:02d}.{'png' if i % 3 else 'JPG'}"),
            np.full((*size, 3), 10 * i, np.uint8),
        )
    return d


def _order(source):
    """The image indices in iteration order, read back from the fill values."""
    return [int(round(b["images"][0, 0, 16, 16] * 255 / 10)) for b in source]


def test_image_folder_batches_shape_dtype_and_len(tmp_path):
    cfg = DataConfig(str(_folder(tmp_path)), preprocess=PreprocessConfig(recipe="resize"))
    src = make_source(cfg, NCHW)
    batches = list(src)
    assert len(src) == len(batches) == 10 and src.num_samples == 10
    assert batches[0]["images"].shape == (1, 3, 32, 32)
    assert batches[0]["images"].dtype == np.float32
    assert sorted(_order(src)) == list(range(10))  # recursive, mixed-case extensions
    assert src.stats.used == 10 and src.stats.skipped == 0


def test_nhwc_layout_is_inferred(tmp_path):
    src = make_source(DataConfig(str(_folder(tmp_path, 2))), [InputSpec("x", (1, 32, 32, 3))])
    assert next(iter(src))["x"].shape == (1, 32, 32, 3)


def test_seeded_shuffle_reproducible_and_seed_dependent(tmp_path):
    d = str(_folder(tmp_path))
    a = _order(make_source(DataConfig(d, seed=0), NCHW))
    again = make_source(DataConfig(d, seed=0), NCHW)
    assert _order(again) == a and _order(again) == a  # same order on every pass too
    assert _order(make_source(DataConfig(d, seed=1), NCHW)) != a
    assert a != list(range(10))


def test_corrupt_and_empty_files_are_skipped_and_counted(tmp_path):
    d = _folder(tmp_path, 3)
    (d / "broken.jpg").write_bytes(b"this is not a jpeg")
    (d / "empty.png").write_bytes(b"")
    good = (d / "sub" / "im01.png").read_bytes()
    (d / "truncated.png").write_bytes(good[:20])  # valid signature, cannot be decoded
    src = make_source(DataConfig(str(d)), NCHW)
    assert len(list(src)) == 3
    reasons = dict((p.rsplit("/", 1)[-1], r) for p, r in src.stats.skipped_files)
    assert set(reasons) == {"broken.jpg", "empty.png", "truncated.png"}
    assert reasons["empty.png"] == "empty file"
    assert src.stats.skipped == 3 and src.stats.used == 3
    assert "skipped 3" in src.stats.summary()


def test_empty_folder_error_names_extensions(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"no readable images in .*\.jpg"):
        make_source(DataConfig(str(tmp_path), kind="images"), NCHW)


def test_short_batch_kept_for_dynamic_dropped_for_static(tmp_path):
    d = str(_folder(tmp_path, 5))
    dyn = make_source(
        DataConfig(d, batch_size=2, preprocess=PreprocessConfig(size=(32, 32))), DYNAMIC
    )
    assert [b["images"].shape[0] for b in dyn] == [2, 2, 1] and len(dyn) == 3
    static = make_source(DataConfig(d, batch_size=2), [InputSpec("images", (2, 3, 32, 32))])
    assert [b["images"].shape[0] for b in static] == [2, 2] and len(static) == 2
    assert static.stats.dropped == 1 and static.num_samples == 4


def test_dynamic_sizes_per_image_and_first_image_size(tmp_path):
    d = tmp_path / "mixed"
    d.mkdir()
    cv2.imwrite(str(d / "a.png"), np.zeros((50, 70, 3), np.uint8))
    cv2.imwrite(str(d / "b.png"), np.zeros((100, 40, 3), np.uint8))
    one = make_source(DataConfig(str(d)), DYNAMIC)
    assert sorted(b["images"].shape[2:] for b in one) == [(64, 96), (128, 64)]
    two = make_source(DataConfig(str(d), batch_size=2), DYNAMIC)
    (batch,) = list(two)
    assert batch["images"].shape[0] == 2 and batch["images"].shape[2] % 32 == 0


def test_user_shapes_fix_dynamic_dims(tmp_path):
    cfg = DataConfig(str(_folder(tmp_path, 2)), shapes={"images": (1, 3, 64, 96)})
    assert next(iter(make_source(cfg, DYNAMIC)))["images"].shape == (1, 3, 64, 96)


def test_static_shape_mismatch_names_the_input(tmp_path):
    d = str(_folder(tmp_path, 2))
    with pytest.raises(DataError, match="'images'.*batch of 1"):
        make_source(DataConfig(d, batch_size=4), NCHW)
    arr = np.zeros((4, 3, 16, 16), np.float32)
    np.save(tmp_path / "x.npy", arr)
    with pytest.raises(
        DataError, match=r"input 'images' expects shape \(1, 3, 32, 32\).*\(1, 3, 16, 16\)"
    ):
        list(make_source(DataConfig(str(tmp_path / "x.npy")), NCHW))


def test_npy_feeds_single_input_batched(tmp_path):
    arr = np.arange(5 * 2, dtype=np.float64).reshape(5, 2)
    np.save(tmp_path / "x.npy", arr)
    src = make_source(
        DataConfig(str(tmp_path / "x.npy"), batch_size=2), [InputSpec("x", (None, 2))]
    )
    out = list(src)
    assert [b["x"].shape[0] for b in out] == [2, 2, 1] and out[0]["x"].dtype == np.float32
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in out]), arr)


def test_npz_folder_concatenated_in_sorted_order(tmp_path):
    d = tmp_path / "arrs"
    d.mkdir()
    inputs = [InputSpec("a", (None, 1)), InputSpec("b", (None,), "int64")]
    for i, name in enumerate(["2.npz", "1.npz"]):
        np.savez(d / name, a=np.full((3, 1), i, np.float32), b=np.full(3, i, np.int64))
    src = make_source(DataConfig(str(d), batch_size=4), inputs)
    assert src.num_samples == 6 and len(src) == 2
    first = next(iter(src))
    assert first["a"][:, 0].tolist() == [1, 1, 1, 0]  # 1.npz first, batch spans both files
    assert first["b"].dtype == np.int64


def test_npz_missing_input_lists_keys(tmp_path):
    np.savez(tmp_path / "d.npz", images=np.zeros((2, 3)), other=np.zeros((2, 3)))
    inputs = [InputSpec("input_ids", (None, 3)), InputSpec("images", (None, 3))]
    with pytest.raises(DataError, match="no array for input 'input_ids'.*images, other"):
        make_source(DataConfig(str(tmp_path / "d.npz")), inputs)


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_arrays_read_back_exactly_mapped_or_not(tmp_path, save):
    # np.savez members are memory-mapped in place (no copy out of the zip), compressed ones read
    from int8kit.data.arrays import load_chunk

    rng = np.random.default_rng(0)
    arrays = {
        "x": rng.standard_normal((5, 3, 4)).astype(np.float32),
        "f": np.asfortranarray(rng.standard_normal((5, 6))),  # float64, Fortran order
        "i": np.arange(5, dtype=np.int64),
    }
    save(tmp_path / "d.npz", **arrays)
    inputs = [InputSpec(k, (None,) + v.shape[1:], str(v.dtype)) for k, v in arrays.items()]
    chunk = load_chunk(tmp_path / "d.npz", inputs, None)
    for k, v in arrays.items():
        assert chunk[k].dtype == v.dtype
        np.testing.assert_array_equal(chunk[k], v)
        assert isinstance(chunk[k], np.memmap) == (save is np.savez)
    batches = list(make_source(DataConfig(str(tmp_path / "d.npz"), batch_size=2), inputs))
    np.testing.assert_array_equal(np.concatenate([b["f"] for b in batches]), arrays["f"])


def test_pickled_npz_is_refused(tmp_path):
    np.savez(tmp_path / "o.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataError, match="plain numeric"):
        list(make_source(DataConfig(str(tmp_path / "o.npz")), [InputSpec("x", (None,))]))


def test_pickled_npy_is_refused(tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="plain numeric"):
        list(make_source(DataConfig(str(tmp_path / "o.npy")), [InputSpec("x", (None,))]))


SCRIPT = """
import numpy as np
CALLS = []
def load_data():
    CALLS.append(1)
    for i in range(4):
        yield {"x": np.full((1, 2), i, np.float32)}
def bad_keys():
    return [{"x": np.zeros((1, 2), np.float32), "y": np.zeros(1)}]
"""


def test_loader_script_runs_only_with_kind_script(tmp_path):
    script = tmp_path / "loader.py"
    script.write_text(SCRIPT + "\nopen(__file__ + '.ran', 'w').close()\n")
    with pytest.raises(DataError, match="kind='script'"):
        make_source(DataConfig(str(script)), [InputSpec("x", (1, 2))])
    assert not (tmp_path / "loader.py.ran").exists()
    src = make_source(DataConfig(str(script), kind="script"), [InputSpec("x", (1, 2))])
    assert (tmp_path / "loader.py.ran").exists()
    assert len(src) == 4
    assert [int(b["x"][0, 0]) for b in src] == [0, 1, 2, 3]
    assert [int(b["x"][0, 0]) for b in src] == [0, 1, 2, 3]  # re-iterable (generator re-called)


def test_loader_script_keys_validated(tmp_path):
    script = tmp_path / "loader.py"
    script.write_text(SCRIPT)
    with pytest.raises(DataError, match=r"unknown: \['y'\]"):
        make_source(DataConfig(f"{script}:bad_keys", kind="script"), [InputSpec("x", (1, 2))])


def test_split_images_disjoint_and_holdout_is_tail(tmp_path):
    d = str(_folder(tmp_path))
    full = _order(make_source(DataConfig(d, seed=3), NCHW))
    calib, held = split(DataConfig(d, seed=3), NCHW, holdout=3)
    c, h = _order(calib), _order(held)
    assert not set(c) & set(h) and len(c) == 7 and h == full[-3:]
    capped, _ = split(DataConfig(d, seed=3, num_samples=4), NCHW, holdout=3)
    assert _order(capped) == full[:4]
    with pytest.raises(DataError, match="has 10 readable images"):
        split(DataConfig(d), NCHW, holdout=10)


def test_split_arrays_and_script(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(6, dtype=np.float32)[:, None])
    calib, held = split(DataConfig(str(tmp_path / "x.npy")), [InputSpec("x", (1, 1))], holdout=2)
    assert [float(b["x"][0, 0]) for b in held] == [4.0, 5.0] and calib.num_samples == 4
    script = tmp_path / "loader.py"
    script.write_text(SCRIPT)
    calib, held = split(DataConfig(str(script), kind="script"), [InputSpec("x", (1, 2))], holdout=1)
    assert [int(b["x"][0, 0]) for b in calib] == [0, 1, 2] and len(held) == 1


def test_data_config_round_trip_and_validation():
    cfg = DataConfig(
        "imgs",
        batch_size=4,
        shapes={"images": (4, 3, 64, 64)},
        preprocess=PreprocessConfig(recipe="resize", size=(64, 64)),
    )
    assert DataConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="batch_size"):
        DataConfig("imgs", batch_size=0)
    with pytest.raises(ValueError, match="kind"):
        DataConfig("imgs", kind="video")


# An RNN-state model as silero-vad declares it: audio (batch, 576), state (2, batch, 128) whose
# axis 0 is no batch, sr a scalar int64.
STATEFUL = [
    InputSpec("input", ("batch", 576)),
    InputSpec("state", (2, "batch", 128)),
    InputSpec("sr", (), "int64"),
]


def test_npz_whole_feeds_per_sample_and_a_scalar_for_all(tmp_path):
    """Arrays one dim longer than the input list whole feeds; a 0-d array feeds every sample."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 1, 576)).astype(np.float32)
    state = rng.standard_normal((5, 2, 1, 128)).astype(np.float32)
    np.savez(tmp_path / "d.npz", input=x, state=state, sr=np.array(16000))
    src = make_source(DataConfig(str(tmp_path / "d.npz")), STATEFUL)
    batches = list(src)
    assert len(batches) == 5 and src.stats.used == 5
    for i, b in enumerate(batches):
        assert b["input"].shape == (1, 576) and b["state"].shape == (2, 1, 128)
        np.testing.assert_array_equal(b["state"], state[i])
        assert b["sr"].shape == () and b["sr"].dtype == np.int64 and int(b["sr"]) == 16000
    calib, held = split(DataConfig(str(tmp_path / "d.npz")), STATEFUL, holdout=2)
    assert calib.num_samples == 3
    np.testing.assert_array_equal([b["input"] for b in held], x[3:])


def test_npz_state_stacked_on_axis0_says_what_to_do(tmp_path):
    np.savez(
        tmp_path / "d.npz",
        input=np.zeros((4, 576), np.float32),
        state=np.zeros((4, 1, 128), np.float32),
        sr=np.array(16000),
    )
    with pytest.raises(DataError, match=r"fixes the batch dim \(axis 0\) at \[2\].*one more dim"):
        make_source(DataConfig(str(tmp_path / "d.npz")), STATEFUL)
    np.savez(
        tmp_path / "e.npz",
        input=np.zeros((4, 1, 576), np.float32),
        state=np.zeros((4, 2, 1, 128), np.float32),
        sr=np.array(16000),
    )
    with pytest.raises(DataError, match="one whole feed per sample.*batch_size to 1"):
        make_source(DataConfig(str(tmp_path / "e.npz"), batch_size=2), STATEFUL)


def test_npz_zero_d_array_only_for_a_scalar_input(tmp_path):
    np.savez(tmp_path / "d.npz", input=np.array(1.0, np.float32), state=np.zeros((2, 2, 1, 128)))
    specs = STATEFUL[:2]
    with pytest.raises(DataError, match="0-d array only for a scalar input"):
        make_source(DataConfig(str(tmp_path / "d.npz")), specs)
