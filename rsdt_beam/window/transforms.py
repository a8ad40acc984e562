"""Stage 3 as Beam transforms: per-tile stacks -> deep-temporal window records.

    stack folder --ReadTileStacks--> TileStack        (or straight from Stage 2, fused)
      --WriteWindows--> {j}_{i}.tfrecords per tile, or shards; windows.csv; metadata.json

Windows are generated one at a time as views into the tile's frames
(`rsdt_beam.window.rules`), encoded without TensorFlow and compressed off the
main thread (`rsdt_beam.tfrecord`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

import apache_beam as beam
from apache_beam.coders import BytesCoder
from apache_beam.io.filebasedsink import FileBasedSink
from apache_beam.io.filesystem import CompressionTypes

from rsdt_beam import fs
from rsdt_beam.common.names import (
    BAND_STATS_KEY,
    METADATA_FILE,
    MODEL_CARD_KEYS,
    RECORD_OBSERVED_KEY,
    RSDTLIB_METADATA_KEYS,
    WINDOWS_CSV,
    tile_file_name,
)
from rsdt_beam.common.user_code import callable_name
from rsdt_beam.errors import UserError
from rsdt_beam.graph import split
from rsdt_beam.progress import Counter, set_total
from rsdt_beam.records import window_record
from rsdt_beam.specs import PER_TILE, TRAINING, WindowSpec
from rsdt_beam.stack.files import band_counts, list_tiles, read_stack_metadata, read_tile_stack
from rsdt_beam.stack.rules import TileStack
from rsdt_beam.stack.transforms import BandStatistics
from rsdt_beam.tfrecord import DEFAULT_GZIP_LEVEL, TFRecordWriter
from rsdt_beam.window.listing import WINDOWS_CSV_HEADER, WindowRange, csv_text
from rsdt_beam.window.rules import Window, WindowParams, windows
from rsdt_beam.window.sampling import parse_sample, window_pairs
from rsdt_beam.window.selection import TileSelector

_ROWS_PARTS = ".windows_csv_parts"
RECORDS, ROWS = "records", "rows"  # the outputs of encoding a tile's windows (sharded layout)


class ReadTileStacks(beam.PTransform):
    """PBegin -> PCollection[TileStack]: the selected tiles of a Stage 2 folder (rsdt_beam's or rsdtlib's)."""

    def __init__(self, stack_dir: str, selector: TileSelector):
        super().__init__()
        self._stack_dir = stack_dir
        self._metadata = read_stack_metadata(stack_dir)
        self._tiles = [t for t in list_tiles(stack_dir) if selector(*t)]

    @property
    def metadata(self) -> dict:
        return self._metadata

    @property
    def tiles(self) -> list[tuple[int, int]]:
        return self._tiles

    def expand(self, pbegin):
        stack_dir, metadata = self._stack_dir, self._metadata
        set_total("tiles_read", len(self._tiles))
        read = Counter("tiles_read")

        def read_tile(tile):
            read.inc()
            return read_tile_stack(stack_dir, tile, metadata)

        return (pbegin
                | "Tiles" >> beam.Create(self._tiles)
                | "Spread tiles" >> beam.Reshuffle()
                | "Read tile stack" >> beam.Map(read_tile))


@dataclasses.dataclass(frozen=True)
class WindowOutput:
    """How Stage 3 turns a tile stack into records: the window spec, the GZIP level and the selection.

    `selection(stack, params)` gives the windows to write: every kept one by default (rsdtlib's
    rules); scheduled runs pass one that gives only the windows that became complete in the run.
    Training records are `gen_label(window, label_args) -> (feature, label)` (rsdtlib's signature;
    `window` unpacks as `(cur,)` or `(prev, cur, next)`, each part as `(timestamps, asc, dsc, opt)`);
    inference records hold the whole current window `[n, ty, tx, bands]`.
    `spec.sample` keeps every k-th or a seeded fraction of the rest (`rsdt_beam.window.sampling`);
    `record_observed` adds the current part's observed mask `[n, ty, tx, 3]` (`Observed`).
    """

    spec: WindowSpec
    gzip_level: int = DEFAULT_GZIP_LEVEL
    selection: Callable[[TileStack, WindowParams], Iterable[Window]] = windows
    record_observed: bool = False

    @property
    def output_dir(self) -> str:
        return self.spec.output

    def records(self, stack: TileStack) -> Iterable[tuple[Window, list]]:
        """Each kept window of the tile and its encoded record chunks, one at a time."""
        spec = self.spec
        gen_label = spec.gen_label if spec.mode == TRAINING else None
        if self.record_observed and stack.observed is None:
            raise UserError(f"tile {stack.tile}: the stacks carry no observed mask; write them with "
                            f"--record_observed (Stage 2) to record it in the windows")
        for window, feature, label in window_pairs(self.selection(stack, spec.params), gen_label, spec.label_args,
                                                   spec.window_filter, spec.sample):
            current = window.current
            yield window, window_record(feature, label, stack.tile, window.window_id, current.timestamps,
                                        current.observed if self.record_observed else None)

    def metadata(self, stack_metadata: dict) -> dict:
        spec, params = self.spec, self.spec.params
        out = {key: stack_metadata[key] for key in RSDTLIB_METADATA_KEYS if key in stack_metadata}
        out.update(mode=spec.mode, layout=spec.layout, Delta=params.delta_size, window_stride=params.window_stride,
                   omega=params.omega, Omega=params.Omega, triple=params.triple, gzip_level=self.gzip_level)
        for key in ("grid", "num_tiles_y", "num_tiles_x", *MODEL_CARD_KEYS):
            if key in stack_metadata:
                out[key] = stack_metadata[key]
        if spec.mode == TRAINING:
            out["label_fn"] = spec.label_fn or callable_name(spec.gen_label)
        sample = parse_sample(spec.sample)
        if not sample.keeps_everything:
            out["sample"] = sample.spec
        if self.record_observed:
            out[RECORD_OBSERVED_KEY] = True
        return out


def _csv_row(stack: TileStack, window: Window) -> tuple:
    return WindowRange.of(stack.tile, window.span, stack.times).csv_row()


def _rows_part(output_dir: str, tile: tuple[int, int]) -> str:
    """A tile's windows.csv rows, kept until `windows.csv` is assembled (so no worker holds all rows)."""
    return fs.join(output_dir, _ROWS_PARTS, f"{tile[0]}_{tile[1]}.csv")


def _delete_parts(parts_dir: str) -> None:
    """Removes the rows parts of this or an earlier (failed) run."""
    leftovers = fs.glob(fs.join(parts_dir, "*.csv"))
    if leftovers:
        beam.io.filesystems.FileSystems.delete(leftovers)
    fs.delete_if_exists(parts_dir)  # a local folder; object stores have none


def _write_rows_part(output_dir: str, tile: tuple[int, int], rows: list) -> tuple[tuple[int, int], int]:
    fs.write_bytes(_rows_part(output_dir, tile), csv_text(rows).encode())
    return tile, len(rows)


class _WriteTileWindows(beam.DoFn):
    """Per-tile layout: one `{j}_{i}.tfrecords` per tile, written atomically; yields (tile, windows)."""

    def __init__(self, output: WindowOutput):
        self._output = output
        self._windows = Counter("windows_written")
        self._bytes = Counter("window_raw_bytes")
        self._file_bytes = Counter("window_file_bytes")
        self._tiles = Counter("tiles_windowed")

    def process(self, stack: TileStack, _cleared):
        rows = []
        with fs.atomic_write(fs.join(self._output.output_dir, tile_file_name(stack.tile))) as raw:
            writer = TFRecordWriter(raw, self._output.gzip_level)
            try:
                for window, record in self._output.records(stack):
                    writer.write(record)
                    rows.append(_csv_row(stack, window))
                    self._windows.inc()
            except BaseException:
                writer.abort()
                raise
            writer.close()
        self._bytes.inc(writer.raw_bytes)
        self._file_bytes.inc(writer.file_bytes)
        self._tiles.inc()
        yield _write_rows_part(self._output.output_dir, stack.tile, rows)


class _EncodeWindows(beam.DoFn):
    """Sharded layout: yields (RECORDS, each window record's bytes) and (ROWS, (tile, windows))."""

    def __init__(self, output: WindowOutput):
        self._output = output
        self._windows = Counter("windows_written")
        self._tiles = Counter("tiles_windowed")

    def process(self, stack: TileStack, _cleared):
        rows = []
        for window, record in self._output.records(stack):
            self._windows.inc()
            rows.append(_csv_row(stack, window))
            yield RECORDS, b"".join(record)
        self._tiles.inc()
        yield ROWS, _write_rows_part(self._output.output_dir, stack.tile, rows)


class _ShardHandle:
    def __init__(self, raw, writer: TFRecordWriter):
        self.raw = raw
        self.writer = writer


class TFRecordShardSink(FileBasedSink):
    """Sharded TFRecord files `windows-SSSSS-of-NNNNN.tfrecords` with parallel GZIP at a chosen level.

    Beam's own TFRecord sink compresses at zlib's default level 6 on the
    main thread; this one uses `rsdt_beam.tfrecord`. Shards of an earlier
    run with another shard count are removed before the new ones appear.
    """

    def __init__(self, prefix: str, gzip_level: int | None, records_per_shard: int | None,
                 bytes_per_shard: int | None = None):
        # Bytes count as compressed bytes reach the file: a shard may exceed the limit by the
        # blocks still being compressed (a few MB).
        super().__init__(prefix, coder=BytesCoder(), file_name_suffix=".tfrecords",
                         mime_type="application/octet-stream",
                         compression_type=CompressionTypes.UNCOMPRESSED,
                         max_records_per_shard=records_per_shard, max_bytes_per_shard=bytes_per_shard)
        self._gzip_level = gzip_level

    def open(self, temp_path):
        raw = super().open(temp_path)
        return _ShardHandle(raw, TFRecordWriter(raw, self._gzip_level))

    def write_encoded_record(self, handle: _ShardHandle, encoded: bytes) -> None:
        handle.writer.write([encoded])

    def close(self, handle: _ShardHandle):
        handle.writer.close()
        return super().close(handle.raw)

    def pre_finalize(self, init_result, writer_results):
        old = fs.glob(self.file_path_prefix.get() + "-*-of-*" + self.file_name_suffix.get())
        if old:
            beam.io.filesystems.FileSystems.delete(old)


class WriteWindows(beam.PTransform):
    """PCollection[TileStack] -> PCollection[str]: window records, `windows.csv`, then `metadata.json`.

    `metadata.json` is removed first and written last, so an output folder
    with it is complete; file names are deterministic, so a retry or a
    re-run overwrites rather than duplicates.
    """

    def __init__(self, output: WindowOutput, stack_metadata: dict):
        super().__init__()
        self._output = output
        self._stack_metadata = stack_metadata

    def expand(self, stacks):
        output = self._output
        marker = fs.join(output.output_dir, METADATA_FILE)
        parts_dir = fs.join(output.output_dir, _ROWS_PARTS)
        cleared = (stacks.pipeline
                   | "Completion marker" >> beam.Create([marker])
                   | "Remove old marker" >> beam.Map(lambda path: (
                       fs.makedirs(output.output_dir), fs.delete_if_exists(path), _delete_parts(parts_dir))))
        if output.spec.layout == PER_TILE:
            rows = stacks | "Write tile windows" >> beam.ParDo(_WriteTileWindows(output),
                                                               beam.pvalue.AsSingleton(cleared))
            done = rows
        else:
            encoded = split(stacks | "Encode windows" >> beam.ParDo(_EncodeWindows(output),
                                                                     beam.pvalue.AsSingleton(cleared)),
                            (RECORDS, ROWS))
            rows = encoded[ROWS]
            done = encoded[RECORDS] | "Write shards" >> beam.io.Write(TFRecordShardSink(
                fs.join(output.output_dir, "windows"), output.gzip_level, output.spec.records_per_shard,
                output.spec.bytes_per_shard))
        metadata = output.metadata(self._stack_metadata)
        if BAND_STATS_KEY in metadata:  # carried over from the stack folder's metadata.json
            stats = stacks.pipeline | "Stack band statistics" >> beam.Create([metadata[BAND_STATS_KEY]])
        else:  # fused, or rsdtlib's stacks: computed over the same frames
            stats = stacks | "Statistics" >> BandStatistics(band_counts(self._stack_metadata))

        def finish(tile_counts: list, _done: list, band_stats: dict) -> str:
            parts = [_rows_part(output.output_dir, tile) for tile, _ in sorted(tile_counts)]
            with fs.atomic_write(fs.join(output.output_dir, WINDOWS_CSV)) as f:  # rows in tile order
                f.write(csv_text([WINDOWS_CSV_HEADER]).encode())
                for part in parts:
                    f.write(fs.read_bytes(part))
            _delete_parts(parts_dir)
            fs.write_json(marker, dict(metadata, windows_written=sum(n for _, n in tile_counts),
                                       tiles_written=len(tile_counts), **{BAND_STATS_KEY: band_stats}))
            return marker

        return (rows
                | "Collect window counts" >> beam.combiners.ToList()
                | "Write windows.csv and metadata.json" >> beam.Map(
                    finish, beam.pvalue.AsList(done | "Wait for writes" >> beam.combiners.Count.Globally()),
                    beam.pvalue.AsSingleton(stats)))
