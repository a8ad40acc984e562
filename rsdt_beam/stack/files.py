"""Stage 2's files: `{j}_{i}.tfrecords` per tile and `metadata.json` (rsdtlib's layout).

Read without TensorFlow, so Stage 3 can consume stacks written by rsdt_beam
or by rsdtlib itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from rsdt_beam import fs
from rsdt_beam.common.modalities import MODALITIES, BandCounts
from rsdt_beam.common.names import METADATA_FILE, RSDTLIB_METADATA_KEYS, TILE_FILE, tile_file_name
from rsdt_beam.errors import UserError
from rsdt_beam.outputs import OutputFolder, listed_files
from rsdt_beam.records import parse_example, parse_stack_record, parse_tensor, stack_record
from rsdt_beam.stack.rules import TileStack
from rsdt_beam.tfrecord import CorruptRecordError, TFRecordWriter, read_records

TEMPORARY_STACKS = ".stacks"


def temporary_stack_dir(output_dir: str) -> str:
    """Where a run that keeps no Stage 2 output streams its tile files to, beside its own output."""
    return fs.join(output_dir, TEMPORARY_STACKS)


def read_stack_metadata(stack_dir: str) -> dict:
    path = fs.join(stack_dir, METADATA_FILE)
    if not fs.exists(path):
        raise FileNotFoundError(
            f"{path} not found: {stack_dir} is no complete Stage 2 output (metadata.json is written last)"
        )
    metadata = fs.read_json(path)
    if "Omega" in metadata or "mode" in metadata:  # Stage 3 copies the tiling keys; its records hold windows
        raise UserError(
            f"{stack_dir} is a windows folder (Stage 3 output), not a stack folder (Stage 2 output): give the "
            f"Stage 2 folder, or read these windows with rsdt_beam.datasets / rsdt_beam.numpy_reader"
        )
    missing = [key for key in RSDTLIB_METADATA_KEYS[:4] if key not in metadata]
    if missing:
        raise ValueError(f"{path} lacks {missing}")
    return metadata


def band_counts(metadata: dict) -> BandCounts:
    """The band counts metadata.json gives (rsdtlib's `bands_sar`, `bands_opt`)."""
    return BandCounts(int(metadata["bands_sar"]), int(metadata["bands_opt"]))


def list_tiles(stack_dir: str, metadata: dict | None = None) -> list[tuple[int, int]]:
    """Tile indices of a stack folder, row-major: the files its `metadata.json` lists (rsdt_beam's), else
    the `{j}_{i}.tfrecords` files found there (rsdtlib's metadata lists none)."""
    metadata = read_stack_metadata(stack_dir) if metadata is None else metadata
    listed = listed_files(stack_dir, metadata)
    names = [fs.basename(path) for path in listed] if listed is not None else fs.list_children(stack_dir)
    tiles = []
    for name in names:
        match = TILE_FILE.match(name)
        if match:
            tiles.append((int(match.group(1)), int(match.group(2))))
    return sorted(tiles)


def tile_timestamps(stack_dir: str, tile: tuple[int, int]) -> np.ndarray:
    """The time stamps written for one tile, in file order (only `Timestamp` is decoded)."""
    path = fs.join(stack_dir, tile_file_name(tile))
    times = []
    with fs.open_read(path) as raw:
        for n, payload in enumerate(read_records(raw, gzip=True, name=path)):
            try:
                times.append(float(parse_tensor(parse_example(payload)["Timestamp"])))
            except (ValueError, KeyError) as error:
                raise CorruptRecordError(f"{path} record {n}: not a stack record ({error!r})") from None
    return np.asarray(times, np.float64)


def iter_tile_frames(
    stack_dir: str, tile: tuple[int, int], metadata: dict
) -> Iterator[tuple[float, np.ndarray, np.ndarray | None]]:
    """One tile's (time, frame `[ty, tx, 2*sar + opt]`, observed `[ty, tx, 3]` or None) record by record,
    checked against the metadata's tile size and band counts; one record is decoded at a time."""
    path = fs.join(stack_dir, tile_file_name(tile))
    bands = band_counts(metadata)
    shapes = {
        "SAR_ascending": (metadata["tile_size_y"], metadata["tile_size_x"], bands.sar),
        "OPT": (metadata["tile_size_y"], metadata["tile_size_x"], bands.opt),
    }
    shapes["SAR_descending"] = shapes["SAR_ascending"]
    previous = -np.inf
    with fs.open_read(path) as raw:
        for n, payload in enumerate(read_records(raw, gzip=True, name=path)):
            try:
                timestamp, asc, dsc, opt, seen = parse_stack_record(payload)
            except ValueError as error:
                raise CorruptRecordError(f"{path} record {n}: {error}") from None
            for name, array in zip(("SAR_ascending", "SAR_descending", "OPT"), (asc, dsc, opt)):
                if array.shape != tuple(shapes[name]):
                    raise ValueError(
                        f"{path} record {n}: {name} has shape {array.shape}, metadata.json says {tuple(shapes[name])}"
                    )
            if timestamp <= previous:
                raise ValueError(f"{path} record {n}: time stamps are not increasing")
            previous = timestamp
            yield timestamp, np.concatenate([asc, dsc, opt], axis=-1).astype(np.float32, copy=False), seen


def read_tile_stack(stack_dir: str, tile: tuple[int, int], metadata: dict) -> TileStack:
    """One tile's whole stack in memory (`iter_tile_frames` collected)."""
    bands = band_counts(metadata)
    times, frames, observed = [], [], []
    for timestamp, frame, seen in iter_tile_frames(stack_dir, tile, metadata):
        times.append(timestamp)
        frames.append(frame)
        observed.append(seen)
    shape = (0, metadata["tile_size_y"], metadata["tile_size_x"], bands.total)
    recorded = bool(observed) and all(seen is not None for seen in observed)
    return TileStack(
        tile,
        np.asarray(times, np.float64),
        np.stack(frames) if frames else np.zeros(shape, np.float32),
        bands,
        np.stack(observed) if recorded else None,
    )


@dataclasses.dataclass(frozen=True)
class StackFile:
    """A tile's stack file, read frame by frame where it is used (Stage 3 holds no whole series)."""

    stack_dir: str
    tile: tuple[int, int]
    metadata: dict  # tile size and band counts (rsdtlib's first four metadata.json keys)

    @classmethod
    def of(cls, stack_dir: str, tile: tuple[int, int], metadata: dict) -> StackFile:
        return cls(stack_dir, (int(tile[0]), int(tile[1])), {k: metadata[k] for k in RSDTLIB_METADATA_KEYS[:4]})

    @property
    def bands(self) -> BandCounts:
        return band_counts(self.metadata)

    def iter_frames(self) -> Iterator[tuple[float, np.ndarray, np.ndarray | None]]:
        return iter_tile_frames(self.stack_dir, self.tile, self.metadata)

    def load(self) -> TileStack:
        return read_tile_stack(self.stack_dir, self.tile, self.metadata)


class TileStackWriter:
    """One tile's `{j}_{i}.tfrecords`, written frame by frame; it appears complete or not at all.

    Use as a context manager: leaving it by an exception removes the partial file.
    `record_observed` adds each frame's observed mask (`Observed`).
    """

    def __init__(
        self,
        folder: OutputFolder,
        tile: tuple[int, int],
        bands: BandCounts,
        gzip_level: int | None,
        record_observed: bool = False,
    ):
        self.tile = tile
        self._bands = bands
        # Stage 2 keeps a read chunk's tiles open together: spooled, each costs no upload buffer (fs).
        self._target = fs.spooled_write(folder.file(tile_file_name(tile)), folder.run_id)
        self._gzip_level = gzip_level
        self._record_observed = record_observed
        self.writer: TFRecordWriter | None = None

    def __enter__(self) -> TileStackWriter:
        self.writer = TFRecordWriter(self._target.__enter__(), self._gzip_level)
        return self

    def add(self, time: float, frame: np.ndarray, observed: np.ndarray | None = None) -> None:
        bands = self._bands
        self.writer.write(
            stack_record(
                time,
                *(frame[..., bands.slice_of(m)] for m in MODALITIES),
                self.tile,
                observed if self._record_observed else None,
            )
        )

    def __exit__(self, kind, error, trace):
        if kind is None:
            self.writer.close()
        else:
            self.writer.abort()
        return self._target.__exit__(kind, error, trace)
