"""Command-line flags of the Stage 2 and Stage 3 pipelines, one place for each.

Times are ISO 8601 (`2017-01-01`, `2017-01-01T00:00:00`; UTC unless an
offset is given); durations are seconds or a number with a unit
(`2d`, `30d`, `12h`, `90m`, `1w`).
"""

from __future__ import annotations

import datetime
import re

from apache_beam.options.pipeline_options import PipelineOptions

from rsdt_beam.tfrecord import DEFAULT_GZIP_LEVEL
from rsdt_beam.window.rules import WindowParams

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str | float) -> float:
    """Seconds of `3600`, `90m`, `12h`, `2d` or `1w`."""
    if isinstance(text, (int, float)):
        return float(text)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smhdw]?)\s*", str(text))
    if not match:
        raise ValueError(f"not a duration: {text!r} (use seconds or e.g. 2d, 12h, 30m)")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def parse_time(text: str | datetime.datetime | float) -> float:
    """UTC epoch seconds of an ISO 8601 time (naive times are UTC, as rsdtlib's)."""
    if isinstance(text, (int, float)):
        return float(text)
    if isinstance(text, datetime.datetime):
        moment = text
    else:
        try:
            moment = datetime.datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"not an ISO 8601 time: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def window_params(flags) -> WindowParams:
    """WindowParams of parsed flags `--Delta --window_stride --omega --Omega --triple` (any namespace)."""
    return WindowParams(parse_duration(flags.Delta), flags.window_stride, flags.omega, flags.Omega, flags.triple)


def parse_size_pair(text: str) -> tuple[int, int]:
    """`32` -> (32, 32); `32x64` -> (32, 64) as (y, x)."""
    parts = str(text).lower().split("x")
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"expected N or NxM, got {text!r}")
    values = [int(p) for p in parts]
    return (values[0], values[-1])


class StackOptions(PipelineOptions):
    """Stage 2: observations -> per-tile stacks."""

    @classmethod
    def _add_argparse_args(cls, parser):
        group = parser.add_argument_group("Stage 2 inputs (any subset of the three modalities)")
        group.add_argument("--observations", help="the project's observation store (from convert/fetch)")
        group.add_argument("--sar_ascending", help="folder of rsdtlib EOPatches, SAR ascending")
        group.add_argument("--sar_descending", help="folder of rsdtlib EOPatches, SAR descending")
        group.add_argument("--optical", help="folder of rsdtlib EOPatches, optical")
        group.add_argument("--sar_bands_feature", default="L1_GND", help="EOPatch data feature of SAR bands")
        group.add_argument("--sar_mask_feature", default="dataMask", help="EOPatch mask feature of SAR")
        group.add_argument("--opt_bands_feature", default="L1C_data", help="EOPatch data feature of optical bands")
        group.add_argument("--opt_mask_feature", default="dataMask", help="EOPatch mask feature of optical")
        group = parser.add_argument_group("Stage 2 parameters")
        group.add_argument("--starttime", help="first time of the stack (ISO 8601; required)")
        group.add_argument("--endtime", help="end of the stack, exclusive (ISO 8601; required)")
        group.add_argument("--delta_step", default="2d", help="bin length: one frame per non-empty bin")
        group.add_argument("--tile_size", default="32", help="tile size N or YxX pixels")
        group.add_argument("--deadzone", default="0", help="deadzone N or YxX pixels (tiles overlap by 2x)")
        group.add_argument("--chunk_size", type=int, default=256,
                           help="pixels per side of one stacking work item (whole tiles); a worker holds "
                                "one chunk's observations, so memory grows with it, not with the area")
        group.add_argument("--stack_output", help="write Stage 2 records ({j}_{i}.tfrecords, metadata.json) here")


class WindowOptions(PipelineOptions):
    """Stage 3: per-tile stacks -> windows."""

    @classmethod
    def _add_argparse_args(cls, parser):
        group = parser.add_argument_group("Stage 3 parameters")
        group.add_argument("--stack_dir", help="Stage 2 output to window (window pipeline only)")
        group.add_argument("--window_output", help="folder for window records, windows.csv, metadata.json")
        group.add_argument("--Delta", default="30d", help="window length in time (Delta)")
        group.add_argument("--window_stride", type=int, default=1, help="frames between window starts")
        group.add_argument("--omega", type=int, default=10, help="minimum frames per window (part)")
        group.add_argument("--Omega", type=int, default=16, help="maximum frames per window (part)")
        group.add_argument("--triple", action="store_true", help="previous/current/next windows")
        group.add_argument("--mode", choices=("training", "inference"), default="inference")
        group.add_argument("--label_fn", default="rsdt_beam.window.selection:rsdtlib_example_label",
                           help="module:function gen_label(window, label_args) -> (feature, label)")
        group.add_argument("--label_args", default=None, help="JSON value passed to the label function")
        group.add_argument("--window_filter", default=None, help="module:function win_filter(*window) -> bool")
        group.add_argument("--tiles", default="all",
                           help="all | rsdtlib-train | rsdtlib-val | list:0_0,1_2 | file:PATH | expr:EXPR | module:fn")
        group.add_argument("--layout", choices=("per_tile", "sharded"), default="per_tile")
        group.add_argument("--records_per_shard", type=int, default=None, help="sharded layout: records per file")
        group.add_argument("--bytes_per_shard", type=int, default=None,
                           help="sharded layout: about this many compressed bytes per file (e.g. 268435456)")


class OutputOptions(PipelineOptions):
    """How files are written and how a local run reports."""

    @classmethod
    def _add_argparse_args(cls, parser):
        group = parser.add_argument_group("output")
        group.add_argument("--gzip_level", type=int, default=DEFAULT_GZIP_LEVEL,
                           help="GZIP level 0-9 of TFRecords (any level reads back with GZIP readers)")
        group.add_argument("--no_progress", action="store_true", help="no progress line on stderr")


class InferenceOptions(PipelineOptions):
    """Model -> maps: online over windows built from stacks/observations, or offline over written windows."""

    @classmethod
    def _add_argparse_args(cls, parser):
        group = parser.add_argument_group("inference")
        group.add_argument("--model", help="Keras model file (.keras/.h5; local or gs://); with --model_fn: weights")
        group.add_argument("--model_fn", help="module:function returning the Keras model (weights from --model)")
        group.add_argument("--windows", help="offline: folder of written inference windows (else --stack_dir "
                                             "or Stage 2 inputs give windows online)")
        group.add_argument("--map_output", help="folder (local or gs://) for <start>_<end>.tif maps and maps.csv")
        group.add_argument("--batch_size", type=int, default=16, help="largest batch of windows per model call")
        group.add_argument("--frames", type=int, default=None,
                           help="pad each window's time axis to this many frames (default: no padding)")
        group.add_argument("--pad_value", type=float, default=-1.0, help="value of padded frames")
        group.add_argument("--trim_map_edges", action="store_true",
                           help="drop the deadzone along the area's outer edge too (nodata there)")
        group.add_argument("--map_grid", help="grid.json for stacks without a grid in metadata.json (rsdtlib's)")


class AreaOptions(PipelineOptions):
    """Stage 1 sources (convert, fetch): the area of interest, its grid and the observation store."""

    @classmethod
    def _add_argparse_args(cls, parser):
        group = parser.add_argument_group("Stage 1: area, grid and observation store")
        group.add_argument("--store", help="observation store to write (stack it with --observations STORE)")
        group.add_argument("--aoi", help="area of interest: .shp, GeoJSON, or bbox minx,miny,maxx,maxy")
        group.add_argument("--aoi_crs", help="CRS of a bbox --aoi, e.g. EPSG:4326")
        group.add_argument("--aoi_union", action="store_true", help="union of all polygons (default: first)")
        group.add_argument("--resolution", type=float, help="pixel size in grid CRS units, e.g. 10")
        group.add_argument("--crs", default=None,
                           help="grid CRS: EPSG:n, or utm (default: the AOI's if projected, else utm)")


class ConvertOptions(PipelineOptions):
    """Stage 1 convert: GeoTIFF archives -> the observation store (see pipelines/convert.py)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        group = parser.add_argument_group("convert: archive")
        group.add_argument("--manifest", help="CSV or JSON lines: modality,time,bands,mask,band_selection")
        group.add_argument("--band_files", help="glob(s) of band files, comma-separated: one per band file")
        group.add_argument("--mask_files", help="glob of mask/QA files")
        group.add_argument("--archive_modality", default="optical", help="modality of --band_files")
        group.add_argument("--time_pattern", default="%Y%m%dT%H%M%S",
                           help="time in the path, strftime fields + * ? wildcards, e.g. ?????????%%Y%%j*")
        group.add_argument("--band_selection", help="1-based bands to keep, e.g. 1,2,3")
        group.add_argument("--align_to", help="raster whose pixel edges the grid shares (no resampling)")
        group.add_argument("--clip_to_aoi", action="store_true",
                           help="pixels outside the AOI polygon are invalid (default: the whole bbox, as rsdtlib)")
        group = parser.add_argument_group("convert: values")
        group.add_argument("--mask_rule", default="nonzero",
                           help="nonzero | values:0,1 | bits:3,4 | function:mod:fn | fmask | scl | landsat_qa_pixel")
        group.add_argument("--divisor", default="255", help="normalization divisor, or optical=10000,sar=1")
        group.add_argument("--resampling", default="bilinear", help="resampling of bands (masks: nearest)")
        group.add_argument("--db_to_linear", action="store_true", help="SAR bands: dB to linear power")
        group.add_argument("--output_dtype", default="float32",
                           help="stored band dtype: float32 (rsdtlib), float64, or uint16/int16/uint8 "
                                "(rounded; values must fit, e.g. with --divisor 1)")
        group.add_argument("--convert_block_size", type=int, default=2048,
                           help="pixels per side of one convert read (fan-out per observation and block)")


class FetchOptions(PipelineOptions):
    """Stage 1 fetch: Sentinel-1/2 from Sentinel Hub -> the observation store (see pipelines/fetch.py)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        group = parser.add_argument_group("fetch: Sentinel Hub")
        group.add_argument("--collections", default="sar_ascending,sar_descending,optical",
                           help="modalities to fetch: S1 IW GRD ascending/descending, S2 L1C")
        group.add_argument("--maxcc", type=float, default=1.0,
                           help="Sentinel-2 tile cloud cover below this, 0..1 (rsdtlib: 1.0, i.e. < 100 %%)")
        group.add_argument("--time_difference", type=float, default=1.0,
                           help="seconds: acquisitions closer than this are one; request time range +- this")
        group.add_argument("--fetch_chunk_size", type=int, default=2500,
                           help="pixels per side of one Process request (whole tiles, at most 2500)")
        group.add_argument("--max_requests_in_flight", type=int, default=4,
                           help="Process requests in flight across the whole job, whatever the worker count")
        group.add_argument("--sh_base_url", default="https://services.sentinel-hub.com",
                           help="Sentinel Hub (or CDSE https://sh.dataspace.copernicus.eu) base URL")
        group.add_argument("--sh_token_url", default=None, help="OAuth token URL (default: the base URL's)")
        group.add_argument("--sh_credentials_file", default=None,
                           help="local or gs:// JSON {client_id, client_secret}, read by the launcher and workers "
                                "(default: SH_CLIENT_ID/SH_CLIENT_SECRET in their environment)")
        group.add_argument("--sh_secret", default=None,
                           help="Secret Manager version projects/P/secrets/S/versions/V holding that JSON")
        group.add_argument("--sh_profile", default=None,
                           help="sentinelhub config profile with the credentials (on every machine of the run)")
        group.add_argument("--sh_max_attempts", type=int, default=4, help="tries per request on 5xx/connection errors")
        group.add_argument("--sh_retry_sleep", type=float, default=5.0, help="first back-off in s (x3 per retry)")
        group.add_argument("--sh_timeout", type=float, default=120.0, help="seconds per HTTP request")
        group.add_argument("--sh_max_throttle_retries", type=int, default=100,
                           help="429 answers honoured per request (each waits the server's Retry-After)")


class ScheduleOptions(PipelineOptions):
    """Scheduled incremental launches (pipelines/scheduled.py): the run's time range and where runs go."""

    @classmethod
    def _add_argparse_args(cls, parser):
        group = parser.add_argument_group("scheduled runs")
        group.add_argument("--output_root", help="runs/<start>-<end>/ (manifest, windows, state) go here")
        group.add_argument("--end", default="today",
                           help="end of the run, exclusive: today | yesterday | now | ISO 8601 "
                                "(rounded down to the delta_step bins)")
        group.add_argument("--lookback", default="30d",
                           help="first run only: start = end - lookback (later runs start where the last "
                                "successful one ended)")
        group.add_argument("--bin_origin", default="1970-01-01",
                           help="delta_step bins of every run start at origin + k * delta_step")
        group.add_argument("--write_stacks", action="store_true",
                           help="also write each run's new Stage 2 frames to runs/<id>/stack")
