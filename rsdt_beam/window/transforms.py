"""Stage 3 as Beam transforms: per-tile stacks -> deep-temporal window records.

    stack folder --ReadTileStacks--> StackFile        (or straight from Stage 2, fused)
      --WriteWindows--> {j}_{i}.tfrecords per tile, or shards; windows.csv; metadata.json

One work item per tile: its frames are read record by record and its windows
generated as soon as they are decided, as views into a bounded buffer of
frames (`rsdt_beam.window.rules.StreamedWindows`), so a worker never holds a
tile's series. Records are encoded without TensorFlow and compressed off the
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
    MODEL_CARD_KEYS,
    RECORD_OBSERVED_KEY,
    RSDTLIB_METADATA_KEYS,
    WINDOWS_CSV,
    tile_file_name,
)
from rsdt_beam.common.user_code import callable_name
from rsdt_beam.errors import UserError
from rsdt_beam.graph import split
from rsdt_beam.outputs import FILES_KEY, AllDone, OutputFolder, begin
from rsdt_beam.progress import Counter, set_total
from rsdt_beam.records import window_record
from rsdt_beam.specs import PER_TILE, TRAINING, WindowSpec
from rsdt_beam.stack.files import StackFile, band_counts, list_tiles, read_stack_metadata
from rsdt_beam.stack.rules import TileStack
from rsdt_beam.stack.transforms import BandStatistics
from rsdt_beam.tfrecord import DEFAULT_GZIP_LEVEL, TFRecordWriter
from rsdt_beam.window.listing import WINDOWS_CSV_HEADER, WindowRange, csv_text
from rsdt_beam.window.rules import Window, WindowParams, streamed_windows
from rsdt_beam.window.sampling import parse_sample, window_pairs
from rsdt_beam.window.selection import TileSelector

_ROWS_PARTS = ".windows_csv_parts"
RECORDS, ROWS = "records", "rows"  # the outputs of encoding a tile's windows (sharded layout)


class ReadTileStacks(beam.PTransform):
    """PBegin -> PCollection[StackFile]: the selected tiles of a Stage 2 folder (rsdt_beam's or rsdtlib's),
    one work item each; the frames are read where they are used."""

    def __init__(self, stack_dir: str, selector: TileSelector):
        super().__init__()
        self._stack_dir = stack_dir
        self._metadata = read_stack_metadata(stack_dir)
        self._all_tiles = list_tiles(stack_dir, self._metadata)
        self._tiles = [t for t in self._all_tiles if selector(*t)]

    @property
    def metadata(self) -> dict:
        return self._metadata

    @property
    def all_tiles(self) -> list[tuple[int, int]]:
        """Every tile of the folder; `tiles` are the selected ones."""
        return self._all_tiles

    @property
    def tiles(self) -> list[tuple[int, int]]:
        return self._tiles

    def expand(self, pbegin):
        stack_dir, metadata = self._stack_dir, self._metadata
        set_total("tiles_read", len(self._tiles))
        read = Counter("tiles_read")

        def handed_out(stack_file: StackFile) -> StackFile:
            read.inc()
            return stack_file

        return (
            pbegin
            | "Tiles" >> beam.Create([StackFile.of(stack_dir, tile, metadata) for tile in self._tiles])
            | "Spread tiles" >> beam.Reshuffle()
            | "Tile stack files" >> beam.Map(handed_out)
        )


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
    selection: Callable[[TileStack | StackFile, WindowParams], Iterable[Window]] = streamed_windows
    record_observed: bool = False

    @property
    def output_dir(self) -> str:
        return self.spec.output

    def records(self, stack: TileStack | StackFile) -> Iterable[tuple[Window, list]]:
        """Each kept window of the tile and its encoded record chunks, one at a time."""
        spec = self.spec
        gen_label = spec.gen_label if spec.mode == TRAINING else None
        for window, feature, label in window_pairs(
            self.selection(stack, spec.params), gen_label, spec.label_args, spec.window_filter, spec.sample
        ):
            current = window.current
            if self.record_observed and current.observed is None:
                raise UserError(
                    f"tile {stack.tile}: the stacks carry no observed mask; write them with "
                    f"--record_observed (Stage 2) to record it in the windows"
                )
            yield (
                window,
                window_record(
                    feature,
                    label,
                    stack.tile,
                    window.window_id,
                    current.timestamps,
                    current.observed if self.record_observed else None,
                ),
            )

    def metadata(self, stack_metadata: dict) -> dict:
        spec, params = self.spec, self.spec.params
        out = {key: stack_metadata[key] for key in RSDTLIB_METADATA_KEYS if key in stack_metadata}
        out.update(
            mode=spec.mode,
            layout=spec.layout,
            Delta=params.delta_size,
            window_stride=params.window_stride,
            omega=params.omega,
            Omega=params.Omega,
            triple=params.triple,
            gzip_level=self.gzip_level,
        )
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

    def folder(self, stack_metadata: dict) -> OutputFolder:
        """The window folder's identity: the window metadata, the stacks' times and the user functions."""
        parameters = dict(
            self.metadata(stack_metadata),
            records_per_shard=self.spec.records_per_shard,
            bytes_per_shard=self.spec.bytes_per_shard,
            **dict(self.spec.identity),
        )
        parameters.pop(BAND_STATS_KEY, None)  # what the data hold, not how the folder was made
        for key in ("starttime", "endtime", "delta_step", "modalities"):
            if key in stack_metadata:
                parameters["stack_" + key] = stack_metadata[key]
        return OutputFolder(self.output_dir, "windows", "--window_output", parameters)


def _csv_row(window: Window) -> tuple:
    return WindowRange.of_window(window).csv_row()


def _rows_part(run_id: str, tile: tuple[int, int]) -> str:
    """A tile's windows.csv rows, kept until `windows.csv` is assembled (so no worker holds all rows).

    Parts live in a folder of their run: starting a run removes other runs' parts only, so a runner that
    starts the folder again within the run (the DaskRunner, tests/test_dask.py) loses none of them."""
    return f"{_ROWS_PARTS}/{run_id}/{tile[0]}_{tile[1]}.csv"


def _row_part(run_id: str, row: int) -> str:
    return f"{_ROWS_PARTS}/{run_id}/row_{row}.csv"


def _join_row_parts(folder: OutputFolder, row: int, tile_counts) -> tuple[int, int, int]:
    """Joins tile row `row`'s parts in tile order; returns (row, windows, tiles)."""
    tile_counts = sorted(tile_counts)
    parts = [fs.read_bytes(folder.file(_rows_part(folder.run_id, tile))) for tile, _ in tile_counts]
    folder.write_bytes(_row_part(folder.run_id, row), b"".join(parts))
    return row, sum(n for _, n in tile_counts), len(tile_counts)


def _delete_parts(parts_dir: str, keep_run: str | None = None) -> None:
    """Removes the rows parts of earlier (failed) runs and, unless it is `keep_run`, of this one."""
    fs.delete_files(
        parts_dir,
        [name for name in fs.list_files(parts_dir) if keep_run is None or not name.startswith(f"{keep_run}/")],
    )
    fs.remove_empty_folders(parts_dir)
    if keep_run is None:
        fs.delete_if_exists(parts_dir)  # a local folder; object stores have none


def _write_rows_part(folder: OutputFolder, tile: tuple[int, int], rows: list) -> tuple[tuple[int, int], int]:
    folder.write_bytes(_rows_part(folder.run_id, tile), csv_text(rows).encode())
    return tile, len(rows)


class _WriteTileWindows(beam.DoFn):
    """Per-tile layout: one `{j}_{i}.tfrecords` per tile, written atomically; yields (tile, windows)."""

    def __init__(self, output: WindowOutput, folder: OutputFolder):
        self._output = output
        self._folder = folder
        self._windows = Counter("windows_written")
        self._bytes = Counter("window_raw_bytes")
        self._file_bytes = Counter("window_file_bytes")
        self._tiles = Counter("tiles_windowed")

    def process(self, stack: TileStack | StackFile, _cleared):
        rows = []
        with fs.atomic_write(self._folder.file(tile_file_name(stack.tile)), self._folder.run_id) as raw:
            writer = TFRecordWriter(raw, self._output.gzip_level)
            try:
                for window, record in self._output.records(stack):
                    writer.write(record)
                    rows.append(_csv_row(window))
                    self._windows.inc()
            except BaseException:
                writer.abort()
                raise
            writer.close()
        self._bytes.inc(writer.raw_bytes)
        self._file_bytes.inc(writer.file_bytes)
        self._tiles.inc()
        yield _write_rows_part(self._folder, stack.tile, rows)


class _EncodeWindows(beam.DoFn):
    """Sharded layout: yields (RECORDS, each window record's bytes) and (ROWS, (tile, windows))."""

    def __init__(self, output: WindowOutput, folder: OutputFolder):
        self._output = output
        self._folder = folder
        self._windows = Counter("windows_written")
        self._tiles = Counter("tiles_windowed")

    def process(self, stack: TileStack | StackFile, _cleared):
        rows = []
        for window, record in self._output.records(stack):
            self._windows.inc()
            rows.append(_csv_row(window))
            yield RECORDS, b"".join(record)
        self._tiles.inc()
        yield ROWS, _write_rows_part(self._folder, stack.tile, rows)


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

    def __init__(
        self, prefix: str, gzip_level: int | None, records_per_shard: int | None, bytes_per_shard: int | None = None
    ):
        # Bytes count as compressed bytes reach the file: a shard may exceed the limit by the
        # blocks still being compressed (a few MB).
        super().__init__(
            prefix,
            coder=BytesCoder(),
            file_name_suffix=".tfrecords",
            mime_type="application/octet-stream",
            compression_type=CompressionTypes.UNCOMPRESSED,
            max_records_per_shard=records_per_shard,
            max_bytes_per_shard=bytes_per_shard,
        )
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

    `metadata.json` is removed first and written last, after every file and
    every PCollection of `wait_for` (e.g. the writing of `rejected.json`), so
    an output folder with it is complete; it lists the record files (`files`).
    File names are deterministic, so a retry or a re-run overwrites rather
    than duplicates. Each element is one work item (a tile). `stats` (a
    singleton `band_stats`, e.g. Stage 2's) saves computing them again;
    `temporary_stacks`, if given, is a folder of Stage 2 files made only for
    these windows: removed once every window is written.
    """

    def __init__(
        self, output: WindowOutput, stack_metadata: dict, wait_for=(), stats=None, temporary_stacks: str | None = None
    ):
        super().__init__()
        self._output = output
        self._stack_metadata = stack_metadata
        self._wait_for = tuple(wait_for)
        self._stats = stats
        self._temporary_stacks = temporary_stacks
        self.output_folder = output.folder(stack_metadata)

    def expand(self, stacks):
        output, folder = self._output, self.output_folder
        parts_dir = folder.file(_ROWS_PARTS)

        def clear(folder_):
            begin(folder_)
            _delete_parts(parts_dir, keep_run=folder_.run_id)

        cleared = stacks.pipeline | "Folder" >> beam.Create([folder]) | "Begin folder" >> beam.Map(clear)
        if output.spec.layout == PER_TILE:
            rows = stacks | "Write tile windows" >> beam.ParDo(
                _WriteTileWindows(output, folder), beam.pvalue.AsSingleton(cleared)
            )
            files = rows | "File names" >> beam.Map(lambda tile_count: tile_file_name(tile_count[0]))
        else:
            encoded = split(
                stacks
                | "Encode windows" >> beam.ParDo(_EncodeWindows(output, folder), beam.pvalue.AsSingleton(cleared)),
                (RECORDS, ROWS),
            )
            rows = encoded[ROWS]
            files = (
                encoded[RECORDS]
                | "Write shards"
                >> beam.io.Write(
                    TFRecordShardSink(
                        folder.file("windows"),
                        output.gzip_level,
                        output.spec.records_per_shard,
                        output.spec.bytes_per_shard,
                    )
                )
                | "Shard names" >> beam.Map(fs.basename)
            )
        metadata = output.metadata(self._stack_metadata)
        if BAND_STATS_KEY in metadata:  # carried over from the stack folder's metadata.json
            stats = stacks.pipeline | "Stack band statistics" >> beam.Create([metadata[BAND_STATS_KEY]])
        elif self._stats is not None:  # fused: Stage 2's
            stats = self._stats
        else:  # rsdtlib's stacks: computed over the same frames
            stats = stacks | "Statistics" >> BandStatistics(band_counts(self._stack_metadata))
        others = (self._wait_for or (cleared,)) | "Other writes done" >> AllDone()
        temporary_stacks = self._temporary_stacks

        def finish(row_counts: list, names: list, band_stats: dict, _others) -> str:
            with fs.atomic_write(folder.file(WINDOWS_CSV), folder.run_id) as f:  # rows in tile order
                f.write(csv_text([WINDOWS_CSV_HEADER]).encode())
                for row, _, _ in sorted(row_counts):
                    f.write(fs.read_bytes(folder.file(_row_part(folder.run_id, row))))
            _delete_parts(parts_dir)
            if temporary_stacks:
                fs.delete_tree(temporary_stacks)
            return folder.finish(
                dict(
                    metadata,
                    windows_written=sum(n for _, n, _ in row_counts),
                    tiles_written=sum(t for _, _, t in row_counts),
                    **{BAND_STATS_KEY: band_stats, FILES_KEY: sorted(names)},
                )
            )

        # windows.csv in two levels: each tile row's parts are joined in parallel, then the rows in order.
        return (
            rows
            | "Key by tile row" >> beam.Map(lambda tile_count: (tile_count[0][0], tile_count))
            | "Group per tile row" >> beam.GroupByKey()
            | "Join a row's parts" >> beam.MapTuple(lambda row, counts: _join_row_parts(folder, row, counts))
            | "Collect window counts" >> beam.combiners.ToList()
            | "Write windows.csv and metadata.json"
            >> beam.Map(
                finish, beam.pvalue.AsList(files), beam.pvalue.AsSingleton(stats), beam.pvalue.AsSingleton(others)
            )
        )
