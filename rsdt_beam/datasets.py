"""`tf.data` readers of windows: training pairs, inference windows, and windows built online.

    train = training_dataset("tf_window/train", batch_size=32, seed=1)   # (feature, label), static shapes
    model.fit(train, validation_data=training_dataset("tf_window/val", batch_size=32, shuffle_buffer=0))

    for window in inference_dataset("tf_window/infer", tile=(5, 10)):   # time order
        window["Feature"], window["window_start"], window["tile"]

    online = OnlineWindows("tf_stack", WindowParams(30 * 86400, 1, 10, 16))   # rsdtlib's interactive mode
    result = model.predict(online.get_infer_dataset((5, 10)).map(lambda cur: cur[3]).batch(8))

TensorFlow is imported inside the functions that build datasets, so
importing this module costs nothing. Features with a time axis are padded
at its end to `frames` (default: the windows' `Omega`) with `pad_value`
(-1.0, as in rsdtlib's inference example), which gives static shapes.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Sequence

import numpy as np

from rsdt_beam.common.names import TILE_FILE, tile_file_name
from rsdt_beam.numpy_reader import (
    WindowRecord,
    online_windows,
    read_window_file,
    read_windows,
    window_files,
    window_metadata,
)
from rsdt_beam.stack.files import list_tiles, read_stack_metadata, tile_timestamps
from rsdt_beam.window.listing import window_ranges
from rsdt_beam.window.rules import WindowParams

DEFAULT_PAD_VALUE = -1.0


def _source_metadata(source: str | Sequence[str], files: list[str]) -> dict:
    if isinstance(source, str) and not any(c in source for c in "*?["):
        return window_metadata(source)
    return window_metadata(posixpath.dirname(files[0].replace("\\", "/")))


def _first_record(files: list[str]) -> WindowRecord:
    for path in files:
        for record in read_window_file(path):
            return record
    raise ValueError(f"no window records in {len(files)} files ({files[0]} ...)")


def _frames_for(feature: np.ndarray, frames: int | None, metadata: dict, source) -> int | None:
    """How many frames a `[n, ty, tx, bands]` feature is padded to; None for other shapes."""
    if feature.ndim != 4:
        return None
    if frames is None:
        frames = metadata.get("Omega")
    if frames is None:
        raise ValueError(f"{source}: no metadata.json with Omega (rsdtlib's windows?): pass frames= "
                         f"to pad the time axis of features {feature.shape} to a static length")
    return int(frames)


def _pad_time(tensor, frames: int | None, pad_value: float, what: str):
    """Pads axis 0 to `frames` with `pad_value` (no-op when `frames` is None)."""
    import tensorflow as tf

    if frames is None:
        return tensor
    count = tf.shape(tensor)[0]
    tf.debugging.assert_less_equal(count, frames, message=f"{what} has more frames than frames={frames}")
    padding = tf.concat([[[0, frames - count]], tf.zeros([tf.rank(tensor) - 1, 2], tf.int32)], axis=0)
    return tf.pad(tensor, padding, constant_values=tf.cast(pad_value, tensor.dtype))


def training_dataset(source: str | Sequence[str], *, batch_size: int | None = None,
                     shuffle_buffer: int = 1024, seed: int | None = None, frames: int | None = None,
                     pad_value: float = DEFAULT_PAD_VALUE, cycle_length: int = 4, repeat: bool = False,
                     drop_remainder: bool = False):
    """`(feature, label)` pairs of training windows with static shapes, shuffled across files.

    `source` is a Stage 3 folder (per-tile files or shards), a glob or a
    list of files (local or gs://). Files are shuffled and read
    `cycle_length` at a time, interleaved, then records are shuffled in a
    buffer of `shuffle_buffer` (0: no shuffling, the same interleaved order
    every pass, e.g. for validation).
    Features `[n, ty, tx, bands]` are padded to `frames` (default: Omega
    from the folder's metadata.json); labels keep their shape.
    """
    import tensorflow as tf

    files = window_files(source)
    first = _first_record(files)
    if first.label is None:
        raise ValueError(f"{source}: windows have no Label; these are inference windows "
                         f"(use inference_dataset)")
    frames = _frames_for(first.feature, frames, _source_metadata(source, files), source)
    feature_shape = (frames, *first.feature.shape[1:]) if frames else first.feature.shape
    feature_dtype, label_dtype = tf.as_dtype(first.feature.dtype), tf.as_dtype(first.label.dtype)
    schema = {"Feature": tf.io.FixedLenFeature([], tf.string), "Label": tf.io.FixedLenFeature([], tf.string)}

    def parse(serialized):
        parsed = tf.io.parse_single_example(serialized, schema)
        feature = _pad_time(tf.io.parse_tensor(parsed["Feature"], feature_dtype), frames, pad_value, "Feature")
        label = tf.io.parse_tensor(parsed["Label"], label_dtype)
        return tf.ensure_shape(feature, feature_shape), tf.ensure_shape(label, first.label.shape)

    deterministic = seed is not None or shuffle_buffer == 0
    dataset = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_buffer:
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.interleave(lambda path: tf.data.TFRecordDataset(path, compression_type="GZIP"),
                                 cycle_length=max(1, min(cycle_length, len(files))),
                                 num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    dataset = dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if shuffle_buffer:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    if batch_size:
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset.prefetch(tf.data.AUTOTUNE)


def inference_dataset(source: str | Sequence[str], tile: tuple[int, int] | None = None,
                      frames: int | None = None, pad_value: float = DEFAULT_PAD_VALUE):
    """Inference windows of one tile (or all, tile by tile) in time order, as dicts.

    Each element: `Feature` `[n, ty, tx, bands]` (padded to `frames` when
    given), `tile` int64 `[2]`, `window_id`, `window_start`, `window_end`
    (int64 epoch seconds) and `Timestamps` float64 `[n]`. Per-tile files
    are streamed; windows spread over shards are gathered and sorted first.
    """
    import tensorflow as tf

    files = window_files(source)
    first = _first_record(files)
    if first.tile is None:
        raise ValueError(f"{source}: records carry no tile/window_id (written by rsdtlib?); read them with "
                         f"tf.data.TFRecordDataset or use OnlineWindows on the stack")
    feature_shape = ((frames if frames else None), *first.feature.shape[1:])
    per_tile = all(TILE_FILE.match(posixpath.basename(path)) for path in files)

    def pad(element):
        element["Feature"] = tf.ensure_shape(_pad_time(element["Feature"], frames, pad_value, "Feature"),
                                             feature_shape)
        return element

    if per_tile:
        if tile is not None:
            files = [path for path in files if posixpath.basename(path) == tile_file_name(tile)]
            if not files:
                raise FileNotFoundError(f"{source}: no window file of tile {tuple(tile)}")
        schema = {"Feature": tf.io.FixedLenFeature([], tf.string),
                  "tile": tf.io.FixedLenFeature([2], tf.int64),
                  "window_id": tf.io.FixedLenFeature([], tf.int64),
                  "window_start": tf.io.FixedLenFeature([], tf.int64),
                  "window_end": tf.io.FixedLenFeature([], tf.int64),
                  "Timestamps": tf.io.FixedLenFeature([], tf.string)}
        feature_dtype = tf.as_dtype(first.feature.dtype)

        def parse(serialized):
            parsed = tf.io.parse_single_example(serialized, schema)
            parsed["Feature"] = tf.io.parse_tensor(parsed["Feature"], feature_dtype)
            parsed["Timestamps"] = tf.ensure_shape(tf.io.parse_tensor(parsed["Timestamps"], tf.float64), [None])
            return pad(parsed)

        return tf.data.TFRecordDataset(files, compression_type="GZIP").map(parse)

    def generate():
        records = read_windows(files, tile) if tile is not None else sorted(
            read_windows(files), key=lambda r: (r.tile, r.window_id))
        for record in records:
            yield {"Feature": record.feature, "tile": np.asarray(record.tile, np.int64),
                   "window_id": record.window_id, "window_start": record.window_start,
                   "window_end": record.window_end, "Timestamps": record.timestamps}

    signature = {"Feature": tf.TensorSpec((None, *first.feature.shape[1:]), tf.as_dtype(first.feature.dtype)),
                 "tile": tf.TensorSpec([2], tf.int64), "window_id": tf.TensorSpec([], tf.int64),
                 "window_start": tf.TensorSpec([], tf.int64), "window_end": tf.TensorSpec([], tf.int64),
                 "Timestamps": tf.TensorSpec([None], tf.float64)}
    return tf.data.Dataset.from_generator(generate, output_signature=signature).map(pad)


def online_dataset(stack_dir: str, tile: tuple[int, int], params: WindowParams,
                   win_filter: Callable | None = None, metadata: dict | None = None):
    """A tile's windows built on the fly from a Stage 2 stack (rsdtlib's `get_infer_dataset`).

    Elements are rsdtlib's: `(cur,)` for mono and `(prev, cur, next)` for
    triple windows, each part `(timestamps float64 [n], asc [n, ty, tx, bs],
    dsc [...], opt [n, ty, tx, bo])`, so `dataset.map(lambda cur: ...)`
    receives `cur`. `win_filter(*window)` drops windows (numpy or TF ops).
    """
    import tensorflow as tf

    metadata = metadata or read_stack_metadata(stack_dir)
    ty, tx = int(metadata["tile_size_y"]), int(metadata["tile_size_x"])
    sar, opt = int(metadata["bands_sar"]), int(metadata["bands_opt"])
    part = (tf.TensorSpec([None], tf.float64), tf.TensorSpec([None, ty, tx, sar], tf.float32),
            tf.TensorSpec([None, ty, tx, sar], tf.float32), tf.TensorSpec([None, ty, tx, opt], tf.float32))
    signature = (part, part, part) if params.triple else (part,)

    def generate():
        for window in online_windows(stack_dir, tile, params, win_filter, metadata):
            yield tuple(tuple(p) for p in window)

    return tf.data.Dataset.from_generator(generate, output_signature=signature)


class OnlineWindows:
    """rsdtlib's `Window` in interactive (online) mode over a Stage 2 folder (rsdt_beam's or rsdtlib's).

    `get_infer_dataset(tile, win_filter)`, `get_num_tiles()` and
    `windows_list(tile)` behave as rsdtlib's, with rsdt_beam's window rules
    (any tile for `windows_list`, working triple windows).
    """

    def __init__(self, stack_dir: str, params: WindowParams):
        self.stack_dir = stack_dir
        self.params = params
        self.metadata = read_stack_metadata(stack_dir)

    def get_num_tiles(self) -> tuple[int, int]:
        tiles = list_tiles(self.stack_dir)
        if not tiles:
            raise FileNotFoundError(f"no {{j}}_{{i}}.tfrecords in {self.stack_dir}")
        return max(j for j, _ in tiles) + 1, max(i for _, i in tiles) + 1

    def windows_list(self, tile: tuple[int, int] = (0, 0)) -> list[tuple[int, int, int, int]]:
        """(window id, first time stamp, last time stamp, frames) of the tile's current windows."""
        ranges = window_ranges(tile_timestamps(self.stack_dir, tile), self.params, tile)
        return [(r.window_id, int(r.start), int(r.end), r.frames) for r in ranges]

    def get_infer_dataset(self, tile: tuple[int, int], win_filter: Callable | None = None):
        """The tile's windows as `online_dataset`; None when the tile has no stack file (as rsdtlib)."""
        if (int(tile[0]), int(tile[1])) not in set(list_tiles(self.stack_dir)):
            return None
        return online_dataset(self.stack_dir, tile, self.params, win_filter, self.metadata)
