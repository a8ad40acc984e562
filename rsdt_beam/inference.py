"""Online inference in the pipeline: windows -> Keras model -> georeferenced maps, alike on every runner.

    work items, keyed by an int (a tile's index, a file's number):
        StackFile | TileStack   a tile: its windows built on the fly (`TileWindows`), not written
        a written window file   its records (`ReadInferenceWindows`, `WindowFileRecords`)
      --PredictWindows--> (WindowKey, prediction [ty, tx(, c)])   work items spread by a GroupByKey on the key;
                           each item's windows predicted in batches inside its step
      --WriteMaps:
          StageMapParts--> per window time and tile group (256 px of tiles): the group's stitched part,
                           staged in <map_output>/.parts/, and a reference to it
          write_map--> <map_output>/<start>_<end>.tif per window time, streamed from the parts in 256 px
                       blocks; then maps.csv, metadata.json (from the rows of the maps found)

No step holds a whole map: a grouping carries one tile group's predictions
or one window time's part references, and a writer one GeoTIFF block and
the parts around it.

The graph is shaped for runners that execute Beam's model literally, Beam's
DaskRunner among them: no side inputs (that runner computes a side input's
whole upstream again inside every task that reads it, so predictions and
parts were made again after the maps were written), nothing emitted in
`finish_bundle` (it drops that output, so Beam's RunInference, which batches
there, lost a tile's prediction), and ordering by main inputs only: the
folder's begin is an input of the first grouping, and the final step gets
every map row and every other write as its inputs. Beam's ML package is not
imported (it imports torch when installed); the model handler here loads the
model once per process (`apache_beam.utils.shared`) and batches a work
item's windows itself.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
import itertools
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.utils import shared

from rsdt_beam import fs
from rsdt_beam.common.names import MAPS_CSV
from rsdt_beam.common.times import iso_time
from rsdt_beam.errors import UserError
from rsdt_beam.grid import Grid, PixelWindow, TileLayout
from rsdt_beam.maps import MapKey, blocks_of_parts, group_window, prediction_shapes, stitch
from rsdt_beam.normalization import Normalization
from rsdt_beam.numpy_reader import read_window_file, window_files
from rsdt_beam.outputs import FILES_KEY, OutputFolder, begin
from rsdt_beam.progress import Counter
from rsdt_beam.rasters import TILE_PX, StreamedGeoTiff, geotiff_profile
from rsdt_beam.specs import InferenceSpec
from rsdt_beam.stack.files import StackFile
from rsdt_beam.stack.rules import TileStack
from rsdt_beam.window.padding import DEFAULT_PAD_VALUE, pad_frames, resolve_frames
from rsdt_beam.window.rules import WindowParams, streamed_windows
from rsdt_beam.window.sampling import Sample, window_pairs
from rsdt_beam.window.selection import TileSelector

_MAPS_CSV_HEADER = ("window_id", "start", "end", "tiles", "file", "start_epoch", "end_epoch")


class WindowKey(NamedTuple):
    """Which window a feature/prediction belongs to."""

    tile: tuple[int, int]
    window_id: int
    window_start: int
    window_end: int

    @property
    def map_key(self) -> MapKey:
        return MapKey(self.window_id, self.window_start, self.window_end)


def window_inputs(
    stack: TileStack | StackFile,
    params: WindowParams,
    window_filter: Callable | None = None,
    sample: Sample | None = None,
) -> Iterator[tuple[WindowKey, np.ndarray]]:
    """The model inputs of a tile: each kept window's current frames `[n, ty, tx, bands]` (copies: the
    windows are streamed from a bounded buffer of the tile's frames, and the model batches inputs)."""
    for window, frames, _ in window_pairs(streamed_windows(stack, params), win_filter=window_filter, sample=sample):
        times = window.current.timestamps
        key = WindowKey((int(stack.tile[0]), int(stack.tile[1])), window.window_id, int(times[0]), int(times[-1]))
        yield key, np.array(frames)


def _local_model_file(uri: str) -> str:
    """Keras loads local files only: a gs:// model is copied to a temporary folder first."""
    if not fs.is_remote(uri):
        return uri
    local = os.path.join(tempfile.mkdtemp(prefix="rsdt-model-"), uri.rstrip("/").rsplit("/", 1)[-1])
    with open(local, "wb") as f:
        f.write(fs.read_bytes(uri))
    return local


class KerasWindowModelHandler:
    """Runs a Keras model on window features `[n, ty, tx, bands]`, in batches of up to `batch_size` windows.

    The model is `keras.models.load_model(model_uri)`, or
    `create_model_fn()` with weights from `model_uri` when given (local or
    gs://). With `frames`, each window is padded to that many frames as
    every reader pads (`rsdt_beam.window.padding`; the pipeline's default is
    Omega); otherwise windows of equal length are stacked and run together.
    With `normalization` (recorded beside the model) the features are normalised first.
    With `layout`, the first batch's predictions are checked against the
    tile (or centre) shape, so a wrong model fails at once, not at stitching.
    """

    def __init__(
        self,
        model_uri: str | None = None,
        create_model_fn: Callable | None = None,
        *,
        frames: int | None = None,
        pad_value: float = DEFAULT_PAD_VALUE,
        batch_size: int = 16,
        layout: TileLayout | None = None,
        normalization: Normalization | None = None,
    ):
        if model_uri is None and create_model_fn is None:
            raise ValueError("give a model file (model_uri) or a function that builds the model")
        self._model_uri = model_uri
        self._create_model_fn = create_model_fn
        self._frames = frames
        self._pad_value = pad_value
        self.batch_size = batch_size
        self._layout = layout
        self._normalization = normalization
        self._checked = False

    @classmethod
    def from_spec(
        cls, spec: InferenceSpec, layout: TileLayout | None = None, omega_max: int | None = None
    ) -> KerasWindowModelHandler:
        """The handler of `--model/--model_fn`; `--frames` defaults to `omega_max` (the windows' Omega)."""
        return cls(
            spec.model,
            spec.model_fn,
            frames=resolve_frames(spec.frames, omega_max, "--frames"),
            pad_value=spec.pad_value,
            batch_size=spec.batch_size,
            layout=layout,
            normalization=spec.normalization,
        )

    def load_model(self):
        if self._create_model_fn is not None:
            model = self._create_model_fn()
            if self._model_uri:
                model.load_weights(_local_model_file(self._model_uri))
            return model
        import keras

        return keras.models.load_model(_local_model_file(self._model_uri), compile=False)

    def predict(self, windows: Iterable[tuple[Any, np.ndarray]], model) -> Iterator[tuple[Any, np.ndarray]]:
        """(key, prediction) of each (key, features), in order, from model calls on up to `batch_size` windows."""
        windows = iter(windows)
        while batch := list(itertools.islice(windows, self.batch_size)):
            keys, features = zip(*batch)
            yield from zip(keys, self.run_inference(features, model))

    def run_inference(self, batch: Iterable[np.ndarray], model) -> list[np.ndarray]:
        """The predictions of one batch of windows, in order; one model call per window length."""
        # Normalised as the training data were (`rsdt_beam.normalization`), before padding: pad frames stay pad_value.
        normalize = self._normalization.apply if self._normalization is not None else np.asarray
        inputs = [pad_frames(normalize(x), self._frames, self._pad_value) for x in batch]
        by_shape: dict[tuple, list[int]] = collections.defaultdict(list)
        for index, array in enumerate(inputs):
            by_shape[array.shape].append(index)
        outputs: list[Any] = [None] * len(inputs)
        for indices in by_shape.values():
            stacked = np.stack([inputs[k] for k in indices])
            predicted = self._call(model, stacked)
            for k, prediction in zip(indices, predicted):
                outputs[k] = prediction
        return outputs

    def _frames_hint(self) -> str:
        return (
            f"windows are padded to --frames {self._frames} (default: Omega; --frames 0 for no padding)"
            if self._frames
            else "windows are not padded (--frames 0); --frames N pads them to N frames"
        )

    def _call(self, model, stacked: np.ndarray) -> np.ndarray:
        """The model's predictions of one batch; the first batch's are checked against the tile shape."""
        if self._checked:
            return np.asarray(model(stacked, training=False))
        try:
            predicted = np.asarray(model(stacked, training=False))
        except Exception as error:
            expects = getattr(model, "input_shape", None)
            raise UserError(
                f"the model fails on the first batch of windows {stacked.shape} [batch, frames, y, x, "
                f"bands]{f' (model input {expects})' if expects else ''}: {_first_line(error)}; "
                f"{self._frames_hint()}"
            ) from error
        if self._layout is not None:
            full, centre = prediction_shapes(self._layout)
            if (
                predicted.ndim not in (3, 4)
                or len(predicted) != len(stacked)
                or predicted.shape[1:3] not in (full, centre)
            ):
                raise UserError(
                    f"the model returns {predicted.shape} for windows {stacked.shape}; expected "
                    f"[batch, {full[0]}, {full[1]}] or [batch, {full[0]}, {full[1]}, channels] (the "
                    f"tile), or the centre [batch, {centre[0]}, {centre[1]}(, channels)]: change the "
                    f"model, or --tile_size/--deadzone of the stacks; {self._frames_hint()}"
                )
        self._checked = True
        return predicted


@dataclasses.dataclass(frozen=True)
class TileWindows:
    """The windows of a tile as a work item: StackFile | TileStack -> (WindowKey, features), built on the fly."""

    params: WindowParams
    window_filter: Callable | None = None
    sample: Sample | None = None

    def __call__(self, stack: StackFile | TileStack) -> Iterator[tuple[WindowKey, np.ndarray]]:
        built = Counter("windows_built")
        for item in window_inputs(stack, self.params, self.window_filter, self.sample):
            built.inc()
            yield item


@dataclasses.dataclass(frozen=True)
class WindowFileRecords:
    """The windows of a written window file as a work item: path -> (WindowKey, features) of the selected
    tiles and sampled windows."""

    selector: TileSelector | None = None
    sample: Sample = Sample()

    def __call__(self, path: str) -> Iterator[tuple[WindowKey, np.ndarray]]:
        read = Counter("windows_read")
        for record in read_window_file(path):
            if (
                (self.selector is None or self.selector(*record.tile))
                and self.sample.keeps_id(record.tile, record.window_id)
                and self.sample.keeps_pair(record.tile, record.window_id, record.feature, None)
            ):
                read.inc()
                yield WindowKey(record.tile, record.window_id, record.window_start, record.window_end), record.feature


class ReadInferenceWindows(beam.PTransform):
    """PBegin -> PCollection[(file number, path)]: the work items of written windows (per-tile files or
    shards); `PredictWindows(handler, read.records)` reads and predicts them."""

    def __init__(self, window_dir: str, selector: TileSelector | None = None, sample: Sample | None = None):
        super().__init__()
        self._files = window_files(window_dir)
        self.records = WindowFileRecords(selector, sample or Sample())
        first = next((r for path in self._files for r in read_window_file(path)), None)
        if first is None:
            raise ValueError(f"{window_dir}: no window records")
        if first.tile is None:
            raise ValueError(
                f"{window_dir}: records carry no tile/window_id (written by rsdtlib?); "
                f"run inference online from the stack (--stack_dir) instead"
            )

    @property
    def files(self) -> list[str]:
        return self._files

    def expand(self, pbegin):
        return pbegin | "Window files" >> beam.Create(list(enumerate(self._files)))


ITEMS_PREDICTED = "work_items_predicted"  # tiles or window files, counted when all their windows are predicted


class _PredictWorkItems(beam.DoFn):
    """(key, [work item]) -> (WindowKey, prediction) of each item's windows, predicted in batches here, in
    `process`: nothing is held back for the end of a bundle. The model is loaded once per process."""

    def __init__(self, handler: KerasWindowModelHandler, windows_of: Callable):
        self._handler = handler
        self._windows_of = windows_of
        self._model_handle = shared.Shared()  # pickled with the DoFn: one handle, one model per process

    def setup(self):
        self._model = self._model_handle.acquire(self._handler.load_model)
        self._inferred = Counter("windows_inferred")
        self._items = Counter(ITEMS_PREDICTED)

    def process(self, keyed_items):
        _, items = keyed_items
        for item in items:
            for key, prediction in self._handler.predict(self._windows_of(item), self._model):
                self._inferred.inc()
                yield key, prediction
            self._items.inc()


class PredictWindows(beam.PTransform):
    """PCollection[(int, work item)] -> PCollection[(WindowKey, prediction ndarray)].

    `windows_of(item)` yields a work item's (WindowKey, features) (`TileWindows`, `WindowFileRecords`). The
    items are spread over the workers by a GroupByKey on their int key (Beam's Reshuffle is a no-op on the
    DaskRunner; there the grouping hashes the keys over as many tasks as its input has partitions), then
    each item's windows are predicted in batches of up to `handler.batch_size`, in the item's order, so
    every runner makes the same batches.
    """

    def __init__(self, handler: KerasWindowModelHandler, windows_of: Callable):
        super().__init__()
        self._handler = handler
        self._windows_of = windows_of

    def expand(self, keyed_items):
        return (
            keyed_items
            | "Spread work items" >> beam.GroupByKey()
            | "Predict in batches" >> beam.ParDo(_PredictWorkItems(self._handler, self._windows_of))
        )


@dataclasses.dataclass(frozen=True)
class MapOutput:
    """Where and on what grid maps are written; `trim_edges` as in `rsdt_beam.maps.stitch`."""

    output_dir: str
    grid: Grid
    layout: TileLayout
    trim_edges: bool = False
    nodata: float = float("nan")
    # What else shapes the maps, as given (for the folder's identity): the model, window parameters, ...
    choices: tuple[tuple[str, Any], ...] = ()

    def folder(self) -> OutputFolder:
        layout = self.layout
        parameters = dict(
            grid=self.grid.to_json(),
            tile_size_y=layout.tile_size_y,
            tile_size_x=layout.tile_size_x,
            deadzone_y=layout.deadzone_y,
            deadzone_x=layout.deadzone_x,
            trim_map_edges=self.trim_edges,
            **dict(self.choices),
        )
        return OutputFolder(self.output_dir, "maps", "--map_output", parameters)

    @classmethod
    def from_metadata(
        cls, output_dir: str, metadata: dict, grid: Grid | None = None, trim_edges: bool = False, choices: tuple = ()
    ) -> MapOutput:
        """From Stage 2/3 metadata.json (tile size, deadzone, grid; `grid` overrides the latter)."""
        if grid is None:
            if "grid" not in metadata:
                raise ValueError(
                    "metadata.json has no grid (rsdtlib's stacks carry none): give the grid "
                    "(--map_grid grid.json, e.g. the observation store's)"
                )
            grid = Grid.from_json(metadata["grid"])
        layout = TileLayout(
            grid.height,
            grid.width,
            int(metadata["tile_size_y"]),
            int(metadata["tile_size_x"]),
            int(metadata.get("deadzone_y", 0)),
            int(metadata.get("deadzone_x", 0)),
        )
        return cls(output_dir, grid, layout, trim_edges, choices=choices)


MAP_GROUP_PX = TILE_PX  # a tile group: the tiles of one 256 px chunk, about one internal tile of the GeoTIFF
PARTS_FOLDER = ".parts"  # staged parts under the map folder: .parts/<run id>/<map stem>/<j>_<i>.npy


class StagedPart(NamedTuple):
    """A tile group's part of one map (`window` of the grid), staged as a `.npy` file until the map is written."""

    window: PixelWindow
    path: str
    tiles: int  # how many tiles of the group predicted
    channels: tuple[int, ...]  # () for [y, x] predictions, (c,) for [y, x, c]


class StageMapParts(beam.PTransform):
    """PCollection[(WindowKey, prediction)] -> PCollection[((window_id, start, end), StagedPart)].

    Predictions are grouped per window time and tile group (the tiles of one
    `MAP_GROUP_PX` chunk of the layout, `TileLayout.chunk_of`); each group's
    core windows are stitched (`rsdt_beam.maps.stitch` over `group_window`)
    and staged atomically under `<map_output>/.parts/<run id>/<map stem>/`.
    Only the reference travels on: no step holds more than one group's
    predictions. Part names are deterministic, so a retried step rewrites
    the same file. `after` (e.g. the folder's begin) is an input of the
    grouping, so no part is staged before it is complete.
    """

    def __init__(self, output: MapOutput, folder: OutputFolder, after: beam.PCollection | None = None):
        super().__init__()
        self._output = output
        self._folder = folder
        self._after = after

    def expand(self, predictions):
        output, folder = self._output, self._folder

        def by_group(item):
            key, prediction = item
            group = output.layout.chunk_of(*key.tile, MAP_GROUP_PX)
            where = (key.window_id, key.window_start, key.window_end, group.j_start, group.i_start)
            return where, (key.tile, prediction)

        def stage(item):
            where, tile_predictions = item
            if where is None:  # the group of `after`
                return
            window_id, start, end, j, i = where
            tiles = dict(tile_predictions)
            window = group_window(output.layout.chunk_of(j, i, MAP_GROUP_PX), output.trim_edges)
            part = stitch(output.layout, tiles, output.trim_edges, output.nodata, window=window)
            data = io.BytesIO()
            np.save(data, part)
            path = fs.join(staging_folder(folder, MapKey(window_id, start, end)), f"{j}_{i}.npy")
            fs.write_bytes(path, data.getvalue(), folder.run_id)
            yield (window_id, start, end), StagedPart(window, path, len(tiles), part.shape[2:])

        grouped = predictions | "By window time and tile group" >> beam.Map(by_group)
        if self._after is not None:
            after = self._after | "After as a group of its own" >> beam.Map(lambda _: (None, None))
            grouped = (grouped, after) | "With after" >> beam.Flatten()
        return (
            grouped
            | "Group tiles of a tile group" >> beam.GroupByKey()
            | "Stitch and stage part" >> beam.FlatMap(stage)
        )


def staging_folder(folder: OutputFolder, key: MapKey) -> str:
    """Where the parts of the map of `key` are staged: `<map_output>/.parts/<run id>/<map stem>` (the run id
    keeps a killed earlier run's parts apart; `WriteMaps` removes `.parts` before `metadata.json`)."""
    return folder.file(f"{PARTS_FOLDER}/{folder.run_id}/{key.stem}")


def write_map(output: MapOutput, folder: OutputFolder, key: MapKey, parts: Iterable[StagedPart]) -> tuple[str, int]:
    """Writes the map of `key` from its staged parts, then removes them; (the map's path, tiles in it).

    The GeoTIFF is streamed (`rsdt_beam.rasters.StreamedGeoTiff`) block by
    block in row-major order (`rsdt_beam.maps.blocks_of_parts`), each block
    assembled from the parts that overlap it, `nodata` where none does: a
    writer holds one block and the few parts around it (a part reaching
    into the next row of blocks is read again there, not kept). A retried
    attempt whose parts an earlier attempt already took finds the map
    published (parts are removed only after that) and leaves it.
    """
    by_window = {part.window: part for part in parts}  # a part staged twice (retried step) counts once
    tiles = sum(part.tiles for part in by_window.values())
    path, stage = folder.file(key.file_name), staging_folder(folder, key)
    staged = set(fs.list_files(stage))
    missing = sorted(part.path for part in by_window.values() if fs.basename(part.path) not in staged)
    if missing:
        if fs.exists(path):
            return path, tiles
        raise RuntimeError(f"{path}: staged parts are missing and the map was not written: {', '.join(missing)}")
    channels = {part.channels for part in by_window.values()}
    if len(channels) > 1:
        raise ValueError(
            f"{key.file_name}: tile predictions must all be [y, x] or all [y, x, c] alike, got parts with "
            f"channels {sorted(channels)}"
        )
    (channels,) = channels
    grid = output.grid
    profile = geotiff_profile(grid, channels[0] if channels else 1, "float32", output.nodata)
    block_shape = (profile["blockysize"], profile["blockxsize"]) if profile.get("tiled") else (TILE_PX, grid.width)
    loaded: dict[PixelWindow, np.ndarray] = {}
    with StreamedGeoTiff(path, profile, tags=dict(key.tags(), RSDT_TILES=str(tiles)), run_id=folder.run_id) as tif:
        for block, windows in blocks_of_parts(grid.height, grid.width, block_shape, by_window):
            array = np.full((block.height, block.width, *channels), output.nodata, np.float32)
            for window in windows:
                if window not in loaded:
                    loaded[window] = np.load(io.BytesIO(fs.read_bytes(by_window[window].path)))
                overlap = window.intersection(block)
                array[overlap.relative_to(block).slices] = loaded[window][overlap.relative_to(window).slices]
            tif.write(block, array)
            # Only parts that reach into the next block of this row stay (none after the row's last block).
            loaded = {window: part for window, part in loaded.items() if window.col_stop > block.col_stop}
    fs.delete_files(stage, [fs.basename(part.path) for part in by_window.values()])
    return path, tiles


_BEGUN, _MAP, _DONE = "begun", "map", "done"  # the kinds of summaries the final step of WriteMaps gets


class WriteMaps(beam.PTransform):
    """PCollection[(WindowKey, prediction)] -> PCollection[str]: one GeoTIFF per window time, maps.csv,
    then `metadata.json` (after every PCollection of `wait_for` too, e.g. the writing of `rejected.json`).

    Predictions are stitched per window time and tile group into staged
    parts (`StageMapParts`); per window time one writer streams the parts
    into the map's GeoTIFF (`write_map`), so no step holds a whole map. File
    names are deterministic, so a re-run overwrites. The last step gets, as
    main inputs, the folder's begin, every map's row and every element of
    `wait_for`: it checks that every map is there, writes maps.csv, removes
    `.parts` (and `temporary_stacks`, a folder of Stage 2 files made only for
    these maps), then `metadata.json` with the maps found.
    """

    def __init__(self, output: MapOutput, wait_for=(), temporary_stacks: str | None = None):
        super().__init__()
        self._output = output
        self._wait_for = tuple(wait_for)
        self._temporary_stacks = temporary_stacks
        self.output_folder = output.folder()

    def expand(self, predictions):
        output, folder, temporary_stacks = self._output, self.output_folder, self._temporary_stacks
        written = Counter("maps_written")

        def write(item) -> tuple:
            (window_id, start, end), parts = item
            key = MapKey(window_id, start, end)
            path, tiles = write_map(output, folder, key, parts)
            written.inc()
            return (window_id, iso_time(start), iso_time(end), tiles, key.file_name, start, end), path

        def finish(summaries: list) -> str:
            rows = sorted(value for kind, value in summaries if kind == _MAP)
            missing = [row[4] for row in rows if not fs.exists(folder.file(row[4]))]
            if missing:
                raise RuntimeError(f"{folder.path}: maps written but not found: {', '.join(missing)}")
            text = io.StringIO()
            writer = csv.writer(text)
            writer.writerow(_MAPS_CSV_HEADER)
            writer.writerows(rows)
            folder.write_bytes(MAPS_CSV, text.getvalue().encode())
            fs.delete_tree(folder.file(PARTS_FOLDER))  # parts a killed earlier run staged and never wrote
            if temporary_stacks:
                fs.delete_tree(temporary_stacks)
            return folder.finish(
                {
                    "maps_written": len(rows),
                    "tiles_written": sum(row[3] for row in rows),
                    FILES_KEY: sorted(row[4] for row in rows),
                }
            )

        begun = predictions.pipeline | "Folder" >> beam.Create([folder]) | "Begin folder" >> beam.Map(begin)
        maps = (
            predictions
            | "Stage parts" >> StageMapParts(output, folder, after=begun)
            | "Group parts of a window" >> beam.GroupByKey()
            | "Write map from parts" >> beam.Map(write)
        )
        summaries = (
            begun | "Begun" >> beam.Map(lambda _: (_BEGUN, None)),
            maps | "Map rows" >> beam.Map(lambda row_path: (_MAP, row_path[0])),
            *(pcoll | f"Done {n}" >> beam.Map(lambda _: (_DONE, None)) for n, pcoll in enumerate(self._wait_for)),
        )
        (
            summaries
            | "Summaries" >> beam.Flatten()
            # Without defaults: CombineGlobally's default comes through a side input; `begun` makes one list.
            | "Collect summaries" >> beam.combiners.ToList().without_defaults()
            | "Write maps.csv and metadata.json" >> beam.Map(finish)
        )
        return maps | "Paths" >> beam.Map(lambda row_path: row_path[1])


class InferMaps(beam.PTransform):
    """PCollection[StackFile | TileStack] -> PCollection[str] map paths: windows built online -> model -> maps.

    Tiles are keyed by their row-major index in the layout, the key that spreads them (`PredictWindows`);
    `wait_for` and `temporary_stacks` as in `WriteMaps`.
    """

    def __init__(
        self,
        params: WindowParams,
        handler: KerasWindowModelHandler,
        output: MapOutput,
        window_filter: Callable | None = None,
        sample: Sample | None = None,
        wait_for=(),
        temporary_stacks: str | None = None,
    ):
        super().__init__()
        self._windows = TileWindows(params, window_filter, sample)
        self._handler = handler
        self._output = output
        self._wait_for = tuple(wait_for)
        self._temporary_stacks = temporary_stacks

    def expand(self, stacks):
        tiles_x = self._output.layout.num_tiles_x
        return (
            stacks
            | "Key by tile index" >> beam.Map(lambda stack: (int(stack.tile[0]) * tiles_x + int(stack.tile[1]), stack))
            | "Predict" >> PredictWindows(self._handler, self._windows)
            | "Maps" >> WriteMaps(self._output, self._wait_for, self._temporary_stacks)
        )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"
