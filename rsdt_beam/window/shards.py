"""The sharded layout's plan: which window records go into which `windows-SSSSS-of-NNNNN.tfrecords`.

Records are taken in tile order, then window order, and cut into shards of at most `records_per_shard`
records and at most `bytes_per_shard` record bytes (uncompressed, as framed; a record larger than the
limit is a shard of its own). The plan depends on the records alone, so every runner and every run
writes the same shards.
"""

from __future__ import annotations

import dataclasses
import re

# Without a limit: shards of about 256 MiB of records before compression (100-200 MB files for most data,
# the size tf.data reads best from object stores).
DEFAULT_BYTES_PER_SHARD = 256 << 20
_SHARD_NAME = re.compile(r"windows-\d{5}-of-\d{5}\.tfrecords")


@dataclasses.dataclass(frozen=True)
class StagedRecords:
    """A tile's window records, staged: the byte size of each, in window order."""

    tile: tuple[int, int]
    sizes: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class ShardPiece:
    """Records `start` (inclusive) to `stop` (exclusive) of a tile's staged records."""

    tile: tuple[int, int]
    start: int
    stop: int


@dataclasses.dataclass(frozen=True)
class Shard:
    index: int
    count: int
    pieces: tuple[ShardPiece, ...]

    @property
    def name(self) -> str:
        return shard_name(self.index, self.count)


def shard_name(index: int, count: int) -> str:
    return f"windows-{index:05d}-of-{count:05d}.tfrecords"


def is_shard(name: str) -> bool:
    """Whether a file name (relative to the windows folder) is a shard's."""
    return _SHARD_NAME.fullmatch(name) is not None


def plan_shards(tiles: list[StagedRecords], records_per_shard: int | None, bytes_per_shard: int | None) -> list[Shard]:
    """The shards holding every staged record (none without records)."""
    max_records = records_per_shard or float("inf")
    max_bytes = bytes_per_shard or (DEFAULT_BYTES_PER_SHARD if records_per_shard is None else float("inf"))
    shards: list[list[ShardPiece]] = []
    records = size = 0
    for staged in sorted(tiles, key=lambda staged: staged.tile):
        start = 0
        for n, record_size in enumerate(staged.sizes):
            if not shards or records >= max_records or (records and size + record_size > max_bytes):
                if shards and start < n:
                    shards[-1].append(ShardPiece(staged.tile, start, n))
                shards.append([])
                start, records, size = n, 0, 0
            records += 1
            size += record_size
        if start < len(staged.sizes):
            shards[-1].append(ShardPiece(staged.tile, start, len(staged.sizes)))
    return [Shard(index, len(shards), tuple(pieces)) for index, pieces in enumerate(shards)]
