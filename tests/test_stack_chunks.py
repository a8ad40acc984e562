"""StackChunks (references grouped per read chunk) gives the same stacks as CutIntoTilePieces + StackTiles."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from benchmarks.bench import Inputs, generate
from rsdt_beam.acquire.store import list_store
from rsdt_beam.grid import TileLayout
from rsdt_beam.options import parse_time
from rsdt_beam.stack.rules import BandCounts, StackParams
from rsdt_beam.stack.transforms import CutIntoTilePieces, StackChunks, StackTiles, WrittenTimes

BANDS = BandCounts(2, 13)


def _same_stack(item):
    tile, grouped = item
    (chunked,), (shuffled,) = grouped["chunked"], grouped["shuffled"]
    np.testing.assert_array_equal(chunked.times, shuffled.times)
    np.testing.assert_array_equal(chunked.frames, shuffled.frames)
    return tile, len(chunked.times) > 0 and bool(np.count_nonzero(chunked.frames))


@pytest.mark.parametrize("chunk_size, selector", [(40, None), (64, lambda j, i: (j + i) % 2 == 0)])
def test_same_stacks_as_moving_pixels_through_the_shuffle(tmp_path, chunk_size, selector):
    store = generate(Inputs("smooth", 64, 72, 1, 338, "store"), tmp_path)  # clouds, swath edges, revisits
    refs, _ = list_store(str(store))
    layout = TileLayout(64, 72, 20, 20, 2, 2)
    params = StackParams(parse_time("2017-01-01"), parse_time("2017-02-01"), 2 * 86400.0)
    expected = [(tile, True) for tile in layout.tiles() if selector is None or selector(*tile)]
    with TestPipeline() as pipeline:
        observations = pipeline | beam.Create(refs)
        written = observations | WrittenTimes(params)
        chunked = (observations | StackChunks(layout, chunk_size, BANDS, written, selector))["stacks"]
        pieces = (observations | CutIntoTilePieces(layout, chunk_size))["pieces"]
        if selector is not None:
            pieces = pieces | beam.Filter(lambda item: selector(*item[0]))
        shuffled = pieces | StackTiles(layout, BANDS, written, selector)
        compared = ({"chunked": chunked | "Key chunked" >> beam.Map(lambda s: (s.tile, s)),
                     "shuffled": shuffled | "Key shuffled" >> beam.Map(lambda s: (s.tile, s))}
                    | beam.CoGroupByKey()
                    | beam.Map(_same_stack))
        assert_that(compared, equal_to(expected))
