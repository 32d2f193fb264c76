"""Calibration data from a user's loader script ("file.py" or "file.py:func").

The function (default ``load_data``, as in Polygraphy) takes no arguments and returns an
iterable of ``{input_name: array}`` batches. This runs the user's code, so it happens only when
the user named the script explicitly (``kind="script"``), never by auto-detection.

If the function returns a list/tuple it is used as is. Otherwise one counting pass runs at
construction (batches are validated and discarded, so memory stays flat) and every later pass
calls the function again; it must give the same batches each time.
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from int8kit.data.config import DataConfig, InputSpec
from int8kit.data.shapes import cast, check_batch, effective_shape
from int8kit.data.source import Batch, DataSource, DataStats
from int8kit.errors import DataError

DEFAULT_FUNC = "load_data"


def parse_script(source: str) -> tuple[Path, str]:
    """("file.py", "func") from "file.py[:func]"; the path may itself contain ':' (Windows)."""
    path, func = source, DEFAULT_FUNC
    head, sep, tail = source.rpartition(":")
    if sep and head.endswith(".py") and tail.isidentifier():
        path, func = head, tail
    return Path(path), func


def load_function(source: str) -> Callable[[], Iterable[Batch]]:
    path, func = parse_script(source)
    if path.suffix != ".py" or not path.is_file():
        raise DataError(
            f"loader script {path} not found; give a Python file as 'file.py' or 'file.py:func'"
        )
    module_name = f"int8kit_data_loader_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise DataError(f"cannot import loader script {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise DataError(f"loader script {path} failed to import: {exc!r}") from exc
    fn = getattr(module, func, None)
    if not callable(fn):
        raise DataError(
            f"loader script {path} has no function {func}(); define it to return an iterable "
            "of {input_name: array} batches, or name another with 'file.py:func'"
        )
    return fn


class ScriptSource(DataSource):
    """Batches from a loader script, validated against the model inputs.

    ``select`` (start, stop) keeps a batch range, which is how ``split`` holds batches out.
    """

    def __init__(
        self,
        config: DataConfig,
        inputs: list[InputSpec],
        *,
        select: tuple[int, int | None] = (0, None),
        description: str = "",
    ) -> None:
        self.config = config
        self.fn = load_function(config.source)
        self.specs = {s.name: s for s in inputs}
        self.shapes = {n: effective_shape(s, config) for n, s in self.specs.items()}
        self.stats = DataStats()
        self.description = description or config.source
        self.select = select
        first = self._call()
        self._fixed = first if isinstance(first, (list, tuple)) else None
        count = n_samples = 0
        self.names: list[str] = [s.name for s in inputs]
        for batch in self._validated(first):
            count += 1
            n_samples += len(next(iter(batch.values())))
        self.total_batches = count
        if count == 0:
            raise DataError(f"loader script {config.source} gave no batches")
        lo, hi = select
        self._range = range(count)[lo:hi]
        self._n_samples = n_samples
        if self._range != range(count):
            self._n_samples = sum(
                len(next(iter(b.values()))) for i, b in enumerate(self._all()) if i in self._range
            )

    def _call(self) -> Iterable[Batch]:
        try:
            batches = self.fn()
        except DataError:
            raise
        except Exception as exc:
            raise self._failed(exc, "when called") from exc
        try:
            iter(batches)
        except TypeError:
            raise DataError(
                f"loader script {self.config.source}: {parse_script(self.config.source)[1]}() "
                f"returned {type(batches).__name__}, which is not iterable; return (or yield) "
                "{input_name: array} batches"
            ) from None
        return batches

    def _failed(self, exc: Exception, when: str) -> DataError:
        """The user's exception framed by a message naming the script (and its line)."""
        path = parse_script(self.config.source)[0].resolve()
        frames = [
            f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename).resolve() == path
        ]
        where = f" at line {frames[-1].lineno}" if frames else ""
        return DataError(
            f"loader script {self.config.source} raised {type(exc).__name__}: {exc} "
            f"({when}{where}); the error is in the script, not in int8kit"
        )

    def _iterate(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        """``batches``, with an exception the script raises mid-iteration framed as a DataError."""
        it = iter(batches)
        i = 0
        while True:
            try:
                batch = next(it)
            except StopIteration:
                return
            except DataError:
                raise
            except Exception as exc:
                raise self._failed(exc, f"while producing batch {i}") from exc
            yield batch
            i += 1

    def _all(self) -> Iterator[Batch]:
        return self._validated(self._fixed if self._fixed is not None else self._call())

    def _validated(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        cap, seen = self.config.num_samples, 0
        for i, batch in enumerate(self._iterate(batches)):
            if cap and seen >= cap:
                return
            if not isinstance(batch, dict):
                raise DataError(
                    f"loader script batch {i} is a {type(batch).__name__}; "
                    "yield dicts of {input_name: array}"
                )
            unknown = [k for k in batch if k not in self.specs]
            missing = [k for k in self.specs if k not in batch]
            if unknown or missing:
                raise DataError(
                    f"loader script batch {i} has keys {sorted(batch)}; the model inputs are "
                    f"{list(self.specs)}"
                    + (f"; unknown: {unknown}" if unknown else "")
                    + (f"; missing: {missing}" if missing else "")
                )
            out = {}
            for name, value in batch.items():
                arr = np.asarray(value)
                if cap and arr.ndim and seen + len(arr) > cap:
                    arr = arr[: cap - seen]
                arr = cast(name, arr, self.config.preprocess.dtype or self.specs[name].dtype)
                check_batch(name, arr, self.shapes[name])
                out[name] = arr
            seen += len(next(iter(out.values())))
            yield out

    def __len__(self) -> int:
        return len(self._range)

    @property
    def num_samples(self) -> int:
        return self._n_samples

    def _batches(self) -> Iterator[Batch]:
        for i, batch in enumerate(self._all()):
            if i >= self._range.stop:
                return
            if i >= self._range.start:
                yield batch
