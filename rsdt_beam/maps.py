"""Per-tile predictions stitched into whole-area maps, and maps as GeoTIFFs.

Neighbouring tiles overlap by `2*deadzone` pixels (rsdtlib's tiling). In a
map every pixel comes from the tile whose centre part holds it: tile
`(j, i)` provides rows `[j*stride + deadzone_y, (j+1)*stride + deadzone_y)`
(likewise columns), which drops each tile's deadzone where a neighbour
covers it; along the area's outer edge the border tiles provide their
deadzone too unless `trim_edges` is set. Pixels no tile covers (the
bottom/right leftovers of the tiling) and tiles without a prediction are
`nodata`. A model may predict the whole tile `[ty, tx(, c)]` or only its
centre `[ty - 2*dz_y, tx - 2*dz_x(, c)]`.

Stitching is pure numpy; the GeoTIFF functions use rasterio and
`rsdt_beam.fs` (local paths or gs://).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from rsdt_beam import fs
from rsdt_beam.common.times import iso_time, time_name
from rsdt_beam.grid import Grid, PixelWindow, TileLayout


@dataclasses.dataclass(frozen=True, order=True)
class MapKey:
    """One map: the window time it shows (window ids and times agree across tiles)."""

    window_id: int
    window_start: int
    window_end: int

    @property
    def file_name(self) -> str:
        return f"{time_name(self.window_start)}_{time_name(self.window_end)}.tif"

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


def stitch(
    layout: TileLayout,
    predictions: Mapping[tuple[int, int], np.ndarray],
    trim_edges: bool = False,
    nodata: float = np.nan,
    dtype=np.float32,
) -> np.ndarray:
    """The whole-area map `[height, width]` (or `[height, width, c]`) from per-tile predictions."""
    if not predictions:
        raise ValueError("no tile predictions to stitch")
    arrays = {(int(j), int(i)): np.asarray(p) for (j, i), p in predictions.items()}
    channels = {a.shape[2:] for a in arrays.values()}
    if len(channels) > 1 or any(a.ndim not in (2, 3) for a in arrays.values()):
        raise ValueError(
            f"tile predictions must all be [y, x] or all [y, x, c] alike, got shapes "
            f"{sorted({a.shape for a in arrays.values()})}"
        )
    out = np.full((layout.height, layout.width, *channels.pop()), nodata, dtype)
    for (j, i), prediction in arrays.items():
        core = core_window(layout, j, i, trim_edges)
        row0, col0 = _tile_origin(layout, j, i, prediction)
        rows = (max(core.row_start, row0), min(core.row_stop, row0 + prediction.shape[0]))
        cols = (max(core.col_start, col0), min(core.col_stop, col0 + prediction.shape[1]))
        out[rows[0] : rows[1], cols[0] : cols[1]] = prediction[
            rows[0] - row0 : rows[1] - row0, cols[0] - col0 : cols[1] - col0
        ]
    return out


def encode_geotiff(
    array: np.ndarray, grid: Grid, nodata: float | None = np.nan, tags: Mapping[str, str] | None = None
) -> bytes:
    """GeoTIFF bytes of a map `[height, width]` or `[height, width, bands]` on `grid`."""
    import rasterio
    from rasterio.io import MemoryFile

    if array.shape[:2] != (grid.height, grid.width):
        raise ValueError(f"map is {array.shape[0]} x {array.shape[1]} px but the grid is {grid.height} x {grid.width}")
    bands = array[..., None] if array.ndim == 2 else array
    profile = dict(
        driver="GTiff",
        height=grid.height,
        width=grid.width,
        count=bands.shape[2],
        dtype=bands.dtype.name,
        crs=grid.crs,
        transform=rasterio.Affine(*grid.transform),
        nodata=nodata,
        compress="deflate",
        interleave="pixel",
    )
    if grid.height >= 256 and grid.width >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    with MemoryFile() as memory:
        with memory.open(**profile) as dataset:
            dataset.write(np.moveaxis(bands, -1, 0))
            dataset.update_tags(**dict(tags or {}))
        return memory.read()


def write_geotiff(
    path: str, array: np.ndarray, grid: Grid, nodata: float | None = np.nan, tags: Mapping[str, str] | None = None
) -> str:
    """Writes a map atomically (local or gs://); returns the path."""
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
