"""Stage 2 as Beam transforms: observations -> per-tile stacks.

    ObservationRef --InspectObservations--> valid refs (+ Rejection)
      --WrittenTimes--> the written time stamps (one element)
      --StackChunks--> StackFile               fan-out per (read chunk, observation reference), the
                                               written time stamps joined to every chunk, GroupByKey
                                               per read chunk; per chunk the observations
                                               are read one by one in time order and folded into the
                                               fill state; each tile's frame is appended to its
                                               {j}_{i}.tfrecords as soon as its bin closes
      --FinishStacks--> metadata.json (rsdtlib's layout), written last

The transforms only wire the pure rules of `rsdt_beam.stack.rules` and the
readers of `rsdt_beam.acquire`; every decision lives there. No step reads a
side input (`rsdt_beam.graph`): every runner computes each step once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator

import apache_beam as beam
import numpy as np

from rsdt_beam.common.modalities import BandCounts
from rsdt_beam.common.names import BAND_STATS_KEY, RECORD_OBSERVED_KEY, tile_file_name
from rsdt_beam.common.observations import ObservationError, ObservationRef, Rejection
from rsdt_beam.common.times import iso_time
from rsdt_beam.graph import Gather, split
from rsdt_beam.grid import Grid, ReadChunk, TileLayout
from rsdt_beam.outputs import FILES_KEY, OutputFolder, ensure_begun, found_files
from rsdt_beam.progress import Counter
from rsdt_beam.stack.files import StackFile, TileStackWriter, band_counts
from rsdt_beam.stack.rules import Piece, StackParams, TileStack, fold_frames, written_times
from rsdt_beam.stack.stats import BandMoments, band_stats_json, interior, stack_deadzone

_LOG = logging.getLogger(__name__)
REJECTED = "rejected"
STATS = "stats"
VALID = "valid"
TILES = "tiles"
_REF, _TIMES = "ref", "times"  # what a read chunk's group holds: observation references and the time stamps


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
                raise ObservationError(
                    ref.uri, f"grid {header.grid.describe()} differs from the run's grid {self._grid.describe()}"
                )
            expected = self._bands.bands_of(ref.modality)
            if header.bands != expected:
                raise ObservationError(
                    ref.uri, f"has {header.bands} bands but {ref.modality} observations of this run have {expected}"
                )
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
    """PCollection[ObservationRef] -> one sorted float64 array (also without observations): the time stamps
    Stage 2 writes."""

    def __init__(self, params: StackParams):
        super().__init__()
        self._params = params

    def expand(self, refs):
        params = self._params
        return (
            {"times": refs | "Time" >> beam.Map(lambda ref: ref.time)}
            | "All times" >> Gather()
            | "Written" >> beam.Map(lambda gathered: written_times(gathered["times"], params))
        )


class _WrittenCounters:
    """The counters of written stack files."""

    def __init__(self):
        self._records = Counter("stack_records_written")
        self._bytes = Counter("stack_raw_bytes")
        self._file_bytes = Counter("stack_file_bytes")

    def count(self, written: TileStackWriter) -> None:
        self._records.inc(written.writer.records)
        self._bytes.inc(written.writer.raw_bytes)
        self._file_bytes.inc(written.writer.file_bytes)


def frame_moments(stack, deadzone: tuple[int, int]) -> BandMoments:
    """Band statistics of a tile's frames (a TileStack or a StackFile) over the tile's interior
    (`rsdt_beam.stack.stats.interior`), taken frame by frame in time order, so a stack file is never
    held whole; the rule Stage 2 applies as it streams."""
    moments = BandMoments.empty(stack.bands.total)
    for _, frame, _ in stack.iter_frames():
        moments = moments.merge(BandMoments.of(interior(frame, deadzone)))
    return moments


class _StackChunk(beam.DoFn):
    """Streams one read chunk through time: reads its observations one by one in time order, folds
    each into the chunk's forward-fill state, and writes every tile's frame as soon as its bin closes."""

    def __init__(
        self,
        chunks: list[ReadChunk],
        bands: BandCounts,
        selector,
        folder: OutputFolder,
        gzip_level: int | None,
        record_observed: bool,
        deadzone: tuple[int, int],
        seeds=None,
    ):
        self._chunks = chunks
        self._deadzone = deadzone
        self._bands = bands
        self._selector = selector
        self._folder = folder
        self._gzip_level = gzip_level
        self._record_observed = record_observed
        self._seeds = seeds
        self._read = Counter("chunks_read")
        self._rejected = Counter("chunk_reads_failed")
        self._frames = Counter("stack_frames")
        self._tiles = Counter("tiles_stacked")
        self._written = _WrittenCounters()

    def _pieces(self, chunk: ReadChunk, tiles, refs: list, last: float, rejected: list) -> Iterator[Piece]:
        """The chunk's pieces in time order, read one at a time: carried seeds, then observations."""
        if self._seeds is not None:
            seeds = [
                dataclasses.replace(piece, at=tuple(window)) for tile, window in tiles for piece in self._seeds(tile)
            ]
            yield from sorted(seeds, key=lambda piece: piece.time)
        # Observations after the last written time stamp change no frame: not read at all.
        for ref in sorted((r for r in refs if r.time <= last), key=lambda r: r.time):
            try:
                data, valid = ref.reader.read(ref.uri, chunk.window)
            except ObservationError as error:
                self._rejected.inc()
                _LOG.warning("set aside %s in %s", error, chunk)
                rejected.append(Rejection.of(ref, f"{error.reason} (in {chunk})"))
                continue
            self._read.inc()
            if valid.any():  # a piece without a valid pixel changes nothing
                yield Piece(ref.time, ref.modality, data, None if valid.all() else valid)

    def process(self, item):
        index, grouped = item
        written = next(value for kind, value in grouped if kind == _TIMES)
        refs = [value for kind, value in grouped if kind == _REF]
        ensure_begun(self._folder)
        chunk = self._chunks[index]
        tiles = [(tile, window) for tile, window in chunk.tiles() if self._selector is None or self._selector(*tile)]
        window = chunk.window
        last = written[-1] if len(written) else -np.inf
        rejected: list[Rejection] = []
        moments = {tile: BandMoments.empty(self._bands.total) for tile, _ in tiles}
        with contextlib.ExitStack() as files:
            writers = [
                (
                    files.enter_context(
                        TileStackWriter(self._folder, tile, self._bands, self._gzip_level, self._record_observed)
                    ),
                    (slice(w.row_start, w.row_stop), slice(w.col_start, w.col_stop)),
                )
                for tile, w in tiles
            ]
            pieces = self._pieces(chunk, tiles, refs, last, rejected)
            for _, time, state, observed in fold_frames(pieces, written, (window.height, window.width), self._bands):
                self._frames.inc()
                for writer, (rows, cols) in writers:
                    frame = state[rows, cols]
                    writer.add(time, frame, observed[rows, cols])
                    moments[writer.tile] = moments[writer.tile].merge(BandMoments.of(interior(frame, self._deadzone)))
        for writer, _ in writers:
            self._written.count(writer)
            self._tiles.inc()
        for rejection in rejected:
            yield REJECTED, rejection
        for tile, _ in tiles:
            yield STATS, (tile, moments[tile])
            yield TILES, tile


class StackChunks(beam.PTransform):
    """PCollection[ObservationRef] -> {'stacks': StackFile, 'stats': (tile, BandMoments), 'rejected': Rejection}:
    Stage 2 streamed through time, without moving pixels through a shuffle.

    Only the observation references are grouped, per read chunk (tiles of
    about `chunk_size` px a side), each chunk with the written time stamps. The worker of a chunk reads its
    observations one at a time in time order, folds each into the chunk's
    forward-fill state and appends each tile's frame to the tile's file in
    `folder` as soon as its `delta_step` bin closes (at the time stamps
    `written`, a one-element PCollection). It holds the fill state (chunk area
    x bands), one observation and the tiles' open writers: nothing grows
    with the number of observations or frames. Tiles are those
    `selector(j, i)` picks (every one, also one without any valid pixel).
    `seeds(tile)`, if given, returns pieces that precede the observations (a
    scheduled run's carried frames). Each tile's band statistics come out
    as `stats` (`frame_moments`' rule).
    """

    def __init__(
        self,
        layout: TileLayout,
        chunk_size: int,
        bands: BandCounts,
        written,
        folder: OutputFolder,
        gzip_level: int | None,
        selector=None,
        seeds=None,
        record_observed: bool = False,
    ):
        super().__init__()
        self._layout = layout
        self._chunks = layout.chunks(chunk_size)
        self._bands = bands
        self._written = written
        self._folder = folder
        self._gzip_level = gzip_level
        self._selector = selector
        self._seeds = seeds
        self._record_observed = record_observed

    def expand(self, refs):
        selector = self._selector
        wanted = [
            n
            for n, chunk in enumerate(self._chunks)
            if selector is None or any(selector(*tile) for tile, _ in chunk.tiles())
        ]
        keyed = refs | "Key by chunk" >> beam.FlatMap(lambda ref: [(n, (_REF, ref)) for n in wanted])
        # Every chunk gets the time stamps, so each is stacked, also one without observations.
        times = self._written | "Times to every chunk" >> beam.FlatMap(
            lambda written: [(n, (_TIMES, written)) for n in wanted]
        )
        outputs = (
            (keyed, times)
            | "Merge" >> beam.Flatten()
            | "Group per chunk" >> beam.GroupByKey()
            | "Read, fold and write frames"
            >> beam.ParDo(
                _StackChunk(
                    self._chunks,
                    self._bands,
                    selector,
                    self._folder,
                    self._gzip_level,
                    self._record_observed,
                    (self._layout.deadzone_y, self._layout.deadzone_x),
                    self._seeds,
                ),
            )
        )
        outputs = split(outputs, (TILES, STATS, REJECTED))
        output_dir = self._folder.path
        metadata = {
            "tile_size_y": self._layout.tile_size_y,
            "tile_size_x": self._layout.tile_size_x,
            "bands_sar": self._bands.sar,
            "bands_opt": self._bands.opt,
        }
        files = outputs[TILES] | "Stack files" >> beam.Map(lambda tile: StackFile.of(output_dir, tile, metadata))
        return {"stacks": files, STATS: outputs[STATS], REJECTED: outputs[REJECTED]}


class _WriteStack(beam.DoFn):
    def __init__(self, folder: OutputFolder, gzip_level: int | None, record_observed: bool = False):
        self._folder = folder
        self._gzip_level = gzip_level
        self._record_observed = record_observed
        self._written = _WrittenCounters()

    def process(self, stack: TileStack):
        ensure_begun(self._folder)
        with TileStackWriter(self._folder, stack.tile, stack.bands, self._gzip_level, self._record_observed) as writer:
            for time, frame, observed in stack.iter_frames():
                writer.add(time, frame, observed)
        self._written.count(writer)
        yield stack.tile


def merge_band_moments(tile_moments: list[tuple[tuple[int, int], BandMoments]], bands: BandCounts) -> dict:
    """`band_stats` of metadata.json from each tile's moments (`band_stats_json`: merged in tile order, so
    the last digits do not depend on the order a runner combines in, as they did between the DirectRunner and
    the DaskRunner)."""
    return band_stats_json(dict(tile_moments), bands)


class MergeBandStatistics(beam.PTransform):
    """PCollection[(tile, BandMoments)] -> one-element PCollection[dict]: `band_stats` of metadata.json."""

    def __init__(self, bands: BandCounts):
        super().__init__()
        self._bands = bands

    def expand(self, moments):
        bands = self._bands
        return (
            {"moments": moments}
            | "All tiles' moments" >> Gather()
            | "Merge band statistics" >> beam.Map(lambda gathered: merge_band_moments(gathered["moments"], bands))
        )


class BandStatistics(beam.PTransform):
    """PCollection[TileStack | StackFile] -> singleton PCollection[dict]: `band_stats` of metadata.json,
    over the tiles' interiors (without the `deadzone` margins)."""

    def __init__(self, bands: BandCounts, deadzone: tuple[int, int]):
        super().__init__()
        self._bands = bands
        self._deadzone = deadzone

    def expand(self, stacks):
        deadzone = self._deadzone
        return (
            stacks
            | "Band statistics of a tile" >> beam.Map(lambda stack: (stack.tile, frame_moments(stack, deadzone)))
            | "Over tiles" >> MergeBandStatistics(self._bands)
        )


def stack_folder(output_dir: str, metadata: dict, gzip_level: int | None, flag: str = "--stack_output") -> OutputFolder:
    """A stack folder's identity: the Stage 2 metadata (grid, tiling, times, bands) and the GZIP level."""
    return OutputFolder(output_dir, "stacks", flag, dict(metadata, gzip_level=gzip_level))


class FinishStacks(beam.PTransform):
    """PCollection[tile (j, i)] (all written) -> PCollection[dict]: the stack folder's `metadata.json`,
    written last: after every tile file and every PCollection of `wait_for` (e.g. the writing of
    `rejected.json`), with the written time stamps and `band_stats` (one-element PCollections) and the
    tile files found in the folder (`files`)."""

    def __init__(self, folder: OutputFolder, metadata: dict, written, stats, wait_for=()):
        super().__init__()
        self.output_folder = folder
        self._metadata = metadata
        self._written = written
        self._stats = stats
        self._wait_for = tuple(wait_for)

    def expand(self, tiles):
        folder, metadata = self.output_folder, self._metadata

        def write_metadata(gathered: dict) -> dict:
            (times,), (band_stats,) = gathered["times"], gathered["stats"]
            files = found_files(folder, [tile_file_name(tile) for tile in sorted(gathered["tiles"])])
            done = dict(metadata, tiles_written=len(files), timestamps=[iso_time(t) for t in times])
            done[BAND_STATS_KEY] = band_stats
            done[FILES_KEY] = files
            folder.finish(done)
            return done

        summaries = {"tiles": tiles, "times": self._written, "stats": self._stats}
        summaries.update({f"other writes {n}": pcoll for n, pcoll in enumerate(self._wait_for)})
        return summaries | "Writes done" >> Gather() | "Write metadata.json" >> beam.Map(write_metadata)


class WriteStacks(beam.PTransform):
    """PCollection[TileStack] -> PCollection[dict]: `{j}_{i}.tfrecords` per tile, then `metadata.json`.

    For stacks held whole (a scheduled run's carried frames); Stage 2 itself writes its files as it
    streams (`Stack`). `metadata.json` is removed first and written only after every tile file and
    every PCollection of `wait_for` (e.g. the writing of `rejected.json`), so a folder with it is
    complete; it lists the tile files written (`files`); tile files are written atomically.
    `record_observed` adds each record's observed mask (`Observed`, see `rsdt_beam.records`).
    """

    def __init__(
        self,
        output_dir: str,
        metadata: dict,
        gzip_level: int | None,
        written,
        record_observed: bool = False,
        wait_for=(),
        flag: str = "--stack_output",
    ):
        super().__init__()
        self._metadata = dict(metadata, **({RECORD_OBSERVED_KEY: True} if record_observed else {}))
        self.output_folder = stack_folder(output_dir, self._metadata, gzip_level, flag)
        self._gzip_level = gzip_level
        self._written = written
        self._record_observed = record_observed
        self._wait_for = tuple(wait_for)

    def expand(self, stacks):
        folder = self.output_folder
        written = stacks | "Write tile files" >> beam.ParDo(
            _WriteStack(folder, self._gzip_level, self._record_observed)
        )
        stats = stacks | "Statistics" >> BandStatistics(band_counts(self._metadata), stack_deadzone(self._metadata))
        return written | "Finish" >> FinishStacks(folder, self._metadata, self._written, stats, self._wait_for)


class Stack(beam.PTransform):
    """PCollection[ObservationRef] -> StackOutputs: Stage 2 from observation references to tile stack files.

    Inspects the observations' headers, fixes the written time stamps and streams every tile (those
    `selector(j, i)` picks) through them into `{j}_{i}.tfrecords` in `folder` (StackChunks;
    `metadata.json` is FinishStacks'). Hooks for runs that continue earlier ones (scheduled runs):
    `stack_times(written)` gives the time stamps to stack at from the written ones (default: the written
    ones), and `seeds(tile)` the pieces that precede the observations (carried frames).
    """

    def __init__(
        self,
        plan,
        folder: OutputFolder,
        gzip_level: int | None,
        record_observed: bool = False,
        selector=None,
        stack_times=None,
        seeds=None,
    ):
        super().__init__()
        self._plan = plan
        self.output_folder = folder
        self._gzip_level = gzip_level
        self._record_observed = record_observed
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
        stacked = inspected["valid"] | "Stack tiles" >> StackChunks(
            plan.layout,
            plan.chunk_size,
            plan.bands,
            stacked_at,
            self.output_folder,
            self._gzip_level,
            self._selector,
            self._seeds,
            self._record_observed,
        )
        stats = stacked[STATS] | "Band statistics" >> MergeBandStatistics(plan.bands)
        return StackOutputs(stacked["stacks"], written, (inspected[REJECTED], stacked[REJECTED]), stats)


@dataclasses.dataclass(frozen=True)
class StackOutputs:
    """What `Stack` gives: the tile stack files (StackFile), the written time stamps (one element), the
    rejections and the band statistics (one dict, metadata.json's `band_stats`)."""

    stacks: beam.PCollection
    written: beam.PCollection
    rejected: tuple
    stats: beam.PCollection
