"""Looking at outputs: what a stack, window or map folder holds, as text, CSV and PNG pictures.

* `describe_stack` / `describe_windows` / `describe_maps`: metadata, tile count, the time stamps
  written per tile, window ranges (rsdtlib's `windows_list`, for any tile).
* `inspect_output`: all of the above for a stack, window or map folder (the `inspect` command).
* `render_tile_stack`: a tile's frames over time, one row per band with its name, units and a colour
  bar (names and units from metadata.json's `bands`); optical true colour B04/B03/B02 (by name, or
  bands 4/3/2 of 4 or more unnamed ones) stretched per channel and frame (2-98 %), so no channel's
  range tints the picture and a cloudy frame does not darken the clear ones.
* `render_window_timeline`: written frames and the windows over them, like rsdtlib's
  stacking/windowing figure (previous/current/next parts for triple windows); durations in days.
* `render_map`: a prediction map GeoTIFF with its georeference and a colour bar.

An empty panel (no frame, no window, no valid pixel) says so in a sentence.

matplotlib is imported (with the Agg backend) only by the render functions.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import io
import json
import posixpath
from collections.abc import Sequence

import numpy as np

from rsdt_beam import fs
from rsdt_beam.common.modalities import OPTICAL, SAR_ASCENDING, SAR_DESCENDING
from rsdt_beam.common.names import BANDS_KEY, MAPS_CSV, METADATA_FILE
from rsdt_beam.common.times import iso_time
from rsdt_beam.errors import UserError
from rsdt_beam.maps import read_geotiff
from rsdt_beam.numpy_reader import read_windows, window_metadata
from rsdt_beam.stack.files import list_tiles, read_stack_metadata, read_tile_stack, tile_timestamps
from rsdt_beam.stack.rules import TileStack
from rsdt_beam.stack.stats import BAND_STATS_KEY, TILES_KEY
from rsdt_beam.window.listing import WindowRange, window_ranges, write_ranges_csv
from rsdt_beam.window.rules import WindowParams, WindowSpan, window_spans

_PART_COLOURS = {"previous": "#9e9e9e", "current": "#1f77b4", "next": "#ff7f0e"}


def ranges_from_csv(window_dir: str) -> list[WindowRange]:
    """The window ranges Stage 3 listed in `windows.csv`."""
    text = fs.read_bytes(fs.join(window_dir, "windows.csv")).decode()
    return [
        WindowRange(
            (int(row["tile_j"]), int(row["tile_i"])),
            int(row["window_id"]),
            float(row["start_epoch"]),
            float(row["end_epoch"]),
            int(row["frames"]),
        )
        for row in csv.DictReader(io.StringIO(text))
    ]


def format_ranges(ranges: Sequence[WindowRange]) -> list[str]:
    """One line per window, as rsdtlib's `windows_list` printout (with readable times)."""
    return [
        f"  window {r.window_id:4d}: {iso_time(r.start)} .. {iso_time(r.end)}  {r.frames:3d} frames  "
        f"({int(r.start)}, {int(r.end)})"
        for r in ranges
    ]


def _timestamp_lines(per_tile: dict[tuple[int, int], np.ndarray], show_all: bool) -> list[str]:
    lines = []
    groups: dict[tuple, list] = {}
    for tile, times in per_tile.items():
        groups.setdefault(tuple(times), []).append(tile)
    for times, tiles in groups.items():
        which = "all tiles" if len(groups) == 1 else f"tiles {', '.join(f'{j}_{i}' for j, i in tiles)}"
        span = f"{iso_time(times[0])} .. {iso_time(times[-1])}" if times else "none"
        lines.append(f"time stamps written ({which}): {len(times)}, {span}")
        if show_all:
            lines.extend(f"  {n:4d}  {iso_time(t)}  ({int(t)})" for n, t in enumerate(times))
    return lines


def _metadata_text(metadata: dict) -> str:
    """metadata.json as indented JSON, each tile's band moments (`band_stats.tiles`) summed up in a count."""
    stats = metadata.get(BAND_STATS_KEY)
    if isinstance(stats, dict) and TILES_KEY in stats:
        metadata = dict(
            metadata, **{BAND_STATS_KEY: dict(stats, **{TILES_KEY: f"moments of {len(stats[TILES_KEY])} tiles"})}
        )
    return json.dumps(metadata, indent=2)


def describe_stack(
    stack_dir: str,
    params: WindowParams | None = None,
    tile: tuple[int, int] = (0, 0),
    show_all_timestamps: bool = False,
) -> tuple[list[str], dict[tuple[int, int], np.ndarray]]:
    """Lines describing a Stage 2 folder, and each tile's written time stamps."""
    metadata = read_stack_metadata(stack_dir)
    tiles = list_tiles(stack_dir)
    lines = [f"Stage 2 stack {stack_dir}", "metadata.json: " + _metadata_text(metadata)]
    expected = metadata.get("num_tiles_y", 0) * metadata.get("num_tiles_x", 0)
    lines.append(
        f"tiles: {len(tiles)} files"
        + (f" of {expected} ({metadata['num_tiles_y']} x {metadata['num_tiles_x']})" if expected else "")
    )
    per_tile = {t: tile_timestamps(stack_dir, t) for t in tiles}
    lines += _timestamp_lines(per_tile, show_all_timestamps)
    if params is not None and tile in per_tile:
        ranges = window_ranges(per_tile[tile], params, tile)
        lines.append(f"windows of tile {tile[0]}_{tile[1]}: {len(ranges)}")
        lines += format_ranges(ranges)
    return lines, per_tile


def describe_windows(window_dir: str, tile: tuple[int, int] = (0, 0)) -> tuple[list[str], list[WindowRange]]:
    """Lines describing a Stage 3 folder (from metadata.json and windows.csv), and its window ranges."""
    metadata = window_metadata(window_dir)
    ranges = ranges_from_csv(window_dir)
    per_tile: dict[tuple[int, int], int] = {}
    for r in ranges:
        per_tile[r.tile] = per_tile.get(r.tile, 0) + 1
    lines = [
        f"Stage 3 windows {window_dir}",
        "metadata.json: " + _metadata_text(metadata),
        f"tiles: {len(per_tile)}, windows: {len(ranges)}",
    ]
    lines += [f"  tile {j}_{i}: {n} windows" for (j, i), n in sorted(per_tile.items())]
    own = [r for r in ranges if r.tile == tile]
    lines.append(f"windows of tile {tile[0]}_{tile[1]}: {len(own)}")
    lines += format_ranges(own)
    return lines, ranges


def describe_map(path: str) -> list[str]:
    array, grid, tags = read_geotiff(path)
    valid = np.isfinite(array)
    stats = (
        f"min {np.nanmin(array):.4g}, mean {np.nanmean(array):.4g}, max {np.nanmax(array):.4g}"
        if valid.any()
        else "no valid pixel"
    )
    return [
        f"map {path}",
        f"  grid: {grid.describe()}",
        f"  bounds: {grid.bounds}",
        f"  shape {array.shape}, {array.dtype}; valid pixels {int(valid.sum())} of {valid.size}; {stats}",
        *(f"  {key}: {value}" for key, value in sorted(tags.items()) if key.startswith("RSDT_")),
    ]


def describe_maps(map_dir: str) -> tuple[list[str], list[str]]:
    """Lines describing a map folder (its maps.csv), and the map paths in time order."""
    rows = list(csv.DictReader(io.StringIO(fs.read_bytes(fs.join(map_dir, "maps.csv")).decode())))
    lines = [f"maps {map_dir}: {len(rows)}"]
    lines += [
        f"  window {int(r['window_id']):4d}: {r['start']} .. {r['end']}  {r['tiles']} tiles  {r['file']}" for r in rows
    ]
    return lines, [fs.join(map_dir, r["file"]) for r in rows]


# --- pictures ---------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: str) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(figure)
    fs.write_bytes(path, buffer.getvalue())
    return path


def duration_text(seconds: float) -> str:
    """A duration as a person reads it: `60 d`, `12 h`, else seconds."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def _percentiles(values: np.ndarray) -> tuple[float, float]:
    """The 2nd and 98th percentiles of the finite values (0, 1 when there are none)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(finite, (2, 98))
    return float(low), float(high if high > low else low + 1.0)


@dataclasses.dataclass(frozen=True)
class PictureRow:
    """One row of a stack picture: a band's values `[n, ty, tx]` shown in grey from `low` to `high`
    (its 2-98 % range over the frames, on its colour bar), or a true-colour composite `[n, ty, tx, 3]`
    already stretched to [0, 1] channel by channel and frame by frame."""

    label: str
    values: np.ndarray
    units: str = ""
    low: float = 0.0
    high: float = 1.0

    @property
    def rgb(self) -> bool:
        return self.values.ndim == 4


def _band_names(bands: dict | None, modality: str, count: int, default: Sequence[str]) -> tuple[list[str], str]:
    """A modality's band names and units from metadata.json's `bands` (else `default` / `band k`)."""
    described = (bands or {}).get(modality, {})
    names = list(described.get("names") or default or [f"band {b + 1}" for b in range(count)])
    if len(names) != count:
        names = [f"band {b + 1}" for b in range(count)]
    units = described.get("units", "")
    return names, ", ".join(map(str, units)) if isinstance(units, list) else str(units)


def _is_band(name: str, band: str) -> bool:
    """Whether a band name is Sentinel-2's `band` (`B04`, `B4`, `..._B04`)."""
    upper = name.upper()
    return upper in (band, band.replace("0", "", 1)) or upper.endswith("_" + band)


def _true_colour(names: list[str], count: int, named: bool) -> list[int] | None:
    """Indices of red, green, blue (B04, B03, B02) among the optical bands: by name when the bands are
    named, else bands 4, 3, 2 of four or more (Sentinel-2's order); None when there are none."""
    if not named:
        return [3, 2, 1] if count >= 4 else None
    found = [next((k for k, name in enumerate(names) if _is_band(name, band)), None) for band in ("B04", "B03", "B02")]
    return None if None in found else found


def stack_picture_rows(stack: TileStack, bands: dict | None = None) -> list[PictureRow]:
    """The picture rows of a tile's frames: each SAR band per orbit direction, then optical true colour
    (stretched per channel) or, without red/green/blue, each of the first three optical bands. `bands`
    is metadata.json's (names and units per modality)."""
    rows = []
    for modality, label in ((SAR_ASCENDING, "SAR asc"), (SAR_DESCENDING, "SAR dsc")):
        names, units = _band_names(bands, modality, stack.bands.sar, ("VV", "VH") if stack.bands.sar == 2 else ())
        data = stack.modality(modality)
        rows += [
            PictureRow(f"{label} {name}", data[..., b], units, *_percentiles(data[..., b]))
            for b, name in enumerate(names)
        ]
    if not stack.bands.opt:
        return rows
    named = bool((bands or {}).get(OPTICAL, {}).get("names"))
    names, units = _band_names(bands, OPTICAL, stack.bands.opt, ())
    optical = stack.modality(OPTICAL)
    rgb = _true_colour(names, stack.bands.opt, named)
    if rgb is None:
        return rows + [
            PictureRow(f"optical {names[b]}", optical[..., b], units, *_percentiles(optical[..., b]))
            for b in range(min(3, stack.bands.opt))
        ]
    # Each frame and channel on its own: a cloudy frame's range would leave the clear ones black, and
    # one stretch for all channels tints the picture (blue cast of Sentinel-2 L1C's haze).
    stretched = np.zeros((*optical.shape[:-1], 3), np.float32)
    for k in range(len(optical)):
        for c, b in enumerate(rgb):
            low, high = _percentiles(optical[k, ..., b])
            stretched[k, ..., c] = np.clip((optical[k, ..., b] - low) / (high - low), 0, 1)
    label = "true colour " + "/".join(names[b] if named else f"B0{b + 1}" for b in rgb)
    return rows + [PictureRow(label, np.nan_to_num(stretched), units)]


def _sentence(ax, text: str) -> None:
    """Writes why a panel is empty in its middle."""
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, transform=ax.transAxes, fontsize=10)


def render_tile_stack(stack: TileStack, path: str, max_frames: int = 12, bands: dict | None = None) -> str:
    """PNG of a tile's frames over time: one column per frame (evenly picked), one row per band or
    true-colour composite (`stack_picture_rows`), a colour bar in the band's units per band row."""
    plt = _pyplot()
    name = f"{stack.tile[0]}_{stack.tile[1]}"
    if len(stack) == 0:
        figure, ax = plt.subplots(figsize=(6, 1.5))
        ax.set_axis_off()
        _sentence(ax, f"Tile {name} has no frames: no observation fell in the stack's time range.")
        return _save(figure, path)
    picked = np.unique(np.linspace(0, len(stack) - 1, min(max_frames, len(stack))).round().astype(int))
    rows = stack_picture_rows(stack, bands)
    figure, axes = plt.subplots(
        len(rows), len(picked), squeeze=False, figsize=(1.6 * len(picked) + 2, 1.8 * len(rows) + 0.8)
    )
    for r, row in enumerate(rows):
        for c, k in enumerate(picked):
            ax = axes[r][c]
            if row.rgb:
                image = ax.imshow(row.values[k], interpolation="nearest")
            else:
                image = ax.imshow(row.values[k], cmap="gray", vmin=row.low, vmax=row.high, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(
                    datetime.datetime.fromtimestamp(stack.times[k], datetime.timezone.utc).strftime("%Y-%m-%d"),
                    fontsize=8,
                )
            if c == 0:
                ax.set_ylabel(row.label, fontsize=8)
        if row.rgb:
            axes[r][-1].text(
                1.05, 0.5, "2-98 % stretch\nper channel\nand frame", transform=axes[r][-1].transAxes, fontsize=7
            )
        else:
            bar = figure.colorbar(image, ax=list(axes[r]), fraction=0.02, pad=0.01)
            bar.set_label(f"{row.label} ({row.units})" if row.units else row.label, fontsize=7)
            bar.ax.tick_params(labelsize=7)
    figure.suptitle(f"tile {name}: {len(picked)} of {len(stack)} frames (grey: each band 2-98 % over these frames)")
    return _save(figure, path)


def empty_window_reason(times: np.ndarray, params: WindowParams | None) -> str:
    """Why a tile has no window, in numbers."""
    if not len(times):
        return "No window: the tile has no frames."
    if params is None:
        return f"No window of this tile in the folder ({len(times)} frames)."
    times = np.sort(np.asarray(times, np.float64))
    most = int((np.searchsorted(times, times + params.delta_size, side="left") - np.arange(len(times))).max())
    return (
        f"0 windows: at most {most} frames fall within Delta {duration_text(params.delta_size)} "
        f"on this tile, omega={params.omega} are needed."
    )


def render_window_timeline(
    times: np.ndarray, spans: Sequence[WindowSpan], path: str, title: str = "", empty: str = ""
) -> str:
    """PNG of the written frames (top) and each window's parts as bars over them (one row per window);
    without windows the lower panel says `empty` (why; `empty_window_reason`)."""
    plt = _pyplot()
    import matplotlib.dates as mdates

    dates = np.asarray([np.datetime64(int(t), "s") for t in times])
    figure, (top, bottom) = plt.subplots(
        2, 1, sharex=True, figsize=(10, 2 + 0.12 * max(len(spans), 10)), gridspec_kw={"height_ratios": [1, 6]}
    )
    if len(dates):
        top.eventplot([mdates.date2num(dates)], colors="black", lineoffsets=0, linelengths=1)
    else:
        _sentence(top, "No frames written.")
    top.set_yticks([])
    top.set_ylabel("frames", rotation=0, ha="right", va="center")
    top.set_title(title or f"{len(times)} frames, {len(spans)} windows")
    for span in spans:
        names = ("current",) if span.previous is None else ("previous", "current", "next")
        for name, (start, stop) in zip(names, span.parts):
            if stop <= start:
                continue
            left, right = mdates.date2num(dates[start]), mdates.date2num(dates[stop - 1])
            bottom.plot(
                [left, right], [span.window_id] * 2, color=_PART_COLOURS[name], linewidth=3, solid_capstyle="butt"
            )
            bottom.plot(
                mdates.date2num(dates[start:stop]), [span.window_id] * (stop - start), "|", color="black", markersize=4
            )
    if not spans:
        bottom.set_yticks([])
        _sentence(bottom, empty or "No window.")
        bottom.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))
        figure.autofmt_xdate()
        return _save(figure, path)
    bottom.invert_yaxis()
    bottom.set_ylabel("window id")
    bottom.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))
    figure.autofmt_xdate()
    handles = [
        plt.Line2D([], [], color=c, linewidth=3, label=n)
        for n, c in _PART_COLOURS.items()
        if n == "current" or any(s.previous is not None for s in spans)
    ]
    bottom.legend(handles=handles, loc="upper right", fontsize=8)
    return _save(figure, path)


def spans_of_ranges(times: np.ndarray, ranges: Sequence[WindowRange]) -> list[WindowSpan]:
    """Current-part spans (frame indices into `times`) of listed window ranges."""
    return [
        WindowSpan(
            r.window_id, (int(np.searchsorted(times, r.start)), int(np.searchsorted(times, r.end, side="right")))
        )
        for r in ranges
    ]


def window_frame_times(window_dir: str, tile: tuple[int, int]) -> np.ndarray:
    """All frame times a tile's written windows cover (from their Timestamps)."""
    times = [record.timestamps for record in read_windows(window_dir, tile) if record.timestamps is not None]
    return np.unique(np.concatenate(times)) if times else np.zeros(0)


def render_map(tif_path: str, path: str, title: str | None = None) -> str:
    """PNG of a map GeoTIFF (first band) in its CRS coordinates, NaN/nodata left blank."""
    plt = _pyplot()
    array, grid, tags = read_geotiff(tif_path)
    band = array if array.ndim == 2 else array[..., 0]
    left, bottom, right, top = grid.bounds
    figure, ax = plt.subplots(figsize=(7, 7 * grid.height / grid.width + 0.5))
    image = ax.imshow(np.ma.masked_invalid(band), extent=(left, right, bottom, top), interpolation="nearest")
    if np.isfinite(band).any():
        figure.colorbar(image, ax=ax, shrink=0.8).set_label("model output" + ("" if array.ndim == 2 else " (band 1)"))
    else:
        _sentence(ax, "No valid pixel: every value of this map is NaN or nodata.")
    ax.ticklabel_format(useOffset=False, style="plain")
    ax.set_xlabel(f"x ({grid.crs})")
    ax.set_ylabel(f"y ({grid.crs})")
    ax.set_title(
        title
        or f"{posixpath.basename(tif_path)}\n{tags.get('RSDT_WINDOW_START', '')} .. {tags.get('RSDT_WINDOW_END', '')}",
        fontsize=9,
    )
    return _save(figure, path)


def _params_text(params: WindowParams) -> str:
    return (
        f"Delta {duration_text(params.delta_size)}, stride {params.window_stride}, omega {params.omega}, "
        f"Omega {params.Omega}{', triple' if params.triple else ''}"
    )


def _folder_params(metadata: dict) -> WindowParams | None:
    """The window parameters a Stage 3 folder's metadata.json records."""
    try:
        return WindowParams(
            float(metadata["Delta"]),
            int(metadata["window_stride"]),
            int(metadata["omega"]),
            int(metadata["Omega"]),
            bool(metadata.get("triple", False)),
        )
    except (KeyError, ValueError):
        return None


def output_kind(path: str) -> str:
    """`map` (a .tif), `maps` (a map folder), `windows` or `stack` (by their metadata.json)."""
    if path.lower().endswith((".tif", ".tiff")):
        return "map"
    if fs.exists(fs.join(path, MAPS_CSV)):
        return "maps"
    metadata_path = fs.join(path, METADATA_FILE)
    if not fs.exists(metadata_path):
        raise UserError(f"{path}: no metadata.json or maps.csv: not a stack, window or map folder")
    return "windows" if "mode" in fs.read_json(metadata_path) else "stack"


def inspect_output(
    path: str,
    tile: tuple[int, int],
    params: WindowParams | None,
    *,
    all_timestamps: bool = False,
    csv_path: str | None = None,
    png_dir: str | None = None,
    max_frames: int = 12,
    maps: int = 1,
) -> list[str]:
    """The `inspect` command: lines describing a stack, window or map folder; writes the CSV and PNGs asked for.

    A stack lists the windows `params` give (all tiles' ranges to `csv_path`); a window folder lists
    its windows.csv; maps print their georeference and values. `png_dir` gets the pictures.
    """
    kind = output_kind(path)
    lines: list[str] = []
    pictures: list[str] = []
    name = f"{tile[0]}_{tile[1]}"
    if png_dir:
        fs.makedirs(png_dir)
    if kind == "stack":
        described, per_tile = describe_stack(path, params, tile, all_timestamps)
        lines += described
        if tile not in per_tile:
            raise UserError(f"{path}: no tile {name}")
        if csv_path:
            if params is None:
                raise UserError("--csv of a stack needs the window parameters (--Delta ...)")
            write_ranges_csv(csv_path, [r for t, times in per_tile.items() for r in window_ranges(times, params, t)])
            lines.append(f"window ranges of {len(per_tile)} tiles -> {csv_path}")
        if png_dir:
            metadata = read_stack_metadata(path)
            stack = read_tile_stack(path, tile, metadata)
            pictures.append(
                render_tile_stack(stack, fs.join(png_dir, f"stack_{name}.png"), max_frames, metadata.get(BANDS_KEY))
            )
            if params is not None:
                pictures.append(
                    render_window_timeline(
                        stack.times,
                        list(window_spans(stack.times, params)),
                        fs.join(png_dir, f"timeline_{name}.png"),
                        f"tile {name}: {_params_text(params)}",
                        empty_window_reason(stack.times, params),
                    )
                )
    elif kind == "windows":
        described, ranges = describe_windows(path, tile)
        lines += described
        if csv_path:
            write_ranges_csv(csv_path, ranges)
            lines.append(f"window ranges of {len({r.tile for r in ranges})} tiles -> {csv_path}")
        if png_dir:
            times = window_frame_times(path, tile)
            own = [r for r in ranges if r.tile == tile]
            params = _folder_params(window_metadata(path))
            pictures.append(
                render_window_timeline(
                    times,
                    spans_of_ranges(times, own),
                    fs.join(png_dir, f"timeline_{name}.png"),
                    f"{path}, tile {name}: {len(own)} windows" + (f" ({_params_text(params)})" if params else ""),
                    f"No window of tile {name} in this folder (its windows.csv lists none).",
                )
            )
    else:
        paths = [path]
        if kind == "maps":
            described, paths = describe_maps(path)
            lines += described
            paths = paths[-maps:] if maps > 0 else []
        for map_path in paths:
            lines += describe_map(map_path)
            if png_dir:
                stem = map_path.rstrip("/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
                pictures.append(render_map(map_path, fs.join(png_dir, f"map_{stem}.png")))
    return lines + [f"picture: {picture}" for picture in pictures]
