"""The area of interest (AOI) and the pixel grid every observation of a run lands on.

An AOI comes from a shapefile (rsdtlib's `ostrava.shp`: `.shp` + `.shx` +
`.prj`, the `.dbf` may be missing), a GeoJSON file or a bbox
`"minx,miny,maxx,maxy"` with its CRS. rsdtlib uses the first polygon of
the file; `union=True` takes the union of all of them instead.

`grid_for_aoi` turns an AOI into a `Grid`: the AOI's own CRS when it is
projected, else the local UTM zone (or any EPSG given), the origin snapped
to a multiple of the resolution so grids of the same CRS and resolution
line up pixel for pixel across runs, and a shape covering the AOI bounds.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile

import numpy as np
import pyogrio
import rasterio
import shapely
import shapely.ops
from pyproj import CRS, Transformer
from rasterio.features import geometry_mask

from rsdt_beam import fs
from rsdt_beam.errors import UserError
from rsdt_beam.grid import Grid
from rsdt_beam.specs import AreaSpec


@dataclasses.dataclass(frozen=True)
class AreaOfInterest:
    """A (multi)polygon and its CRS (`"EPSG:n"` where one exists, else WKT)."""

    geometry: shapely.Geometry
    crs: str

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) in the AOI's CRS."""
        return tuple(float(v) for v in self.geometry.bounds)

    def to_crs(self, crs: str) -> AreaOfInterest:
        target = crs_string(crs)
        if CRS.from_user_input(target) == CRS.from_user_input(self.crs):
            return AreaOfInterest(self.geometry, target)
        transformer = Transformer.from_crs(self.crs, target, always_xy=True)
        # Densify first so long straight edges stay faithful after a curved projection.
        step = max(self.geometry.length / 4000.0, 1e-12)
        dense = shapely.segmentize(self.geometry, step)
        return AreaOfInterest(shapely.ops.transform(transformer.transform, dense), target)


def crs_string(crs) -> str:
    """`"EPSG:n"` where the CRS has an EPSG code, else its WKT."""
    parsed = CRS.from_user_input(crs)
    epsg = parsed.to_epsg()
    return f"EPSG:{epsg}" if epsg else parsed.to_wkt()


def _parse_bbox(text: str) -> tuple[float, float, float, float] | None:
    parts = text.split(",")
    if len(parts) != 4:
        return None
    try:
        minx, miny, maxx, maxy = (float(p) for p in parts)
    except ValueError:
        return None
    if not (minx < maxx and miny < maxy):
        raise ValueError(f"bbox {text!r} must be minx,miny,maxx,maxy with min < max")
    return minx, miny, maxx, maxy


def load_aoi(source: str, union: bool = False, bbox_crs: str | None = None) -> AreaOfInterest:
    """The AOI of a shapefile, GeoJSON file or bbox `"minx,miny,maxx,maxy"` (needs `bbox_crs`).

    Files: the first polygon (rsdtlib's rule) or, with `union`, the union of
    all polygons. A file without a CRS (e.g. a shapefile missing its `.prj`)
    is an error: guessing would put the grid in the wrong place.
    """
    if fs.is_remote(source):
        with tempfile.TemporaryDirectory() as local:
            return _load_vector(_copy_vector(source, local), union, label=source)
    bbox = _parse_bbox(source) if not os.path.exists(source) else None
    if bbox is not None:
        if not bbox_crs:
            raise ValueError(f"bbox {source!r} needs its CRS (bbox_crs, e.g. EPSG:4326)")
        return AreaOfInterest(shapely.box(*bbox), crs_string(bbox_crs))
    if not os.path.exists(source):
        raise FileNotFoundError(f"AOI {source!r} is neither a file nor a bbox minx,miny,maxx,maxy")
    return _load_vector(source, union, label=source)


_SHAPEFILE_PARTS = (".shp", ".shx", ".prj", ".dbf", ".cpg")


def _copy_vector(uri: str, local_dir: str) -> str:
    """A gs:// (or other remote) vector file, and a shapefile's side-car files, copied to `local_dir`."""
    stem, extension = os.path.splitext(uri)
    parts = _SHAPEFILE_PARTS if extension.lower() == ".shp" else (extension,)
    for part in parts:
        remote = stem + part
        if part == extension or fs.exists(remote):
            if not fs.exists(remote):
                raise FileNotFoundError(f"AOI {uri!r} does not exist")
            with open(os.path.join(local_dir, fs.basename(remote)), "wb") as f:
                f.write(fs.read_bytes(remote))
    return os.path.join(local_dir, fs.basename(uri))


def _load_vector(source: str, union: bool, label: str) -> AreaOfInterest:
    try:
        info = pyogrio.read_info(source)
        _, _, wkb, _ = pyogrio.raw.read(source, read_geometry=True, columns=[])
    except Exception as error:  # pyogrio raises its own DataSourceError / DataLayerError types
        raise ValueError(f"AOI {label}: cannot read vector file: {error}") from error
    if not info.get("crs"):
        raise ValueError(f"AOI {label}: the file has no CRS (for a shapefile: the .prj is missing)")
    geometries = [g for g in shapely.from_wkb(wkb) if g is not None and not g.is_empty]
    polygons = [g for g in geometries if g.geom_type in ("Polygon", "MultiPolygon")]
    if not polygons:
        raise ValueError(f"AOI {label}: no polygon in the file")
    geometry = shapely.union_all(polygons) if union else polygons[0]
    if not geometry.is_valid:
        geometry = shapely.make_valid(geometry)
    return AreaOfInterest(geometry, crs_string(info["crs"]))


def utm_crs(lon: float, lat: float) -> str:
    """The WGS 84 / UTM zone of a longitude/latitude (EPSG:326zz north, 327zz south)."""
    zone = min(int((lon + 180.0) // 6.0) + 1, 60)
    return f"EPSG:{(32600 if lat >= 0 else 32700) + zone}"


def _target_crs(aoi: AreaOfInterest, crs: str | None) -> str:
    if crs is not None and crs.lower() != "utm":
        return crs_string(crs)
    if crs is None and CRS.from_user_input(aoi.crs).is_projected:
        return aoi.crs
    centre = aoi.to_crs("EPSG:4326").geometry.centroid
    return utm_crs(centre.x, centre.y)


def grid_for_aoi(
    aoi: AreaOfInterest, resolution: float, crs: str | None = None, anchor: tuple[float, float] = (0.0, 0.0)
) -> Grid:
    """A north-up grid of square `resolution` pixels covering the AOI bounds.

    `crs`: None = the AOI's CRS if projected, else the local UTM zone;
    `"utm"` = always the local UTM zone; anything else (`"EPSG:32633"`) as given.
    The grid's edges are at `anchor + k * resolution` (multiples of the
    resolution by default), so two runs with the same CRS and resolution
    share pixel boundaries; anchor an archive's own pixel edges (Landsat's
    sit on odd multiples of 15 m) and its pixels are copied, not resampled.
    """
    if not resolution > 0:
        raise ValueError(f"resolution must be positive, got {resolution}")
    target = aoi.to_crs(_target_crs(aoi, crs))
    minx, miny, maxx, maxy = target.bounds
    ax, ay = anchor
    left = ax + math.floor((minx - ax) / resolution + 1e-9) * resolution
    top = ay + math.ceil((maxy - ay) / resolution - 1e-9) * resolution
    width = max(1, math.ceil((maxx - left) / resolution - 1e-9))
    height = max(1, math.ceil((top - miny) / resolution - 1e-9))
    return Grid(target.crs, (resolution, 0.0, left, 0.0, -resolution, top), height, width)


def anchor_of(transform: tuple[float, ...], resolution: float) -> tuple[float, float]:
    """The pixel-edge offset `(x, y)` modulo `resolution` of a raster's transform (for `grid_for_aoi`)."""
    return (transform[2] % resolution, transform[5] % resolution)


def mask_for_grid(aoi: AreaOfInterest, grid: Grid) -> np.ndarray:
    """bool `[height, width]`: pixels whose centre lies inside the AOI (rasterio's default rule)."""
    geometry = aoi.to_crs(grid.crs).geometry
    return geometry_mask(
        [shapely.geometry.mapping(geometry)],
        out_shape=(grid.height, grid.width),
        transform=rasterio.Affine(*grid.transform),
        invert=True,
    )


def area_of(spec: AreaSpec, anchor: tuple[float, float] = (0.0, 0.0)) -> tuple[AreaOfInterest, Grid]:
    """The AOI and grid of an AreaSpec (`--aoi`, `--aoi_crs`, `--aoi_union`, `--resolution`, `--crs`)."""
    if not spec.aoi or not spec.resolution:
        raise UserError("--aoi and --resolution are required to make the grid")
    aoi = load_aoi(spec.aoi, union=spec.aoi_union, bbox_crs=spec.aoi_crs)
    return aoi, grid_for_aoi(aoi, spec.resolution, spec.crs, anchor)
