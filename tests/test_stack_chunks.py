"""StackChunks (references grouped per read chunk, streamed through time into tile files) against an
independent numpy forward fill."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from conftest import reference_stack

from benchmarks.bench import Inputs, generate
from rsdt_beam.acquire.store import list_store
from rsdt_beam.common.modalities import MODALITIES, BandCounts
from rsdt_beam.common.times import parse_time
from rsdt_beam.grid import PixelWindow, TileLayout
from rsdt_beam.stack.rules import StackParams, written_times
from rsdt_beam.stack.transforms import StackChunks, WrittenTimes, stack_folder

pytestmark = pytest.mark.e2e
BANDS = BandCounts(2, 13)


@pytest.mark.parametrize("chunk_size, selector", [(40, None), (64, lambda j, i: (j + i) % 2 == 0)])
def test_chunked_stacks_equal_a_whole_area_forward_fill(tmp_path, chunk_size, selector):
    store = generate(Inputs("smooth", 64, 72, 1, 338, "store"), tmp_path)  # clouds, swath edges, revisits
    refs, _ = list_store(str(store))
    layout = TileLayout(64, 72, 20, 20, 2, 2)
    params = StackParams(parse_time("2017-01-01"), parse_time("2017-02-01"), 2 * 86400.0)
    whole = PixelWindow(0, 64, 0, 72)
    observations = {}
    for modality in MODALITIES:
        mine = [r for r in refs if r.modality == modality]
        reads = [r.reader.read(r.uri, whole) for r in mine]
        observations[modality] = (
            np.array([r.time for r in mine]),
            np.stack([d for d, _ in reads]),
            np.stack([v for _, v in reads]),
        )
    written = written_times([r.time for r in refs], params)
    expected = {
        tile: reference_stack(observations, written, tuple(layout.tile_window(*tile)), 2, 13)
        for tile in layout.tiles()
        if selector is None or selector(*tile)
    }

    def matches(stack_file):
        stack = stack_file.load()
        np.testing.assert_array_equal(stack.times, written)
        np.testing.assert_array_equal(stack.frames, expected[stack.tile])
        return stack.tile

    with TestPipeline() as pipeline:
        created = pipeline | beam.Create(refs)
        folder = stack_folder(str(tmp_path / "stacks"), {}, 1)
        written = created | WrittenTimes(params)
        stacks = (created | StackChunks(layout, chunk_size, BANDS, written, folder, 1, selector))["stacks"]
        assert_that(stacks | beam.Map(matches), equal_to(list(expected)))
