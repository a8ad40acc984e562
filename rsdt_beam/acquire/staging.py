"""Blocks staged in the observation store between reading them and writing their observation.

    <store>/.convert_blocks/<modality>/<time>/<row_start>_<row_stop>_<col_start>_<col_stop>.npz   convert
    <store>/.fetch_chunks/<modality>/<time>/<row_start>_<row_stop>_<col_start>_<col_stop>.npz     fetch

One worker reads a block of an observation (convert: warps it from the source; fetch: downloads it)
and stages it as an uncompressed NumPy archive of `data` (float32 `[h, w, bands]`) and `valid`
(bool `[h, w]`), written atomically under a temporary name carrying the run id. Only a
reference to the file travels through the GroupByKey that gathers an observation's blocks; the
observation's writer then streams the staged blocks into its GeoTIFF one at a time in row-major order
(`write_staged_observation`), so no worker holds a whole observation and no pixels cross the shuffle.

Why whole blocks: a block is the unit the reading step holds anyway (a `--convert_block_size` or
`--fetch_chunk_size` block), so the writer's memory is bounded the same way, whatever the observation's
size. On a grid the store tiles, blocks are whole 256 px tiles (`geotiff.block_windows`), so every write
completes its tiles: GDAL compresses each once and drops it. (A tile two blocks shared would be written
when the first block moves on and again, whole, after the second, leaving the first copy as a hole: 3.5x
the file size measured with 100 px blocks of convert, 3.3x of fetch.)
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Sequence

import numpy as np

from rsdt_beam import fs
from rsdt_beam.acquire.store import ObservationWriter
from rsdt_beam.common.times import time_name
from rsdt_beam.grid import Grid, PixelWindow
from rsdt_beam.rasters import row_major

CONVERT_DIR = ".convert_blocks"
FETCH_DIR = ".fetch_chunks"


def block_path(store: str, folder: str, modality: str, time: float, window: PixelWindow) -> str:
    """Where a block of an observation is staged; `folder` is CONVERT_DIR or FETCH_DIR."""
    name = f"{window.row_start}_{window.row_stop}_{window.col_start}_{window.col_stop}.npz"
    return fs.join(store, folder, modality, time_name(time), name)


def staged_paths(store: str, folder: str) -> set[str]:
    """Every block staged under `folder` (complete files: temporaries are hidden)."""
    return {
        path for path in fs.glob(fs.join(store, folder, "*", "*", "*.npz")) if not fs.basename(path).startswith(".")
    }


def stage_block(path: str, data: np.ndarray, valid: np.ndarray, run_id: str = "") -> None:
    buffer = io.BytesIO()
    np.savez(buffer, data=data, valid=valid)
    fs.write_bytes(path, buffer.getvalue(), run_id)


def read_block(path: str) -> tuple[np.ndarray, np.ndarray]:
    """`(data, valid)` of a staged block (OSError when it is gone)."""
    with fs.open_read(path) as f, np.load(f) as archive:
        return archive["data"], archive["valid"]


def valid_pixels(path: str) -> int:
    """The valid pixel count of a staged block; only its mask is read."""
    with fs.open_read(path) as f, np.load(f) as archive:
        return int(np.count_nonzero(archive["valid"]))


def write_staged_observation(
    store: str,
    grid: Grid,
    modality: str,
    time: float,
    blocks: Iterable[tuple[PixelWindow, str | None]],
    band_names: Sequence[str],
    tags: dict | None = None,
    dtype: str = "float32",
    run_id: str = "",
) -> str:
    """Writes an observation from its blocks `(window, staged path)`, covering the grid, one at a time in
    row-major order; a block without a path (nothing valid there, or never read) is written as zeros,
    invalid. The path of the store file; nothing is published if a block cannot be read (OSError)."""
    paths = dict(blocks)
    bands = len(band_names)
    with ObservationWriter(store, grid, bands, modality, time, band_names, tags, dtype, run_id) as writer:
        for window in row_major(list(paths)):
            path = paths[window]
            if path is None:
                shape = (window.height, window.width)
                data, valid = np.zeros((*shape, bands), np.float32), np.zeros(shape, bool)
            else:
                data, valid = read_block(path)
            writer.write(window, data, valid)
    return writer.path


def remove_blocks(paths: Iterable[str]) -> None:
    """Deletes staged blocks; one removed already (by another attempt of the same step) is no error."""
    for path in paths:
        with contextlib.suppress(OSError):
            fs.delete_if_exists(path)
