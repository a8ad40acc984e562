"""Every flag of every entry point, declared once: name, default, help, grouped by stage.

An entry point names the groups it uses (`parser(...)`); its `--help` shows those groups only, without
the flags marked `advanced` (`--help-all` shows them too). Durations are a number with a unit (`2d`,
`12h`, `90m`, `1w`) or a bare number of seconds. Booleans take `--flag` or `--flag=true|false`
(the Flex Template passes every flag as `--name=value`).
Whatever an entry point does not declare is handed to Beam (`--runner`, `--project`, ...).
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from rsdt_beam.errors import UserError
from rsdt_beam.grid import DEFAULT_CHUNK_SIZE
from rsdt_beam.tfrecord import DEFAULT_GZIP_LEVEL


def parse_bool(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


@dataclasses.dataclass(frozen=True)
class Flag:
    name: str
    help: str
    default: Any = None
    type: Any = str
    choices: tuple | None = None
    boolean: bool = False
    advanced: bool = False  # shown by --help-all only

    def add_to(self, group, suppress_default: bool = False, required: bool = False, hidden: bool = False) -> None:
        default = argparse.SUPPRESS if suppress_default else (False if self.boolean else self.default)
        help_text = self.help if self.default is None or self.boolean else f"{self.help} (default: {self.default})"
        help_text = argparse.SUPPRESS if hidden else ("REQUIRED: " if required else "") + help_text.replace("%", "%%")
        if self.boolean:
            group.add_argument(
                f"--{self.name}",
                nargs="?",
                const=True,
                default=default,
                type=parse_bool,
                metavar="true|false",
                help=help_text,
            )
            return
        group.add_argument(f"--{self.name}", default=default, type=self.type, choices=self.choices, help=help_text)


@dataclasses.dataclass(frozen=True)
class Group:
    title: str
    flags: tuple[Flag, ...]


GROUPS: dict[str, Group] = {
    "area": Group(
        "Stage 1: area, grid and observation store",
        (
            Flag("store", "observation store to write (stack it with --observations STORE)"),
            Flag("aoi", "area of interest: .shp, GeoJSON, or bbox minx,miny,maxx,maxy"),
            Flag("aoi_crs", "CRS of a bbox --aoi, e.g. EPSG:4326"),
            Flag("aoi_union", "union of all polygons (default: first)", boolean=True, advanced=True),
            Flag("resolution", "pixel size in grid CRS units, e.g. 10", type=float),
            Flag("crs", "grid CRS: EPSG:n, or utm (default: the AOI's if projected, else utm)"),
        ),
    ),
    "convert_archive": Group(
        "Stage 1 convert: archive",
        (
            Flag("manifest", "CSV or JSON lines: modality,time,bands,mask,band_selection"),
            Flag("band_files", "glob(s) of band files, comma-separated: one per band file"),
            Flag("mask_files", "glob of mask/QA files"),
            Flag("archive_modality", "modality of --band_files", "optical", advanced=True),
            Flag(
                "time_pattern",
                "time in the path, strftime fields + * ? wildcards, e.g. ?????????%Y%j*",
                "%Y%m%dT%H%M%S",
            ),
            Flag("band_selection", "1-based bands to keep, e.g. 1,2,3", advanced=True),
            Flag("align_to", "raster whose pixel edges the grid shares (no resampling)", advanced=True),
        ),
    ),
    "convert_values": Group(
        "Stage 1 convert: values",
        (
            Flag(
                "mask_rule",
                "nonzero | values:0,1 | bits:3,4 | function:mod:fn | fmask | scl | landsat_qa_pixel",
                "nonzero",
            ),
            Flag("divisor", "normalization divisor, or optical=10000,sar=1", "255"),
            Flag("db_to_linear", "SAR bands: dB to linear power", boolean=True, advanced=True),
        ),
    ),
    "reads": Group(
        "Stage 1 convert and STAC: reads",
        (
            Flag("resampling", "resampling of bands (masks: nearest)", "bilinear", advanced=True),
            Flag(
                "output_dtype",
                "stored band dtype: float32 (rsdtlib), float64, or uint16/int16/uint8 "
                "(rounded; values must fit, e.g. with --divisor 1)",
                "float32",
                advanced=True,
            ),
            Flag(
                "convert_block_size",
                "pixels per side of one convert read (fan-out per observation and block); whole 256 px tiles "
                "of the store's GeoTIFF on grids of at least 256 px (rounded down, at least 256)",
                2048,
                int,
                advanced=True,
            ),
            Flag(
                "clip_to_aoi",
                "pixels outside the AOI polygon are invalid (default: the whole bbox, as rsdtlib)",
                boolean=True,
                advanced=True,
            ),
        ),
    ),
    "stac": Group(
        "Stage 1 STAC: catalog and assets",
        (
            Flag("stac_api", "STAC API root, e.g. https://earth-search.aws.element84.com/v1"),
            Flag(
                "stac_collections",
                "collections to search (rows of the collection table): sentinel-2-l2a, sentinel-2-l1c, "
                "landsat-c2-l2, sentinel-1-rtc",
                "sentinel-1-rtc,sentinel-2-l2a",
            ),
            Flag(
                "stac_bands",
                "band asset keys: red,nir08 (every optical collection) or per collection "
                "sentinel-2-l2a=B04,B08;sentinel-1-rtc=vv (default: the table's)",
            ),
            Flag(
                "stac_time_tolerance",
                "seconds: items of one platform and orbit this close are one acquisition",
                60.0,
                float,
                advanced=True,
            ),
            Flag("stac_scl_invalid", "Sentinel-2 L2A scl classes that are invalid", "0,1,3,8,9,10", advanced=True),
            Flag("stac_sar_db", "Sentinel-1 RTC in dB (default: linear power, as rsdtlib)", boolean=True),
            Flag(
                "stac_sign",
                "sign asset URLs on the workers: planetary_computer (its SAS token API) or none",
                "none",
                choices=("none", "planetary_computer"),
            ),
            Flag(
                "stac_headers_file",
                "local or gs:// JSON {header: value} sent with every request (read on the launcher and every worker)",
                advanced=True,
            ),
            Flag(
                "stac_headers_env",
                "environment variable holding JSON {header: value} (read on every machine)",
                advanced=True,
            ),
            Flag(
                "stac_max_attempts", "tries per asset read on 429 (Retry-After honoured) and 5xx", 4, int, advanced=True
            ),
            Flag("stac_retry_sleep", "first back-off in s (x3 per retry)", 1.0, float, advanced=True),
        ),
    ),
    "fetch": Group(
        "Stage 1 fetch: Sentinel Hub",
        (
            Flag(
                "collections",
                "modalities to fetch: S1 IW GRD ascending/descending, S2 L1C",
                "sar_ascending,sar_descending,optical",
            ),
            Flag(
                "time_difference",
                "seconds: acquisitions closer than this are one; request time range +- this",
                1.0,
                float,
                advanced=True,
            ),
            Flag(
                "fetch_chunk_size",
                "pixels per side of one Process request (blocks of the whole grid, at most 2500); whole 256 px "
                "tiles of the store's GeoTIFF on grids of at least 256 px (rounded down, at least 256)",
                2500,
                int,
                advanced=True,
            ),
            Flag(
                "max_requests_in_flight",
                "Process requests in flight across the whole job, whatever the worker count",
                4,
                int,
                advanced=True,
            ),
            Flag(
                "sh_base_url",
                "Sentinel Hub (or CDSE https://sh.dataspace.copernicus.eu) base URL",
                "https://services.sentinel-hub.com",
            ),
            Flag("sh_token_url", "OAuth token URL (default: the base URL's)", advanced=True),
            Flag(
                "sh_credentials_file",
                "local or gs:// JSON {client_id, client_secret}, read by the launcher and "
                "every worker (default: SH_CLIENT_ID/SH_CLIENT_SECRET in their environment)",
            ),
            Flag(
                "sh_secret", "Secret Manager version projects/P/secrets/S/versions/V holding that JSON", advanced=True
            ),
            Flag(
                "sh_profile",
                "sentinelhub config profile with the credentials (on every machine of the run)",
                advanced=True,
            ),
            Flag("sh_max_attempts", "tries per request on 5xx/connection errors", 4, int, advanced=True),
            Flag("sh_retry_sleep", "first back-off in s (x3 per retry)", 5.0, float, advanced=True),
            Flag("sh_timeout", "seconds per HTTP request", 120.0, float, advanced=True),
            Flag(
                "sh_max_throttle_retries",
                "429 answers honoured per request (each waits the server's Retry-After)",
                100,
                int,
                advanced=True,
            ),
        ),
    ),
    "cloud_cover": Group(
        "Stage 1 fetch and STAC: cloud filter",
        (
            Flag(
                "maxcc",
                "scene cloud cover below this, 0..1 (rsdtlib: 1.0, i.e. < 100 %), or none: no cloud filter "
                "(fully cloudy scenes are listed, then set aside as fully masked); Sentinel-2, and Landsat in STAC",
                "1.0",
            ),
        ),
    ),
    "plan": Group(
        "planning",
        (
            Flag(
                "plan_only",
                "print the plan and run nothing (fetch: the requests and estimated processing units; "
                "stac: the items, acquisitions and estimated bytes; stack, run: observations, tiles and "
                "work items)",
                boolean=True,
            ),
        ),
    ),
    "inputs": Group(
        "Stage 2: inputs (any subset of the three modalities)",
        (
            Flag("observations", "the project's observation store (from convert/fetch)"),
            Flag("sar_ascending", "folder of rsdtlib EOPatches, SAR ascending"),
            Flag("sar_descending", "folder of rsdtlib EOPatches, SAR descending"),
            Flag("optical", "folder of rsdtlib EOPatches, optical"),
            Flag("sar_bands_feature", "EOPatch data feature of SAR bands", "L1_GND", advanced=True),
            Flag("sar_mask_feature", "EOPatch mask feature of SAR", "dataMask", advanced=True),
            Flag("opt_bands_feature", "EOPatch data feature of optical bands", "L1C_data", advanced=True),
            Flag("opt_mask_feature", "EOPatch mask feature of optical", "dataMask", advanced=True),
        ),
    ),
    "time_range": Group(
        "Stage 2: time range",
        (
            Flag("starttime", "first time of the stack: ISO 8601, e.g. 2017-01-01 (UTC unless an offset is given)"),
            Flag("endtime", "end of the stack, exclusive: ISO 8601, e.g. 2017-07-01"),
        ),
    ),
    "tiling": Group(
        "Stage 2: tiling",
        (
            Flag("tile_size", "tile size N or YxX pixels", "32"),
            Flag("deadzone", "deadzone N or YxX pixels (tiles overlap by 2x)", "0"),
        ),
    ),
    "stack": Group(
        "Stage 2: parameters",
        (
            Flag(
                "delta_step",
                "bin length, one frame per non-empty bin: a duration 2d, 12h, 90m, 1w; a bare number is seconds",
                "2d",
            ),
            Flag(
                "chunk_size",
                "pixels per side of one Stage 2 read chunk (whole tiles), streamed through time by one "
                "work item; memory grows with neither the area nor the series",
                DEFAULT_CHUNK_SIZE,
                int,
                advanced=True,
            ),
        ),
    ),
    "stack_output": Group(
        "Stage 2: output", (Flag("stack_output", "write Stage 2 records ({j}_{i}.tfrecords, metadata.json) here"),)
    ),
    "stack_input": Group("Stage 3: input", (Flag("stack_dir", "Stage 2 output (rsdt_beam's or rsdtlib's) to window"),)),
    "window_parameters": Group(
        "Stage 3: parameters",
        (
            Flag("Delta", "window length in time: a duration 30d, 12h, 1w; a bare number is seconds", "30d"),
            Flag("window_stride", "frames between window starts", 1, int),
            Flag("omega", "minimum frames per window (part)", 10, int),
            Flag("Omega", "maximum frames per window (part)", 16, int),
            Flag("triple", "previous/current/next windows", boolean=True),
        ),
    ),
    "window_selection": Group(
        "Stage 3: selection",
        (
            Flag("window_filter", "module:function win_filter(*window) -> bool", advanced=True),
            Flag(
                "tiles", "all | rsdtlib-train | rsdtlib-val | list:0_0,1_2 | file:PATH | expr:EXPR | module:fn", "all"
            ),
            Flag(
                "sample",
                "windows to keep: all | every:K | fraction:F:SEED | weight:module:fn[:SEED]",
                "all",
                advanced=True,
            ),
        ),
    ),
    "window_records": Group(
        "Stage 3: records",
        (
            Flag(
                "mode",
                "inference writes whole windows, what infer and scheduled runs read, and needs no label function "
                "(hence the default); training writes Feature + Label from --label_fn for fitting a model: give "
                "--mode training whenever you train (--label_fn or --label_args without it are refused)",
                "inference",
                choices=("training", "inference"),
            ),
            Flag(
                "label_fn",
                "module:function gen_label(window, label_args) -> (feature, label)",
                "rsdt_beam.window.selection:rsdtlib_example_label",
            ),
            Flag("label_args", "JSON value passed to the label function", advanced=True),
        ),
    ),
    "window_output": Group(
        "Stage 3: output", (Flag("window_output", "folder for window records, windows.csv, metadata.json"),)
    ),
    "window_layout": Group(
        "Stage 3: file layout",
        (
            Flag(
                "layout",
                "per_tile ({j}_{i}.tfrecords) or sharded (windows-NNNNN-of-MMMMM.tfrecords)",
                "per_tile",
                choices=("per_tile", "sharded"),
                advanced=True,
            ),
            Flag("records_per_shard", "sharded layout: at most this many records per file", type=int, advanced=True),
            Flag(
                "bytes_per_shard",
                "sharded layout: at most this many record bytes per file, counted before compression "
                "(default without either limit: 268435456)",
                type=int,
                advanced=True,
            ),
        ),
    ),
    "observed": Group(
        "Stages 2 and 3: observed mask",
        (
            Flag(
                "record_observed",
                "add each record's observed mask (feature Observed, uint8 [.., ty, tx, 3]: a valid "
                "observation of SAR asc./desc./optical since the previous frame) to stacks and "
                "windows",
                boolean=True,
                advanced=True,
            ),
        ),
    ),
    "inference": Group(
        "inference",
        (
            Flag("model", "Keras model file (.keras/.h5; local or gs://); with --model_fn: weights"),
            Flag("model_fn", "module:function returning the Keras model (weights from --model)"),
            Flag(
                "windows",
                "offline: folder of written inference windows (else --stack_dir or Stage 2 inputs give windows online)",
            ),
            Flag("map_output", "folder (local or gs://) for <start>_<end>.tif maps and maps.csv"),
            Flag("batch_size", "largest batch of windows per model call", 16, int, advanced=True),
            Flag(
                "frames",
                "pad each window's time axis to this many frames, as the readers do (default: the "
                "windows' Omega; 0: no padding)",
                type=int,
                advanced=True,
            ),
            Flag("pad_value", "value of padded frames", -1.0, float, advanced=True),
            Flag(
                "trim_map_edges",
                "drop the deadzone along the area's outer edge too (nodata there)",
                boolean=True,
                advanced=True,
            ),
            Flag("map_grid", "grid.json for stacks without a grid in metadata.json (rsdtlib's)", advanced=True),
        ),
    ),
    "schedule": Group(
        "scheduled runs",
        (
            Flag("output_root", "runs/<start>-<end>/ (manifest, windows, state) go here"),
            Flag(
                "end",
                "end of the run, exclusive: today | yesterday | now | ISO 8601 (rounded down to the delta_step bins)",
                "today",
            ),
            Flag(
                "lookback",
                "first run only: start = end - lookback, a duration 30d, 12h; a bare number is seconds (later runs "
                "start where the last successful one ended)",
                "30d",
            ),
            Flag(
                "bin_origin",
                "delta_step bins of every run start at origin + k * delta_step",
                "1970-01-01",
                advanced=True,
            ),
            Flag(
                "write_stacks",
                "also write each run's new Stage 2 frames to runs/<id>/stack",
                boolean=True,
                advanced=True,
            ),
        ),
    ),
    "output": Group(
        "output and reporting",
        (
            Flag(
                "gzip_level",
                "GZIP level 0-9 of TFRecords (any level reads back with GZIP readers)",
                DEFAULT_GZIP_LEVEL,
                int,
                advanced=True,
            ),
            Flag("no_progress", "no progress line on stderr", boolean=True, advanced=True),
            Flag(
                "overwrite",
                "replace the whole contents of output folders made with other parameters (without "
                "it such a folder is refused)",
                boolean=True,
            ),
            Flag("debug", "show the full traceback of an error", boolean=True),
        ),
    ),
    "tile": Group("tile", (Flag("tile", "tile j_i to list, detail and render", "0_0"),)),
    "csv": Group("CSV", (Flag("csv", "write the window ranges here (CSV)"),)),
    "inspect": Group(
        "inspect",
        (
            Flag("all_timestamps", "list every written time stamp", boolean=True),
            Flag("png", "folder for the PNG pictures"),
            Flag("max_frames", "frames shown in the stack picture", 12, int, advanced=True),
            Flag("maps", "map folder: render this many of the last maps", 1, int),
        ),
    ),
    "sample": Group("sample", (Flag("output", "folder for the sample's EOPatches, stacks and windows", "out/sample"),)),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (by the run helper), instead of usage + message
        raise UserError(message)


def parser(
    prog: str,
    description: str | None,
    groups: tuple[str, ...],
    positional: tuple[Flag, ...] = (),
    suppress_defaults: bool = False,
    required: tuple[str, ...] = (),
    full: bool = True,
) -> argparse.ArgumentParser:
    """The parser of one entry point: its positional arguments, then the named groups in order.

    `required` flags are marked in the usage line and the help; `full=False` hides the advanced flags
    from the help (they are parsed all the same).
    """
    flags = [flag for name in groups for flag in GROUPS[name].flags]
    hidden = {flag.name for flag in flags if flag.advanced and flag.name not in required and not full}
    usage = " ".join(
        [prog, *(flag.name.upper() for flag in positional), *(f"--{name} ..." for name in required), "[flags]"]
    )
    epilog = "Other flags (--runner, --direct_num_workers, --project, --temp_location, --dry_run, ...) go to Beam."
    if hidden:
        epilog += f" --help-all shows {len(hidden)} more flags."
    result = _Parser(
        prog=prog,
        usage=usage,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=False,
        allow_abbrev=False,
        epilog=epilog,
    )
    result.add_argument("-h", "--help", action="store_true", help="show the essential flags and exit")
    result.add_argument("--help-all", action="store_true", help="show every flag, the advanced ones too, and exit")
    for flag in positional:
        result.add_argument(flag.name, help=flag.help)
    for name in groups:
        group = GROUPS[name]
        arguments = result.add_argument_group(group.title)
        for flag in group.flags:
            flag.add_to(arguments, suppress_defaults, flag.name in required, flag.name in hidden)
    return result


def all_flags() -> dict[str, Flag]:
    return {flag.name: flag for group in GROUPS.values() for flag in group.flags}
