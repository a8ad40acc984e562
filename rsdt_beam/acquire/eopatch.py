"""rsdtlib's Stage 1 output: one EOPatch folder per observation, read with numpy alone.

Layout (as eo-learn saves it): `<root>/<%Y%m%dT%H%M%S>/data/<bands>.npy[.gz]`
with shape `(1, H, W, C)`, `mask/<mask>.npy[.gz]` `(1, H, W, >=1)` (channel 0
used as a truth value), and `bbox.geojson` (a polygon with its CRS). Only
time index 0 is read, as rsdtlib does. Folders whose name does not
round-trip through `%Y%m%dT%H%M%S` are set aside with the reason (rsdtlib
skips them silently).
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import re

import numpy as np

from rsdt_beam import fs
from rsdt_beam.common.observations import ObservationError, ObservationHeader, ObservationRef, Rejection
from rsdt_beam.common.times import iso_time, parse_time_name, time_name
from rsdt_beam.grid import Grid, PixelWindow


def _crs_of(geojson: dict) -> str:
    name = geojson.get("crs", {}).get("properties", {}).get("name", "")
    match = re.search(r"EPSG:+(\d+)", name)
    return f"EPSG:{match.group(1)}" if match else "EPSG:4326"


def _npy_header(raw) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(raw)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(raw)
    else:
        shape, _, dtype = np.lib.format.read_array_header_2_0(raw)
    return shape, dtype


@dataclasses.dataclass(frozen=True)
class EOPatchReader:
    """Reads one modality's EOPatches; `bands_feature`/`mask_feature` name the arrays."""

    bands_feature: str
    mask_feature: str

    def _array_path(self, uri: str, kind: str, feature: str) -> str:
        for suffix in (".npy", ".npy.gz"):
            path = fs.join(uri, kind, feature + suffix)
            if fs.exists(path):
                return path
        raise ObservationError(uri, f"missing {kind}/{feature}.npy (or .npy.gz)")

    def _shape(self, uri: str, kind: str, feature: str) -> tuple[int, ...]:
        path = self._array_path(uri, kind, feature)
        try:
            with fs.open_read(path, decompress=path.endswith(".gz")) as raw:
                shape, _ = _npy_header(raw)
        except (ValueError, OSError, EOFError) as error:
            raise ObservationError(uri, f"unreadable {kind}/{feature}: {error}") from error
        if len(shape) != 4 or shape[0] < 1:
            raise ObservationError(uri, f"{kind}/{feature} has shape {shape}, expected (1, H, W, C)")
        return shape

    def header(self, uri: str) -> ObservationHeader:
        shape = self._shape(uri, "data", self.bands_feature)
        mask_shape = self._shape(uri, "mask", self.mask_feature)
        if mask_shape[1:3] != shape[1:3]:
            raise ObservationError(
                uri,
                f"mask/{self.mask_feature} is {mask_shape[1]} x {mask_shape[2]} px "
                f"but data/{self.bands_feature} is {shape[1]} x {shape[2]} px",
            )
        try:
            bbox = json.loads(fs.read_bytes(fs.join(uri, "bbox.geojson")))
            xs, ys = zip(*(point for ring in bbox["coordinates"] for point in ring))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ObservationError(uri, f"missing or unreadable bbox.geojson: {error}") from error
        grid = Grid.from_bounds(_crs_of(bbox), min(xs), min(ys), max(xs), max(ys), shape[1], shape[2])
        return ObservationHeader(grid, shape[3])

    def _load(self, uri: str, kind: str, feature: str, window: PixelWindow) -> np.ndarray:
        path = self._array_path(uri, kind, feature)
        try:
            if fs.is_remote(path) or path.endswith(".gz"):
                array = np.load(io.BytesIO(fs.open_read(path, decompress=True).read()))
            else:
                array = np.load(path, mmap_mode="r")
        except (ValueError, OSError, EOFError) as error:
            raise ObservationError(uri, f"unreadable {kind}/{feature}: {error}") from error
        return np.asarray(array[0, window.row_start : window.row_stop, window.col_start : window.col_stop])

    def read(self, uri: str, window: PixelWindow) -> tuple[np.ndarray, np.ndarray]:
        data = self._load(uri, "data", self.bands_feature, window).astype(np.float32, copy=False)
        valid = self._load(uri, "mask", self.mask_feature, window)[..., 0].astype(bool)
        return data, valid


def list_eopatches(
    root: str, modality: str, reader: EOPatchReader, since: float | None = None
) -> tuple[list[ObservationRef], list[Rejection]]:
    """The EOPatch folders under `root` (those from `since` on, else all) as observations, and the entries set
    aside. Folder names are time stamps, so a listing from `since` skips the history before it."""
    refs, rejected = [], []
    for name in fs.list_children(root, time_name(since) if since is not None else ""):
        if name.startswith("."):
            continue
        try:
            time = parse_time_name(name)
        except ValueError:
            rejected.append(Rejection(fs.join(root, name), "folder name is not a %Y%m%dT%H%M%S time stamp", modality))
            continue
        refs.append(ObservationRef(modality, time, fs.join(root, name), reader))
    return refs, rejected


def write_eopatch(
    folder: str,
    data: np.ndarray,
    mask: np.ndarray,
    bbox_geojson: dict,
    time: float,
    bands_feature: str,
    mask_feature: str,
    compress: bool = False,
) -> None:
    """Writes one observation as eo-learn/rsdtlib do: `data` `(H, W, C)`, `mask` `(H, W)` or `(H, W, 1)`."""
    suffix = ".npy.gz" if compress else ".npy"
    for kind, feature, array in (
        ("data", bands_feature, data.reshape(1, *data.shape[:2], -1)),
        ("mask", mask_feature, mask.reshape(1, *mask.shape[:2], 1)),
    ):
        buffer = io.BytesIO()
        np.save(buffer, array)
        payload = buffer.getvalue()
        if compress:
            payload = gzip.compress(payload, 1)
        fs.write_bytes(fs.join(folder, kind, feature + suffix), payload)
    fs.write_bytes(fs.join(folder, "bbox.geojson"), json.dumps(bbox_geojson).encode())
    fs.write_bytes(fs.join(folder, "timestamps.json"), json.dumps([iso_time(time)[:-1]]).encode())
