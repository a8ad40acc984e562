"""rsdtlib's windows list: each kept window's current part as (id, first time, last time, frames).

One definition for `windows.csv` (Stage 3), the `windows_list` and `inspect` commands and
`OnlineWindows.windows_list`; one CSV writer for all of them.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Iterable

import numpy as np

from rsdt_beam import fs
from rsdt_beam.common.names import tile_name
from rsdt_beam.common.times import iso_time
from rsdt_beam.errors import UserError
from rsdt_beam.stack.files import list_tiles, tile_timestamps
from rsdt_beam.window.rules import WindowParams, WindowSpan, window_spans

WINDOWS_CSV_HEADER = ("tile_j", "tile_i", "window_id", "start", "end", "frames", "start_epoch", "end_epoch")


@dataclasses.dataclass(frozen=True)
class WindowRange:
    """A window's current part: first and last frame time (epoch s) and frame count."""

    tile: tuple[int, int]
    window_id: int
    start: float
    end: float
    frames: int

    @classmethod
    def of(cls, tile: tuple[int, int], span: WindowSpan, times: np.ndarray) -> WindowRange:
        first, stop = span.current
        return cls(tile, span.window_id, float(times[first]), float(times[stop - 1]), stop - first)

    @classmethod
    def of_window(cls, window) -> WindowRange:
        """The range of a `rsdt_beam.window.rules.Window`'s current part."""
        times = window.current.timestamps
        return cls(window.tile, window.window_id, float(times[0]), float(times[-1]), len(times))

    def csv_row(self) -> tuple:
        """A row of `windows.csv` (columns `WINDOWS_CSV_HEADER`)."""
        return (
            self.tile[0],
            self.tile[1],
            self.window_id,
            iso_time(self.start),
            iso_time(self.end),
            self.frames,
            int(self.start),
            int(self.end),
        )


def window_ranges(times: np.ndarray, params: WindowParams, tile: tuple[int, int]) -> list[WindowRange]:
    """The windows list of a tile with frame times `times`."""
    return [WindowRange.of(tile, span, times) for span in window_spans(times, params)]


def tile_windows_list(stack_dir: str, tile: tuple[int, int], params: WindowParams) -> list[WindowRange]:
    """rsdtlib's `windows_list()` of any tile of a stack folder, from its time stamps alone."""
    tiles = list_tiles(stack_dir)
    if tuple(tile) not in tiles:
        span = f", {tile_name(tiles[0])} to {tile_name(tiles[-1])}" if tiles else ""
        raise UserError(f"--tile {tile_name(tile)}: {stack_dir} has no such tile ({len(tiles)} tiles{span})")
    return window_ranges(tile_timestamps(stack_dir, tile), params, tile)


def format_windows_list(ranges: Iterable[WindowRange]) -> list[str]:
    """rsdtlib's printout of the windows list: id, first and last time (UTC) and frames per window."""
    return [
        "List of window ranges (current):",
        *(f"{r.window_id:5d}  {iso_time(r.start)}  {iso_time(r.end)}  {r.frames:3d}" for r in ranges),
    ]


def csv_text(rows: Iterable[tuple]) -> str:
    text = io.StringIO()
    csv.writer(text).writerows(rows)
    return text.getvalue()


def write_ranges_csv(path: str, ranges: Iterable[WindowRange]) -> str:
    """The ranges as a CSV file with the columns of `windows.csv`, sorted by tile and window id."""
    fs.write_bytes(path, csv_text([WINDOWS_CSV_HEADER, *sorted(r.csv_row() for r in ranges)]).encode())
    return path
