"""Online inference in the pipeline: windows -> Keras model (RunInference) -> georeferenced maps.

    TileStack --WindowsOfStacks--> (WindowKey, features [n, ty, tx, bands])   built on the fly, not written
    (or written inference windows --ReadInferenceWindows--> the same)
      --PredictWindows--> (WindowKey, prediction [ty, tx(, c)])               RunInference, batched
      --WriteMaps--> <map_output>/<start>_<end>.tif per window time + maps.csv

The model runs through `apache_beam.ml.inference.RunInference` with
`KerasWindowModelHandler`, a TensorFlow/Keras model handler on Beam's
`ModelHandler` base. (Beam's own `tensorflow_inference.TFModelHandlerNumpy`
imports `tensorflow_hub`, which with Keras 3 needs `tf_keras` and the full
`tensorflow` package next to `tensorflow-cpu`; it also stacks every batch
into one array, which fails for windows of different lengths.) Batches may
mix window lengths: each batch is split by shape, one model call per shape.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
import os
import tempfile
from typing import Any, Callable, Iterator, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from rsdt_beam import fs
from rsdt_beam.acquire.observation import iso_time
from rsdt_beam.grid import Grid, TileLayout
from rsdt_beam.maps import MapKey, stitch, write_geotiff
from rsdt_beam.numpy_reader import read_window_file, window_files, window_metadata
from rsdt_beam.options import InferenceOptions, WindowOptions, window_params
from rsdt_beam.pipeline import StackPlan, temporary_stack_dir, write_rejected
from rsdt_beam.progress import Counter
from rsdt_beam.tfrecord import DEFAULT_GZIP_LEVEL
from rsdt_beam.stack.files import StackFile
from rsdt_beam.stack.rules import TileStack
from rsdt_beam.window.rules import WindowParams, streamed_windows
from rsdt_beam.window.selection import TileSelector, load_callable, tile_selector
from rsdt_beam.window.transforms import ReadTileStacks

MAPS_CSV = "maps.csv"
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


def window_inputs(stack: TileStack | StackFile, params: WindowParams,
                  window_filter: Callable | None = None) -> Iterator[tuple[WindowKey, np.ndarray]]:
    """The model inputs of a tile: each kept window's current frames `[n, ty, tx, bands]` (copies: the
    windows are streamed from a bounded buffer, the model batches inputs)."""
    for window in streamed_windows(stack, params):
        if window_filter is not None and not window_filter(*window):
            continue
        times = window.current.timestamps
        key = WindowKey((int(stack.tile[0]), int(stack.tile[1])), window.window_id, int(times[0]), int(times[-1]))
        yield key, window.current.frames.copy()


def pad_frames(features: np.ndarray, frames: int, pad_value: float) -> np.ndarray:
    """`[n, ...]` -> `[frames, ...]`, the added frames filled with `pad_value`."""
    if features.shape[0] > frames:
        raise ValueError(f"window has {features.shape[0]} frames, more than frames={frames}")
    padded = np.full((frames, *features.shape[1:]), pad_value, features.dtype)
    padded[:features.shape[0]] = features
    return padded


def _local_model_file(uri: str) -> str:
    """Keras loads local files only: a gs:// model is copied to a temporary folder first."""
    if not fs.is_remote(uri):
        return uri
    local = os.path.join(tempfile.mkdtemp(prefix="rsdt-model-"), uri.rstrip("/").rsplit("/", 1)[-1])
    with open(local, "wb") as f:
        f.write(fs.read_bytes(uri))
    return local


class KerasWindowModelHandler(ModelHandler[np.ndarray, PredictionResult, Any]):
    """Runs a Keras model on window features `[n, ty, tx, bands]`, batch by batch.

    The model is `keras.models.load_model(model_uri)`, or
    `create_model_fn()` with weights from `model_uri` when given (local or
    gs://). With `frames`, each window is padded to that many frames (for
    models with a fixed time axis, as rsdtlib's `padded_batch` example);
    otherwise windows of equal length are stacked and run together.
    """

    def __init__(self, model_uri: str | None = None, create_model_fn: Callable | None = None, *,
                 frames: int | None = None, pad_value: float = -1.0, min_batch_size: int = 1,
                 max_batch_size: int = 16):
        if model_uri is None and create_model_fn is None:
            raise ValueError("give a model file (model_uri) or a function that builds the model")
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size)
        self._model_uri = model_uri
        self._create_model_fn = create_model_fn
        self._frames = frames
        self._pad_value = pad_value

    def load_model(self):
        if self._create_model_fn is not None:
            model = self._create_model_fn()
            if self._model_uri:
                model.load_weights(_local_model_file(self._model_uri))
            return model
        import keras

        return keras.models.load_model(_local_model_file(self._model_uri), compile=False)

    def run_inference(self, batch, model, inference_args: dict | None = None) -> list[PredictionResult]:
        inputs = [np.asarray(x) if self._frames is None else pad_frames(np.asarray(x), self._frames, self._pad_value)
                  for x in batch]
        by_shape: dict[tuple, list[int]] = collections.defaultdict(list)
        for index, array in enumerate(inputs):
            by_shape[array.shape].append(index)
        outputs: list[Any] = [None] * len(inputs)
        for indices in by_shape.values():
            predicted = np.asarray(model(np.stack([inputs[k] for k in indices]), training=False,
                                         **(inference_args or {})))
            for k, prediction in zip(indices, predicted):
                outputs[k] = prediction
        return [PredictionResult(example, prediction, self._model_uri) for example, prediction in zip(batch, outputs)]

    def get_num_bytes(self, batch) -> int:
        return sum(np.asarray(x).nbytes for x in batch)

    def get_metrics_namespace(self) -> str:
        return "rsdt_beam_inference"


class WindowsOfStacks(beam.PTransform):
    """PCollection[StackFile | TileStack] -> PCollection[(WindowKey, features [n, ty, tx, bands])], nothing written."""

    def __init__(self, params: WindowParams, window_filter: Callable | None = None):
        super().__init__()
        self._params = params
        self._filter = window_filter

    def expand(self, stacks):
        params, window_filter = self._params, self._filter
        built = Counter("windows_built")

        def inputs(stack):
            for item in window_inputs(stack, params, window_filter):
                built.inc()
                yield item

        return stacks | "Windows of tile" >> beam.FlatMap(inputs)


class ReadInferenceWindows(beam.PTransform):
    """PBegin -> PCollection[(WindowKey, features)]: written windows (per-tile files or shards)."""

    def __init__(self, window_dir: str, selector: TileSelector | None = None):
        super().__init__()
        self._files = window_files(window_dir)
        self._selector = selector
        first = next((r for path in self._files for r in read_window_file(path)), None)
        if first is None:
            raise ValueError(f"{window_dir}: no window records")
        if first.tile is None:
            raise ValueError(f"{window_dir}: records carry no tile/window_id (written by rsdtlib?); "
                             f"run inference online from the stack (--stack_dir) instead")

    def expand(self, pbegin):
        selector = self._selector
        read = Counter("windows_read")

        def records(path):
            for record in read_window_file(path):
                if selector is None or selector(*record.tile):
                    read.inc()
                    yield (WindowKey(record.tile, record.window_id, record.window_start, record.window_end),
                           record.feature)

        return (pbegin
                | "Window files" >> beam.Create(self._files)
                | "Spread files" >> beam.Reshuffle()
                | "Read windows" >> beam.FlatMap(records))


class PredictWindows(beam.PTransform):
    """PCollection[(WindowKey, features)] -> PCollection[(WindowKey, prediction ndarray)] via RunInference."""

    def __init__(self, handler: KerasWindowModelHandler):
        super().__init__()
        self._handler = handler

    def expand(self, inputs):
        inferred = Counter("windows_inferred")

        def prediction(item):
            key, result = item
            inferred.inc()
            return key, np.asarray(result.inference)

        return (inputs
                | "Run model" >> RunInference(KeyedModelHandler(self._handler))
                | "Prediction" >> beam.Map(prediction))


@dataclasses.dataclass(frozen=True)
class MapOutput:
    """Where and on what grid maps are written; `trim_edges` as in `rsdt_beam.maps.stitch`."""

    output_dir: str
    grid: Grid
    layout: TileLayout
    trim_edges: bool = False
    nodata: float = float("nan")

    @classmethod
    def from_metadata(cls, output_dir: str, metadata: dict, grid: Grid | None = None,
                      trim_edges: bool = False) -> "MapOutput":
        """From Stage 2/3 metadata.json (tile size, deadzone, grid; `grid` overrides the latter)."""
        if grid is None:
            if "grid" not in metadata:
                raise ValueError("metadata.json has no grid (rsdtlib's stacks carry none): give the grid "
                                 "(--map_grid grid.json, e.g. the observation store's)")
            grid = Grid.from_json(metadata["grid"])
        layout = TileLayout(grid.height, grid.width, int(metadata["tile_size_y"]), int(metadata["tile_size_x"]),
                            int(metadata.get("deadzone_y", 0)), int(metadata.get("deadzone_x", 0)))
        return cls(output_dir, grid, layout, trim_edges)


class WriteMaps(beam.PTransform):
    """PCollection[(WindowKey, prediction)] -> PCollection[str]: one GeoTIFF per window time, then maps.csv.

    Predictions are grouped per window (id, start, end) over all tiles and
    stitched with `rsdt_beam.maps.stitch`; file names are deterministic, so
    a re-run overwrites.
    """

    def __init__(self, output: MapOutput):
        super().__init__()
        self._output = output

    def expand(self, predictions):
        output = self._output
        written = Counter("maps_written")

        def write(item) -> tuple:
            (window_id, start, end), tile_predictions = item
            key = MapKey(window_id, start, end)
            tiles = dict(tile_predictions)
            array = stitch(output.layout, tiles, output.trim_edges, output.nodata)
            path = write_geotiff(fs.join(output.output_dir, key.file_name), array, output.grid, output.nodata,
                                 dict(key.tags(), RSDT_TILES=str(len(tiles))))
            written.inc()
            return (window_id, iso_time(start), iso_time(end), len(tiles), key.file_name, start, end), path

        def write_csv(rows: list) -> str:
            text = io.StringIO()
            writer = csv.writer(text)
            writer.writerow(_MAPS_CSV_HEADER)
            writer.writerows(sorted(rows))
            path = fs.join(output.output_dir, MAPS_CSV)
            fs.write_bytes(path, text.getvalue().encode())
            return path

        maps = (predictions
                | "By window time" >> beam.Map(
                    lambda kv: ((kv[0].window_id, kv[0].window_start, kv[0].window_end), (kv[0].tile, kv[1])))
                | "Group tiles of a window" >> beam.GroupByKey()
                | "Stitch and write map" >> beam.Map(write))
        (maps
         | "Rows" >> beam.Map(lambda row_path: row_path[0])
         | "Collect rows" >> beam.combiners.ToList()
         | "Write maps.csv" >> beam.Map(write_csv))
        return maps | "Paths" >> beam.Map(lambda row_path: row_path[1])


class InferMaps(beam.PTransform):
    """PCollection[StackFile | TileStack] -> PCollection[str] map paths: windows built online -> model -> maps."""

    def __init__(self, params: WindowParams, handler: KerasWindowModelHandler, output: MapOutput,
                 window_filter: Callable | None = None):
        super().__init__()
        self._params = params
        self._handler = handler
        self._output = output
        self._filter = window_filter

    def expand(self, stacks):
        return (stacks
                | "Windows" >> WindowsOfStacks(self._params, self._filter)
                | "Predict" >> PredictWindows(self._handler)
                | "Maps" >> WriteMaps(self._output))


def handler_from_options(options: PipelineOptions) -> KerasWindowModelHandler:
    opts = options.view_as(InferenceOptions)
    if not opts.model and not opts.model_fn:
        raise ValueError("give --model (Keras model file) and/or --model_fn (module:function)")
    return KerasWindowModelHandler(opts.model, load_callable(opts.model_fn) if opts.model_fn else None,
                                   frames=opts.frames, pad_value=opts.pad_value, max_batch_size=opts.batch_size)


def build_infer(pipeline, options: PipelineOptions):
    """Model -> maps: offline over `--windows`, online from `--stack_dir`, or online from Stage 2 inputs.

    Returns the StackPlan when Stage 2 runs in the pipeline (for the run summary).
    """
    opts = options.view_as(InferenceOptions)
    window_opts = options.view_as(WindowOptions)
    if not opts.map_output:
        raise ValueError("--map_output is required")
    handler = handler_from_options(options)
    grid = Grid.from_json(fs.read_json(opts.map_grid)) if opts.map_grid else None
    selector = tile_selector(window_opts.tiles)
    if opts.windows:
        metadata = window_metadata(opts.windows)
        output = MapOutput.from_metadata(opts.map_output, metadata, grid, opts.trim_map_edges)
        (pipeline
         | "Read windows" >> ReadInferenceWindows(opts.windows, selector)
         | "Predict" >> PredictWindows(handler)
         | "Maps" >> WriteMaps(output))
        return None
    params = window_params(window_opts)
    window_filter = load_callable(window_opts.window_filter) if window_opts.window_filter else None
    if window_opts.stack_dir:
        read = ReadTileStacks(window_opts.stack_dir, selector)
        output = MapOutput.from_metadata(opts.map_output, read.metadata, grid, opts.trim_map_edges)
        pipeline | "Read stacks" >> read | "Infer maps" >> InferMaps(params, handler, output, window_filter)
        return None
    plan = StackPlan.from_options(options)
    output = MapOutput(opts.map_output, plan.grid, plan.layout, opts.trim_map_edges)
    stack_dir = temporary_stack_dir(opts.map_output)
    stacks, _written, rejected = plan.expand(pipeline, stack_dir, DEFAULT_GZIP_LEVEL, selector=selector)
    maps = (stacks
            | "One work item per tile" >> beam.Reshuffle()
            | "Infer maps" >> InferMaps(params, handler, output, window_filter))
    (maps | "Maps done" >> beam.combiners.Count.Globally()
     | "Remove temporary stacks" >> beam.Map(lambda _: fs.delete_tree(stack_dir)))
    write_rejected(rejected, plan.listed_rejections(), opts.map_output, pipeline)
    return plan
