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
        group.add_argument("--chunk_size", type=int, default=1024,
                           help="pixels per side of one read work item (whole tiles)")
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


class OutputOptions(PipelineOptions):
    """How files are written and how a local run reports."""

    @classmethod
    def _add_argparse_args(cls, parser):
        group = parser.add_argument_group("output")
        group.add_argument("--gzip_level", type=int, default=DEFAULT_GZIP_LEVEL,
                           help="GZIP level 0-9 of TFRecords (any level reads back with GZIP readers)")
        group.add_argument("--no_progress", action="store_true", help="no progress line on stderr")
