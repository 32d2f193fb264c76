"""Calibration data from .npy/.npz files: first axis = samples, batched by batch_size.

A .npy file feeds one input (the only input, or ``input_name``); a .npz maps its keys to input
names. An array has the input's rank (samples stacked along its batch axis 0), or one more (axis
0 lists whole feeds of the input's shape, one per sample: for inputs whose axis 0 is no batch,
such as an RNN state (2, batch, 128); batch size 1); a 0-d array for a scalar input feeds the
same value to every sample (a sample rate, a threshold). A folder of such files is read in sorted order as if concatenated; .npy files and the
arrays of an uncompressed .npz (np.savez) are memory-mapped, so a large array is not loaded
whole (nor copied out of the zip: 157 MB took ~0.3 s of CPU). Pickled arrays are never loaded.
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from int8kit.data.config import DataConfig, InputSpec
from int8kit.data.shapes import cast, check_batch, effective_shape, fmt_shape, is_static
from int8kit.data.source import Batch, DataSource, DataStats, batch_bounds
from int8kit.errors import DataError

ARRAY_EXTS = (".npy", ".npz")

Chunk = dict[str, np.ndarray]


def _mapped_npz(path: Path) -> dict[str, np.ndarray] | None:
    """{key: read-only memory map} of a .npz whose members are all uncompressed .npy files
    (np.savez), or None (compressed, or not only arrays: np.load reads it)."""
    with zipfile.ZipFile(path) as z, open(path, "rb") as f:
        members = z.infolist()
        if not all(
            m.compress_type == zipfile.ZIP_STORED and m.filename.endswith(".npy") for m in members
        ):
            return None
        size = path.stat().st_size
        out = {}
        for m in members:
            f.seek(m.header_offset)
            header = f.read(30)  # the local file header; the member's data follows its name/extra
            if len(header) < 30 or header[:4] != b"PK\x03\x04":
                return None
            name_len, extra_len = struct.unpack("<2H", header[26:30])
            f.seek(m.header_offset + 30 + name_len + extra_len)
            fmt = np.lib.format
            read_header = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}
            reader = read_header.get(fmt.read_magic(f))
            if reader is None:
                return None
            shape, fortran, dtype = reader(f)
            if dtype.hasobject:
                raise ValueError("Object arrays cannot be loaded when allow_pickle=False")
            offset, nbytes = f.tell(), int(np.prod(shape)) * dtype.itemsize
            if not nbytes or offset + nbytes > size:  # nothing to map, or a truncated file
                return None
            out[m.filename[:-4]] = np.memmap(
                path, dtype, "r", offset, shape, "F" if fortran else "C"
            )
        return out


def _load(path: Path) -> np.lib.npyio.NpzFile | np.ndarray | dict[str, np.ndarray]:
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, mmap_mode="r", allow_pickle=False)
        try:
            mapped = _mapped_npz(path)
        except (zipfile.BadZipFile, struct.error):
            mapped = None  # np.load says what is wrong with it
        return mapped if mapped is not None else np.load(path, allow_pickle=False)
    except ValueError as exc:  # object arrays need pickle, which is never allowed
        raise DataError(
            f"cannot load {path}: {exc}; save plain numeric arrays (np.save / np.savez)"
        ) from exc
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc


def load_chunk(path: Path, inputs: list[InputSpec], input_name: str | None) -> Chunk:
    """{input name: array with samples on axis 0} from one .npy or .npz file."""
    names = [s.name for s in inputs]
    data = _load(path)
    if isinstance(data, np.ndarray):
        if input_name is None and len(inputs) != 1:
            raise DataError(
                f"{path} is a single array but the model has {len(inputs)} inputs "
                f"({', '.join(names)}); save a .npz with one key per input, or set input_name"
            )
        target = input_name or names[0]
        if target not in names:
            raise DataError(f"input_name {target!r} is not a model input ({', '.join(names)})")
        return {target: data}
    keys = list(data) if isinstance(data, dict) else list(data.files)
    chunk = {}
    for name in names:
        if name not in keys:
            if not isinstance(data, dict):
                data.close()
            raise DataError(
                f"{path} has no array for input '{name}': it holds "
                f"{', '.join(keys) or 'nothing'}, the model expects {', '.join(names)}; "
                "name each .npz key after a model input"
            )
        chunk[name] = data[name]
    if not isinstance(data, dict):
        data.close()
    ranks = {s.name: len(s.shape) for s in inputs}
    lengths = {k: len(v) for k, v in chunk.items() if v.ndim}
    scalars = [k for k, v in chunk.items() if not v.ndim and ranks[k]]
    if scalars or len(set(lengths.values())) > 1 or not lengths:
        raise DataError(
            f"{path}: every array needs the same number of samples on axis 0 (a 0-d array only "
            f"for a scalar input: its one value for every sample), got "
            f"{ {k: tuple(v.shape) for k, v in chunk.items()} }"
        )
    return chunk


def samples(chunk: Chunk) -> int:
    """Samples in a chunk (its 0-d arrays are one value for all of them)."""
    return next(len(v) for v in chunk.values() if v.ndim)


def feed_modes(chunk: Chunk, inputs: list[InputSpec]) -> dict[str, str]:
    """Per input: "stack" (samples along the input's axis 0), "feed" (axis 0 lists whole feeds:
    one more dim than the input) or "const" (a 0-d array for a scalar input)."""
    ranks = {s.name: len(s.shape) for s in inputs}
    modes = {}
    for name, arr in chunk.items():
        if arr.ndim == 0:
            modes[name] = "const"
        elif arr.ndim == ranks[name] + 1:
            modes[name] = "feed"
        else:
            modes[name] = "stack"
    return modes


class ArraySource(DataSource):
    """Batches drawn from in-order ``chunks`` over the global sample range [start, stop)."""

    def __init__(
        self,
        chunks: list[Chunk],
        config: DataConfig,
        inputs: list[InputSpec],
        *,
        start: int = 0,
        stop: int | None = None,
        description: str = "",
    ) -> None:
        self.chunks = chunks
        self.config = config
        self.names = list(chunks[0])
        specs = {s.name: s for s in inputs}
        self.shapes = {n: effective_shape(specs[n], config) for n in self.names}
        self.dtypes = {n: config.preprocess.dtype or specs[n].dtype for n in self.names}
        self.stats = DataStats()
        self.description = description
        self.offsets = np.cumsum([0] + [samples(c) for c in chunks])
        total = int(self.offsets[-1])
        stop = total if stop is None else min(stop, total)
        if config.num_samples:
            stop = min(stop, start + config.num_samples)
        self.start, self.stop = start, stop
        self.modes = feed_modes(chunks[0], inputs)
        whole = [n for n, m in self.modes.items() if m == "feed"]
        if whole and config.batch_size != 1:
            raise DataError(
                f"input(s) {', '.join(whole)} hold one whole feed per sample (their arrays have "
                f"one dim more than the input), so each run takes one sample; set batch_size to "
                f"1 (it is {config.batch_size})"
            )
        stacked = [n for n, m in self.modes.items() if m == "stack"]
        fixed = {
            self.shapes[n][0] for n in stacked if self.shapes[n] and is_static(self.shapes[n][0])
        }
        if fixed and fixed != {config.batch_size}:
            axis0 = ", ".join(f"{n} {fmt_shape(self.shapes[n])}" for n in stacked)
            raise DataError(
                f"the model fixes the batch dim (axis 0) at {sorted(fixed)} ({axis0}); set "
                f"batch_size to match (it is {config.batch_size}). If axis 0 of an input is no "
                "batch (an RNN state (2, batch, 128)), save its array with one more dim: axis 0 "
                "then lists whole feeds of the input's shape, one per sample"
            )
        self.drop_last = bool(fixed)
        self._bounds = batch_bounds(stop - start, config.batch_size, self.drop_last)

    def __len__(self) -> int:
        return len(self._bounds)

    @property
    def num_samples(self) -> int:
        return self._bounds[-1][1] if self._bounds else 0

    def _take(self, name: str, lo: int, hi: int) -> np.ndarray:
        mode = self.modes[name]
        if mode == "const":
            return np.asarray(self.chunks[0][name])
        if mode == "feed":  # batch_size 1: sample lo is the whole feed
            i = int(np.searchsorted(self.offsets, lo, side="right")) - 1
            return np.asarray(self.chunks[i][name][lo - int(self.offsets[i])])
        parts = []
        first = int(np.searchsorted(self.offsets, lo, side="right")) - 1
        for i in range(first, len(self.chunks)):
            c_lo, c_hi = int(self.offsets[i]), int(self.offsets[i + 1])
            if c_lo >= hi:
                break
            parts.append(self.chunks[i][name][max(lo, c_lo) - c_lo : min(hi, c_hi) - c_lo])
        return np.concatenate(parts) if len(parts) > 1 else np.asarray(parts[0])

    def batch_samples(self, batch: Batch) -> int:
        stacked = [batch[n] for n, m in self.modes.items() if m == "stack"]
        return 1 if "feed" in self.modes.values() or not stacked else len(stacked[0])

    def _batches(self) -> Iterator[Batch]:
        for lo, hi in self._bounds:
            batch = {}
            for name in self.names:
                arr = cast(
                    name, self._take(name, self.start + lo, self.start + hi), self.dtypes[name]
                )
                check_batch(name, arr, self.shapes[name])
                batch[name] = np.ascontiguousarray(arr) if arr.ndim else np.array(arr)  # keeps 0-d
            yield batch
        dropped = self.stop - self.start - self.num_samples
        self.stats.dropped = dropped
