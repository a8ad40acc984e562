"""The sharded layout's plan (rsdt_beam.window.shards): every record once, in tile and window order, within the
limits, the same whatever order the tiles arrive in."""

import pytest

from rsdt_beam.window.shards import DEFAULT_BYTES_PER_SHARD, StagedRecords, is_shard, plan_shards, shard_name


def records_in(shards):
    return [(piece.tile, n) for shard in shards for piece in shard.pieces for n in range(piece.start, piece.stop)]


TILES = [StagedRecords((0, 1), (10,) * 5), StagedRecords((0, 0), (10,) * 3), StagedRecords((1, 0), ())]


def test_records_per_shard_cut_across_tiles_in_tile_order():
    shards = plan_shards(TILES, 3, None)
    assert [shard.name for shard in shards] == [shard_name(n, 3) for n in range(3)]
    assert [sum(p.stop - p.start for p in shard.pieces) for shard in shards] == [3, 3, 2]
    assert records_in(shards) == [((0, 0), n) for n in range(3)] + [((0, 1), n) for n in range(5)]
    assert plan_shards(list(reversed(TILES)), 3, None) == shards  # the order tiles arrive in does not matter


@pytest.mark.parametrize("limit, sizes", [(25, [2, 2, 2, 2]), (10, [1] * 8), (5, [1] * 8)])
def test_bytes_per_shard_counts_uncompressed_records(limit, sizes):
    shards = plan_shards(TILES, None, limit)
    assert [sum(p.stop - p.start for p in shard.pieces) for shard in shards] == sizes  # an oversized record alone
    assert len(records_in(shards)) == 8


def test_both_limits_and_the_default():
    assert [len(records_in([s])) for s in plan_shards(TILES, 3, 25)] == [2, 2, 2, 2]
    big = [StagedRecords((0, 0), (DEFAULT_BYTES_PER_SHARD // 2,) * 5)]
    assert [len(records_in([s])) for s in plan_shards(big, None, None)] == [2, 2, 1]
    assert plan_shards([StagedRecords((0, 0), ())], 10, None) == []


def test_shard_names():
    assert is_shard("windows-00002-of-00010.tfrecords") and not is_shard("0_1.tfrecords")
    assert not is_shard(".shard_parts/run/windows-00002-of-00010.tfrecords")
