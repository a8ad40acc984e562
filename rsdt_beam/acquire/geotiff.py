"""Convert's reading side: GeoTIFF (any GDAL raster) archives onto the run's grid, with rasterio.

One observation of an archive is a `ConvertSource`: modality, UTC time, one
or more band files (their bands are concatenated in order, e.g. Landsat's
`_b3.tif, _b4.tif, _b5.tif` or Sentinel-2's per-band JPEG2000s), an
optional mask/QA file and an optional band selection. `read_source_window`
reads only the pixels one grid window needs: a band file already on the
grid (same CRS, pixel size and pixel edges) is read directly, anything else
through a `WarpedVRT` (bilinear or the chosen resampling for bands, nearest
for masks). Source nodata, pixels outside the file and the mask rule's
rejects become invalid; bands are optionally turned from dB to linear
power and divided by the normalization divisor (rsdtlib's default 255.0).

No Beam here; the transforms in `rsdt_beam.acquire.convert` wire it.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import hashlib
import io
import json
import math
import re
from collections.abc import Sequence

import numpy as np
import rasterio
import rasterio.errors
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window as RasterioWindow

from rsdt_beam import fs
from rsdt_beam.acquire.store import BAND_DTYPES, open_raster
from rsdt_beam.common.modalities import MODALITIES
from rsdt_beam.common.observations import ObservationError, Rejection
from rsdt_beam.common.times import iso_time, parse_time
from rsdt_beam.common.user_code import load_callable
from rsdt_beam.grid import Grid, PixelWindow
from rsdt_beam.rasters import TILE_PX

FINGERPRINT_TAG = "RSDT_CONVERT_FINGERPRINT"
SOURCE_TAG = "RSDT_CONVERT_SOURCE"
RESAMPLINGS = ("nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average", "mode")


@dataclasses.dataclass(frozen=True)
class MaskRule:
    """How a mask/QA band becomes validity.

    kind `nonzero`: a plain validity mask, non-zero = valid;
    `values`: valid where the value is one of `values` (Landsat Fmask clear = {0, 1});
    `bits`: invalid where any of the bit positions in `values` is set (QA bit flags);
    `function`: `module:function` mapping the raw mask array to a bool validity array.
    """

    kind: str = "nonzero"
    values: tuple[int, ...] = ()
    function: str | None = None

    def __post_init__(self):
        if self.kind not in ("nonzero", "values", "bits", "function"):
            raise ValueError(f"unknown mask rule kind {self.kind!r}")
        if self.kind in ("values", "bits") and not self.values:
            raise ValueError(f"mask rule {self.kind!r} needs values")
        if self.kind == "function" and not self.function:
            raise ValueError("mask rule 'function' needs module:function")

    @classmethod
    def parse(cls, spec: str) -> MaskRule:
        """`nonzero`, `values:0,1`, `bits:0,3,4`, `function:module:fn` or a preset name (see MASK_PRESETS)."""
        spec = spec.strip()
        if spec in MASK_PRESETS:
            return MASK_PRESETS[spec]
        kind, _, rest = spec.partition(":")
        if kind == "function":
            return cls("function", function=rest)
        if kind in ("values", "bits"):
            try:
                return cls(kind, tuple(int(v) for v in rest.replace(";", ",").split(",") if v.strip()))
            except ValueError:
                raise ValueError(f"mask rule {spec!r}: values must be integers") from None
        raise ValueError(
            f"unknown mask rule {spec!r}; use nonzero, values:A,B, bits:N,M, "
            f"function:module:fn or one of {sorted(MASK_PRESETS)}"
        )

    def describe(self) -> str:
        if self.kind == "function":
            return f"function:{self.function}"
        return self.kind + (":" + ",".join(map(str, self.values)) if self.values else "")

    def decode(self, raw: np.ndarray) -> np.ndarray:
        """bool validity of a raw mask array."""
        if self.kind == "nonzero":
            return raw != 0
        if self.kind == "values":
            return np.isin(raw, np.asarray(self.values, dtype=raw.dtype))
        if self.kind == "bits":
            flags = sum(1 << bit for bit in self.values)
            return (raw.astype(np.int64) & flags) == 0
        valid = np.asarray(load_callable(self.function)(raw))
        if valid.shape != raw.shape:
            raise ValueError(f"mask function {self.function} returned shape {valid.shape} for {raw.shape}")
        return valid.astype(bool)


MASK_PRESETS = {
    "nonzero": MaskRule("nonzero"),
    # Fmask: 0 clear land, 1 clear water, 2 cloud shadow, 3 snow, 4 cloud, 255 fill.
    "fmask": MaskRule("values", (0, 1)),
    # Sentinel-2 scene classification: vegetation, not vegetated, water, unclassified, snow.
    "scl": MaskRule("values", (4, 5, 6, 7, 11)),
    # Landsat Collection 2 QA_PIXEL: fill, dilated cloud, cirrus, cloud, cloud shadow.
    "landsat_qa_pixel": MaskRule("bits", (0, 1, 2, 3, 4)),
}


def parse_divisor(spec: str | float) -> dict[str, float]:
    """`255` (all modalities) or `optical=10000,sar=1` (`sar` = both SAR modalities) -> per modality."""
    if isinstance(spec, (int, float)):
        return {m: float(spec) for m in MODALITIES}
    divisors = {}
    for part in str(spec).split(","):
        name, sep, value = part.partition("=")
        names = (
            MODALITIES if not sep else ("sar_ascending", "sar_descending") if name.strip() == "sar" else (name.strip(),)
        )
        for modality in names:
            if modality not in MODALITIES:
                raise ValueError(f"divisor {spec!r}: unknown modality {modality!r}")
            divisors[modality] = float(value if sep else name)
    for modality, value in divisors.items():
        if value == 0 or not math.isfinite(value):
            raise ValueError(f"divisor of {modality} must be a non-zero number, got {value}")
    return {m: divisors.get(m, 255.0) for m in MODALITIES}


@dataclasses.dataclass(frozen=True)
class ConvertParams:
    """How sources become observations (the part of a re-run's identity that is not grid or source)."""

    divisors: tuple[tuple[str, float], ...] = tuple((m, 255.0) for m in MODALITIES)
    resampling: str = "bilinear"
    mask_rule: MaskRule = MaskRule()
    db_to_linear: bool = False
    clip_to_aoi: bool = False
    dtype: str = "float32"

    def __post_init__(self):
        if self.resampling not in RESAMPLINGS:
            raise ValueError(f"unknown resampling {self.resampling!r}; use one of {RESAMPLINGS}")
        if self.dtype not in BAND_DTYPES:
            raise ValueError(f"output dtype must be one of {BAND_DTYPES}, got {self.dtype!r}")

    @classmethod
    def create(
        cls,
        divisor: str | float = 255.0,
        resampling: str = "bilinear",
        mask_rule: MaskRule | str = "nonzero",
        db_to_linear: bool = False,
        clip_to_aoi: bool = False,
        dtype: str = "float32",
    ) -> ConvertParams:
        rule = MaskRule.parse(mask_rule) if isinstance(mask_rule, str) else mask_rule
        return cls(tuple(sorted(parse_divisor(divisor).items())), resampling, rule, db_to_linear, clip_to_aoi, dtype)

    def divisor(self, modality: str) -> float:
        return dict(self.divisors)[modality]

    def to_json(self) -> dict:
        return {
            "divisors": dict(self.divisors),
            "resampling": self.resampling,
            "mask_rule": self.mask_rule.describe(),
            "db_to_linear": self.db_to_linear,
            "clip_to_aoi": self.clip_to_aoi,
            "dtype": self.dtype,
        }


@dataclasses.dataclass(frozen=True)
class ConvertSource:
    """One observation of an archive: band file(s), optional mask file, optional 1-based band selection."""

    modality: str
    time: float
    bands: tuple[str, ...]
    mask: str | None = None
    band_selection: tuple[int, ...] | None = None

    def __post_init__(self):
        if self.modality not in MODALITIES:
            raise ValueError(f"unknown modality {self.modality!r}; expected one of {MODALITIES}")
        if not self.bands:
            raise ValueError(f"{self.modality} {iso_time(self.time)}: no band file")
        if self.band_selection is not None and any(b < 1 for b in self.band_selection):
            raise ValueError(f"{self.name}: band selection is 1-based, got {self.band_selection}")

    @property
    def name(self) -> str:
        return f"{self.modality} {iso_time(self.time)} ({self.bands[0]})"

    @property
    def where(self) -> str:
        """The file a rejection of this source names."""
        return self.bands[0]

    def to_json(self) -> dict:
        return {
            "modality": self.modality,
            "time": iso_time(self.time),
            "bands": list(self.bands),
            "mask": self.mask,
            "band_selection": list(self.band_selection or ()) or None,
        }


def fingerprint(source: ConvertSource, grid: Grid, params: ConvertParams, aoi_wkt: str | None) -> str:
    """A hash of everything that decides an observation's pixels: source, grid, parameters, AOI (any
    source and parameters with `to_json()`, e.g. acquire.stac's)."""
    text = json.dumps(
        {
            "source": source.to_json(),
            "grid": grid.to_json(),
            "params": params.to_json(),
            "aoi": aoi_wkt if params.clip_to_aoi else None,
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclasses.dataclass(frozen=True)
class FileHeader:
    uri: str
    crs: str
    transform: tuple[float, ...]
    height: int
    width: int
    count: int
    descriptions: tuple[str | None, ...]


def gdal_reason(error: BaseException) -> str:
    """GDAL's own words for a failed read: the innermost message of rasterio's exception chain."""
    reason = str(error)
    while (error := error.__cause__ or error.__context__) is not None:
        reason = str(error) or reason
    return reason


def file_header(uri: str, what: str = "band file") -> FileHeader:
    """The georeference of a file; its last pixel is read too, so a truncated file is told as such (GDAL
    opens a file cut after its header, and one cut inside it may lose its CRS tags)."""
    try:
        with open_raster(uri) as dataset:
            try:
                dataset.read(window=RasterioWindow(dataset.width - 1, dataset.height - 1, 1, 1))
            except (rasterio.errors.RasterioError, OSError) as error:
                raise ObservationError(uri, f"{what} is truncated or unreadable: {gdal_reason(error)}") from error
            if dataset.crs is None:
                raise ObservationError(uri, f"{what} has no CRS")
            return FileHeader(
                uri,
                dataset.crs.to_string(),
                tuple(dataset.transform)[:6],
                dataset.height,
                dataset.width,
                dataset.count,
                tuple(dataset.descriptions),
            )
    except (rasterio.errors.RasterioError, OSError) as error:
        raise ObservationError(uri, f"{what} is truncated or unreadable: {gdal_reason(error)}") from error


@dataclasses.dataclass(frozen=True)
class SourceHeader:
    """What inspecting a source's files tells: band count (after selection) and names."""

    bands: int
    band_names: tuple[str, ...]


def inspect_source(source: ConvertSource, grid: Grid) -> SourceHeader:
    """Opens every file of a source; ObservationError if one is unreadable or misses the grid."""
    headers = [file_header(uri) for uri in source.bands]
    if source.mask is not None:
        if not fs.exists(source.mask):
            raise ObservationError(source.mask, "mask file does not exist")
        headers.append(file_header(source.mask, "mask file"))
    left, bottom, right, top = grid.bounds
    for header in headers:
        a, _, c, _, e, f = header.transform
        xs, ys = (c, c + a * header.width), (f, f + e * header.height)
        try:
            fl, fb, fr, ft = transform_bounds(header.crs, grid.crs, min(xs), min(ys), max(xs), max(ys))
        except (rasterio.errors.RasterioError, ValueError) as error:
            raise ObservationError(header.uri, f"cannot project its bounds to {grid.crs}: {error}") from error
        if fr <= left or fl >= right or ft <= bottom or fb >= top:
            raise ObservationError(header.uri, f"does not overlap the area ({grid.describe()})")
    names = tuple(
        description or f"{fs.basename(h.uri)}:{index}"
        for h in headers[: len(source.bands)]
        for index, description in enumerate(h.descriptions, start=1)
    )
    if source.band_selection is not None:
        outside = [b for b in source.band_selection if b > len(names)]
        if outside:
            raise ObservationError(
                source.bands[0],
                f"band selection {list(source.band_selection)} but the band file(s) have only {len(names)} bands",
            )
        names = tuple(names[b - 1] for b in source.band_selection)
    return SourceHeader(len(names), names)


def _aligned_offset(dataset, grid: Grid) -> tuple[int, int] | None:
    """(row, col) of the grid's origin in the dataset when both share CRS, pixel size and edges."""
    if dataset.crs is None or dataset.crs != rasterio.crs.CRS.from_user_input(grid.crs):
        return None
    a, b, c, d, e, f = tuple(dataset.transform)[:6]
    ga, gb, gc, gd, ge, gf = grid.transform
    if b or d or gb or gd or not (math.isclose(a, ga, rel_tol=1e-9) and math.isclose(e, ge, rel_tol=1e-9)):
        return None
    col, row = (gc - c) / a, (gf - f) / e
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    return round(row), round(col)


def _read_direct(dataset, offset: tuple[int, int], window: PixelWindow, indexes: list[int]):
    """Pixels of `window` from a dataset on the grid; outside the dataset is invalid."""
    out = np.zeros((len(indexes), window.height, window.width), dtype=dataset.dtypes[0])
    valid = np.zeros((len(indexes), window.height, window.width), dtype=bool)
    row0, col0 = window.row_start + offset[0], window.col_start + offset[1]
    r0, r1 = max(row0, 0), min(row0 + window.height, dataset.height)
    c0, c1 = max(col0, 0), min(col0 + window.width, dataset.width)
    if r0 < r1 and c0 < c1:
        rio_window = RasterioWindow(c0, r0, c1 - c0, r1 - r0)
        target = (slice(None), slice(r0 - row0, r1 - row0), slice(c0 - col0, c1 - col0))
        out[target] = dataset.read(indexes, window=rio_window)
        valid[target] = dataset.read_masks(indexes, window=rio_window) > 0
    return out, valid


def _read_warped(dataset, grid: Grid, window: PixelWindow, indexes: list[int], resampling: str):
    """Pixels of `window` warped onto the grid; the VRT's nodata/alpha marks what the source lacks."""
    has_nodata = dataset.nodata is not None
    with WarpedVRT(
        dataset,
        crs=grid.crs,
        transform=rasterio.Affine(*grid.transform),
        width=grid.width,
        height=grid.height,
        resampling=Resampling[resampling],
        add_alpha=not has_nodata,
    ) as vrt:
        rio_window = RasterioWindow(window.col_start, window.row_start, window.width, window.height)
        data = vrt.read(indexes, window=rio_window)
        valid = vrt.read_masks(indexes, window=rio_window) > 0
    return data, valid


def read_file_window(
    uri: str, grid: Grid, window: PixelWindow, resampling: str, what: str = "band file"
) -> tuple[np.ndarray, np.ndarray]:
    """`(data [bands, h, w] in the file's dtype, valid [bands, h, w])` of one file on the grid."""
    try:
        with open_raster(uri) as dataset:
            indexes = list(range(1, dataset.count + 1))
            offset = _aligned_offset(dataset, grid)
            if offset is not None:
                return _read_direct(dataset, offset, window, indexes)
            return _read_warped(dataset, grid, window, indexes, resampling)
    except (rasterio.errors.RasterioError, OSError) as error:
        raise ObservationError(uri, f"{what} is truncated or unreadable: {gdal_reason(error)}") from error


def read_source_window(
    source: ConvertSource, grid: Grid, window: PixelWindow, params: ConvertParams, area: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """`(float32 [h, w, bands], bool valid [h, w])` of one source on a grid window.

    `area` (bool `[h, w]`, optional) marks the window's pixels inside the AOI;
    everything else is invalid. Invalid pixels hold 0.
    """
    parts, valid = [], np.ones((window.height, window.width), dtype=bool)
    for uri in source.bands:
        data, masks = read_file_window(uri, grid, window, params.resampling)
        parts.append(data.astype(np.float32))
        valid &= masks.all(axis=0)
    data = np.concatenate(parts, axis=0)
    if source.band_selection is not None:
        if max(source.band_selection) > data.shape[0]:
            raise ObservationError(
                source.bands[0],
                f"band selection {list(source.band_selection)} but the band file(s) have only {data.shape[0]} bands",
            )
        data = data[[b - 1 for b in source.band_selection]]
    if source.mask is not None:
        raw, inside = read_file_window(source.mask, grid, window, "nearest", "mask file")
        try:
            valid &= inside[0] & params.mask_rule.decode(raw[0])
        except ValueError as error:
            raise ObservationError(source.mask, str(error)) from error
    if area is not None:
        valid &= area
    valid &= np.isfinite(data).all(axis=0)
    if params.db_to_linear and source.modality != "optical":
        data = np.power(10.0, data / 10.0, dtype=np.float32)
    data /= np.float32(params.divisor(source.modality))
    data[:, ~valid] = 0.0
    return np.ascontiguousarray(np.moveaxis(data, 0, -1)), valid


def block_windows(grid: Grid, chunk_size: int) -> list[PixelWindow]:
    """The grid cut into blocks of about `chunk_size` px a side, row-major.

    Blocks are a multiple of 256 px a side when `chunk_size` is at least that, and always on a grid the
    store tiles (at least 256 px each way): there a block is whole 256 px tiles of the observation's
    GeoTIFF, so its writer completes every tile it is given (a tile two blocks share would be compressed
    and written twice, the first copy left as a hole in the file).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    tiled = grid.height >= TILE_PX and grid.width >= TILE_PX
    size = max(TILE_PX, chunk_size // TILE_PX * TILE_PX) if chunk_size >= TILE_PX or tiled else chunk_size
    return [
        PixelWindow(r, min(r + size, grid.height), c, min(c + size, grid.width))
        for r in range(0, grid.height, size)
        for c in range(0, grid.width, size)
    ]


# --- Listing an archive: a manifest, or globs with the time in the file names ------------------

_TIME_FIELDS = {
    "Y": r"\d{4}",
    "m": r"\d{2}",
    "d": r"\d{2}",
    "H": r"\d{2}",
    "M": r"\d{2}",
    "S": r"\d{2}",
    "j": r"\d{3}",
    "y": r"\d{2}",
}


def time_pattern_regex(pattern: str) -> re.Pattern:
    """A regex of a strftime-like pattern (`%Y%m%dT%H%M%S`, Landsat's `%Y%j`).

    `*` and `?` are wildcards; a pattern with a wildcard must match a whole
    path component (e.g. `?????????%Y%j*` for `LE70350322008118EDC00`),
    one without may match anywhere in it.
    """
    out, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        if char == "%" and i + 1 < len(pattern):
            field = pattern[i + 1]
            if field == "%":
                out.append("%")
            elif field in _TIME_FIELDS:
                out.append(f"(?P<{field}>{_TIME_FIELDS[field]})")
            else:
                raise ValueError(f"time pattern {pattern!r}: unsupported field %{field}")
            i += 2
            continue
        out.append(".*?" if char == "*" else "." if char == "?" else re.escape(char))
        i += 1
    text = "".join(out)
    return re.compile(f"^{text}$" if ("*" in pattern or "?" in pattern) else text)


def time_from_path(path: str, pattern: re.Pattern) -> float:
    """UTC epoch seconds from the first path component (file name first, then folders) matching."""
    parts = path.rstrip("/").split("/")
    for part in reversed(parts):
        match = pattern.search(part)
        if not match:
            continue
        fields = match.groupdict()
        try:
            if "j" in fields:
                moment = datetime.datetime.strptime(f"{fields['Y']}{fields['j']}", "%Y%j")
            else:
                year = int(fields["Y"]) if "Y" in fields else 2000 + int(fields["y"])
                moment = datetime.datetime(
                    year,
                    int(fields.get("m", 1)),
                    int(fields.get("d", 1)),
                    int(fields.get("H", 0)),
                    int(fields.get("M", 0)),
                    int(fields.get("S", 0)),
                )
        except (KeyError, ValueError) as error:
            raise ValueError(f"{path}: {match.group(0)!r} is not a valid time ({error})") from None
        return moment.replace(tzinfo=datetime.timezone.utc).timestamp()
    raise ValueError(f"{path}: no part of the path matches the time pattern {pattern.pattern!r}")


def parse_band_selection(text) -> tuple[int, ...] | None:
    if text is None or text == "" or text == []:
        return None
    items = text if isinstance(text, (list, tuple)) else str(text).replace(";", ",").split(",")
    try:
        return tuple(int(item) for item in items if str(item).strip())
    except ValueError:
        raise ValueError(f"band selection {text!r} is not a list of 1-based band numbers") from None


@dataclasses.dataclass
class Listing:
    """Sources found, and entries set aside with the reason (listing never fails on one bad entry)."""

    sources: list[ConvertSource]
    rejected: list[Rejection]


def _resolve(base: str, path: str) -> str:
    if not path or fs.is_remote(path) or path.startswith("/"):
        return path
    return fs.join(base, path)


def read_manifest(path: str, band_selection: tuple[int, ...] | None = None) -> Listing:
    """Sources of a CSV (header `modality,time,bands,mask,band_selection`) or JSON lines manifest.

    `bands` holds one file or several separated by `;` (a list in JSON);
    relative paths are relative to the manifest's folder; `time` is ISO 8601
    (UTC if naive). `band_selection` applies where a row gives none.
    """
    text = fs.read_bytes(path).decode("utf-8")
    base = path.rsplit("/", 1)[0] if "/" in path else "."
    stripped = text.lstrip()
    if stripped.startswith("{"):
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append((number, json.loads(line)))
                except json.JSONDecodeError as error:
                    rows.append((number, error))
    else:
        rows = list(enumerate(csv.DictReader(io.StringIO(text)), start=2))
    sources, rejected = [], []
    for number, row in rows:
        where = f"{path} line {number}"
        try:
            if isinstance(row, Exception):
                raise ValueError(f"not JSON: {row}")
            missing = [key for key in ("modality", "time", "bands") if not row.get(key)]
            if missing:
                raise ValueError(f"missing {', '.join(missing)}")
            bands = row["bands"] if isinstance(row["bands"], list) else str(row["bands"]).split(";")
            sources.append(
                ConvertSource(
                    str(row["modality"]).strip(),
                    parse_time(str(row["time"])),
                    tuple(_resolve(base, b.strip()) for b in bands if b.strip()),
                    _resolve(base, str(row["mask"]).strip()) if row.get("mask") else None,
                    parse_band_selection(row.get("band_selection")) or band_selection,
                )
            )
        except ValueError as error:
            rejected.append(Rejection(where, str(error)))
    return Listing(sources, rejected)


def glob_sources(
    bands: Sequence[str],
    modality: str,
    time_pattern: str,
    mask: str | None = None,
    band_selection: tuple[int, ...] | None = None,
) -> Listing:
    """Sources of glob patterns: `bands[k]` lists every observation's k-th band file, `mask` its mask.

    Files are matched to observations by the time parsed from their paths;
    an observation missing one of its files, or with two files for one
    pattern, is set aside with the reason.
    """
    regex = time_pattern_regex(time_pattern)
    rejected: list[Rejection] = []
    patterns = list(bands) + ([mask] if mask else [])
    by_time: dict[float, list[list[str]]] = {}
    for k, pattern in enumerate(patterns):
        for path in fs.glob(pattern):
            try:
                time = time_from_path(path, regex)
            except ValueError as error:
                rejected.append(Rejection(path, f"time stamp not parseable: {error}", modality))
                continue
            by_time.setdefault(time, [[] for _ in patterns])[k].append(path)
    sources = []
    for time in sorted(by_time):
        files = by_time[time]
        problems = [
            f"two files with the same modality and time stamp for {patterns[k]}: {', '.join(found)}"
            for k, found in enumerate(files)
            if len(found) > 1
        ]
        problems += [
            f"missing {'mask' if mask and k == len(bands) else 'band'} file ({patterns[k]})"
            for k, found in enumerate(files)
            if not found
        ]
        if problems:
            first = next(f[0] for f in files if f)
            rejected.append(Rejection(first, "; ".join(problems), modality, iso_time(time)))
            continue
        sources.append(
            ConvertSource(
                modality,
                time,
                tuple(f[0] for f in files[: len(bands)]),
                files[len(bands)][0] if mask else None,
                band_selection,
            )
        )
    return Listing(sources, rejected)


def drop_duplicates(sources: Sequence[ConvertSource]) -> Listing:
    """One source per (modality, time): the others are set aside naming the one kept."""
    kept: dict[tuple[str, float], ConvertSource] = {}
    rejected = []
    for source in sorted(sources, key=lambda s: (s.modality, s.time, s.bands)):
        key = (source.modality, source.time)
        if key in kept:
            rejected.append(
                Rejection(
                    source.bands[0],
                    f"two files with the same modality and time stamp: {kept[key].bands[0]} is kept",
                    source.modality,
                    iso_time(source.time),
                )
            )
            continue
        kept[key] = source
    return Listing(sorted(kept.values(), key=lambda s: (s.time, s.modality)), rejected)
