"""rsdtlib's windows list: each kept window's current part as (id, first time, last time, frames).

One definition for `windows.csv` (Stage 3), `pipelines.windows_list`, `pipelines.inspect` and
`OnlineWindows.windows_list`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from rsdt_beam.acquire.observation import iso_time
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
    def of(cls, tile: tuple[int, int], span: WindowSpan, times: np.ndarray) -> "WindowRange":
        first, stop = span.current
        return cls(tile, span.window_id, float(times[first]), float(times[stop - 1]), stop - first)

    @classmethod
    def of_window(cls, window) -> "WindowRange":
        """The range of a `rsdt_beam.window.rules.Window`'s current part."""
        times = window.current.timestamps
        return cls(window.tile, window.window_id, float(times[0]), float(times[-1]), len(times))

    def csv_row(self) -> tuple:
        """A row of `windows.csv` (columns `WINDOWS_CSV_HEADER`)."""
        return (self.tile[0], self.tile[1], self.window_id, iso_time(self.start), iso_time(self.end),
                self.frames, int(self.start), int(self.end))


def window_ranges(times: np.ndarray, params: WindowParams, tile: tuple[int, int]) -> list[WindowRange]:
    """The windows list of a tile with frame times `times`."""
    return [WindowRange.of(tile, span, times) for span in window_spans(times, params)]
