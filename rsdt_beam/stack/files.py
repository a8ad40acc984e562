"""Stage 2's files: `{j}_{i}.tfrecords` per tile and `metadata.json` (rsdtlib's layout).

Read without TensorFlow, so Stage 3 can consume stacks written by rsdt_beam
or by rsdtlib itself.
"""

from __future__ import annotations

import numpy as np

from rsdt_beam import fs
from rsdt_beam.common.modalities import BandCounts
from rsdt_beam.common.names import METADATA_FILE, RSDTLIB_METADATA_KEYS, TILE_FILE, tile_file_name
from rsdt_beam.records import parse_example, parse_stack_record, parse_tensor
from rsdt_beam.stack.rules import TileStack
from rsdt_beam.tfrecord import read_records


def read_stack_metadata(stack_dir: str) -> dict:
    path = fs.join(stack_dir, METADATA_FILE)
    if not fs.exists(path):
        raise FileNotFoundError(f"{path} not found: {stack_dir} is no complete Stage 2 output "
                                f"(metadata.json is written last)")
    metadata = fs.read_json(path)
    missing = [key for key in RSDTLIB_METADATA_KEYS[:4] if key not in metadata]
    if missing:
        raise ValueError(f"{path} lacks {missing}")
    return metadata


def band_counts(metadata: dict) -> BandCounts:
    """The band counts metadata.json gives (rsdtlib's `bands_sar`, `bands_opt`)."""
    return BandCounts(int(metadata["bands_sar"]), int(metadata["bands_opt"]))


def list_tiles(stack_dir: str) -> list[tuple[int, int]]:
    """Tile indices of the `{j}_{i}.tfrecords` files in a stack folder, row-major."""
    tiles = []
    for name in fs.list_children(stack_dir):
        match = TILE_FILE.match(name)
        if match:
            tiles.append((int(match.group(1)), int(match.group(2))))
    return sorted(tiles)


def tile_timestamps(stack_dir: str, tile: tuple[int, int]) -> np.ndarray:
    """The time stamps written for one tile, in file order (only `Timestamp` is decoded)."""
    path = fs.join(stack_dir, tile_file_name(tile))
    with fs.open_read(path) as raw:
        return np.asarray([float(parse_tensor(parse_example(payload)["Timestamp"]))
                           for payload in read_records(raw, gzip=True, name=path)], np.float64)


def read_tile_stack(stack_dir: str, tile: tuple[int, int], metadata: dict) -> TileStack:
    """One tile's stack, checked against the metadata's tile size and band counts."""
    path = fs.join(stack_dir, tile_file_name(tile))
    bands = band_counts(metadata)
    shapes = {"SAR_ascending": (metadata["tile_size_y"], metadata["tile_size_x"], bands.sar),
              "OPT": (metadata["tile_size_y"], metadata["tile_size_x"], bands.opt)}
    shapes["SAR_descending"] = shapes["SAR_ascending"]
    times, frames, observed = [], [], []
    with fs.open_read(path) as raw:
        for n, payload in enumerate(read_records(raw, gzip=True, name=path)):
            timestamp, asc, dsc, opt, seen = parse_stack_record(payload)
            for name, array in zip(("SAR_ascending", "SAR_descending", "OPT"), (asc, dsc, opt)):
                if array.shape != tuple(shapes[name]):
                    raise ValueError(f"{path} record {n}: {name} has shape {array.shape}, "
                                     f"metadata.json says {tuple(shapes[name])}")
            if times and timestamp <= times[-1]:
                raise ValueError(f"{path} record {n}: time stamps are not increasing")
            times.append(timestamp)
            frames.append(np.concatenate([asc, dsc, opt], axis=-1).astype(np.float32, copy=False))
            observed.append(seen)
    shape = (0, metadata["tile_size_y"], metadata["tile_size_x"], bands.total)
    recorded = bool(observed) and all(seen is not None for seen in observed)
    return TileStack(tile, np.asarray(times, np.float64),
                     np.stack(frames) if frames else np.zeros(shape, np.float32), bands,
                     np.stack(observed) if recorded else None)
