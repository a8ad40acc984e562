"""The project's own Stage 1 format: an observation store of tiled GeoTIFFs.

    <root>/grid.json                                   the run's grid (CRS, transform, shape)
    <root>/<modality>/<%Y%m%dT%H%M%S>.tif              one observation
    <root>/rejected/<modality>_<%Y%m%dT%H%M%S>.json    an observation set aside, with the reason
    <root>/.convert_blocks/, <root>/.fetch_chunks/     blocks staged while a run writes (acquire.staging)

Each observation is a georeferenced GeoTIFF on the run's grid: float32
bands (or convert's `--output_dtype`), 256 x 256 internal tiles when the
grid is at least 256 px each way (windowed reads touch only the blocks they
need; smaller grids are striped), DEFLATE with the floating-point predictor
(horizontal differencing for integer dtypes), and the validity mask as the
GDAL internal mask band, so QGIS and rasterio show invalid pixels as
transparent. Tags record the modality and acquisition time; band
descriptions the band names. `ObservationWriter` writes one window by
window (rsdt_beam.rasters.StreamedGeoTiff) to a temporary name and renames
it when complete, so a listed file is always complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence

import numpy as np
import rasterio
from rasterio.windows import Window as RasterioWindow

from rsdt_beam import fs
from rsdt_beam.common.modalities import MODALITIES
from rsdt_beam.common.names import BANDS_FILE, GRID_FILE
from rsdt_beam.common.observations import ObservationError, ObservationHeader, ObservationRef, Rejection
from rsdt_beam.common.times import iso_time, parse_time_name, time_name
from rsdt_beam.grid import Grid, PixelWindow
from rsdt_beam.outputs import OutputFolder
from rsdt_beam.rasters import StreamedGeoTiff, geotiff_profile

REJECTED_DIR = "rejected"


def observation_path(root: str, modality: str, time: float) -> str:
    return fs.join(root, modality, time_name(time) + ".tif")


BAND_DTYPES = ("float32", "float64", "uint16", "int16", "uint8")


def _as_band_dtype(data: np.ndarray, dtype: str) -> np.ndarray:
    """Bands in the stored dtype; integer dtypes take rounded values and refuse any out of range."""
    if np.dtype(dtype).kind == "f":
        return data.astype(dtype, copy=False)
    limits = np.iinfo(dtype)
    rounded = np.rint(data)
    if rounded.size and (rounded.min() < limits.min or rounded.max() > limits.max):
        raise ValueError(
            f"band values {rounded.min()}..{rounded.max()} do not fit {dtype} (use a float dtype or another divisor)"
        )
    return rounded.astype(dtype)


class ObservationWriter:
    """One observation of the store written window by window (`rasters.StreamedGeoTiff`): `write(window,
    data [h, w, bands], valid [h, w])` stores the bands as `dtype`; the file appears at
    `observation_path(root, modality, time)` when the `with` block ends cleanly, complete or not at all.

    Windows should come in row-major order and, on a tiled grid, cover whole 256 px tiles (a tile two
    windows share is written twice, the file grows; see rsdt_beam.rasters).
    """

    def __init__(
        self,
        root: str,
        grid: Grid,
        bands: int,
        modality: str,
        time: float,
        band_names: Sequence[str] = (),
        tags: dict | None = None,
        dtype: str = "float32",
        run_id: str = "",
    ):
        if dtype not in BAND_DTYPES:
            raise ValueError(f"band dtype must be one of {BAND_DTYPES}, got {dtype!r}")
        self.path = observation_path(root, modality, time)
        self._dtype = dtype
        profile = geotiff_profile(grid, bands, dtype, predictor=3 if np.dtype(dtype).kind == "f" else 2)
        self._file = StreamedGeoTiff(
            self.path,
            profile,
            mask=True,
            tags={"RSDT_MODALITY": modality, "RSDT_TIME": iso_time(time), **(tags or {})},
            band_names=band_names or (),
            run_id=run_id,
        )

    def __enter__(self) -> ObservationWriter:
        self._file.__enter__()
        return self

    def write(self, window: PixelWindow, data: np.ndarray, valid: np.ndarray) -> None:
        self._file.write(window, _as_band_dtype(data, self._dtype), valid)

    def __exit__(self, kind, error, traceback) -> None:
        self._file.__exit__(kind, error, traceback)


def write_observation(
    root: str,
    grid: Grid,
    data: np.ndarray,
    valid: np.ndarray,
    modality: str,
    time: float,
    band_names: Sequence[str] | None = None,
    tags: dict | None = None,
    dtype: str = "float32",
    run_id: str = "",
) -> str:
    """A whole observation held in memory (`data` `[H, W, bands]`, `valid` `[H, W]`) written as one window."""
    height, width, bands = data.shape
    if (height, width) != (grid.height, grid.width) or valid.shape != (height, width):
        raise ValueError(
            f"observation is {height} x {width} px (mask {valid.shape}) but the grid is {grid.height} x {grid.width}"
        )
    with ObservationWriter(root, grid, bands, modality, time, band_names or (), tags, dtype, run_id) as writer:
        writer.write(PixelWindow(0, height, 0, width), data, valid)
    return writer.path


def write_grid(root: str, grid: Grid, run_id: str = "") -> None:
    fs.write_json(fs.join(root, GRID_FILE), grid.to_json(), run_id)


def store_folder(root: str, grid: Grid, source: dict, run_id: str) -> OutputFolder:
    """The store's identity: its grid and how its observations were made (`source`: convert's parameters,
    or Sentinel Hub's); the time range and modalities are not part of it (a store grows)."""
    return OutputFolder(
        root, "observations", "--store", dict(grid=grid.to_json(), **source), run_id, seed_files=(GRID_FILE, BANDS_FILE)
    )


def read_grid(root: str) -> Grid | None:
    path = fs.join(root, GRID_FILE)
    return Grid.from_json(fs.read_json(path)) if fs.exists(path) else None


def rejection_path(root: str, modality: str, time: float) -> str:
    """Where the store records an observation set aside for good (no valid pixel)."""
    return fs.join(root, REJECTED_DIR, f"{modality}_{time_name(time)}.json")


def write_band_description(root: str, description: dict, run_id: str = "") -> None:
    """Records `{modality: {"names", "units", "preprocessing"}}` of this run's modalities in `bands.json`
    (the store's other modalities keep theirs); Stage 2 copies it into metadata.json."""
    path = fs.join(root, BANDS_FILE)
    recorded = fs.read_json(path) if fs.exists(path) else {}
    fs.write_json(path, dict(recorded, **description), run_id)


def read_band_description(root: str) -> dict:
    """The store's `bands.json`, or {} (a store written before it was recorded)."""
    path = fs.join(root, BANDS_FILE)
    return fs.read_json(path) if fs.exists(path) else {}


def write_rejection(root: str, rejection: Rejection, modality: str, time: float, run_id: str = "") -> None:
    fs.write_json(rejection_path(root, modality, time), rejection.to_json(), run_id)


def _open_beam_file(path: str, mode: str = "rb"):
    return fs.open_read(path)


@contextlib.contextmanager
def open_raster(uri: str):
    """A rasterio dataset of a local path or, through Beam's file systems, a gs:// URI.

    Remote files are opened with an opener, so GDAL seeks and a windowed read
    fetches only the blocks it needs (a plain file object would be read whole),
    without probing for side-car files (each one a remote request). http(s) URLs
    go to GDAL's /vsicurl/ (range requests; options set by the caller's rasterio.Env).
    """
    if not fs.is_remote(uri) or uri.startswith(("http://", "https://")):
        with rasterio.open(uri) as dataset:
            yield dataset
        return
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"), rasterio.open(uri, opener=_open_beam_file) as dataset:
        yield dataset


@dataclasses.dataclass(frozen=True)
class GeoTiffObservationReader:
    """Reads observations of the store (and any GeoTIFF already on the run's grid)."""

    def header(self, uri: str) -> ObservationHeader:
        try:
            with open_raster(uri) as dataset:
                crs = dataset.crs.to_string() if dataset.crs else ""
                return ObservationHeader(
                    Grid(crs, tuple(dataset.transform)[:6], dataset.height, dataset.width), dataset.count
                )
        except (rasterio.errors.RasterioError, OSError) as error:
            raise ObservationError(uri, f"unreadable GeoTIFF: {error}") from error

    def read(self, uri: str, window: PixelWindow) -> tuple[np.ndarray, np.ndarray]:
        rio_window = RasterioWindow(window.col_start, window.row_start, window.width, window.height)
        try:
            with open_raster(uri) as dataset:
                data = dataset.read(window=rio_window, out_dtype=np.float32)
                valid = dataset.dataset_mask(window=rio_window) > 0
        except (rasterio.errors.RasterioError, OSError) as error:
            raise ObservationError(uri, f"unreadable GeoTIFF: {error}") from error
        return np.moveaxis(data, 0, -1), valid


def list_store(root: str, since: float | None = None) -> tuple[list[ObservationRef], list[Rejection]]:
    """The observation files of a store (those from `since` on, else all), and entries set aside (names that
    are no time stamp). Names are time stamps, so a listing from `since` skips the history before it."""
    reader = GeoTiffObservationReader()
    refs, rejected = [], []
    for modality in MODALITIES:
        folder = fs.join(root, modality)
        for name in fs.list_children(folder, time_name(since) if since is not None else ""):
            if name.startswith("."):
                continue  # temporary files of writes in progress
            stem = name[:-4] if name.endswith(".tif") else None
            try:
                if stem is None:
                    raise ValueError(name)
                time = parse_time_name(stem)
            except ValueError:
                rejected.append(Rejection(fs.join(folder, name), "file name is not <%Y%m%dT%H%M%S>.tif", modality))
                continue
            refs.append(ObservationRef(modality, time, fs.join(folder, name), reader))
    return refs, rejected
