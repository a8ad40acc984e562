"""Stage 3 rules: which frames form each deep-temporal window.

Pure numpy, no Beam, no I/O. A tile's written frames (time stamps `ts`,
sorted) give one candidate window every `window_stride` frames; candidate k
starts at frame `b = k*window_stride`, `t0 = ts[b]`:

* current: the first at most `Omega` frames in `[t0, t0 + Delta)`;
* previous (triple only): the last at most `Omega` frames in `[t0 - Delta, t0)`;
* next (triple only): the first at most `Omega` frames in `[t0 + Delta, t0 + 2*Delta)`.

A window is kept when each of its parts has at least `omega` frames; kept
windows are numbered 0, 1, ... per tile (rsdtlib's window ids). For mono
windows this is exactly rsdtlib; for triples it is rsdtlib's intent (its
current part may grow to 2*Omega and its previous part drifts for strides
above 1; see docs/semantics.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from rsdt_beam.common.modalities import OPTICAL, SAR_ASCENDING, SAR_DESCENDING
from rsdt_beam.stack.rules import TileStack


@dataclasses.dataclass(frozen=True)
class WindowParams:
    """`delta_size` (Delta) in seconds, `window_stride`, `omega` (min) and `Omega` (max) frames."""

    delta_size: float
    window_stride: int
    omega: int
    Omega: int
    triple: bool = False

    def __post_init__(self):
        if self.delta_size <= 0:
            raise ValueError(f"Delta must be positive, got {self.delta_size} s")
        if self.window_stride < 1:
            raise ValueError(f"window_stride must be at least 1, got {self.window_stride}")
        if self.Omega < 1:
            raise ValueError(f"Omega must be at least 1, got {self.Omega}")
        if not 1 <= self.omega <= self.Omega:
            raise ValueError(f"omega must be in [1, Omega={self.Omega}], got {self.omega}")


@dataclasses.dataclass(frozen=True)
class WindowSpan:
    """Frame index ranges `[start, stop)` of a kept window's parts."""

    window_id: int
    current: tuple[int, int]
    previous: tuple[int, int] | None = None
    next: tuple[int, int] | None = None

    @property
    def parts(self) -> tuple[tuple[int, int], ...]:
        if self.previous is None:
            return (self.current,)
        return (self.previous, self.current, self.next)


def window_spans(times: np.ndarray, params: WindowParams) -> Iterator[WindowSpan]:
    """Yields the kept windows of a tile with frame times `times` (sorted, unique), lazily."""
    ts = np.asarray(times, np.float64)
    window_id = 0
    for begin in range(0, len(ts), params.window_stride):
        t0 = ts[begin]
        current = (begin, min(int(np.searchsorted(ts, t0 + params.delta_size)), begin + params.Omega))
        if current[1] - current[0] < params.omega:
            continue
        if not params.triple:
            yield WindowSpan(window_id, current)
            window_id += 1
            continue
        previous = (max(int(np.searchsorted(ts, t0 - params.delta_size)), begin - params.Omega), begin)
        next_start = int(np.searchsorted(ts, t0 + params.delta_size))
        following = (next_start,
                     min(int(np.searchsorted(ts, t0 + 2 * params.delta_size)), next_start + params.Omega))
        if min(previous[1] - previous[0], following[1] - following[0]) < params.omega:
            continue
        yield WindowSpan(window_id, current, previous, following)
        window_id += 1


class WindowPart:
    """Frames of one window part; unpacks as rsdtlib's `(timestamps, asc, dsc, opt)`.

    `frames` is the assembled `[n, ty, tx, 2*sar + opt]` view into the tile's
    stack (no copy); the per-modality arrays are views of it. `observed` is the
    stack's bool `[n, ty, tx, 3]` observed mask of these frames (None if not known).
    """

    __slots__ = ("timestamps", "frames", "observed", "_stack")

    def __init__(self, stack: TileStack, span: tuple[int, int]):
        self.timestamps = stack.times[span[0]:span[1]]
        self.frames = stack.frames[span[0]:span[1]]
        self.observed = stack.observed[span[0]:span[1]] if stack.observed is not None else None
        self._stack = stack

    @property
    def sar_ascending(self) -> np.ndarray:
        return self.frames[..., self._stack.bands.slice_of(SAR_ASCENDING)]

    @property
    def sar_descending(self) -> np.ndarray:
        return self.frames[..., self._stack.bands.slice_of(SAR_DESCENDING)]

    @property
    def optical(self) -> np.ndarray:
        return self.frames[..., self._stack.bands.slice_of(OPTICAL)]

    def _as_tuple(self) -> tuple:
        return (self.timestamps, self.sar_ascending, self.sar_descending, self.optical)

    def __getitem__(self, index):
        return self._as_tuple()[index]

    def __iter__(self):
        return iter(self._as_tuple())

    def __len__(self) -> int:
        return 4


class Window:
    """A kept window: `(current,)` or `(previous, current, next)` as in rsdtlib, plus its tile and id."""

    __slots__ = ("tile", "span", "parts")

    def __init__(self, stack: TileStack, span: WindowSpan):
        self.tile = stack.tile
        self.span = span
        self.parts = tuple(WindowPart(stack, part) for part in span.parts)

    @property
    def window_id(self) -> int:
        return self.span.window_id

    @property
    def current(self) -> WindowPart:
        return self.parts[0] if len(self.parts) == 1 else self.parts[1]

    def __getitem__(self, index):
        return self.parts[index]

    def __iter__(self):
        return iter(self.parts)

    def __len__(self) -> int:
        return len(self.parts)


def windows(stack: TileStack, params: WindowParams) -> Iterator[Window]:
    """The tile's kept windows, one at a time, as views into its stack."""
    for span in window_spans(stack.times, params):
        yield Window(stack, span)
