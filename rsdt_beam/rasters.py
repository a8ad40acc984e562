"""GeoTIFFs written window by window: a writer holds one window, never the whole raster.

`StreamedGeoTiff` opens the GeoTIFF on a local temporary file, takes pixel
windows one after another (`write`), and on a clean exit publishes the file
atomically at its final path, local or gs:// (a reader never sees it half
written; on an error the temporary file is removed and nothing is published).

Why windows in row-major order: GDAL compresses a tile when it is complete
and drops it from its cache, so the memory of a writer is a few tiles plus
the window it is given (measured: a 4096 x 4096 px, 13-band float32 raster,
870 MB, written in 256 px windows peaks at about 100 MiB). A window that cuts
a tile makes GDAL write the part-filled tile when it moves on and the whole
tile again later, the first copy left as a hole: the pixels are right, the
file larger (3.4x for 252 px windows of a 1024 px float32 raster, 4.5x for
100 px windows of a 600 x 520 px one), so writers give whole tiles
(`rsdt_beam.acquire.geotiff.block_windows`, `rsdt_beam.maps.blocks_of_parts`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Mapping, Sequence

import numpy as np
import rasterio
from rasterio.windows import Window as RasterioWindow

from rsdt_beam import fs
from rsdt_beam.grid import Grid, PixelWindow

TILE_PX = 256  # internal tiles of every GeoTIFF the project writes (when the raster is at least that large)
_CACHE_MB = 64  # GDAL's block cache while writing: room for a row of tiles of a wide, many-band raster


def geotiff_profile(grid: Grid, bands: int, dtype: str, nodata: float | None = None, predictor: int = 1) -> dict:
    """The GeoTIFF profile of the project's rasters on `grid`: DEFLATE, pixel interleaved, 256 x 256 px
    internal tiles when the grid is at least that large each way (striped otherwise)."""
    profile = dict(
        driver="GTiff",
        height=grid.height,
        width=grid.width,
        count=bands,
        dtype=dtype,
        crs=grid.crs,
        transform=rasterio.Affine(*grid.transform),
        compress="deflate",
        interleave="pixel",
    )
    if predictor != 1:
        profile["predictor"] = predictor
    if nodata is not None:
        profile["nodata"] = nodata
    if grid.height >= TILE_PX and grid.width >= TILE_PX:
        profile.update(tiled=True, blockxsize=TILE_PX, blockysize=TILE_PX)
    return profile


def row_major(windows: Sequence[PixelWindow]) -> list[PixelWindow]:
    """`windows` in the order a writer should take them: row-major by their first pixel."""
    return sorted(windows, key=lambda w: (w.row_start, w.col_start))


_WRITING = threading.Lock()


class StreamedGeoTiff:
    """A GeoTIFF on `grid` written window by window, published at `path` when the `with` block ends cleanly.

    `write(window, bands)` takes `bands` `[h, w, count]` (or `[h, w]` for one band) at `window`;
    `valid` `[h, w]` (bool) writes the internal mask band (GDAL's per-dataset mask, shown transparent by
    QGIS) where the profile asks for one (`mask=True`). Tags and band descriptions are set at open.
    """

    def __init__(
        self,
        path: str,
        profile: Mapping,
        mask: bool = False,
        tags: Mapping[str, str] | None = None,
        band_names: Sequence[str] = (),
        run_id: str = "",
    ):
        self.path = path
        self._profile = dict(profile)
        self._mask = mask
        self._tags = dict(tags or {})
        self._band_names = tuple(band_names)
        self._run_id = run_id
        self._temporary = ""
        self._stack = contextlib.ExitStack()
        self._dataset = None
        self.pixels_written = 0

    def __enter__(self) -> StreamedGeoTiff:
        if fs.is_remote(self.path):  # GDAL needs a seekable local file; it is uploaded when complete
            handle, self._temporary = tempfile.mkstemp(suffix=".tif")
            os.close(handle)
        else:
            directory, name = os.path.split(os.path.abspath(self.path))
            os.makedirs(directory, exist_ok=True)
            self._temporary = os.path.join(directory, fs.temporary_name(name, self._run_id))
        try:
            # One writer at a time per process: GDAL's block cache and GDAL_CACHEMAX are process-wide, and two
            # files written at once by threads (the DirectRunner's default multi_threading) flush their blocks
            # in another order: the same pixels in other bytes. Held until the dataset is closed.
            self._stack.enter_context(_WRITING)
            self._stack.enter_context(rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True, GDAL_CACHEMAX=_CACHE_MB))
            self._dataset = self._stack.enter_context(rasterio.open(self._temporary, "w", **self._profile))
            if self._tags:
                self._dataset.update_tags(**self._tags)
            for index, name in enumerate(self._band_names, start=1):
                self._dataset.set_band_description(index, name)
        except BaseException:
            self._discard()
            raise
        return self

    def write(self, window: PixelWindow, bands: np.ndarray, valid: np.ndarray | None = None) -> None:
        bands = bands[..., None] if bands.ndim == 2 else bands
        if bands.shape[:2] != (window.height, window.width):
            raise ValueError(
                f"{self.path}: data of {bands.shape[:2]} px for a window of {window.height} x {window.width}"
            )
        rio_window = RasterioWindow(window.col_start, window.row_start, window.width, window.height)
        self._dataset.write(np.moveaxis(bands, -1, 0), window=rio_window)
        if self._mask:
            mask = np.ones(bands.shape[:2], bool) if valid is None else valid
            self._dataset.write_mask(np.where(mask, 255, 0).astype(np.uint8), window=rio_window)
        self.pixels_written += window.height * window.width

    def __exit__(self, kind, error, traceback) -> None:
        if kind is not None:
            self._discard()
            return
        try:
            self._stack.close()  # closes the dataset: the last tiles and the header are written
            if fs.is_remote(self.path):
                with open(self._temporary, "rb") as source:
                    fs.upload(source, self.path, self._run_id)
                os.remove(self._temporary)
            else:
                os.replace(self._temporary, self.path)
        except BaseException:
            self._discard()
            raise

    def _discard(self) -> None:
        with contextlib.suppress(Exception):
            self._stack.close()
        with contextlib.suppress(OSError):
            os.remove(self._temporary)
