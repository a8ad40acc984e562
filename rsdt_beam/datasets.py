"""`tf.data` readers of windows: training pairs, inference windows, and windows built online.

    train = training_dataset("tf_window/train", batch_size=32, seed=1)   # (feature, label), static shapes
    model.fit(train, validation_data=training_dataset("tf_window/val", batch_size=32, shuffle_buffer=0))

    for window in inference_dataset("tf_window/infer", tile=(5, 10)).batch(8):   # time order
        window["Feature"], window["frame_mask"], window["window_start"], window["Timestamps"], window["tile"]

    online = OnlineWindows("tf_stack", WindowParams(30 * 86400, 1, 10, 16))   # rsdtlib's interactive mode
    result = model.predict(online.get_infer_dataset((5, 10)).map(lambda cur: cur[3]).batch(8))

Training windows built from the stacks without window files: `rsdt_beam.training`.

TensorFlow is imported inside the functions that build datasets, so importing this module costs
nothing. One padding rule (`rsdt_beam.window.padding`): features with a time axis are padded at its
end to `frames` (default: the windows' `Omega`; 0: no padding) with `pad_value` (-1.0, as in
rsdtlib's inference example), time stamps with 0, and a boolean `frame_mask` `[frames]` says which
frames are real. `rsdt_beam.numpy_reader` yields the same arrays without TensorFlow.
"""

from __future__ import annotations

import math
import posixpath
from collections.abc import Callable, Iterator, Sequence

from rsdt_beam.common.names import TILE_FILE, tile_file_name
from rsdt_beam.errors import UserError
from rsdt_beam.normalization import Normalization, reader_scale
from rsdt_beam.numpy_reader import (
    WindowRecord,
    inference_elements,
    online_windows,
    read_window_file,
    source_metadata,
    unread_problem,
    window_files,
)
from rsdt_beam.records import OBSERVED
from rsdt_beam.stack.files import band_counts, list_tiles, read_stack_metadata, tile_timestamps
from rsdt_beam.window.listing import window_ranges
from rsdt_beam.window.padding import DEFAULT_PAD_VALUE, TIMESTAMP_PAD_VALUE, frame_mask, pad_frames, resolve_frames
from rsdt_beam.window.rules import WindowParams


def _first_record(files: list[str]) -> WindowRecord:
    for path in files:
        for record in read_window_file(path):
            return record
    raise ValueError(f"no window records in {len(files)} files ({files[0]} ...)")


# A TFRecord's framing around its payload: length (8 bytes) and two masked CRC32Cs (4 bytes each).
_RECORD_FRAMING = 16


def _file_records(path):
    """A window file (a tf.string path) -> its records `(serialized, path)`, with the file named in errors.

    TensorFlow's reader names no file when one is truncated or no GZIP TFRecord. Here it stops at such an
    error (`ignore_errors`: the reader then moves past the file), and an end marker (an empty record:
    window records never are) compares the bytes read with the size in the file's gzip trailer (4 bytes
    read); only a mismatch reads the file again, in Python, and fails with the line of
    `numpy_reader.unread_problem`: "assertion failed: [<file>: truncated ...]".
    """
    import tensorflow as tf

    def count(total, record):  # uncompressed bytes read so far (the marker adds none)
        size = tf.cast(tf.strings.length(record), tf.int64)
        total += tf.where(size > 0, size + _RECORD_FRAMING, tf.zeros_like(size))
        return total, (record, total)

    def kept(record, total):  # every record; the end marker after its check
        return tf.cond(tf.strings.length(record) > 0, lambda: tf.constant(True), lambda: _read_whole(path, total))

    return (
        tf.data.TFRecordDataset(path, compression_type="GZIP")
        .ignore_errors()
        .concatenate(tf.data.Dataset.from_tensors(tf.constant(b"")))
        .scan(tf.constant(0, tf.int64), count)
        .filter(kept)
        .map(lambda record, total: (record, path))
    )


def _read_whole(path, bytes_read):
    """False (drop the end marker) if the reader read the file whole, else an error naming the file."""
    import tensorflow as tf

    def problem_of(name, count):
        return unread_problem(name.numpy().decode(), int(count))

    problem = tf.py_function(problem_of, [path, bytes_read], tf.string)
    with tf.control_dependencies([tf.debugging.Assert(tf.equal(problem, ""), [problem])]):
        return tf.constant(False)


def dataset_from_generator(generate: Callable[..., Iterator], signature, args: tuple | None = None):
    """`tf.data.Dataset.from_generator(generate, args, signature)`, except that a user error of the
    generator (a bad file: a `UserError`, its one line naming the file) fails the iteration as the file
    readers do, "assertion failed: [<line>]", not with a Python traceback in TensorFlow's message.

    The generator stops at the error and keeps its line; one last step (no element) raises it, so the
    elements themselves pass through untouched.
    """
    import tensorflow as tf

    problems: list[str] = []

    def stopping(*arguments):
        try:
            yield from generate(*arguments)
        except UserError as error:
            problems.append(" ".join(str(error).split()))

    def problem() -> str:
        return problems.pop(0) if problems else ""

    def without_problem(*_element):
        found = tf.py_function(problem, [], tf.string)
        with tf.control_dependencies([tf.debugging.Assert(tf.equal(found, ""), [found])]):
            return tf.constant(False)

    placeholder = tf.nest.map_structure(
        lambda spec: tf.zeros([0 if size is None else size for size in spec.shape], spec.dtype), signature
    )
    check = tf.data.Dataset.from_tensors(placeholder).filter(without_problem)
    return tf.data.Dataset.from_generator(stopping, args=args, output_signature=signature).concatenate(check)


def _schema(strings: dict, ints: dict) -> dict:
    """A parsing schema of required keys (bytes, and int64 >= 0) with defaults that mark them missing."""
    import tensorflow as tf

    schema = {key: tf.io.FixedLenFeature(shape, tf.string, default_value="") for key, shape in strings.items()}
    schema.update(
        {
            key: tf.io.FixedLenFeature(shape, tf.int64, default_value=[-1] * math.prod(shape))
            for key, shape in ints.items()
        }
    )
    return schema


def _parse_record(serialized, path, schema: dict, what: str) -> dict:
    """A record's features; an error naming the file (not TensorFlow's parser's) when one of them is missing."""
    import tensorflow as tf

    parsed = tf.io.parse_single_example(serialized, schema)
    present = tf.reduce_all(
        [tf.reduce_all(tf.strings.length(v) > 0 if v.dtype == tf.string else v >= 0) for v in parsed.values()]
    )
    message = tf.strings.join([path, f": not {what} record (one of {', '.join(schema)} is missing)"])
    with tf.control_dependencies([tf.debugging.Assert(present, [message])]):
        return {key: tf.identity(value) for key, value in parsed.items()}


def _pad_time(tensor, frames: int | None, pad_value: float, what: str):
    """Pads axis 0 to `frames` with `pad_value` (no-op when `frames` is None)."""
    import tensorflow as tf

    if frames is None:
        return tensor
    count = tf.shape(tensor)[0]
    tf.debugging.assert_less_equal(count, frames, message=f"{what} has more frames than frames={frames}")
    padding = tf.concat([[[0, frames - count]], tf.zeros([tf.rank(tensor) - 1, 2], tf.int32)], axis=0)
    return tf.pad(tensor, padding, constant_values=tf.cast(pad_value, tensor.dtype))


def _frame_mask(tensor, frames: int | None):
    """Boolean `[frames]` (`[n]` unpadded): True for the frames `tensor` holds."""
    import tensorflow as tf

    count = tf.shape(tensor)[0]
    return tf.range(count if frames is None else frames) < count


def training_dataset(
    source: str | Sequence[str],
    *,
    batch_size: int | None = None,
    shuffle_buffer: int = 1024,
    seed: int | None = None,
    frames: int | None = None,
    pad_value: float = DEFAULT_PAD_VALUE,
    cycle_length: int = 4,
    repeat: bool = False,
    drop_remainder: bool = False,
    masks: bool = False,
    normalize: bool | Normalization = False,
    observed: bool = False,
):
    """`(feature, label)` pairs of training windows with static shapes, shuffled across files.

    `source` is a Stage 3 folder (per-tile files or shards), a glob or a
    list of files (local or gs://). Files are shuffled and read
    `cycle_length` at a time, interleaved, then records are shuffled in a
    buffer of `shuffle_buffer` (0: no shuffling, the same interleaved order
    every pass, e.g. for validation).
    Features `[n, ty, tx, bands]` are padded to `frames` (default: Omega
    from the folder's metadata.json; 0: not padded); labels keep their
    shape. `masks=True` gives `({"Feature", "frame_mask"}, label)`. A
    whole Stage 3 folder has a known cardinality (its `windows_written`).
    `normalize=True` scales features band by band with the folder's
    `band_stats` (`(x - mean) / std`; padding untouched), a
    `rsdt_beam.normalization.Normalization` with its statistics (e.g.
    validation windows scaled as the training windows; record it beside
    the model with `save_normalization` for `infer`). `observed=True`
    adds the per-pixel `observed_mask` `[frames, ty, tx, 3]` (windows
    written with `--record_observed`).
    """
    import tensorflow as tf

    files = window_files(source)
    first = _first_record(files)
    if first.label is None:
        raise ValueError(f"{source}: windows have no Label; these are inference windows (use inference_dataset)")
    timed = first.feature.ndim == 4
    metadata = source_metadata(source, files)
    frames = resolve_frames(frames, metadata.get("Omega"), str(source)) if timed else None
    scale = reader_scale(normalize, metadata, band_counts(metadata).total, source)
    feature_shape = (frames, *first.feature.shape[1:]) if timed else first.feature.shape
    feature_dtype, label_dtype = tf.as_dtype(first.feature.dtype), tf.as_dtype(first.label.dtype)
    if observed and first.observed is None:
        raise ValueError(f"{source}: windows carry no observed mask (write them with --record_observed)")
    schema = _schema({"Feature": [], "Label": [], **({OBSERVED: []} if observed else {})}, {})

    def parse(serialized, path):
        parsed = _parse_record(serialized, path, schema, "a training window")
        feature = tf.io.parse_tensor(parsed["Feature"], feature_dtype)
        if scale is not None:
            feature = (feature - scale[0]) / scale[1]
        padded = tf.ensure_shape(_pad_time(feature, frames, pad_value, "Feature"), feature_shape)
        label = tf.ensure_shape(tf.io.parse_tensor(parsed["Label"], label_dtype), first.label.shape)
        if not masks and not observed:
            return padded, label
        inputs = {"Feature": padded, "frame_mask": _frame_mask(feature, frames) if timed else tf.ones([1], tf.bool)}
        if observed:
            seen = tf.cast(tf.io.parse_tensor(parsed[OBSERVED], tf.uint8), tf.bool)
            inputs["observed_mask"] = tf.ensure_shape(
                _pad_time(seen, frames, False, "Observed"), (frames, *first.observed.shape[1:])
            )
        return inputs, label

    deterministic = seed is not None or shuffle_buffer == 0
    dataset = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_buffer:
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.interleave(
        _file_records,
        cycle_length=max(1, min(cycle_length, len(files))),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
    dataset = dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if shuffle_buffer:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if isinstance(source, str) and not any(c in source for c in "*?[") and "windows_written" in metadata:
        # A whole Stage 3 folder: its length is known, so Keras knows the steps per epoch.
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(int(metadata["windows_written"])))
    if repeat:
        dataset = dataset.repeat()
    if batch_size:
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset.prefetch(tf.data.AUTOTUNE)


def inference_dataset(
    source: str | Sequence[str],
    tile: tuple[int, int] | None = None,
    frames: int | None = None,
    pad_value: float = DEFAULT_PAD_VALUE,
    observed: bool = False,
):
    """Inference windows of one tile (or all, tile by tile) in time order, as dicts.

    Each element: `Feature` `[frames, ty, tx, bands]` and `Timestamps`
    float64 `[frames]` padded to `frames` (default: Omega of the folder's
    metadata.json; 0: not padded), `frame_mask` bool `[frames]`, `tile`
    int64 `[2]`, `window_id`, `window_start`, `window_end` (int64 epoch
    seconds); with `observed=True` also `observed_mask` bool `[frames, ty,
    tx, 3]` (windows written with `--record_observed`). Per-tile files are
    streamed; windows spread over shards are gathered and sorted first.
    """
    import tensorflow as tf

    files = window_files(source)
    first = _first_record(files)
    if first.tile is None:
        raise ValueError(
            f"{source}: records carry no tile/window_id (written by rsdtlib?); read them with "
            f"tf.data.TFRecordDataset or use OnlineWindows on the stack"
        )
    frames = resolve_frames(frames, source_metadata(source, files).get("Omega"), str(source))
    feature_dtype = tf.as_dtype(first.feature.dtype)
    signature = {
        "Feature": tf.TensorSpec((frames, *first.feature.shape[1:]), feature_dtype),
        "frame_mask": tf.TensorSpec([frames], tf.bool),
        "tile": tf.TensorSpec([2], tf.int64),
        "window_id": tf.TensorSpec([], tf.int64),
        "window_start": tf.TensorSpec([], tf.int64),
        "window_end": tf.TensorSpec([], tf.int64),
        "Timestamps": tf.TensorSpec([frames], tf.float64),
    }
    if observed:
        if first.observed is None:
            raise ValueError(f"{source}: windows carry no observed mask (write them with --record_observed)")
        signature["observed_mask"] = tf.TensorSpec((frames, *first.observed.shape[1:]), tf.bool)
    per_tile = all(TILE_FILE.match(posixpath.basename(path)) for path in files)
    if not per_tile:
        return dataset_from_generator(
            lambda: inference_elements(files, tile, frames or 0, pad_value, observed), signature
        )
    if tile is not None:
        files = [path for path in files if posixpath.basename(path) == tile_file_name(tile)]
        if not files:
            raise FileNotFoundError(f"{source}: no window file of tile {tuple(tile)}")
    schema = _schema(
        {"Feature": [], "Timestamps": [], **({OBSERVED: []} if observed else {})},
        {"tile": [2], "window_id": [], "window_start": [], "window_end": []},
    )

    def parse(serialized, path):
        parsed = _parse_record(serialized, path, schema, "an inference window")
        feature = tf.io.parse_tensor(parsed["Feature"], feature_dtype)
        times = tf.io.parse_tensor(parsed["Timestamps"], tf.float64)
        parsed["Feature"] = tf.ensure_shape(
            _pad_time(feature, frames, pad_value, "Feature"), signature["Feature"].shape
        )
        parsed["Timestamps"] = tf.ensure_shape(_pad_time(times, frames, TIMESTAMP_PAD_VALUE, "Timestamps"), [frames])
        parsed["frame_mask"] = _frame_mask(feature, frames)
        if observed:
            seen = tf.cast(tf.io.parse_tensor(parsed.pop(OBSERVED), tf.uint8), tf.bool)
            parsed["observed_mask"] = tf.ensure_shape(
                _pad_time(seen, frames, False, "Observed"), signature["observed_mask"].shape
            )
        return parsed

    return tf.data.Dataset.from_tensor_slices(files).flat_map(_file_records).map(parse)


def online_dataset(
    stack_dir: str,
    tile: tuple[int, int],
    params: WindowParams,
    win_filter: Callable | None = None,
    metadata: dict | None = None,
    frames: int | None = None,
    pad_value: float = DEFAULT_PAD_VALUE,
):
    """A tile's windows built on the fly from a Stage 2 stack (rsdtlib's `get_infer_dataset`).

    Elements are rsdtlib's: `(cur,)` for mono and `(prev, cur, next)` for
    triple windows, each part `(timestamps float64, asc [frames, ty, tx, bs],
    dsc [...], opt [frames, ty, tx, bo], frame_mask bool [frames])`, padded to
    `frames` (default Omega; 0: rsdtlib's unpadded parts), so
    `dataset.map(lambda cur: cur[3]).batch(8)` works. `win_filter(*window)`
    drops windows (numpy or TF ops) and sees them unpadded, as in rsdtlib.
    """
    import tensorflow as tf

    metadata = metadata or read_stack_metadata(stack_dir)
    frames = resolve_frames(frames, params.Omega, stack_dir)
    ty, tx = int(metadata["tile_size_y"]), int(metadata["tile_size_x"])
    sar, opt = int(metadata["bands_sar"]), int(metadata["bands_opt"])
    part = (
        tf.TensorSpec([frames], tf.float64),
        tf.TensorSpec([frames, ty, tx, sar], tf.float32),
        tf.TensorSpec([frames, ty, tx, sar], tf.float32),
        tf.TensorSpec([frames, ty, tx, opt], tf.float32),
        tf.TensorSpec([frames], tf.bool),
    )
    signature = (part, part, part) if params.triple else (part,)

    def padded(window_part) -> tuple:
        times, asc, dsc, opt_frames = window_part
        return (
            pad_frames(times, frames, TIMESTAMP_PAD_VALUE),
            *(pad_frames(a, frames, pad_value) for a in (asc, dsc, opt_frames)),
            frame_mask(len(times), frames),
        )

    def generate():
        for window in online_windows(stack_dir, tile, params, win_filter, metadata):
            yield tuple(padded(p) for p in window)

    return dataset_from_generator(generate, signature)


class OnlineWindows:
    """rsdtlib's `Window` in interactive (online) mode over a Stage 2 folder (rsdt_beam's or rsdtlib's).

    `get_infer_dataset(tile, win_filter)`, `get_num_tiles()` and
    `windows_list(tile)` behave as rsdtlib's, with rsdt_beam's window rules
    (any tile for `windows_list`, working triple windows) and padding
    (`frames`, default Omega, as `online_dataset`).
    """

    def __init__(
        self, stack_dir: str, params: WindowParams, frames: int | None = None, pad_value: float = DEFAULT_PAD_VALUE
    ):
        self.stack_dir = stack_dir
        self.params = params
        self.frames = frames
        self.pad_value = pad_value
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
        return online_dataset(self.stack_dir, tile, self.params, win_filter, self.metadata, self.frames, self.pad_value)
