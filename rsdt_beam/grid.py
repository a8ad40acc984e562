"""The area's pixel grid and how it is cut into tiles and read chunks.

Pure arithmetic: no Beam, no I/O. Every observation of a run lands on one
`Grid`; `TileLayout` holds rsdtlib's tiling rule (tiles of `tile_size` with
stride `tile_size - 2*deadzone`, whole tiles only, indexed `(j, i)`), and
`ReadChunk` groups neighbouring tiles into one spatial read so Stage 1
sources touch each pixel window once.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterator
from typing import NamedTuple


class PixelWindow(NamedTuple):
    """Rows `[row_start, row_stop)` and columns `[col_start, col_stop)` of the grid."""

    row_start: int
    row_stop: int
    col_start: int
    col_stop: int

    @property
    def height(self) -> int:
        return self.row_stop - self.row_start

    @property
    def width(self) -> int:
        return self.col_stop - self.col_start

    @property
    def slices(self) -> tuple[slice, slice]:
        """The `[rows, cols]` index of these pixels in an array of the whole grid (after `relative_to`: in an
        array of that window)."""
        return slice(self.row_start, self.row_stop), slice(self.col_start, self.col_stop)

    def relative_to(self, origin: PixelWindow) -> PixelWindow:
        """This window in the pixels of an array whose first pixel is `origin`'s."""
        return PixelWindow(
            self.row_start - origin.row_start,
            self.row_stop - origin.row_start,
            self.col_start - origin.col_start,
            self.col_stop - origin.col_start,
        )

    def intersection(self, other: PixelWindow) -> PixelWindow | None:
        """The pixels both windows hold, or None."""
        rows = max(self.row_start, other.row_start), min(self.row_stop, other.row_stop)
        cols = max(self.col_start, other.col_start), min(self.col_stop, other.col_stop)
        return PixelWindow(*rows, *cols) if rows[0] < rows[1] and cols[0] < cols[1] else None


@dataclasses.dataclass(frozen=True)
class Grid:
    """A north-up pixel grid: CRS, affine transform and shape.

    `transform` is the affine `(a, b, c, d, e, f)` with
    `x = a*col + b*row + c` and `y = d*col + e*row + f` (rasterio's order).
    """

    crs: str
    transform: tuple[float, float, float, float, float, float]
    height: int
    width: int

    def __post_init__(self):
        if self.height <= 0 or self.width <= 0:
            raise ValueError(f"grid shape must be positive, got {self.height} x {self.width}")
        object.__setattr__(self, "transform", tuple(float(v) for v in self.transform))

    @classmethod
    def from_bounds(
        cls, crs: str, left: float, bottom: float, right: float, top: float, height: int, width: int
    ) -> Grid:
        return cls(crs, ((right - left) / width, 0.0, left, 0.0, -(top - bottom) / height, top), height, width)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) of the whole grid."""
        a, _, c, _, e, f = self.transform
        xs = (c, c + a * self.width)
        ys = (f, f + e * self.height)
        return min(xs), min(ys), max(xs), max(ys)

    def window_transform(self, window: PixelWindow) -> tuple[float, ...]:
        """The affine transform of a sub-window's top-left pixel."""
        a, b, c, d, e, f = self.transform
        return (
            a,
            b,
            c + a * window.col_start + b * window.row_start,
            d,
            e,
            f + d * window.col_start + e * window.row_start,
        )

    def matches(self, other: Grid, tolerance: float = 1e-6) -> bool:
        """Same shape, same CRS and the same transform up to `tolerance` of a pixel."""
        if (self.height, self.width) != (other.height, other.width) or self.crs != other.crs:
            return False
        pixel = max(abs(self.transform[0]), abs(self.transform[4]))
        return all(
            math.isclose(u, v, rel_tol=0, abs_tol=tolerance * pixel) for u, v in zip(self.transform, other.transform)
        )

    def describe(self) -> str:
        return f"{self.height} x {self.width} px, {self.crs}, transform {self.transform}"

    def to_json(self) -> dict:
        return {"crs": self.crs, "transform": list(self.transform), "height": self.height, "width": self.width}

    @classmethod
    def from_json(cls, obj: dict | str) -> Grid:
        if isinstance(obj, (str, bytes)):
            obj = json.loads(obj)
        return cls(obj["crs"], tuple(obj["transform"]), int(obj["height"]), int(obj["width"]))


@dataclasses.dataclass(frozen=True)
class TileLayout:
    """rsdtlib's tiling of a `height x width` area.

    Tile `(j, i)` covers rows `[j*stride_y, j*stride_y + tile_size_y)` and
    columns `[i*stride_x, i*stride_x + tile_size_x)` with
    `stride = tile_size - 2*deadzone`; neighbours overlap by `2*deadzone` and
    the bottom/right leftovers that do not fill a whole tile are dropped.
    """

    height: int
    width: int
    tile_size_y: int
    tile_size_x: int
    deadzone_y: int = 0
    deadzone_x: int = 0

    def __post_init__(self):
        for name in ("tile_size_y", "tile_size_x"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name, tile in (("deadzone_y", self.tile_size_y), ("deadzone_x", self.tile_size_x)):
            dz = getattr(self, name)
            if dz < 0 or 2 * dz >= tile:
                raise ValueError(f"{name}={dz} is too large: 2*deadzone must be smaller than the tile size {tile}")
        if self.tile_size_y > self.height or self.tile_size_x > self.width:
            raise ValueError(
                f"tile size {self.tile_size_y} x {self.tile_size_x} is larger than the area "
                f"{self.height} x {self.width}"
            )

    @property
    def stride_y(self) -> int:
        return self.tile_size_y - 2 * self.deadzone_y

    @property
    def stride_x(self) -> int:
        return self.tile_size_x - 2 * self.deadzone_x

    @property
    def num_tiles_y(self) -> int:
        return (self.height - 2 * self.deadzone_y) // self.stride_y

    @property
    def num_tiles_x(self) -> int:
        return (self.width - 2 * self.deadzone_x) // self.stride_x

    @property
    def num_tiles(self) -> int:
        return self.num_tiles_y * self.num_tiles_x

    def tiles(self) -> Iterator[tuple[int, int]]:
        """All tile indices `(j, i)` in row-major order."""
        for j in range(self.num_tiles_y):
            for i in range(self.num_tiles_x):
                yield j, i

    def tile_window(self, j: int, i: int) -> PixelWindow:
        if not (0 <= j < self.num_tiles_y and 0 <= i < self.num_tiles_x):
            raise IndexError(f"tile ({j}, {i}) outside {self.num_tiles_y} x {self.num_tiles_x} tiles")
        row, col = j * self.stride_y, i * self.stride_x
        return PixelWindow(row, row + self.tile_size_y, col, col + self.tile_size_x)

    def chunks(self, chunk_size: int) -> list[ReadChunk]:
        """Blocks of whole tiles whose pixel window is about `chunk_size` px on a side, in row-major order.

        A chunk of `ny x nx` tiles reads `(ny-1)*stride + tile_size` rows (and
        likewise columns), so each observation is read once per chunk and the
        deadzone overlap between chunks is the only pixel read twice.
        """
        per_y, per_x = self._tiles_per_chunk(chunk_size)
        return [
            self.chunk_of(j0, i0, chunk_size)
            for j0 in range(0, self.num_tiles_y, per_y)
            for i0 in range(0, self.num_tiles_x, per_x)
        ]

    def chunk_of(self, j: int, i: int, chunk_size: int) -> ReadChunk:
        """The chunk of `chunks(chunk_size)` that holds tile `(j, i)`."""
        per_y, per_x = self._tiles_per_chunk(chunk_size)
        j0, i0 = j - j % per_y, i - i % per_x
        return ReadChunk(self, j0, min(j0 + per_y, self.num_tiles_y), i0, min(i0 + per_x, self.num_tiles_x))

    def _tiles_per_chunk(self, chunk_size: int) -> tuple[int, int]:
        return (
            max(1, (chunk_size - 2 * self.deadzone_y) // self.stride_y),
            max(1, (chunk_size - 2 * self.deadzone_x) // self.stride_x),
        )

    def to_metadata(self) -> dict:
        return {
            "tile_size_y": self.tile_size_y,
            "tile_size_x": self.tile_size_x,
            "deadzone_y": self.deadzone_y,
            "deadzone_x": self.deadzone_x,
            "num_tiles_y": self.num_tiles_y,
            "num_tiles_x": self.num_tiles_x,
        }


@dataclasses.dataclass(frozen=True)
class ReadChunk:
    """Tiles `[j_start, j_stop) x [i_start, i_stop)` of a layout, read as one pixel window."""

    layout: TileLayout
    j_start: int
    j_stop: int
    i_start: int
    i_stop: int

    @property
    def window(self) -> PixelWindow:
        first = self.layout.tile_window(self.j_start, self.i_start)
        last = self.layout.tile_window(self.j_stop - 1, self.i_stop - 1)
        return PixelWindow(first.row_start, last.row_stop, first.col_start, last.col_stop)

    def tiles(self) -> Iterator[tuple[tuple[int, int], PixelWindow]]:
        """Each tile's index and its window relative to this chunk's window."""
        origin = self.window
        for j in range(self.j_start, self.j_stop):
            for i in range(self.i_start, self.i_stop):
                w = self.layout.tile_window(j, i)
                yield (
                    (j, i),
                    PixelWindow(
                        w.row_start - origin.row_start,
                        w.row_stop - origin.row_start,
                        w.col_start - origin.col_start,
                        w.col_stop - origin.col_start,
                    ),
                )

    def __str__(self) -> str:
        return f"tiles j[{self.j_start}:{self.j_stop}] i[{self.i_start}:{self.i_stop}]"


@dataclasses.dataclass(frozen=True)
class WorkItems:
    """The retryable work items of a Stages 2 + 3 run: one per read chunk (Stage 2 streams each through
    time), then one per tile (Stage 3 streams each tile's frames into windows)."""

    read_chunks: int
    tiles: int

    @property
    def total(self) -> int:
        return self.read_chunks + self.tiles

    def describe(self) -> str:
        return f"{self.total} work items ({self.read_chunks} read chunks for Stage 2, {self.tiles} tiles for Stage 3)"


DEFAULT_CHUNK_SIZE = 256  # px a side of a Stage 2 read chunk: whole 256 px internal tiles of the store's GeoTIFFs


def work_items(layout: TileLayout, chunk_size: int, selector: Callable[[int, int], bool] | None = None) -> WorkItems:
    """How many work items a run over `layout` has, with only the tiles `selector(j, i)` picks."""
    tiles = [tile for tile in layout.tiles() if selector is None or selector(*tile)]
    chunks = [
        chunk
        for chunk in layout.chunks(chunk_size)
        if selector is None or any(selector(*tile) for tile, _ in chunk.tiles())
    ]
    return WorkItems(len(chunks), len(tiles))
