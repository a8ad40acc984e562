"""Stage 1 from STAC catalogs of cloud-optimized GeoTIFFs (Earth Search, Planetary Computer, any STAC API).

    launcher: pystac-client search per collection (bbox of the grid, the run's time range, the cloud
              filter through the API's `query` extension or CQL2 `filter`, whichever it conforms to;
              pages followed) -> items grouped into acquisitions -> StacSource per observation
    workers:  convert's transforms with a `StacJob` (acquire.convert): per (observation, block) the
              assets' windows read over HTTP through GDAL /vsicurl/, warped onto the grid
              (acquire.geotiff.read_file_window), masked, scaled, mosaicked; staged; written
              streamed into the observation store; resume by fingerprint

One observation per acquisition: items of one collection, platform and orbit (`sat:relative_orbit`,
else `landsat:wrs_path`) whose datetimes lie within `time_tolerance` of the first are one acquisition
(adjacent MGRS or WRS tiles of one pass). Its pixels are mosaicked: items in ascending id order, each
pixel taken from the first item where it is valid. The observation's time is the earliest item's
datetime; its GeoTIFF tags list the item ids (`RSDT_STAC_ITEMS`).

Collections are rows of `PROFILES`: which modality, the default band assets, the quality asset and
its rule, the scale and offset used when an asset's `raster:bands` gives none, and whether the cloud
filter applies. Values stored = raw * scale + offset (invalid pixels 0); Sentinel-1 RTC stays linear
power (rsdtlib's) unless `sar_db`.

HTTP: reads go through the GDAL options of `GDAL_HTTP_OPTIONS` (no directory listing, merged and
multiplexed range requests, a block cache); `--stac_headers_file`/`--stac_headers_env` name where
request headers are read on each worker (never their values in the job graph); Planetary Computer
hrefs are signed on the worker (`planetary_computer.sign_url`, behind `--stac_sign`). A read that
fails with 429 or 5xx is retried with backoff after the file's cached blocks are dropped (GDAL keeps
a failed read in its cache); a missing or corrupt asset sets the observation aside with GDAL's reason,
and its failed read is dropped from the cache too, so a resume in the same process (a scheduled launch,
a notebook) asks the server again instead of repeating the old 404.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import functools
import glob
import json
import logging
import math
import os
import re
import time as clock
from collections.abc import Iterable

import numpy as np
import rasterio
from rasterio.warp import transform_bounds

from rsdt_beam import fs
from rsdt_beam.acquire.convert import ConvertJob, ConvertPlan, check_store_grid, run_grid
from rsdt_beam.acquire.geotiff import ConvertParams, MaskRule, read_file_window
from rsdt_beam.acquire.store import store_folder
from rsdt_beam.common.modalities import OPTICAL
from rsdt_beam.common.observations import ObservationError, Rejection
from rsdt_beam.common.times import iso_time, parse_time, time_name
from rsdt_beam.errors import UserError
from rsdt_beam.grid import Grid, PixelWindow
from rsdt_beam.specs import AreaSpec, StackSpec, StacSpec

_LOG = logging.getLogger(__name__)
ITEMS_TAG = "RSDT_STAC_ITEMS"
SAR = "sar"  # a profile's modality: split into sar_ascending / sar_descending by `sat:orbit_state`

# GDAL configuration of every asset read (rasterio.Env): what a COG over HTTP needs and nothing more.
GDAL_HTTP_OPTIONS = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no listing of the "folder" of an asset
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.TIF,.tiff,.TIFF",  # no probing of side-car files
    "GDAL_HTTP_MULTIRANGE": "YES",  # the ranges of several tiles requested together
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",  # adjacent tiles in one range
    "VSI_CACHE": "TRUE",  # blocks read once per file handle
    "GDAL_HTTP_MAX_RETRY": "0",  # retries are ours (stac.read_asset), with the cache dropped first
}
RETRY_STATUS = re.compile(r"HTTP response code: (429|5\d\d)")  # GDAL's words for a status it got


@dataclasses.dataclass(frozen=True)
class CollectionProfile:
    """One row of the collection table: how a collection's items become observations.

    `bands`: default asset keys, alternatives in order (the first set an item has is taken; Earth
    Search and Planetary Computer name the same bands differently); `mask`: quality asset keys, the
    first present is read with `mask_rule`; `scale`, `offset`: used where an asset's `raster:bands`
    gives none; `cloud_filter`: `--maxcc` applies (`eo:cloud_cover`, percent).
    """

    collection: str
    modality: str  # OPTICAL or SAR
    bands: tuple[tuple[str, ...], ...]
    mask: tuple[str, ...] = ()
    mask_rule: MaskRule | None = None
    scale: float = 1.0
    offset: float = 0.0
    cloud_filter: bool = False
    units: str = ""


# Sentinel-2 scene classification, invalid classes: 0 no data, 1 saturated or defective, 3 cloud shadow,
# 8 and 9 cloud medium and high probability, 10 thin cirrus (`--stac_scl_invalid` replaces the set).
SCL_INVALID = (0, 1, 3, 8, 9, 10)
# Landsat Collection 2 QA_PIXEL bits: 0 fill, 1 dilated cloud, 3 cloud, 4 cloud shadow.
QA_PIXEL_BITS = (0, 1, 3, 4)


def scl_rule(invalid: tuple[int, ...]) -> MaskRule:
    """Sentinel-2 scl validity: every class but the `invalid` ones."""
    return MaskRule("values", tuple(v for v in range(256) if v not in invalid))


PROFILES = {
    p.collection: p
    for p in (
        CollectionProfile(
            "sentinel-2-l2a",
            OPTICAL,
            (("blue", "green", "red", "nir"), ("B02", "B03", "B04", "B08")),
            ("scl", "SCL"),
            scl_rule(SCL_INVALID),
            scale=0.0001,  # Planetary Computer gives no raster:bands scale; Earth Search does (offset -0.1)
            cloud_filter=True,
            units="surface reflectance",
        ),
        CollectionProfile(
            "sentinel-2-l1c",
            OPTICAL,
            (("blue", "green", "red", "nir"), ("B02", "B03", "B04", "B08")),
            scale=0.0001,
            cloud_filter=True,
            units="top-of-atmosphere reflectance",
        ),
        CollectionProfile(
            "landsat-c2-l2",
            OPTICAL,
            (("red", "green", "blue", "nir08"),),
            ("qa_pixel",),
            MaskRule("bits", QA_PIXEL_BITS),
            scale=0.0000275,  # both catalogs give it in raster:bands too
            offset=-0.2,
            cloud_filter=True,
            units="surface reflectance",
        ),
        CollectionProfile("sentinel-1-rtc", SAR, (("vv", "vh"),), units="terrain-corrected gamma0, linear power"),
    )
}


@dataclasses.dataclass(frozen=True)
class StacParams:
    """How items become observations: the parts of an observation's identity that are not its items."""

    resampling: str = "bilinear"
    dtype: str = "float32"
    clip_to_aoi: bool = False
    scl_invalid: tuple[int, ...] = SCL_INVALID
    sar_db: bool = False

    def __post_init__(self):
        ConvertParams(resampling=self.resampling, dtype=self.dtype)  # the same checks as convert

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    def mask_rule(self, profile: CollectionProfile) -> MaskRule | None:
        """The profile's quality rule; the scl rule with this run's invalid classes."""
        if profile.mask_rule == scl_rule(SCL_INVALID):
            return scl_rule(self.scl_invalid)
        return profile.mask_rule


@functools.lru_cache(maxsize=8)
def _read_headers(file: str | None, variable: str | None, text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    if file:
        try:
            out.update(json.loads(fs.read_bytes(file)))
        except (OSError, ValueError) as error:
            raise UserError(f"--stac_headers_file {file}: not a JSON object: {error}") from None
    if variable:
        try:
            out.update(json.loads(text))
        except ValueError as error:
            raise UserError(f"--stac_headers_env: ${variable} is not a JSON object: {error}") from None
    return {str(k): str(v) for k, v in out.items()}


@dataclasses.dataclass(frozen=True)
class StacAccess:
    """How workers reach the assets: signing, where request headers are read, GDAL options, retries.

    Headers are read where they are used (`headers()`), from a JSON file or an environment variable
    holding JSON, so their values never travel in the job graph.
    """

    sign: str = "none"  # or "planetary_computer"
    headers_file: str | None = None
    headers_env: str | None = None
    gdal_options: tuple[tuple[str, str], ...] = tuple(GDAL_HTTP_OPTIONS.items())
    max_attempts: int = 4
    retry_sleep: float = 1.0

    def __post_init__(self):
        if self.sign not in ("none", "planetary_computer"):
            raise UserError(f"--stac_sign must be none or planetary_computer, got {self.sign!r}")
        if self.max_attempts < 1:
            raise UserError(f"--stac_max_attempts must be at least 1, got {self.max_attempts}")

    def headers(self) -> dict[str, str]:
        """The request headers, read here (once per process and source of them)."""
        if self.headers_env and os.environ.get(self.headers_env) is None:
            raise UserError(f"--stac_headers_env: ${self.headers_env} is not set")
        return _read_headers(self.headers_file, self.headers_env, os.environ.get(self.headers_env or "", ""))

    def href(self, href: str) -> str:
        """The URL to read: signed for Planetary Computer (the token API is asked once per container and
        process, `planetary_computer` caches it)."""
        if self.sign == "planetary_computer":
            import planetary_computer

            return planetary_computer.sign_url(href)
        return href

    def env(self) -> dict[str, str]:
        """GDAL options of a read."""
        options = dict(self.gdal_options)
        headers = self.headers()
        if headers:
            options["GDAL_HTTP_HEADERS"] = "\r\n".join(f"{k}: {v}" for k, v in headers.items())
        return options


@dataclasses.dataclass(frozen=True)
class StacPart:
    """One item of an acquisition: its band asset hrefs (unsigned), quality asset, scale and offset per band."""

    item: str
    bands: tuple[str, ...]
    scales: tuple[tuple[float, float], ...]
    bbox: tuple[float, float, float, float]  # lon/lat
    mask: str | None = None


@dataclasses.dataclass(frozen=True)
class StacSource:
    """One observation: the items of one acquisition, in mosaic order (ascending id)."""

    modality: str
    time: float
    collection: str
    band_names: tuple[str, ...]
    parts: tuple[StacPart, ...]
    cloud_cover: float | None = None

    @property
    def name(self) -> str:
        return f"{self.modality} {iso_time(self.time)} ({', '.join(p.item for p in self.parts)})"

    @property
    def where(self) -> str:
        return self.parts[0].item

    def to_json(self) -> dict:
        return {
            "modality": self.modality,
            "time": iso_time(self.time),
            "collection": self.collection,
            "bands": list(self.band_names),
            "items": [dataclasses.asdict(p) for p in self.parts],
        }

    def estimated_bytes(self, grid: Grid) -> int:
        """Uncompressed bytes of the assets' pixels under the grid (the upper bound a plan states)."""
        return grid.height * grid.width * (len(self.band_names) * 4 + 2) * len(self.parts)


# --- search ---------------------------------------------------------------------------------------


def _retry():
    from urllib3.util.retry import Retry

    return Retry(
        total=6,
        connect=2,  # a wrong --stac_api fails in seconds
        backoff_factor=0.5,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=None,  # POST searches too
        respect_retry_after_header=True,
    )


def open_catalog(api: str, headers: dict[str, str]):
    """A pystac-client Client of a STAC API root that retries 429 (with Retry-After) and 5xx."""
    from pystac_client import Client
    from pystac_client.stac_api_io import StacApiIO

    try:
        return Client.open(api, stac_io=StacApiIO(headers=headers, max_retries=_retry()))
    except Exception as error:  # pystac-client raises APIError, requests' errors, JSON errors...
        raise UserError(f"--stac_api {api}: cannot open the STAC API: {str(error).splitlines()[0]}") from None


def cloud_condition(client, maxcc: float) -> dict:
    """The search arguments of `eo:cloud_cover < maxcc * 100`: the `query` extension or a CQL2 `filter`,
    whichever the API conforms to; {} when neither (the launcher then filters the items itself)."""
    from pystac_client.conformance import ConformanceClasses

    percent = maxcc * 100.0
    if client.conforms_to(ConformanceClasses.QUERY):
        return {"query": {"eo:cloud_cover": {"lt": percent}}}
    if client.conforms_to(ConformanceClasses.FILTER):
        return {
            "filter": {"op": "<", "args": [{"property": "eo:cloud_cover"}, percent]},
            "filter_lang": "cql2-json",
        }
    return {}


def search_items(
    api: str,
    collections: Iterable[str],
    bbox: tuple[float, float, float, float],
    start: float,
    end: float,
    maxcc: float | None,
    headers: dict[str, str],
) -> list[dict]:
    """Item dicts of `collections` over `bbox` (lon/lat) in `[start, end)`, every page followed."""
    client = open_catalog(api, headers)
    found = []
    for name in collections:
        profile = PROFILES[name]
        condition = cloud_condition(client, maxcc) if profile.cloud_filter and maxcc is not None else {}
        search = client.search(
            collections=[name],
            bbox=list(bbox),
            datetime=f"{iso_time(start)}/{iso_time(end)}",
            max_items=None,
            **condition,
        )
        try:
            items = [item.to_dict() for item in search.items()]
        except Exception as error:
            raise UserError(f"--stac_api {api}: the search of {name} failed: {str(error).splitlines()[0]}") from None
        if profile.cloud_filter and maxcc is not None and not condition:
            items = [i for i in items if i["properties"].get("eo:cloud_cover", 0.0) < maxcc * 100.0]
        found += [i for i in items if start <= parse_time(i["properties"]["datetime"]) < end]
    return found


# --- items -> observations ------------------------------------------------------------------------


def _modality(profile: CollectionProfile, item: dict) -> str:
    if profile.modality != SAR:
        return profile.modality
    state = str(item["properties"].get("sat:orbit_state", "")).lower()
    if state not in ("ascending", "descending"):
        raise ValueError(f"sat:orbit_state is {state or 'missing'}: neither ascending nor descending")
    return f"sar_{state}"


def _band_keys(profile: CollectionProfile, item: dict, chosen: tuple[str, ...] | None) -> tuple[str, ...]:
    assets = item.get("assets", {})
    options = (chosen,) if chosen else profile.bands
    for keys in options:
        if all(k in assets for k in keys):
            return keys
    raise ValueError(f"has none of the band asset sets {[list(k) for k in options]} (assets: {sorted(assets)})")


def _scale(asset: dict, profile: CollectionProfile) -> tuple[float, float]:
    bands = asset.get("raster:bands") or [{}]
    return float(bands[0].get("scale", profile.scale)), float(bands[0].get("offset", profile.offset))


def _part(profile: CollectionProfile, item: dict, keys: tuple[str, ...]) -> StacPart:
    assets = item["assets"]
    mask = next((assets[k]["href"] for k in profile.mask if k in assets), None)
    if profile.mask and mask is None:
        raise ValueError(f"has no quality asset ({' or '.join(profile.mask)})")
    return StacPart(
        item["id"],
        tuple(assets[k]["href"] for k in keys),
        tuple(_scale(assets[k], profile) for k in keys),
        tuple(float(v) for v in item["bbox"]),
        mask,
    )


def _orbit(properties: dict):
    for key in ("sat:relative_orbit", "landsat:wrs_path", "sat:absolute_orbit"):
        if key in properties:
            return str(properties[key])
    return None


def acquisitions(
    items: list[dict], bands: dict[str, tuple[str, ...]], tolerance: float
) -> tuple[list[StacSource], list[Rejection]]:
    """One StacSource per acquisition (see the module doc), and the items set aside with the reason.

    `bands`: asset keys chosen per collection (`--stac_bands`); absent -> the profile's default.
    """
    rejected: list[Rejection] = []
    grouped: dict[tuple, list[tuple[float, dict, tuple[str, ...]]]] = {}
    for item in items:
        profile = PROFILES[item["collection"]]
        time = parse_time(item["properties"]["datetime"])
        try:
            modality = _modality(profile, item)
            keys = _band_keys(profile, item, bands.get(profile.collection))
            _part(profile, item, keys)
        except ValueError as error:
            rejected.append(Rejection(item["id"], f"STAC item {error}", None, iso_time(time)))
            continue
        key = (profile.collection, modality, item["properties"].get("platform"), _orbit(item["properties"]), keys)
        grouped.setdefault(key, []).append((time, item, keys))
    sources: dict[tuple[str, str], StacSource] = {}
    for (collection, modality, _, _, keys), members in sorted(grouped.items(), key=lambda kv: str(kv[0])):
        members.sort(key=lambda m: (m[0], m[1]["id"]))
        runs: list[list] = []
        for member in members:
            if runs and member[0] - runs[-1][0][0] <= tolerance:
                runs[-1].append(member)
            else:
                runs.append([member])
        profile = PROFILES[collection]
        for run in runs:
            ordered = sorted(run, key=lambda m: m[1]["id"])
            covers = [m[1]["properties"].get("eo:cloud_cover") for m in run]
            source = StacSource(
                modality,
                run[0][0],
                collection,
                keys,
                tuple(_part(profile, m[1], keys) for m in ordered),
                max(covers) if None not in covers else None,
            )
            name = (modality, time_name(source.time))
            if name in sources:  # two acquisitions in one second of one modality: one file name
                rejected.append(
                    Rejection(
                        source.where,
                        f"same modality and second as {sources[name].where}, which is kept",
                        modality,
                        iso_time(source.time),
                    )
                )
                continue
            sources[name] = source
    return sorted(sources.values(), key=lambda s: (s.time, s.modality)), rejected


# --- reading --------------------------------------------------------------------------------------


def _retry_status(reason: str) -> int | None:
    match = RETRY_STATUS.search(reason)
    return int(match.group(1)) if match else None


def _retry_after(url: str, headers: dict[str, str]) -> float | None:
    """The wait (s) a throttling server asks for: GDAL does not pass its Retry-After on, so the server is
    asked again with a HEAD (None when it does not answer 429 with a Retry-After in seconds)."""
    import requests

    try:
        answer = requests.head(url, headers=headers, timeout=30)
    except requests.RequestException:
        return None
    try:
        return float(answer.headers["Retry-After"]) if answer.status_code == 429 else None
    except (KeyError, ValueError):
        return None


@functools.cache
def _gdal_library():
    """The GDAL library rasterio runs on (its wheel's bundled copy, else the system's), for the two calls
    rasterio does not expose; None if it cannot be found."""
    bundled = glob.glob(os.path.join(os.path.dirname(rasterio.__file__), os.pardir, "rasterio.libs", "libgdal*"))
    name = bundled[0] if bundled else ctypes.util.find_library("gdal")
    if name is None:
        return None
    library = ctypes.CDLL(name)
    library.VSICurlPartialClearCache.argtypes = [ctypes.c_char_p]
    return library


def forget_failed_read(url: str) -> None:
    """Drops what GDAL keeps of a URL (its cached blocks and the failed answer itself) and GDAL's error
    state, so a retry asks the server again instead of failing with the cached error."""
    library = _gdal_library()
    if library is not None:
        library.VSICurlPartialClearCache(("/vsicurl/" + url).encode())
        library.CPLErrorReset()


def read_asset(
    href: str, grid: Grid, window: PixelWindow, resampling: str, access: StacAccess, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """One asset's window on the grid over HTTP; 429 (waiting the server's Retry-After) and 5xx retried
    with backoff (x3), GDAL's cache of the failed read dropped first; other failures (404, a corrupt
    file) raise ObservationError at once, their cached failure dropped as well."""
    url = access.href(href)
    for attempt in range(access.max_attempts):
        try:
            with rasterio.Env(**access.env()):
                return read_file_window(url, grid, window, resampling, what)
        except ObservationError as error:
            status = _retry_status(error.reason)
            if attempt + 1 == access.max_attempts or status is None:
                # Not kept either: a later read in this process (a resume) asks the server again.
                forget_failed_read(url)
                raise ObservationError(href, error.reason) from None
            wait = access.retry_sleep * 3**attempt
            if status == 429:
                wait = max(wait, _retry_after(url, access.headers()) or 0.0)
            _LOG.warning("retrying %s in %.1f s (%s)", href, wait, error.reason)
            clock.sleep(wait)
            forget_failed_read(url)
    raise AssertionError("unreachable")


def _window_lonlat(grid: Grid, window: PixelWindow) -> tuple[float, float, float, float]:
    a, _, c, _, e, f = grid.transform
    xs = (c + a * window.col_start, c + a * window.col_stop)
    ys = (f + e * window.row_start, f + e * window.row_stop)
    return transform_bounds(grid.crs, "EPSG:4326", min(xs), min(ys), max(xs), max(ys))


def _overlaps(a, b) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def read_stac_window(
    source: StacSource,
    grid: Grid,
    window: PixelWindow,
    params: StacParams,
    access: StacAccess,
    area: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`(float32 [h, w, bands], bool valid [h, w])` of one observation on a grid window: its items
    mosaicked (first valid pixel in mosaic order); items whose bbox misses the window are not read,
    nor are the rest once every pixel is valid."""
    profile = PROFILES[source.collection]
    rule = params.mask_rule(profile)
    shape = (window.height, window.width)
    data = np.zeros((len(source.band_names), *shape), np.float32)
    valid = np.zeros(shape, bool)
    wanted = area if area is not None else np.ones(shape, bool)
    bounds = _window_lonlat(grid, window)
    for part in source.parts:
        if not _overlaps(part.bbox, bounds):
            continue
        ok = np.ones(shape, bool)
        bands = []
        for href, (scale, offset) in zip(part.bands, part.scales):
            raw, inside = read_asset(href, grid, window, params.resampling, access, "band asset")
            ok &= inside.all(axis=0)
            bands.append(raw[0].astype(np.float32) * np.float32(scale) + np.float32(offset))
        if part.mask is not None:
            raw, inside = read_asset(part.mask, grid, window, "nearest", access, "quality asset")
            ok &= inside[0] & rule.decode(raw[0])
        values = np.stack(bands)
        ok &= np.isfinite(values).all(axis=0)
        take = ok & ~valid & wanted
        data[:, take] = values[:, take]
        valid |= take
        if valid[wanted].all():
            break
    if profile.modality == SAR and params.sar_db:
        positive = valid & (data > 0).all(axis=0)
        data[:, positive] = 10.0 * np.log10(data[:, positive])
        valid = positive
    data[:, ~valid] = 0.0
    return np.ascontiguousarray(np.moveaxis(data, 0, -1)), valid


# --- the job and the plan -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StacJob(ConvertJob):
    """Convert's job (acquire.convert) over STAC observations: the same transforms, store and resume."""

    # `params` is a StacParams here
    access: StacAccess = StacAccess()
    api: str = ""

    @property
    def folder(self):
        source = {"source": "stac", "stac_api": self.api, **self.params.to_json()}
        return store_folder(
            self.store, self.grid, {**source, "aoi": self.aoi_wkt if self.params.clip_to_aoi else None}, self.run_id
        )

    def inspect(self, source: StacSource) -> tuple[str, ...]:
        """Nothing to open: the band names are the asset keys; a bad asset shows when its blocks are read."""
        return source.band_names

    def read_window(self, source: StacSource, window: PixelWindow, area: np.ndarray | None):
        return read_stac_window(source, self.grid, window, self.params, self.access, area)

    def tags(self, source: StacSource) -> dict:
        return {ITEMS_TAG: ";".join(p.item for p in source.parts), "RSDT_STAC_COLLECTION": source.collection}


def parse_stac_bands(text: str | None, collections: tuple[str, ...]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """`red,nir08` (every optical collection) or `sentinel-2-l2a=B04,B08;sentinel-1-rtc=vv`; ValueError
    for a collection not searched or without its row in the table."""
    unknown = [c for c in collections if c not in PROFILES]
    if unknown or not collections:
        raise ValueError(f"unknown collections {unknown}; the table has {', '.join(PROFILES)}")
    if not text:
        return ()
    out = {}
    for part in text.split(";"):
        name, sep, keys = part.partition("=")
        chosen = tuple(k.strip() for k in (keys if sep else name).split(",") if k.strip())
        if sep:
            out[name.strip()] = chosen
        else:
            out.update({c: chosen for c in collections if PROFILES[c].modality == OPTICAL})
    extra = [c for c in out if c not in collections]
    if extra:
        raise ValueError(f"names collections not searched: {extra}")
    return tuple(sorted(out.items()))


@dataclasses.dataclass
class StacPlan(ConvertPlan):
    """A STAC run resolved on the launcher: the job, one StacSource per acquisition, the items set aside."""

    items: list[dict] = dataclasses.field(default_factory=list)

    @classmethod
    def from_stac_spec(cls, area: AreaSpec, stack: StackSpec, spec: StacSpec, overwrite: bool = False) -> StacPlan:
        """Searches the catalog over the grid (the AOI's, or the store's) and the run's time range."""
        if not area.store:
            raise UserError("--store is required (the observation store to write)")
        aoi, grid = run_grid(area)
        check_store_grid(area.store, grid, overwrite)
        params = stack.params
        bbox = transform_bounds(grid.crs, "EPSG:4326", *grid.bounds)
        items = search_items(
            spec.api, spec.collections, bbox, params.starttime, params.endtime, spec.maxcc, spec.access.headers()
        )
        sources, rejected = acquisitions(items, dict(spec.bands), spec.time_tolerance)
        for item in rejected:
            _LOG.warning("set aside %s: %s", item.observation, item.reason)
        bands = {}
        names = {}
        for source in sources:
            bands.setdefault(source.modality, len(source.band_names))
            names.setdefault(source.modality, source.band_names)
        for source in sources:
            if len(source.band_names) != bands[source.modality]:
                raise UserError(
                    f"--stac_bands: {source.modality} items of {source.collection} give {len(source.band_names)} "
                    f"bands, others {bands[source.modality]}; choose the same count per modality"
                )
        job = StacJob(
            area.store,
            grid,
            spec.params,
            tuple(sorted(bands.items())),
            aoi,
            spec.block_size,
            access=spec.access,
            api=spec.api,
        )
        return cls(job, sources, rejected, names, items)

    def band_description(self) -> dict:
        out = {}
        for modality, names in self.band_names.items():
            collections = sorted({s.collection for s in self.sources if s.modality == modality})
            units = "; ".join(PROFILES[c].units for c in collections)
            sar_db = modality != OPTICAL and self.job.params.sar_db
            out[modality] = {
                "names": list(names),
                "units": "dB" if sar_db else units,
                "preprocessing": {
                    "source": "STAC " + ", ".join(collections),
                    "scale": "raster:bands scale and offset, else the collection table's",
                    "mosaic": "items of one acquisition in ascending id order, first valid pixel",
                    "resampling": self.job.params.resampling,
                    "dtype": self.job.params.dtype,
                },
            }
        return out

    def describe(self) -> str:
        return (
            f"stac: {len(self.items)} items -> {len(self.sources)} acquisitions "
            f"({self.modality_counts()}), {len(self.rejected)} set aside at listing, "
            f"about {self.estimated_bytes() / 1e6:.1f} MB of pixels to read at most; "
            f"grid {self.job.grid.describe()} -> {self.job.store}"
        )

    def estimated_bytes(self) -> int:
        return sum(s.estimated_bytes(self.job.grid) for s in self.sources)

    def item_lines(self) -> list[str]:
        """`--plan_only`: one line per acquisition (its items) and per item set aside."""
        lines = [
            f"{s.modality}\t{iso_time(s.time)}\t{s.collection}\t{len(s.parts)} item(s): "
            f"{', '.join(p.item for p in s.parts)}\tcloud {s.cloud_cover if s.cloud_cover is not None else '-'}"
            f"\t<= {math.ceil(s.estimated_bytes(self.job.grid) / 1e3)} kB"
            for s in self.sources
        ]
        return lines + [f"set aside\t{r.observation}\t{r.reason}" for r in self.rejected]
