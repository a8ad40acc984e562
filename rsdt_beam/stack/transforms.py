"""Stage 2 as Beam transforms: observations -> per-tile stacks.

    ObservationRef --InspectObservations--> valid refs (+ Rejection)
      --WrittenTimes--> the written time stamps (a singleton side input)
      --StackChunks--> StackFile               fan-out per (read chunk, observation reference),
                                               GroupByKey per read chunk; per chunk the observations
                                               are read one by one in time order and folded into the
                                               fill state; each tile's frame is appended to its
                                               {j}_{i}.tfrecords as soon as its bin closes
      --FinishStacks--> metadata.json (rsdtlib's layout), written last

The transforms only wire the pure rules of `rsdt_beam.stack.rules` and the
readers of `rsdt_beam.acquire`; every decision lives there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import Iterable, Iterator

import apache_beam as beam
import numpy as np

from rsdt_beam import fs
from rsdt_beam.acquire.observation import ObservationError, ObservationRef, Rejection, iso_time
from rsdt_beam.grid import Grid, ReadChunk, TileLayout
from rsdt_beam.progress import Counter
from rsdt_beam.stack.files import METADATA_FILE, StackFile, TileStackWriter
from rsdt_beam.stack.rules import BandCounts, Piece, StackParams, TileStack, fold_frames, written_times

_LOG = logging.getLogger(__name__)
REJECTED = "rejected"


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
            yield beam.pvalue.TaggedOutput(REJECTED, Rejection.of(ref, error.reason))
            return
        yield ref


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
        outputs = refs | beam.ParDo(_Inspect(self._grid, self._bands)).with_outputs(REJECTED, main="valid")
        return {"valid": outputs.valid, REJECTED: outputs[REJECTED]}


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


def clear_output(pipeline, output_dir: str, label: str, also=None):
    """A singleton side input: `output_dir` exists and its `metadata.json` (written last) is gone.

    Every writer of the folder waits for it, so a folder with `metadata.json` is complete. `also(output_dir)`
    removes further leftovers of an earlier run.
    """
    def clear(path):
        fs.makedirs(output_dir)
        fs.delete_if_exists(path)
        if also is not None:
            also(output_dir)
        return path

    return (pipeline
            | f"{label}: completion marker" >> beam.Create([fs.join(output_dir, METADATA_FILE)])
            | f"{label}: remove old marker" >> beam.Map(clear))


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


class _StackChunk(beam.DoFn):
    """Streams one read chunk through time: reads its observations one by one in time order, folds
    each into the chunk's forward-fill state, and writes every tile's frame as soon as its bin closes."""

    def __init__(self, chunks: list[ReadChunk], bands: BandCounts, selector, output_dir: str,
                 gzip_level: int | None, seeds=None):
        self._chunks = chunks
        self._bands = bands
        self._selector = selector
        self._output_dir = output_dir
        self._gzip_level = gzip_level
        self._seeds = seeds
        self._read = Counter("chunks_read")
        self._rejected = Counter("chunk_reads_failed")
        self._frames = Counter("stack_frames")
        self._tiles = Counter("tiles_stacked")
        self._written = _WrittenCounters()

    def _pieces(self, chunk: ReadChunk, tiles, refs, last: float, rejected: list) -> Iterator[Piece]:
        """The chunk's pieces in time order, read one at a time: carried seeds, then observations."""
        if self._seeds is not None:
            seeds = [dataclasses.replace(piece, at=tuple(window)) for tile, window in tiles
                     for piece in self._seeds(tile)]
            yield from sorted(seeds, key=lambda piece: piece.time)
        # Observations after the last written time stamp change no frame: not read at all.
        for ref in sorted((r for r in refs if r is not None and r.time <= last), key=lambda r: r.time):
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

    def process(self, item, written, _cleared):
        index, refs = item
        chunk = self._chunks[index]
        tiles = [(tile, window) for tile, window in chunk.tiles()
                 if self._selector is None or self._selector(*tile)]
        window = chunk.window
        last = written[-1] if len(written) else -np.inf
        rejected: list[Rejection] = []
        with contextlib.ExitStack() as files:
            writers = [(files.enter_context(TileStackWriter(self._output_dir, tile, self._bands, self._gzip_level)),
                        (slice(w.row_start, w.row_stop), slice(w.col_start, w.col_stop))) for tile, w in tiles]
            pieces = self._pieces(chunk, tiles, refs, last, rejected)
            for _, time, state in fold_frames(pieces, written, (window.height, window.width), self._bands):
                self._frames.inc()
                for writer, (rows, cols) in writers:
                    writer.add(time, state[rows, cols])
        for writer, _ in writers:
            self._written.count(writer)
            self._tiles.inc()
        for rejection in rejected:
            yield beam.pvalue.TaggedOutput(REJECTED, rejection)
        for tile, _ in tiles:
            yield tile


class StackChunks(beam.PTransform):
    """PCollection[ObservationRef] -> {'stacks': StackFile, 'rejected': Rejection}: Stage 2 streamed
    through time, without moving pixels through a shuffle.

    Only the observation references are grouped, per read chunk (tiles of
    about `chunk_size` px a side). The worker of a chunk reads its
    observations one at a time in time order, folds each into the chunk's
    forward-fill state and appends each tile's frame to the tile's file in
    `output_dir` as soon as its `delta_step` bin closes (at the written time
    stamps `written`, a singleton PCollection from WrittenTimes). It holds the
    fill state (chunk area x bands), one observation and the tiles' open
    writers: nothing grows with the number of observations or frames. Tiles
    are those `selector(j, i)` picks (every one, also one without any valid
    pixel); `cleared` (a singleton, `clear_output`) is waited for before
    writing. `seeds(tile)`, if given, returns pieces that precede the
    observations (a scheduled run's carried frames, rsdt_beam.schedule).
    """

    def __init__(self, layout: TileLayout, chunk_size: int, bands: BandCounts, written, output_dir: str,
                 gzip_level: int | None, cleared, selector=None, seeds=None):
        super().__init__()
        self._layout = layout
        self._chunks = layout.chunks(chunk_size)
        self._bands = bands
        self._written = written
        self._output_dir = output_dir
        self._gzip_level = gzip_level
        self._cleared = cleared
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
                   | "Read, fold and write frames" >> beam.ParDo(
                       _StackChunk(self._chunks, self._bands, selector, self._output_dir, self._gzip_level,
                                   self._seeds),
                       beam.pvalue.AsSingleton(self._written),
                       beam.pvalue.AsSingleton(self._cleared)).with_outputs(REJECTED, main="tiles"))
        output_dir = self._output_dir
        metadata = {"tile_size_y": self._layout.tile_size_y, "tile_size_x": self._layout.tile_size_x,
                    "bands_sar": self._bands.sar, "bands_opt": self._bands.opt}
        files = outputs.tiles | "Stack files" >> beam.Map(lambda tile: StackFile.of(output_dir, tile, metadata))
        return {"stacks": files, REJECTED: outputs[REJECTED]}


class FinishStacks(beam.PTransform):
    """PCollection[StackFile | TileStack] (all written) -> PCollection[dict]: `metadata.json` last."""

    def __init__(self, output_dir: str, metadata: dict, written):
        super().__init__()
        self._output_dir = output_dir
        self._metadata = metadata
        self._written = written

    def expand(self, stacks):
        marker, metadata = fs.join(self._output_dir, METADATA_FILE), self._metadata

        def write_metadata(tiles: Iterable, times: np.ndarray) -> dict:
            done = dict(metadata, tiles_written=len(list(tiles)), timestamps=[iso_time(t) for t in times])
            fs.write_json(marker, done)
            return done

        return (stacks
                | beam.combiners.ToList()
                | "Write metadata.json" >> beam.Map(write_metadata, beam.pvalue.AsSingleton(self._written)))


class _WriteStack(beam.DoFn):
    def __init__(self, output_dir: str, gzip_level: int | None):
        self._output_dir = output_dir
        self._gzip_level = gzip_level
        self._written = _WrittenCounters()

    def process(self, stack: TileStack, _cleared):
        with TileStackWriter(self._output_dir, stack.tile, stack.bands, self._gzip_level) as writer:
            for time, frame in stack.iter_frames():
                writer.add(time, frame)
        self._written.count(writer)
        yield stack.tile


class WriteStacks(beam.PTransform):
    """PCollection[TileStack] -> PCollection[dict]: `{j}_{i}.tfrecords` per tile, then `metadata.json`.

    For stacks held whole (a scheduled run's carried frames); Stage 2 itself writes its files as it
    streams (StackChunks). `metadata.json` is removed first and written only after every tile file,
    so a folder with it is complete; tile files are written atomically.
    """

    def __init__(self, output_dir: str, metadata: dict, gzip_level: int | None, written):
        super().__init__()
        self._output_dir = output_dir
        self._metadata = metadata
        self._gzip_level = gzip_level
        self._written = written

    def expand(self, stacks):
        cleared = clear_output(stacks.pipeline, self._output_dir, "Stack folder")
        return (stacks
                | "Write tile files" >> beam.ParDo(_WriteStack(self._output_dir, self._gzip_level),
                                                   beam.pvalue.AsSingleton(cleared))
                | "Finish" >> FinishStacks(self._output_dir, self._metadata, self._written))
