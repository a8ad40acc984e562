"""Window files read into numpy, without TensorFlow (for PyTorch users and quick checks).

    for record in read_windows("tf_window/infer", tile=(0, 1)):
        record.feature          # float32 [n, tile_y, tile_x, 2*bands_sar + bands_opt]
        record.window_start     # int epoch seconds, as rsdtlib's windows list
    for feature, label in batches(training_elements("tf_window/train", seed=1), 32):
        feature                 # [32, Omega, ty, tx, bands], the same arrays as datasets.training_dataset
    for batch in batches(inference_elements("tf_window/infer", tile=(0, 1)), 8):
        batch["Feature"], batch["frame_mask"], batch["Timestamps"]   # padded to Omega

Reads both layouts Stage 3 writes (`{j}_{i}.tfrecords` per tile and
`windows-SSSSS-of-NNNNN.tfrecords` shards) and rsdtlib's own window files
(which hold `Feature`/`Label` only). `online_windows` builds a tile's windows
straight from a Stage 2 stack, as rsdtlib's `get_infer_dataset`, without
writing them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from rsdt_beam import fs
from rsdt_beam.common.names import METADATA_FILE, TILE_FILE, tile_file_name
from rsdt_beam.errors import UserError
from rsdt_beam.normalization import Normalization, reader_scale
from rsdt_beam.outputs import listed_files
from rsdt_beam.records import OBSERVED, parse_example, parse_tensor
from rsdt_beam.stack.files import band_counts, read_stack_metadata, read_tile_stack
from rsdt_beam.tfrecord import CorruptRecordError, check_read_whole, read_records
from rsdt_beam.window.padding import (
    DEFAULT_PAD_VALUE,
    TIMESTAMP_PAD_VALUE,
    frame_mask,
    pad_frames,
    resolve_frames,
    training_element,
)
from rsdt_beam.window.rules import Window, WindowParams, windows

_SHARD_FILE = re.compile(r"^windows-\d+-of-\d+\.tfrecords$")


@dataclasses.dataclass
class WindowRecord:
    """One window record; the fields after `label` are None in rsdtlib-written files."""

    feature: np.ndarray
    label: np.ndarray | None
    tile: tuple[int, int] | None
    window_id: int | None
    window_start: int | None
    window_end: int | None
    timestamps: np.ndarray | None
    observed: np.ndarray | None = None  # bool [n, ty, tx, 3], only when written with --record_observed


def window_files(source: str | Sequence[str]) -> list[str]:
    """The window files of a Stage 3 folder (per-tile files row-major, or shards), a glob, or a list.

    A folder's files are those its `metadata.json` lists; only folders without (rsdtlib's) are listed."""
    if not isinstance(source, str):
        return list(source)
    if any(c in source for c in "*?["):
        files = fs.glob(source)
    elif (listed := listed_files(source, window_metadata(source))) is not None:
        files = listed  # a complete rsdt_beam folder: its metadata.json says which files it holds
    else:
        names = fs.list_children(source)
        tiles = sorted((int(m.group(1)), int(m.group(2)), n) for n in names if (m := TILE_FILE.match(n)))
        files = [fs.join(source, n) for _, _, n in tiles] or [
            fs.join(source, n) for n in sorted(names) if _SHARD_FILE.match(n)
        ]
    if not files:
        raise FileNotFoundError(f"no window files ({{j}}_{{i}}.tfrecords or windows-*-of-*.tfrecords) in {source}")
    return files


def window_metadata(window_dir: str) -> dict:
    """Stage 3's `metadata.json` of a folder, or {} when there is none (rsdtlib writes none)."""
    path = fs.join(window_dir, METADATA_FILE)
    metadata = fs.read_json(path) if fs.exists(path) else {}
    if metadata and "Omega" not in metadata:  # every Stage 3 folder records Omega; Stage 2's do not
        raise UserError(
            f"{window_dir} is a stack folder (Stage 2: its metadata.json has no Omega), not a windows folder: "
            f"write windows from it (rsdt_beam.pipelines.window) or build them online (rsdt_beam.training)"
        )
    return metadata


def parse_window_record(payload: bytes, name: str = "<record>") -> WindowRecord:
    """A window record; CorruptRecordError naming `name` for a record that is none (a stack record, garbage)."""
    try:
        features = parse_example(payload)
    except (ValueError, KeyError, IndexError, TypeError, UnicodeDecodeError) as error:
        raise CorruptRecordError(f"{name}: not a window record (no tf.train.Example: {error})") from None
    if "Feature" not in features:
        raise CorruptRecordError(f"{name}: not a window record (no Feature; found {sorted(features)})")

    def scalar(key):
        return int(features[key][0]) if key in features else None

    try:
        return WindowRecord(
            feature=parse_tensor(features["Feature"]),
            label=parse_tensor(features["Label"]) if "Label" in features else None,
            tile=tuple(features["tile"]) if "tile" in features else None,
            window_id=scalar("window_id"),
            window_start=scalar("window_start"),
            window_end=scalar("window_end"),
            timestamps=parse_tensor(features["Timestamps"]) if "Timestamps" in features else None,
            observed=parse_tensor(features[OBSERVED]).astype(bool) if OBSERVED in features else None,
        )
    except (ValueError, KeyError, IndexError, TypeError) as error:
        raise CorruptRecordError(f"{name}: not a window record ({error})") from None


def read_window_file(path: str) -> Iterator[WindowRecord]:
    """The records of one window file, in file order."""
    with fs.open_read(path) as raw:
        for n, payload in enumerate(read_records(raw, gzip=True, name=path)):
            yield parse_window_record(payload, f"{path} record {n}")


def unread_problem(path: str, bytes_read: int) -> str:
    """'' when a reader that took `bytes_read` uncompressed bytes of the window file read all of it, else
    the one line (naming the file) that says what is wrong with it (the tf.data readers' end-of-file check)."""
    try:
        with fs.open_read(path) as raw:
            check_read_whole(raw, bytes_read, path)
    except CorruptRecordError as error:
        return str(error)
    return ""


def read_windows(source: str | Sequence[str], tile: tuple[int, int] | None = None) -> Iterator[WindowRecord]:
    """Window records of a folder/glob/list; with `tile`, only that tile's, in time order.

    Per-tile files are already in time order; records of one tile spread
    over shards are collected and sorted by window id.
    """
    files = window_files(source)
    if tile is None:
        for path in files:
            yield from read_window_file(path)
        return
    tile = (int(tile[0]), int(tile[1]))
    own = [path for path in files if path.rsplit("/", 1)[-1] == tile_file_name(tile)]
    if own:
        yield from read_window_file(own[0])
        return
    found = [record for path in files for record in read_window_file(path) if record.tile == tile]
    if found and found[0].window_id is None:
        raise ValueError(f"{source}: records carry no tile index, cannot select tile {tile}")
    yield from sorted(found, key=lambda record: record.window_id)


def training_pairs(source: str | Sequence[str]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(feature, label) of each training window, in file order."""
    for record in read_windows(source):
        if record.label is None:
            raise ValueError(f"{source}: window {record.tile} #{record.window_id} has no Label (inference windows?)")
        yield record.feature, record.label


def online_windows(
    stack_dir: str,
    tile: tuple[int, int],
    params: WindowParams,
    win_filter: Callable | None = None,
    metadata: dict | None = None,
) -> Iterator[Window]:
    """A tile's windows built from its Stage 2 stack, not written anywhere.

    `win_filter(*window) -> bool` keeps a window as in rsdtlib's
    `get_infer_dataset`/`write_tf_files`: it gets `cur` (mono) or
    `prev, cur, next` (triple), each unpacking as `(timestamps, asc, dsc, opt)`.
    """
    metadata = metadata or read_stack_metadata(stack_dir)
    stack = read_tile_stack(stack_dir, (int(tile[0]), int(tile[1])), metadata)
    for window in windows(stack, params):
        if win_filter is None or bool(win_filter(*window)):
            yield window


def _shuffled(items: Iterator, buffer_size: int, rng: np.random.Generator) -> Iterator:
    """A shuffle buffer as tf.data's: each item out is drawn at random from the next `buffer_size`."""
    buffer: list = []
    for item in items:
        if len(buffer) < buffer_size:
            buffer.append(item)
            continue
        k = int(rng.integers(len(buffer)))
        yield buffer[k]
        buffer[k] = item
    while buffer:
        yield buffer.pop(int(rng.integers(len(buffer))))


def _interleaved(files: list[str], cycle_length: int) -> Iterator[WindowRecord]:
    """Records of `cycle_length` files at a time, one from each in turn (tf.data's interleave)."""
    open_files = [read_window_file(path) for path in files[:cycle_length]]
    waiting = list(files[cycle_length:])
    while open_files:
        for reader in list(open_files):
            record = next(reader, None)
            if record is not None:
                yield record
                continue
            index = open_files.index(reader)
            if waiting:
                open_files[index] = read_window_file(waiting.pop(0))
            else:
                open_files.pop(index)


def training_elements(
    source: str | Sequence[str],
    *,
    shuffle_buffer: int = 1024,
    seed: int | None = None,
    frames: int | None = None,
    pad_value: float = DEFAULT_PAD_VALUE,
    masks: bool = False,
    cycle_length: int = 4,
    normalize: bool | Normalization = False,
    observed: bool = False,
) -> Iterator:
    """`(feature, label)` of training windows as `datasets.training_dataset` yields them, without TensorFlow.

    Features `[n, ty, tx, bands]` are padded to `frames` (default: Omega of the folder's metadata.json;
    0: not padded); `masks=True` gives `({"Feature", "frame_mask"}, label)`. Files are shuffled and read
    `cycle_length` at a time, then records go through a `shuffle_buffer` (0: file order), both
    seeded by `seed`. `normalize=True` scales features band by band with the folder's `band_stats`
    (a `Normalization`: with its statistics, e.g. validation windows scaled as the training windows);
    `observed=True` adds the per-pixel `observed_mask` (windows written with `--record_observed`).
    """
    files = window_files(source)
    metadata = source_metadata(source, files)
    frames = resolve_frames(frames, metadata.get("Omega"), str(source))
    scale = reader_scale(normalize, metadata, band_counts(metadata).total, source)
    rng = np.random.default_rng(seed)
    if shuffle_buffer:
        files = [files[k] for k in rng.permutation(len(files))]
    records: Iterator = _interleaved(files, max(1, cycle_length))
    if shuffle_buffer:
        records = _shuffled(records, shuffle_buffer, rng)
    for record in records:
        if record.label is None:
            raise ValueError(f"{source}: window {record.tile} #{record.window_id} has no Label (inference windows?)")
        if observed and record.observed is None:
            raise ValueError(f"{source}: windows carry no observed mask (write them with --record_observed)")
        yield training_element(
            record.feature, record.label, frames, pad_value, masks, scale, record.observed if observed else None
        )


def inference_element(
    record: WindowRecord, frames: int | None, pad_value: float = DEFAULT_PAD_VALUE, observed: bool = False
) -> dict:
    """An inference window as a dict of arrays, padded to `frames` (None: as it is) with its frame mask
    (and with `observed`, its per-pixel `observed_mask`, padded with False)."""
    element = {
        "Feature": pad_frames(record.feature, frames, pad_value),
        "frame_mask": frame_mask(len(record.feature), frames),
        "tile": np.asarray(record.tile, np.int64),
        "window_id": np.int64(record.window_id),
        "window_start": np.int64(record.window_start),
        "window_end": np.int64(record.window_end),
        "Timestamps": pad_frames(record.timestamps, frames, TIMESTAMP_PAD_VALUE),
    }
    if observed:
        if record.observed is None:
            raise ValueError(
                f"window {record.tile} #{record.window_id} carries no observed mask "
                f"(write the windows with --record_observed)"
            )
        element["observed_mask"] = pad_frames(record.observed, frames, False)
    return element


def inference_elements(
    source: str | Sequence[str],
    tile: tuple[int, int] | None = None,
    frames: int | None = None,
    pad_value: float = DEFAULT_PAD_VALUE,
    observed: bool = False,
) -> Iterator[dict]:
    """Inference windows as `datasets.inference_dataset` yields them (one tile or all, time order)."""
    files = window_files(source)
    frames = resolve_frames(frames, source_metadata(source, files).get("Omega"), str(source))
    records = (
        read_windows(files, tile)
        if tile is not None
        else sorted(read_windows(files), key=lambda r: (r.tile, r.window_id))
    )
    for record in records:
        if record.tile is None:
            raise ValueError(f"{source}: records carry no tile/window_id (written by rsdtlib?)")
        yield inference_element(record, frames, pad_value, observed)


def batches(elements: Iterable, batch_size: int, drop_remainder: bool = False) -> Iterator:
    """Elements (arrays, tuples or dicts of arrays) stacked `batch_size` at a time."""
    batch: list = []
    for element in elements:
        batch.append(element)
        if len(batch) == batch_size:
            yield _stack(batch)
            batch = []
    if batch and not drop_remainder:
        yield _stack(batch)


def _stack(items: list):
    first = items[0]
    if isinstance(first, dict):
        return {key: _stack([item[key] for item in items]) for key in first}
    if isinstance(first, tuple):
        return tuple(_stack(list(parts)) for parts in zip(*items))
    return np.stack(items)


def source_metadata(source: str | Sequence[str], files: list[str]) -> dict:
    """The metadata.json next to the window files (the folder's, or the first file's)."""
    if isinstance(source, str) and not any(c in source for c in "*?["):
        return window_metadata(source)
    return window_metadata(files[0].replace("\\", "/").rsplit("/", 1)[0])
