"""Build a DataSource from a DataConfig: pick the kind, order the samples, split off held-out data."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from int8kit.data.arrays import ARRAY_EXTS, ArraySource, load_chunk, samples
from int8kit.data.config import DataConfig, InputSpec
from int8kit.data.images import IMAGE_EXTS, ImageSource, find_files, image_input, scan_images
from int8kit.data.script import ScriptSource
from int8kit.data.source import DataSource
from int8kit.errors import DataError

log = logging.getLogger(__name__)


def resolve_kind(config: DataConfig) -> str:
    """images | npy | script. A loader script is never auto-detected: it runs code."""
    if config.kind != "auto":
        return config.kind
    src = config.source
    if src.endswith(".py") or ".py:" in src:
        raise DataError(
            f"{src} looks like a loader script; scripts run only when named explicitly: "
            "use kind='script' (--data-loader-script)"
        )
    path = Path(src)
    if not path.exists():
        raise DataError(f"data source {src} does not exist; give a folder of images or a .npy/.npz")
    if path.is_file():
        if path.suffix.lower() in ARRAY_EXTS:
            return "npy"
        raise DataError(
            f"data source {src} is a file but not .npy/.npz; give a folder of images, "
            "a .npy/.npz file or folder, or a loader script with kind='script'"
        )
    if find_files(path, ARRAY_EXTS) and not find_files(path, IMAGE_EXTS):
        return "npy"
    return "images"


def _ordered_images(config: DataConfig) -> tuple[list[str], list[int], list[tuple[str, str]]]:
    folder = Path(config.source)
    if not folder.is_dir():
        raise DataError(f"image source {folder} is not a folder; give a folder of images")
    good, bad = scan_images(folder)
    order = np.random.default_rng(config.seed).permutation(len(good))
    return [good[i] for i in order], [int(i) for i in order], bad


def _array_chunks(config: DataConfig, inputs: list[InputSpec]) -> list[dict[str, np.ndarray]]:
    path = Path(config.source)
    if path.is_dir():
        files = find_files(path, ARRAY_EXTS)
        if not files:
            raise DataError(f"no .npy/.npz files in {path}")
    elif path.is_file():
        files = [path]
    else:
        raise DataError(f"array source {path} does not exist; give a .npy/.npz file or folder")
    chunks = [load_chunk(f, inputs, config.input_name) for f in files]
    names = [sorted(c) for c in chunks]
    if any(n != names[0] for n in names):
        raise DataError(
            f"the files in {path} feed different inputs ({names}); every file must feed the same"
        )
    _note_uint8(chunks, inputs, config, path)
    return chunks


def _note_uint8(chunks, inputs: list[InputSpec], config: DataConfig, path: Path) -> None:
    """Say once that uint8 arrays reach a float input as raw 0-255 values: --scale, --mean and
    --std apply to images only, and a model trained on 0-1 inputs would be calibrated wrongly."""
    dtypes = {s.name: np.dtype(config.preprocess.dtype or s.dtype) for s in inputs}
    for name in chunks[0]:
        if dtypes[name].kind == "f" and any(c[name].dtype == np.uint8 for c in chunks):
            log.warning(
                "%s: input %r is uint8 data, fed as float values 0-255 unchanged (--scale, "
                "--mean and --std apply to images only); if the model expects 0-1 or "
                "normalised inputs, save the arrays as float32 preprocessed that way",
                path,
                name,
            )


def make_source(config: DataConfig, inputs: list[InputSpec]) -> DataSource:
    """The DataSource ``config`` describes, for a model with ``inputs``."""
    if not inputs:
        raise DataError("the model declares no inputs")
    _check_input_name(config, inputs)
    kind = resolve_kind(config)
    if kind == "script":
        return ScriptSource(config, inputs)
    if kind == "npy":
        return ArraySource(_array_chunks(config, inputs), config, inputs, description=config.source)
    files, keys, bad = _ordered_images(config)
    spec = image_input(inputs, config.input_name)
    return ImageSource(files, config, spec, keys=keys, skipped=bad, description=config.source)


def _check_input_name(config: DataConfig, inputs: list[InputSpec]) -> None:
    """An input name that is not the model's would be ignored by some sources: refuse it."""
    names = [s.name for s in inputs]
    if config.input_name is not None and config.input_name not in names:
        raise DataError(
            f"--input-name {config.input_name!r} is not a model input; the inputs are "
            f"{', '.join(names)}"
        )


def _too_few(n: int, holdout: int, what: str, source: str) -> DataError:
    return DataError(
        f"{source} has {n} {what}, too few to hold out {holdout} and calibrate on the rest; "
        f"add data or lower the held-out count below {n}"
    )


def split(
    config: DataConfig, inputs: list[InputSpec], holdout: int
) -> tuple[DataSource, DataSource]:
    """(calibration, held-out) sources over disjoint samples.

    Held-out = the last ``holdout`` samples after the seeded shuffle (arrays: in file order;
    loader scripts: the last ``holdout`` batches, since the script does the batching).
    ``num_samples`` caps the calibration part only.
    """
    if holdout < 1:
        raise DataError(f"holdout must be >= 1, got {holdout}")
    _check_input_name(config, inputs)
    kind = resolve_kind(config)
    if kind == "script":
        total = ScriptSource(config, inputs).total_batches
        if total <= holdout:
            raise _too_few(total, holdout, "batches", config.source)
        return (
            ScriptSource(
                config,
                inputs,
                select=(0, total - holdout),
                description=f"{config.source} (calibration)",
            ),
            ScriptSource(
                config,
                inputs,
                select=(total - holdout, None),
                description=f"{config.source} (held-out)",
            ),
        )
    uncapped = dataclasses.replace(config, num_samples=None)
    if kind == "npy":
        chunks = _array_chunks(config, inputs)
        total = sum(samples(c) for c in chunks)
        if total <= holdout:
            raise _too_few(total, holdout, "samples", config.source)
        cut = total - holdout
        return (
            ArraySource(
                chunks, config, inputs, stop=cut, description=f"{config.source} (calibration)"
            ),
            ArraySource(
                chunks, uncapped, inputs, start=cut, description=f"{config.source} (held-out)"
            ),
        )
    files, keys, bad = _ordered_images(config)
    if len(files) <= holdout:
        raise _too_few(len(files), holdout, "readable images", config.source)
    spec = image_input(inputs, config.input_name)
    cut = len(files) - holdout
    common = dict(skipped=bad, size_from=files[0])
    calib = ImageSource(
        files[:cut],
        config,
        spec,
        keys=keys[:cut],
        description=f"{config.source} (calibration)",
        **common,
    )
    held = ImageSource(
        files[cut:],
        uncapped,
        spec,
        keys=keys[cut:],
        description=f"{config.source} (held-out)",
        **common,
    )
    return calib, held
