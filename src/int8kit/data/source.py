"""The DataSource contract: a re-iterable, sized stream of ``dict[input_name, np.ndarray]``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

Batch = dict[str, np.ndarray]


@dataclass
class DataStats:
    """What a source used and left out. Counted and summarised, never printed per file.

    ``used``: samples yielded by the latest pass; ``skipped_files``: (path, reason) for files
    that could not be read; ``dropped``: samples left out because a final short batch cannot
    feed an input whose batch dim is fixed.
    """

    used: int = 0
    skipped_files: list[tuple[str, str]] = field(default_factory=list)
    dropped: int = 0

    @property
    def skipped(self) -> int:
        return len(self.skipped_files)

    def skip(self, path: str, reason: str) -> None:
        if all(p != path for p, _ in self.skipped_files):
            self.skipped_files.append((path, reason))

    def summary(self, limit: int = 5) -> str:
        """One paragraph: counts, then the first ``limit`` skipped files with reasons."""
        text = f"used {self.used} samples"
        if self.dropped:
            text += f", dropped {self.dropped} (short final batch for a fixed batch size)"
        if self.skipped:
            text += f", skipped {self.skipped} unreadable files"
            shown = [f"  {p}: {r}" for p, r in self.skipped_files[:limit]]
            if self.skipped > limit:
                shown.append(f"  ... and {self.skipped - limit} more")
            text += ":\n" + "\n".join(shown)
        return text


class DataSource:
    """Base class. Subclasses set ``names``, ``stats`` and implement ``_batches``/``__len__``.

    Each ``iter()`` starts over and yields the same batches in the same order.
    """

    names: list[str]
    stats: DataStats
    description: str = ""

    def __iter__(self) -> Iterator[Batch]:
        self.stats.used = 0
        for batch in self._batches():
            self.stats.used += self.batch_samples(batch)
            yield batch

    def batch_samples(self, batch: Batch) -> int:
        """Samples in ``batch``: the length of axis 0 of its arrays."""
        return next((len(v) for v in batch.values() if np.ndim(v)), 1)

    def _batches(self) -> Iterator[Batch]:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def num_samples(self) -> int:
        raise NotImplementedError

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.description!r}, inputs={self.names}, "
            f"samples={self.num_samples}, batches={len(self)})"
        )


def batch_bounds(n: int, batch_size: int, drop_last: bool) -> list[tuple[int, int]]:
    """[start, stop) of each batch over n samples; a short last batch is kept unless drop_last."""
    stops = list(range(batch_size, n + 1, batch_size))
    bounds = [(s - batch_size, s) for s in stops]
    if n % batch_size and not drop_last:
        bounds.append((n - n % batch_size, n))
    return bounds
