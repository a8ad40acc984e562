"""Parsed flags -> the frozen specs of `rsdt_beam.specs`, each made once, at launch.

A bad value becomes a `UserError` naming the flag; user functions (`--label_fn`, `--window_filter`,
`--tiles module:fn`, `--model_fn`) are imported here, so a typo fails before any work starts.
"""

from __future__ import annotations

import argparse
import json
import zipfile

from rsdt_beam import fs
from rsdt_beam.acquire.geotiff import ConvertParams, parse_band_selection
from rsdt_beam.acquire.stac import StacAccess, StacParams, parse_stac_bands
from rsdt_beam.common.names import parse_tile
from rsdt_beam.common.times import parse_duration, parse_time
from rsdt_beam.common.user_code import load_callable
from rsdt_beam.errors import UserError
from rsdt_beam.normalization import model_normalization
from rsdt_beam.specs import (
    AreaSpec,
    ConvertSpec,
    FetchSpec,
    InferenceSpec,
    InputsSpec,
    OutputSpec,
    ScheduleSpec,
    StackSpec,
    StacSpec,
    WindowSpec,
)
from rsdt_beam.window.rules import WindowParams
from rsdt_beam.window.sampling import parse_sample
from rsdt_beam.window.selection import tile_selector


def _flag_value(name: str, parse, text):
    """`parse(text)`, with a ValueError reported as a UserError that names the flag."""
    if text is None:
        return None
    try:
        return parse(text)
    except ValueError as error:
        raise UserError(f"--{name}: {error}") from None


def parse_size_pair(text: str) -> tuple[int, int]:
    """`32` -> (32, 32); `32x64` -> (32, 64) as (y, x)."""
    parts = str(text).lower().split("x")
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"expected N or NxM, got {text!r}")
    values = [int(p) for p in parts]
    return (values[0], values[-1])


def tile(text: str) -> tuple[int, int]:
    return _flag_value("tile", parse_tile, text)


def area_spec(args: argparse.Namespace) -> AreaSpec:
    return AreaSpec(args.store, args.aoi, args.aoi_crs, args.aoi_union, args.resolution, args.crs)


def convert_spec(args: argparse.Namespace) -> ConvertSpec:
    if not args.manifest and not args.band_files:
        raise UserError("no archive: give --manifest or --band_files (with --time_pattern)")
    try:
        params = ConvertParams.create(
            args.divisor, args.resampling, args.mask_rule, args.db_to_linear, args.clip_to_aoi, args.output_dtype
        )
    except ValueError as error:
        raise UserError(str(error)) from None
    band_files = tuple(p.strip() for p in (args.band_files or "").split(",") if p.strip())
    return ConvertSpec(
        args.manifest,
        band_files,
        args.mask_files,
        args.archive_modality,
        args.time_pattern,
        _flag_value("band_selection", parse_band_selection, args.band_selection),
        args.align_to,
        params,
        args.convert_block_size,
    )


def parse_maxcc(text: str) -> float | None:
    """`--maxcc`: a cloud cover fraction 0..1, or `none` for no cloud filter at all."""
    if str(text).strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"--maxcc must be a fraction within 0..1 or none, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise UserError(f"--maxcc must be within 0..1 (or none for no cloud filter), got {value}")
    return value


def fetch_spec(args: argparse.Namespace) -> FetchSpec:
    collections = tuple(m.strip() for m in args.collections.split(",") if m.strip())
    return FetchSpec(
        collections,
        parse_maxcc(args.maxcc),
        args.time_difference,
        args.fetch_chunk_size,
        args.max_requests_in_flight,
        args.sh_base_url,
        args.sh_token_url,
        args.sh_profile,
        args.sh_credentials_file,
        args.sh_secret,
        args.sh_max_attempts,
        args.sh_retry_sleep,
        args.sh_timeout,
        args.sh_max_throttle_retries,
        args.plan_only,
    )


def _integers(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"expected integers separated by commas, got {text!r}") from None


def stac_spec(args: argparse.Namespace) -> StacSpec:
    if not args.stac_api:
        raise UserError("--stac_api is required (a STAC API root URL)")
    collections = tuple(c.strip() for c in args.stac_collections.split(",") if c.strip())
    try:
        params = StacParams(
            args.resampling,
            args.output_dtype,
            args.clip_to_aoi,
            _flag_value("stac_scl_invalid", _integers, args.stac_scl_invalid),
            args.stac_sar_db,
        )
    except ValueError as error:
        raise UserError(str(error)) from None
    access = StacAccess(
        args.stac_sign,
        args.stac_headers_file,
        args.stac_headers_env,
        max_attempts=args.stac_max_attempts,
        retry_sleep=args.stac_retry_sleep,
    )
    _flag_value("stac_collections", lambda text: parse_stac_bands(None, collections), args.stac_collections)
    return StacSpec(
        args.stac_api,
        collections,
        _flag_value("stac_bands", lambda text: parse_stac_bands(text, collections), args.stac_bands or ""),
        parse_maxcc(args.maxcc),
        args.stac_time_tolerance,
        params,
        access,
        args.convert_block_size,
    )


def inputs_spec(args: argparse.Namespace) -> InputsSpec:
    return InputsSpec(
        args.observations,
        args.sar_ascending,
        args.sar_descending,
        args.optical,
        args.sar_bands_feature,
        args.sar_mask_feature,
        args.opt_bands_feature,
        args.opt_mask_feature,
    )


def stack_spec(args: argparse.Namespace) -> StackSpec:
    output = getattr(args, "stack_output", None)
    return StackSpec(
        _flag_value("starttime", parse_time, getattr(args, "starttime", None)),
        _flag_value("endtime", parse_time, getattr(args, "endtime", None)),
        _flag_value("delta_step", parse_duration, args.delta_step),
        _flag_value("tile_size", parse_size_pair, args.tile_size),
        _flag_value("deadzone", parse_size_pair, args.deadzone),
        getattr(args, "chunk_size", None),
        output,
    )


def window_params(args: argparse.Namespace) -> WindowParams:
    try:
        return WindowParams(parse_duration(args.Delta), args.window_stride, args.omega, args.Omega, args.triple)
    except ValueError as error:
        raise UserError(f"window parameters: {error}") from None


def _callable(name: str, spec: str | None):
    if not spec:
        return None
    try:
        return load_callable(spec)
    except (ImportError, AttributeError, ValueError) as error:
        raise UserError(f"--{name} {spec}: {error}") from None


def window_spec(args: argparse.Namespace) -> WindowSpec:
    output = getattr(args, "window_output", None)
    mode = getattr(args, "mode", "inference")
    given = getattr(args, "given", set())
    if mode != "training" and given & {"label_fn", "label_args"}:
        flag = "--label_fn" if "label_fn" in given else "--label_args"
        raise UserError(f"{flag} makes training records: give --mode training (the default is inference)")
    try:
        tiles = tile_selector(args.tiles)
    except (ImportError, AttributeError, ValueError, OSError) as error:
        raise UserError(f"--tiles {args.tiles}: {error}") from None
    label_args = getattr(args, "label_args", None)
    return WindowSpec(
        params=window_params(args),
        mode=mode,
        label_fn=getattr(args, "label_fn", None) if mode == "training" else None,
        gen_label=_callable("label_fn", getattr(args, "label_fn", None)) if mode == "training" else None,
        label_args=_flag_value("label_args", json.loads, label_args),
        window_filter=_callable("window_filter", args.window_filter),
        tiles=tiles,
        sample=_flag_value("sample", parse_sample, getattr(args, "sample", None)),
        layout=getattr(args, "layout", "per_tile"),
        records_per_shard=getattr(args, "records_per_shard", None),
        bytes_per_shard=getattr(args, "bytes_per_shard", None),
        stack_dir=getattr(args, "stack_dir", None),
        output=output,
        delta_text=str(args.Delta),
        identity=(
            ("tiles", args.tiles),
            ("label_fn", getattr(args, "label_fn", None) if mode == "training" else None),
            ("label_args", label_args),
            ("window_filter", args.window_filter),
        ),
    )


def output_spec(args: argparse.Namespace) -> OutputSpec:
    return OutputSpec(
        args.gzip_level,
        progress=not args.no_progress,
        record_observed=getattr(args, "record_observed", False),
        overwrite=args.overwrite,
    )


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def model_file(path: str | None) -> None:
    """Refuses `--model` at launch (not on a dry run) when it cannot be a Keras file: missing, or no zip
    archive (`.keras`) or HDF5 file (`.h5`), e.g. truncated; a file that passes may still fail to load
    on the workers (then the error names it too)."""
    if not path:
        return
    if not fs.exists(path):
        raise UserError(f"--model {path}: no such file")
    with fs.open_read(path) as raw:
        if path.endswith(".keras"):
            try:
                zipfile.ZipFile(raw)
            except zipfile.BadZipFile:
                raise UserError(
                    f"--model {path}: not a Keras model (a .keras file is a zip archive; truncated?)"
                ) from None
        elif path.endswith(".h5") and raw.read(len(_HDF5_SIGNATURE)) != _HDF5_SIGNATURE:
            raise UserError(f"--model {path}: not an HDF5 file (a Keras .h5 model or weights file)")


def inference_spec(args: argparse.Namespace) -> InferenceSpec:
    if not args.model and not args.model_fn:
        raise UserError("give --model (Keras model file) and/or --model_fn (module:function)")
    return InferenceSpec(
        args.model,
        _callable("model_fn", args.model_fn),
        args.map_output,
        args.windows,
        args.batch_size,
        args.frames,
        args.pad_value,
        args.trim_map_edges,
        args.map_grid,
        args.model_fn,
        model_normalization(args.model) if args.model else None,
    )


def schedule_spec(args: argparse.Namespace) -> ScheduleSpec:
    return ScheduleSpec(
        args.output_root,
        args.end,
        _flag_value("lookback", parse_duration, args.lookback),
        _flag_value("bin_origin", parse_time, args.bin_origin),
        args.write_stacks,
    )
