"""Stage 2 as Beam transforms: observations -> per-tile stacks.

    ObservationRef --InspectObservations--> valid refs (+ Rejection)
      --WrittenTimes--> the written time stamps (a singleton side input)
      --StackChunks--> TileStack               fan-out per (read chunk, observation reference),
                                               GroupByKey per read chunk, read each observation's
                                               chunk once, cut into tiles, forward fill per tile
      --WriteStacks--> {j}_{i}.tfrecords + metadata.json (rsdtlib's layout)

The transforms only wire the pure rules of `rsdt_beam.stack.rules` and the
readers of `rsdt_beam.acquire`; every decision lives there.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable

import apache_beam as beam
import numpy as np

from rsdt_beam import fs
from rsdt_beam.common.modalities import MODALITIES, BandCounts
from rsdt_beam.common.names import BAND_STATS_KEY, METADATA_FILE, RECORD_OBSERVED_KEY, tile_file_name
from rsdt_beam.common.observations import ObservationError, ObservationRef, Rejection
from rsdt_beam.common.times import iso_time
from rsdt_beam.graph import split
from rsdt_beam.grid import Grid, ReadChunk, TileLayout
from rsdt_beam.progress import Counter
from rsdt_beam.records import stack_record
from rsdt_beam.stack.files import band_counts
from rsdt_beam.stack.rules import Piece, StackParams, TileStack, stack_tile, written_times
from rsdt_beam.stack.stats import BandMoments
from rsdt_beam.tfrecord import TFRecordWriter

_LOG = logging.getLogger(__name__)
REJECTED = "rejected"
VALID = "valid"
STACKS = "stacks"


class _Inspect(beam.DoFn):
    def __init__(self, grid: Grid, bands: BandCounts):
        self._grid = grid
        self._bands = bands
        self._read = Counter("observations_inspected")
        self._rejected = Counter("observations_rejected")

    def process(self, ref: ObservationRef):
        self._read.inc()
        try:
            header = ref.reader.header(ref.uri)
            if not header.grid.matches(self._grid):
                raise ObservationError(ref.uri, f"grid {header.grid.describe()} differs from the run's grid "
                                                f"{self._grid.describe()}")
            expected = self._bands.bands_of(ref.modality)
            if header.bands != expected:
                raise ObservationError(ref.uri, f"has {header.bands} bands but {ref.modality} observations "
                                                f"of this run have {expected}")
        except ObservationError as error:
            self._rejected.inc()
            _LOG.warning("set aside %s", error)
            yield REJECTED, Rejection.of(ref, error.reason)
            return
        yield VALID, ref


class InspectObservations(beam.PTransform):
    """PCollection[ObservationRef] -> {'valid': ObservationRef, 'rejected': Rejection}.

    Reads each observation's header only and sets aside those that are
    unreadable, not on the run's grid, or whose band count differs from
    their modality's.
    """

    def __init__(self, grid: Grid, bands: BandCounts):
        super().__init__()
        self._grid = grid
        self._bands = bands

    def expand(self, refs):
        return split(refs | "Inspect" >> beam.ParDo(_Inspect(self._grid, self._bands)), (VALID, REJECTED))


class WrittenTimes(beam.PTransform):
    """PCollection[ObservationRef] -> a single sorted float64 array: the time stamps Stage 2 writes."""

    def __init__(self, params: StackParams):
        super().__init__()
        self._params = params

    def expand(self, refs):
        params = self._params
        return (refs
                | beam.Map(lambda ref: ref.time)
                | beam.combiners.ToList()
                | beam.Map(lambda times: written_times(times, params)))


class _StackChunk(beam.DoFn):
    """Reads each observation of one read chunk once and forward-fills the chunk's tiles one by one."""

    def __init__(self, chunks: list[ReadChunk], layout: TileLayout, bands: BandCounts, selector, seeds=None):
        self._chunks = chunks
        self._tile_shape = (layout.tile_size_y, layout.tile_size_x)
        self._bands = bands
        self._selector = selector
        self._seeds = seeds
        self._read = Counter("chunks_read")
        self._rejected = Counter("chunk_reads_failed")
        self._pieces = Counter("tile_pieces")
        self._tiles = Counter("tiles_stacked")

    def process(self, item, written):
        index, refs = item
        chunk = self._chunks[index]
        tiles = [(tile, window) for tile, window in chunk.tiles()
                 if self._selector is None or self._selector(*tile)]
        pieces: dict[tuple[int, int], list[Piece]] = {tile: [] for tile, _ in tiles}
        last = written[-1] if len(written) else -np.inf
        # Observations after the last written time stamp change no frame: not read at all.
        for ref in sorted((r for r in refs if r is not None and r.time <= last), key=lambda r: r.time):
            try:
                data, valid = ref.reader.read(ref.uri, chunk.window)
            except ObservationError as error:
                self._rejected.inc()
                _LOG.warning("set aside %s in %s", error, chunk)
                yield REJECTED, Rejection.of(ref, f"{error.reason} (in {chunk})")
                continue
            self._read.inc()
            for tile, window in tiles:
                rows, cols = slice(window.row_start, window.row_stop), slice(window.col_start, window.col_stop)
                tile_valid = valid[rows, cols]
                if not tile_valid.any():
                    continue  # changes nothing in this tile's forward fill
                self._pieces.inc()
                pieces[tile].append(Piece(ref.time, ref.modality, data[rows, cols],  # views, no copies
                                          None if tile_valid.all() else tile_valid))
        for tile, _ in tiles:
            seeds = self._seeds(tile) if self._seeds is not None else []
            stack = stack_tile(tile, seeds + pieces.pop(tile), written, self._tile_shape, self._bands)
            self._tiles.inc()
            yield STACKS, stack


class StackChunks(beam.PTransform):
    """PCollection[ObservationRef] -> {'stacks': TileStack, 'rejected': Rejection}: Stage 2 without
    moving pixels through a shuffle.

    Only the observation references are grouped, per read chunk (tiles of
    about `chunk_size` px a side); the worker of a chunk reads each of its
    observations once and forward-fills the chunk's tiles (those
    `selector(j, i)` picks; every one, also one without any valid pixel)
    through the written time stamps `written` (a singleton PCollection
    from WrittenTimes). Grouping references rather than pixels (per tile)
    means no pixel is pickled between stages, and a worker holds one chunk's
    observations and one tile's frames at a time, whatever the area. `seeds(tile)`, if
    given, returns pieces that precede the observations (a scheduled run's
    carried frames, rsdt_beam.schedule).
    """

    def __init__(self, layout: TileLayout, chunk_size: int, bands: BandCounts, written, selector=None,
                 seeds=None):
        super().__init__()
        self._layout = layout
        self._chunks = layout.chunks(chunk_size)
        self._bands = bands
        self._written = written
        self._selector = selector
        self._seeds = seeds

    def expand(self, refs):
        selector = self._selector
        wanted = [n for n, chunk in enumerate(self._chunks)
                  if selector is None or any(selector(*tile) for tile, _ in chunk.tiles())]
        keyed = refs | "Key by chunk" >> beam.FlatMap(lambda ref: [(n, ref) for n in wanted])
        every_chunk = refs.pipeline | "Every chunk" >> beam.Create([(n, None) for n in wanted])
        outputs = ((keyed, every_chunk)
                   | "Merge" >> beam.Flatten()
                   | "Group per chunk" >> beam.GroupByKey()
                   | "Read and forward fill" >> beam.ParDo(
                       _StackChunk(self._chunks, self._layout, self._bands, selector, self._seeds),
                       beam.pvalue.AsSingleton(self._written)))
        return split(outputs, (STACKS, REJECTED))


class _WriteStack(beam.DoFn):
    def __init__(self, output_dir: str, gzip_level: int | None, record_observed: bool = False):
        self._output_dir = output_dir
        self._gzip_level = gzip_level
        self._record_observed = record_observed
        self._records = Counter("stack_records_written")
        self._bytes = Counter("stack_raw_bytes")
        self._file_bytes = Counter("stack_file_bytes")

    def process(self, stack: TileStack, _cleared):
        path = fs.join(self._output_dir, tile_file_name(stack.tile))
        asc, dsc, opt = (stack.modality(m) for m in MODALITIES)
        with fs.atomic_write(path) as raw:
            writer = TFRecordWriter(raw, self._gzip_level)
            for k, time in enumerate(stack.times):
                observed = stack.observed[k] if self._record_observed else None
                writer.write(stack_record(time, asc[k], dsc[k], opt[k], stack.tile, observed))
            writer.close()
        self._records.inc(writer.records)
        self._bytes.inc(writer.raw_bytes)
        self._file_bytes.inc(writer.file_bytes)
        yield stack.tile


class _BandStatsFn(beam.CombineFn):
    """TileStack -> per-band statistics of all its frames, merged over tiles (`rsdt_beam.stack.stats`).

    The accumulator keeps each tile's moments (a few numbers per band) and the output merges them in tile
    order: floating-point merges in the order a runner happens to combine would differ in the last digits
    between runners and runs (seen between the DirectRunner and the DaskRunner).
    """

    def __init__(self, bands: BandCounts):
        super().__init__()
        self._bands = bands

    def create_accumulator(self) -> dict[tuple[int, int], BandMoments]:
        return {}

    def add_input(self, accumulator: dict, stack: TileStack) -> dict:
        accumulator[stack.tile] = BandMoments.of(stack.frames)
        return accumulator

    def merge_accumulators(self, accumulators) -> dict:
        merged = {}
        for accumulator in accumulators:
            merged.update(accumulator)
        return merged

    def extract_output(self, accumulator: dict) -> dict:
        total = BandMoments.empty(self._bands.total)
        for tile in sorted(accumulator):
            total = total.merge(accumulator[tile])
        return total.to_json(self._bands)


class BandStatistics(beam.PTransform):
    """PCollection[TileStack] -> singleton PCollection[dict]: `band_stats` of metadata.json."""

    def __init__(self, bands: BandCounts):
        super().__init__()
        self._bands = bands

    def expand(self, stacks):
        return stacks | "Band statistics" >> beam.CombineGlobally(_BandStatsFn(self._bands))


class WriteStacks(beam.PTransform):
    """PCollection[TileStack] -> PCollection[dict]: `{j}_{i}.tfrecords` per tile, then `metadata.json`.

    `metadata.json` is removed first and written only after every tile file,
    so a folder with it is complete; tile files are written atomically.
    `record_observed` adds each record's observed mask (`Observed`, see `rsdt_beam.records`).
    """

    def __init__(self, output_dir: str, metadata: dict, gzip_level: int | None, written,
                 record_observed: bool = False):
        super().__init__()
        self._output_dir = output_dir
        self._metadata = dict(metadata, **({RECORD_OBSERVED_KEY: True} if record_observed else {}))
        self._gzip_level = gzip_level
        self._written = written
        self._record_observed = record_observed

    def expand(self, stacks):
        output_dir, metadata = self._output_dir, self._metadata
        marker = fs.join(output_dir, METADATA_FILE)
        cleared = (stacks.pipeline
                   | "Completion marker" >> beam.Create([marker])
                   | "Remove old marker" >> beam.Map(lambda path: (fs.makedirs(output_dir), fs.delete_if_exists(path))))
        written = stacks | "Write tile files" >> beam.ParDo(
            _WriteStack(output_dir, self._gzip_level, self._record_observed), beam.pvalue.AsSingleton(cleared))

        stats = stacks | "Statistics" >> BandStatistics(band_counts(metadata))

        def write_metadata(tiles: Iterable, times: np.ndarray, band_stats: dict) -> dict:
            done = dict(metadata, tiles_written=len(list(tiles)), timestamps=[iso_time(t) for t in times])
            done[BAND_STATS_KEY] = band_stats
            fs.write_json(marker, done)
            return done

        return (written
                | beam.combiners.ToList()
                | "Write metadata.json" >> beam.Map(write_metadata, beam.pvalue.AsSingleton(self._written),
                                                    beam.pvalue.AsSingleton(stats)))


class Stack(beam.PTransform):
    """PCollection[ObservationRef] -> StackOutputs: Stage 2 from observation references to tile stacks.

    Inspects the observations' headers, fixes the written time stamps and forward-fills every tile
    (those `selector(j, i)` picks) through them. Hooks for runs that continue earlier ones (scheduled
    runs): `stack_times(written)` gives the time stamps to stack at from the written ones (default: the
    written ones), and `seeds(tile)` the pieces that precede the observations (carried frames).
    """

    def __init__(self, plan, selector=None, stack_times=None, seeds=None):
        super().__init__()
        self._plan = plan
        self._selector = selector
        self._stack_times = stack_times
        self._seeds = seeds

    def expand(self, refs) -> StackOutputs:
        plan = self._plan
        inspected = refs | "Inspect observations" >> InspectObservations(plan.grid, plan.bands)
        written = inspected["valid"] | "Written time stamps" >> WrittenTimes(plan.params)
        stacked_at = written
        if self._stack_times is not None:
            stacked_at = written | "Time stamps to stack at" >> beam.Map(self._stack_times)
        stacked = inspected["valid"] | "Stack tiles" >> StackChunks(plan.layout, plan.chunk_size, plan.bands,
                                                                     stacked_at, self._selector, self._seeds)
        return StackOutputs(stacked["stacks"], written, (inspected[REJECTED], stacked[REJECTED]))


@dataclasses.dataclass(frozen=True)
class StackOutputs:
    """What `Stack` gives: the tile stacks, the written time stamps (a singleton) and the rejections."""

    stacks: beam.PCollection
    written: beam.PCollection
    rejected: tuple
