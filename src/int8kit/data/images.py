"""Image folders as calibration data: find, check, read, preprocess and batch image files.

Files are found recursively, checked up front (empty files and files without a known image
signature are skipped and counted), sorted, then shuffled with the config's seed. A file that
still fails to decode while iterating is skipped and counted, and the next file takes its place.

Sizes, when the model's H/W are dynamic and no ``preprocess.size`` is set:
batch_size 1 keeps each image's own size (letterbox pads it up to a multiple of 32); a larger
batch needs one size for all images, so every image is fitted to the size of the first image
of the shuffled order (letterbox: that size padded up to a multiple of 32). Crop recipes need
a size and raise DataError instead.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from int8kit._deps import require
from int8kit.data.config import DataConfig, InputSpec
from int8kit.data.preprocess import STRIDE, apply_recipe, to_tensor
from int8kit.data.shapes import check_batch, effective_shape, fmt_shape, infer_layout, is_static
from int8kit.data.source import Batch, DataSource, DataStats, batch_bounds
from int8kit.errors import DataError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"II*\x00", b"MM\x00*")


def find_files(folder: Path, exts: tuple[str, ...]) -> list[Path]:
    """Files under ``folder`` (recursive) whose extension is in ``exts``, case-insensitive,
    sorted by path so the order does not depend on the file system."""
    found = [p for p in folder.rglob("*") if p.suffix.lower() in exts and p.is_file()]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def check_file(path: Path) -> str | None:
    """None if ``path`` looks like an image this reader can decode, else the reason it does not."""
    try:
        if os.path.getsize(path) == 0:
            return "empty file"
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    if head.startswith(_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return None
    return "not an image (unknown file signature)"


def scan_images(folder: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """(readable-looking image paths in sorted order, [(path, reason)] for the rest)."""
    good, bad = [], []
    for path in find_files(folder, IMAGE_EXTS):
        reason = check_file(path)
        if reason is None:
            good.append(str(path))
        else:
            bad.append((str(path), reason))
    if not good:
        looked = ", ".join(IMAGE_EXTS)
        what = f"; {len(bad)} files were unreadable" if bad else ""
        raise DataError(
            f"no readable images in {folder} (looked for {looked}, recursively{what}); "
            "point the data source at a folder of images, or at .npy/.npz files"
        )
    return good, bad


def image_input(inputs: list[InputSpec], name: str | None) -> InputSpec:
    """The input images feed: ``name`` if given, else the only/first 4D input."""
    if name is not None:
        for spec in inputs:
            if spec.name == name:
                return spec
        raise DataError(
            f"input_name {name!r} is not a model input; the inputs are "
            f"{', '.join(s.name for s in inputs)}"
        )
    four_d = [s for s in inputs if len(s.shape) == 4]
    if not four_d:
        listed = ", ".join(f"{s.name} {fmt_shape(s.shape)}" for s in inputs)
        raise DataError(
            f"no 4D image input in this model ({listed}); images need an (N, C, H, W) or "
            "(N, H, W, C) input: feed .npy/.npz data or a loader script instead"
        )
    return four_d[0]


def read_image(path: str, channels: int) -> np.ndarray | None:
    """HxWx3 BGR (gray and RGBA converted) or HxWx1 gray uint8; None if it cannot be decoded."""
    cv2 = require("cv2", "image calibration data")
    data = np.fromfile(path, dtype=np.uint8)  # imdecode also handles non-ASCII paths
    if data.size == 0:
        return None
    img = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        return None
    return img[..., None] if img.ndim == 2 else img


class ImageSource(DataSource):
    """Batches of one preprocessed image input, read from ``files`` in the given order.

    ``keys`` give each file a stable number (its index in the sorted listing) so a random crop
    is the same on every pass and in every split. ``size_from`` is the image whose size sets
    the batch size when H/W are dynamic and batch_size > 1.
    """

    def __init__(
        self,
        files: list[str],
        config: DataConfig,
        spec: InputSpec,
        *,
        keys: list[int] | None = None,
        skipped: list[tuple[str, str]] | None = None,
        size_from: str | None = None,
        description: str = "",
    ) -> None:
        self.files = list(files)
        self.keys = list(keys) if keys is not None else list(range(len(files)))
        self.config = config
        self.spec = spec
        self.names = [spec.name]
        self.stats = DataStats(skipped_files=list(skipped or []))
        self.description = description
        self._size_from = size_from or (self.files[0] if self.files else None)
        pp = config.preprocess
        self.shape = shape = effective_shape(spec, config)
        if len(shape) != 4:
            raise DataError(
                f"input '{spec.name}' has shape {fmt_shape(shape)}; images need a 4D input "
                "(N, C, H, W) or (N, H, W, C): feed .npy/.npz data or a loader script instead"
            )
        self.layout = infer_layout(shape, spec.name, pp.layout)
        c_axis, h_axis, w_axis = (1, 2, 3) if self.layout == "NCHW" else (3, 1, 2)
        self.channels = shape[c_axis] if is_static(shape[c_axis]) else 3
        if self.channels not in (1, 3):
            raise DataError(
                f"input '{spec.name}' {fmt_shape(shape)} has {self.channels} channels in "
                f"{self.layout} layout; images give 1 or 3: check the layout setting"
            )
        if is_static(shape[0]) and shape[0] != config.batch_size:
            raise DataError(
                f"input '{spec.name}' has a fixed batch of {shape[0]} {fmt_shape(shape)}; "
                f"set batch_size to {shape[0]} (it is {config.batch_size})"
            )
        self.drop_last = is_static(shape[0])
        self.dtype = pp.dtype or spec.dtype
        self._size = self._fixed_size(shape[h_axis], shape[w_axis])
        n = len(self.files)
        self._n = min(n, config.num_samples) if config.num_samples else n

    def _fixed_size(self, h: object, w: object) -> tuple[int, int] | None | str:
        pp, name = self.config.preprocess, self.spec.name
        if is_static(h) and is_static(w):
            if pp.size is not None and tuple(pp.size) != (h, w):
                raise DataError(
                    f"preprocess size {tuple(pp.size)} differs from input '{name}' "
                    f"{fmt_shape(self.shape)}, whose H, W are fixed at ({h}, {w}); "
                    "drop the size setting or set it to match"
                )
            return (int(h), int(w))
        if pp.size is not None:
            return pp.size
        if is_static(h) or is_static(w):
            raise DataError(
                f"input '{name}' {fmt_shape(self.shape)} fixes only one of H and W; "
                "set preprocess size (H, W) or fix the input shape with the shapes setting"
            )
        if pp.recipe in ("center-crop", "random-crop"):
            raise DataError(
                f"recipe {pp.recipe} needs a size but input '{name}' has dynamic H and W "
                f"{fmt_shape(self.shape)}; set preprocess size (H, W)"
            )
        return "first" if self.config.batch_size > 1 else None

    def target_size(self) -> tuple[int, int] | None:
        """(H, W) every image is brought to; None when each image keeps its own size."""
        if self._size == "first":
            img = read_image(self._size_from, self.channels) if self._size_from else None
            if img is None:
                raise DataError(
                    f"cannot read {self._size_from} to size batches for dynamic input "
                    f"'{self.spec.name}'; set preprocess size (H, W)"
                )
            h, w = img.shape[:2]
            if self.config.preprocess.recipe == "letterbox":
                h, w = math.ceil(h / STRIDE) * STRIDE, math.ceil(w / STRIDE) * STRIDE
            self._size = (h, w)
        return self._size

    def __len__(self) -> int:
        return len(batch_bounds(self._n, self.config.batch_size, self.drop_last))

    @property
    def num_samples(self) -> int:
        bs = self.config.batch_size
        return self._n - self._n % bs if self.drop_last else self._n

    def _batches(self) -> Iterator[Batch]:
        size = self.target_size()
        pp, bs, seed = self.config.preprocess, self.config.batch_size, self.config.seed
        pending: list[np.ndarray] = []
        taken = 0
        for path, key in zip(self.files, self.keys, strict=True):
            if taken >= self._n:
                break
            img = read_image(path, self.channels)
            if img is None:
                self.stats.skip(path, "cannot be decoded (corrupt or unsupported)")
                continue
            rng = np.random.default_rng([seed, key]) if pp.recipe == "random-crop" else None
            pending.append(apply_recipe(img, pp, size, rng))
            taken += 1
            if len(pending) == bs:
                yield self._emit(pending)
                pending = []
        if pending:
            if self.drop_last:
                self.stats.dropped = len(pending)
            else:
                yield self._emit(pending)

    def _emit(self, images: list[np.ndarray]) -> Batch:
        batch = to_tensor(images, self.config.preprocess, self.layout, self.dtype)
        check_batch(self.spec.name, batch, self.shape)
        return {self.spec.name: batch}
