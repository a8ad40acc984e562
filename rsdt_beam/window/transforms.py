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

import contextlib
import dataclasses
import itertools
from collections.abc import Callable, Iterable, Iterator

import apache_beam as beam

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
from rsdt_beam.graph import Gather, Spread, split
from rsdt_beam.outputs import FILES_KEY, OutputFolder, ensure_begun, found_files
from rsdt_beam.progress import Counter, set_total
from rsdt_beam.records import window_record
from rsdt_beam.specs import PER_TILE, TRAINING, WindowSpec
from rsdt_beam.stack.files import StackFile, band_counts, list_tiles, read_stack_metadata
from rsdt_beam.stack.rules import TileStack
from rsdt_beam.stack.stats import select_band_stats, stack_deadzone
from rsdt_beam.stack.transforms import BandStatistics
from rsdt_beam.tfrecord import DEFAULT_GZIP_LEVEL, TFRecordWriter, read_records
from rsdt_beam.window.listing import WINDOWS_CSV_HEADER, WindowRange, csv_text
from rsdt_beam.window.rules import Window, WindowParams, streamed_windows
from rsdt_beam.window.sampling import LabelShape, check_label_shapes, parse_sample, window_pairs
from rsdt_beam.window.selection import TileSelector
from rsdt_beam.window.shards import Shard, StagedRecords, is_shard, plan_shards

_ROWS_PARTS = ".windows_csv_parts"
_SHARD_PARTS = ".shard_parts"  # the sharded layout's staged tile records
ROWS, STAGED, LABELS = "rows", "staged", "labels"  # kinds of the tile writers' outputs (rsdt_beam.graph.split)
LABEL_SHAPE_KEY = "label_shape"  # metadata.json of training windows: every window's label shape


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
            | "Spread tiles" >> Spread(lambda stack_file: stack_file.tile)
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

    def records(self, stack: TileStack | StackFile, labels: LabelShape | None = None) -> Iterable[tuple[Window, list]]:
        """Each kept window of the tile and its encoded record chunks, one at a time; `labels` (training)
        ends with the tile's first window label."""
        spec = self.spec
        gen_label = spec.gen_label if spec.mode == TRAINING else None
        for window, feature, label in window_pairs(
            self.selection(stack, spec.params), gen_label, spec.label_args, spec.window_filter, spec.sample, labels
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

    Parts live in a folder of their run, so parts a killed run left are never taken for this run's; the
    last step removes them all."""
    return f"{_ROWS_PARTS}/{run_id}/{tile[0]}_{tile[1]}.csv"


def _row_part(run_id: str, row: int) -> str:
    return f"{_ROWS_PARTS}/{run_id}/row_{row}.csv"


def _join_row_parts(folder: OutputFolder, row: int, tile_counts) -> tuple[int, int, int]:
    """Joins tile row `row`'s parts in tile order; returns (row, windows, tiles)."""
    tile_counts = sorted(tile_counts)
    parts = [fs.read_bytes(folder.file(_rows_part(folder.run_id, tile))) for tile, _ in tile_counts]
    folder.write_bytes(_row_part(folder.run_id, row), b"".join(parts))
    return row, sum(n for _, n in tile_counts), len(tile_counts)


def _delete_parts(folder: OutputFolder) -> None:
    """Removes the staged parts (windows.csv rows, sharded records) of this run and of killed ones."""
    for parts in (_ROWS_PARTS, _SHARD_PARTS):
        fs.delete_tree(folder.file(parts))


def _write_rows_part(folder: OutputFolder, tile: tuple[int, int], rows: list) -> tuple[tuple[int, int], int]:
    folder.write_bytes(_rows_part(folder.run_id, tile), csv_text(rows).encode())
    return tile, len(rows)


@contextlib.contextmanager
def _records_file(folder: OutputFolder, name: str, gzip_level: int | None) -> Iterator[TFRecordWriter]:
    """A TFRecord writer into `name` (relative to the folder), published atomically when the block ends;
    nothing is published when it fails."""
    with fs.atomic_write(folder.file(name), folder.run_id) as raw:
        writer = TFRecordWriter(raw, gzip_level)
        try:
            yield writer
        except BaseException:
            writer.abort()
            raise
        writer.close()


class _WriteTileWindows(beam.DoFn):
    """Per-tile layout: one `{j}_{i}.tfrecords` per tile, written atomically; yields ("rows", (tile, windows))
    and, for training windows, ("labels", the tile's first `WindowLabel`)."""

    def __init__(self, output: WindowOutput, folder: OutputFolder):
        self._output = output
        self._folder = folder
        self._windows = Counter("windows_written")
        self._bytes = Counter("window_raw_bytes")
        self._file_bytes = Counter("window_file_bytes")
        self._tiles = Counter("tiles_windowed")

    def process(self, stack: TileStack | StackFile):
        ensure_begun(self._folder)
        rows, labels = [], LabelShape()
        with _records_file(self._folder, tile_file_name(stack.tile), self._output.gzip_level) as writer:
            for window, record in self._output.records(stack, labels):
                writer.write(record)
                rows.append(_csv_row(window))
                self._windows.inc()
        self._bytes.inc(writer.raw_bytes)
        self._file_bytes.inc(writer.file_bytes)
        self._tiles.inc()
        yield ROWS, _write_rows_part(self._folder, stack.tile, rows)
        if labels.first is not None:
            yield LABELS, labels.first


class _StageTileRecords(beam.DoFn):
    """Sharded layout, first step: a tile's window records, uncompressed, into a staged part of the run
    (`.shard_parts/<run>/{j}_{i}.tfrecords`) and its windows.csv rows part; yields ("staged", `StagedRecords`)
    and, for training windows, ("labels", the tile's first `WindowLabel`)."""

    def __init__(self, output: WindowOutput, folder: OutputFolder):
        self._output = output
        self._folder = folder
        self._windows = Counter("windows_written")
        self._tiles = Counter("tiles_windowed")

    def process(self, stack: TileStack | StackFile):
        folder = self._folder
        ensure_begun(folder)
        rows, sizes, labels = [], [], LabelShape()
        with _records_file(folder, _shard_part(folder.run_id, stack.tile), None) as writer:
            for window, record in self._output.records(stack, labels):
                before = writer.raw_bytes
                writer.write(record)
                sizes.append(writer.raw_bytes - before)
                rows.append(_csv_row(window))
                self._windows.inc()
        self._tiles.inc()
        _write_rows_part(folder, stack.tile, rows)
        yield STAGED, StagedRecords(stack.tile, tuple(sizes))
        if labels.first is not None:
            yield LABELS, labels.first


def _shard_part(run_id: str, tile: tuple[int, int]) -> str:
    return f"{_SHARD_PARTS}/{run_id}/{tile[0]}_{tile[1]}.tfrecords"


class _WriteShard(beam.DoFn):
    """Sharded layout, second step: one shard, GZIP-compressed, from its pieces of the staged tile records,
    written atomically; yields its file name."""

    def __init__(self, output: WindowOutput, folder: OutputFolder):
        self._output = output
        self._folder = folder
        self._bytes = Counter("window_raw_bytes")
        self._file_bytes = Counter("window_file_bytes")
        self._shards = Counter("shards_written")

    def process(self, shard: Shard):
        folder = self._folder
        with _records_file(folder, shard.name, self._output.gzip_level) as writer:
            for piece in shard.pieces:
                part = folder.file(_shard_part(folder.run_id, piece.tile))
                with fs.open_read(part) as staged:
                    records = read_records(staged, gzip=False, name=part)
                    for record in itertools.islice(records, piece.start, piece.stop):
                        writer.write([record])
        self._bytes.inc(writer.raw_bytes)
        self._file_bytes.inc(writer.file_bytes)
        self._shards.inc()
        yield shard.name


class WriteWindows(beam.PTransform):
    """PCollection[TileStack] -> PCollection[str]: window records, `windows.csv`, then `metadata.json`.

    `metadata.json` is removed first and written last, after every file and
    every PCollection of `wait_for` (e.g. the writing of `rejected.json`), so
    an output folder with it is complete; it lists the record files found
    (`files`) and counts the windows the writers wrote. File names are
    deterministic, so a retry or a re-run overwrites rather than duplicates.
    Each element is one work item (a tile). `stats` (a one-element
    `band_stats`, e.g. Stage 2's) saves computing them again;
    `temporary_stacks`, if given, is a folder of Stage 2 files made only for
    these windows: removed once every window is written.

    The sharded layout writes in two steps, so that its shards are the same
    on every runner and in every run: each tile's records are staged
    uncompressed, then the shards are planned from the record sizes in tile
    and window order (`plan_shards`) and each is written by one work item.
    No step reads a side input (`rsdt_beam.graph`).
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
        if output.spec.layout == PER_TILE:
            written = split(
                stacks | "Write tile windows" >> beam.ParDo(_WriteTileWindows(output, folder)), (ROWS, LABELS)
            )
            rows, labels = written[ROWS], written[LABELS]
            files = rows | "File names" >> beam.Map(lambda tile_count: tile_file_name(tile_count[0]))
        else:
            written = split(
                stacks | "Stage tile records" >> beam.ParDo(_StageTileRecords(output, folder)), (STAGED, LABELS)
            )
            staged, labels = written[STAGED], written[LABELS]
            rows = staged | "Windows per tile" >> beam.Map(lambda tile: (tile.tile, len(tile.sizes)))
            spec = output.spec
            files = (
                {"tiles": staged}
                | "Records staged" >> Gather()
                | "Plan shards"
                >> beam.FlatMap(
                    lambda gathered: plan_shards(gathered["tiles"], spec.records_per_shard, spec.bytes_per_shard)
                )
                | "One work item per shard" >> Spread(lambda shard: shard.index)
                | "Write shards" >> beam.ParDo(_WriteShard(output, folder))
            )
        metadata = output.metadata(self._stack_metadata)
        bands, selects = band_counts(self._stack_metadata), output.spec.selects
        if BAND_STATS_KEY in metadata:  # carried over from the stack folder's metadata.json, of the tiles selected
            stats = stacks.pipeline | "Stack band statistics" >> beam.Create(
                [select_band_stats(metadata[BAND_STATS_KEY], selects, bands)]
            )
        elif self._stats is not None:  # fused: Stage 2's, of the tiles selected
            stats = self._stats | "Of the tiles selected" >> beam.Map(select_band_stats, selects, bands)
        else:  # rsdtlib's stacks: computed over the same frames
            stats = stacks | "Statistics" >> BandStatistics(bands, stack_deadzone(self._stack_metadata))
        temporary_stacks = self._temporary_stacks
        sharded = output.spec.layout != PER_TILE

        def finish(gathered: dict) -> str:
            row_counts, (band_stats,) = gathered["rows"], gathered["stats"]
            try:  # before anything is published: a folder without metadata.json is not complete
                first_label = check_label_shapes(gathered["labels"])
            except UserError as error:
                raise UserError(f"{error}; no metadata.json written in {folder.path}") from None
            label_shape = {} if first_label is None else {LABEL_SHAPE_KEY: list(first_label.shape)}
            with fs.atomic_write(folder.file(WINDOWS_CSV), folder.run_id) as f:  # rows in tile order
                f.write(csv_text([WINDOWS_CSV_HEADER]).encode())
                for row, _, _ in sorted(row_counts):
                    f.write(fs.read_bytes(folder.file(_row_part(folder.run_id, row))))
            names = sorted(gathered["files"])
            if sharded:  # shards of an earlier run with another shard count
                fs.delete_files(folder.path, [n for n in fs.list_files(folder.path) if is_shard(n) and n not in names])
            _delete_parts(folder)
            if temporary_stacks:
                fs.delete_tree(temporary_stacks)
            return folder.finish(
                dict(
                    metadata,
                    windows_written=sum(n for _, n, _ in row_counts),
                    tiles_written=sum(t for _, _, t in row_counts),
                    **label_shape,
                    **{BAND_STATS_KEY: band_stats, FILES_KEY: found_files(folder, names)},
                )
            )

        # windows.csv in two levels: each tile row's parts are joined in parallel, then the rows in order.
        joined = (
            rows
            | "Key by tile row" >> beam.Map(lambda tile_count: (tile_count[0][0], tile_count))
            | "Group per tile row" >> beam.GroupByKey()
            | "Join a row's parts" >> beam.MapTuple(lambda row, counts: _join_row_parts(folder, row, counts))
        )
        summaries = {"rows": joined, "files": files, "stats": stats, "labels": labels}
        summaries.update({f"other writes {n}": pcoll for n, pcoll in enumerate(self._wait_for)})
        return summaries | "Writes done" >> Gather() | "Write windows.csv and metadata.json" >> beam.Map(finish)
