"""Per-tile predictions stitched into maps, and maps as GeoTIFFs.

Neighbouring tiles overlap by `2*deadzone` pixels (rsdtlib's tiling). In a
map every pixel comes from the tile whose centre part holds it: tile
`(j, i)` provides rows `[j*stride + deadzone_y, (j+1)*stride + deadzone_y)`
(likewise columns), which drops each tile's deadzone where a neighbour
covers it; along the area's outer edge the border tiles provide their
deadzone too unless `trim_edges` is set. Pixels no tile covers (the
bottom/right leftovers of the tiling) and tiles without a prediction are
`nodata`. A model may predict the whole tile `[ty, tx(, c)]` or only its
centre `[ty - 2*dz_y, tx - 2*dz_x(, c)]`.

`stitch` builds any window of a map from the tiles that provide it: the
pipeline stitches one tile group (a rectangle of tiles, `group_window`) at
a time and writes the map block by block from the groups' parts
(`blocks_of_parts`), so no step holds a whole map
(`rsdt_beam.inference.WriteMaps`). `encode_geotiff`/`write_geotiff` write a
whole map held in memory, with the same GeoTIFF profile
(`rsdt_beam.rasters.geotiff_profile`).

Stitching is pure numpy; the GeoTIFF functions use rasterio and
`rsdt_beam.fs` (local paths or gs://).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable, Mapping

import numpy as np

from rsdt_beam import fs
from rsdt_beam.common.times import iso_time, time_name
from rsdt_beam.grid import Grid, PixelWindow, ReadChunk, TileLayout
from rsdt_beam.rasters import geotiff_profile


@dataclasses.dataclass(frozen=True, order=True)
class MapKey:
    """One map: the window time it shows (window ids and times agree across tiles)."""

    window_id: int
    window_start: int
    window_end: int

    @property
    def stem(self) -> str:
        return f"{time_name(self.window_start)}_{time_name(self.window_end)}"

    @property
    def file_name(self) -> str:
        return f"{self.stem}.tif"

    def tags(self) -> dict:
        return {
            "RSDT_WINDOW_ID": str(self.window_id),
            "RSDT_WINDOW_START": iso_time(self.window_start),
            "RSDT_WINDOW_END": iso_time(self.window_end),
        }


def core_window(layout: TileLayout, j: int, i: int, trim_edges: bool = False) -> PixelWindow:
    """The grid pixels tile `(j, i)` provides in a map (its centre; see the module docstring)."""
    tile = layout.tile_window(j, i)
    dy, dx = layout.deadzone_y, layout.deadzone_x
    return PixelWindow(
        tile.row_start + (dy if j > 0 or trim_edges else 0),
        tile.row_stop - (dy if j < layout.num_tiles_y - 1 or trim_edges else 0),
        tile.col_start + (dx if i > 0 or trim_edges else 0),
        tile.col_stop - (dx if i < layout.num_tiles_x - 1 or trim_edges else 0),
    )


def prediction_shapes(layout: TileLayout) -> tuple[tuple[int, int], tuple[int, int]]:
    """The `[y, x]` a tile's prediction may have: the whole tile, or its centre without the deadzone."""
    return (
        (layout.tile_size_y, layout.tile_size_x),
        (layout.tile_size_y - 2 * layout.deadzone_y, layout.tile_size_x - 2 * layout.deadzone_x),
    )


def _tile_origin(layout: TileLayout, j: int, i: int, prediction: np.ndarray) -> tuple[int, int]:
    """Grid (row, col) of a prediction's first pixel: the tile's corner, or its centre's."""
    tile = layout.tile_window(j, i)
    full, centre = prediction_shapes(layout)
    if prediction.shape[:2] == full:
        return tile.row_start, tile.col_start
    if prediction.shape[:2] == centre:
        return tile.row_start + layout.deadzone_y, tile.col_start + layout.deadzone_x
    raise ValueError(
        f"prediction of tile ({j}, {i}) has shape {prediction.shape}; expected the tile "
        f"{full} or its centre without deadzone {centre}, optionally with channels"
    )


def group_window(group: ReadChunk, trim_edges: bool = False) -> PixelWindow:
    """The grid pixels a rectangle of tiles provides in a map: the union of its tiles' core windows (a
    rectangle: neighbouring core windows meet without overlap)."""
    first = core_window(group.layout, group.j_start, group.i_start, trim_edges)
    last = core_window(group.layout, group.j_stop - 1, group.i_stop - 1, trim_edges)
    return PixelWindow(first.row_start, last.row_stop, first.col_start, last.col_stop)


def blocks_of_parts(
    height: int, width: int, block_shape: tuple[int, int], parts: Iterable[PixelWindow]
) -> list[tuple[PixelWindow, list[PixelWindow]]]:
    """The blocks of a `height x width` map (`block_shape` px, row-major, cut at the map's edge), each with
    the `parts` that overlap it. A writer that takes whole blocks has GDAL compress each block once (a
    window that cuts a block makes GDAL write the block at every cut and the file grow)."""
    rows, cols = block_shape
    overlapping = collections.defaultdict(list)
    for part in parts:
        for r in range(part.row_start // rows, (part.row_stop - 1) // rows + 1):
            for c in range(part.col_start // cols, (part.col_stop - 1) // cols + 1):
                overlapping[r, c].append(part)
    return [
        (
            PixelWindow(top, min(top + rows, height), left, min(left + cols, width)),
            overlapping[top // rows, left // cols],
        )
        for top in range(0, height, rows)
        for left in range(0, width, cols)
    ]


def stitch(
    layout: TileLayout,
    predictions: Mapping[tuple[int, int], np.ndarray],
    trim_edges: bool = False,
    nodata: float = np.nan,
    dtype=np.float32,
    window: PixelWindow | None = None,
) -> np.ndarray:
    """The map `[height, width]` (or `[height, width, c]`) of `window` (default: the whole area) from
    per-tile predictions; pixels of `window` that no given tile provides are `nodata`."""
    if not predictions:
        raise ValueError("no tile predictions to stitch")
    window = window or PixelWindow(0, layout.height, 0, layout.width)
    arrays = {(int(j), int(i)): np.asarray(p) for (j, i), p in predictions.items()}
    channels = {a.shape[2:] for a in arrays.values()}
    if len(channels) > 1 or any(a.ndim not in (2, 3) for a in arrays.values()):
        raise ValueError(
            f"tile predictions must all be [y, x] or all [y, x, c] alike, got shapes "
            f"{sorted({a.shape for a in arrays.values()})}"
        )
    out = np.full((window.height, window.width, *channels.pop()), nodata, dtype)
    for (j, i), prediction in arrays.items():
        row0, col0 = _tile_origin(layout, j, i, prediction)
        placed = PixelWindow(row0, row0 + prediction.shape[0], col0, col0 + prediction.shape[1])
        provided = core_window(layout, j, i, trim_edges).intersection(placed)
        provided = provided and provided.intersection(window)
        if provided:  # a tile outside `window` provides nothing to it
            out[provided.relative_to(window).slices] = prediction[provided.relative_to(placed).slices]
    return out


def encode_geotiff(
    array: np.ndarray, grid: Grid, nodata: float | None = np.nan, tags: Mapping[str, str] | None = None
) -> bytes:
    """GeoTIFF bytes of a whole map `[height, width]` or `[height, width, bands]` on `grid`, held in memory
    (the pipeline streams its maps instead: `rsdt_beam.inference.WriteMaps`)."""
    from rasterio.io import MemoryFile

    if array.shape[:2] != (grid.height, grid.width):
        raise ValueError(f"map is {array.shape[0]} x {array.shape[1]} px but the grid is {grid.height} x {grid.width}")
    bands = array[..., None] if array.ndim == 2 else array
    with MemoryFile() as memory:
        with memory.open(**geotiff_profile(grid, bands.shape[2], bands.dtype.name, nodata)) as dataset:
            dataset.write(np.moveaxis(bands, -1, 0))
            dataset.update_tags(**dict(tags or {}))
        return memory.read()


def write_geotiff(
    path: str, array: np.ndarray, grid: Grid, nodata: float | None = np.nan, tags: Mapping[str, str] | None = None
) -> str:
    """Writes a whole map atomically (local or gs://); returns the path."""
    fs.write_bytes(path, encode_geotiff(array, grid, nodata, tags))
    return path


def read_geotiff(path: str) -> tuple[np.ndarray, Grid, dict]:
    """(array `[height, width]` or `[height, width, bands]`, grid, tags) of a map."""
    from rasterio.io import MemoryFile

    with MemoryFile(fs.read_bytes(path)) as memory, memory.open() as dataset:
        data = np.moveaxis(dataset.read(), 0, -1)
        grid = Grid(dataset.crs.to_string(), tuple(dataset.transform)[:6], dataset.height, dataset.width)
        tags = dataset.tags()
    return (data[..., 0] if data.shape[2] == 1 else data), grid, tags
