"""`int8kit torch quantize` under torchrun: each rank calibrates (and fine-tunes on) its shard.

    torchrun --nproc_per_node 4 -m int8kit torch quantize pkg.mod:factory --calib images/ ...

Images are dealt out by file (rank r takes images r, r+N, r+2N, ... of the ones a single process
would use), so each image is read by one rank only; other sources by batch. Every rank must run
the same command; rank 0 writes the outputs and prints the summary.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from int8kit.data.images import ImageSource
from int8kit.data.source import Batch, DataSource, DataStats


class BatchShard(DataSource):
    """Every ``world``-th batch of ``source``, from batch ``rank``."""

    def __init__(self, source: DataSource, rank: int, world: int) -> None:
        self.source, self.rank, self.world = source, rank, world
        self.names = source.names
        self.stats = DataStats()
        self.description = f"{source.description} (batches {rank}::{world})"

    def _batches(self) -> Iterator[Batch]:
        for i, batch in enumerate(self.source):
            if i % self.world == self.rank:
                yield batch

    def __len__(self) -> int:
        return len(range(self.rank, len(self.source), self.world))

    @property
    def num_samples(self) -> int:
        return -1  # unknown without reading: batches may be short


def shard_source(source: DataSource, rank: int, world: int) -> DataSource:
    """This rank's part of ``source`` (``source`` itself when ``world`` is 1)."""
    if world <= 1:
        return source
    if not isinstance(source, ImageSource):
        return BatchShard(source, rank, world)
    n = min(len(source.files), source.config.num_samples or len(source.files))
    idx = range(rank, n, world)
    config = dataclasses.replace(source.config, num_samples=len(idx) or None)
    return ImageSource(
        [source.files[i] for i in idx],
        config,
        source.spec,
        keys=[source.keys[i] for i in idx],
        size_from=source._size_from,
        description=f"{source.description} (images {rank}::{world})",
    )
