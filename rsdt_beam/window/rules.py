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

from rsdt_beam.common.modalities import OPTICAL, SAR_ASCENDING, SAR_DESCENDING, BandCounts
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


class WindowSpanStream:
    """The kept windows of a tile whose frame times arrive one at a time, each as soon as it is decided.

    Candidate window k (start frame `b = k*window_stride`, `t0 = times[b]`)
    is decided once a frame at or after `t0 + Delta` (triples: `t0 + 2*Delta`)
    has arrived, or `Omega` frames from its start (triples: from its next
    part's start), or the times end. `needed_from` is the first frame any
    window still to come can use (triples look `Omega` frames back): the
    stream keeps only times from there on, and so can its caller's frames.
    """

    def __init__(self, params: WindowParams):
        self._params = params
        self._times: list[float] = []
        self._offset = 0  # global index of self._times[0]
        self._begin = 0  # start frame of the next candidate window
        self._window_id = 0

    @property
    def total(self) -> int:
        """Frames pushed so far."""
        return self._offset + len(self._times)

    @property
    def needed_from(self) -> int:
        return max(self._begin - (self._params.Omega if self._params.triple else 0), 0)

    def push(self, time: float) -> list[WindowSpan]:
        """Adds the next frame time (later than the previous one); returns the windows it decides."""
        self._times.append(float(time))
        return self._decide(finished=False)

    def finish(self) -> list[WindowSpan]:
        """The windows still pending once no frame follows."""
        return self._decide(finished=True)

    def _decide(self, finished: bool) -> list[WindowSpan]:
        params, decided = self._params, []
        ts = np.asarray(self._times, np.float64)
        while self._begin < self.total:
            local = self._begin - self._offset
            t0 = ts[local]

            def index(time: float) -> int:
                return self._offset + int(np.searchsorted(ts, time))

            reach = 2 * params.delta_size if params.triple else params.delta_size
            if not (finished or ts[-1] >= t0 + reach):
                if not params.triple and self.total < self._begin + params.Omega:
                    break
                if params.triple and (
                    ts[-1] < t0 + params.delta_size or self.total < index(t0 + params.delta_size) + params.Omega
                ):
                    break
            span = self._span(self._begin, t0, index)
            if span is not None:
                decided.append(span)
                self._window_id += 1
            self._begin += params.window_stride
        drop = min(self.needed_from, self.total) - self._offset
        if drop > 0:
            del self._times[:drop]
            self._offset += drop
        return decided

    def _span(self, begin: int, t0: float, index) -> WindowSpan | None:
        params = self._params
        current = (begin, min(index(t0 + params.delta_size), begin + params.Omega))
        if current[1] - current[0] < params.omega:
            return None
        if not params.triple:
            return WindowSpan(self._window_id, current)
        previous = (max(index(t0 - params.delta_size), begin - params.Omega), begin)
        next_start = index(t0 + params.delta_size)
        following = (next_start, min(index(t0 + 2 * params.delta_size), next_start + params.Omega))
        if min(previous[1] - previous[0], following[1] - following[0]) < params.omega:
            return None
        return WindowSpan(self._window_id, current, previous, following)


def densest_window(times: np.ndarray, params: WindowParams) -> int:
    """The most frames any candidate window's `[t0, t0 + Delta)` holds (before the `Omega` cap): why a
    tile with fewer than `omega` there has no window."""
    times = np.asarray(times, np.float64)
    starts = np.arange(0, times.size, params.window_stride)
    if starts.size == 0:
        return 0
    return int((np.searchsorted(times, times[starts] + params.delta_size, side="left") - starts).max())


def window_spans(times: np.ndarray, params: WindowParams) -> Iterator[WindowSpan]:
    """Yields the kept windows of a tile with frame times `times` (sorted, unique), lazily."""
    stream = WindowSpanStream(params)
    for time in np.asarray(times, np.float64):
        yield from stream.push(time)
    yield from stream.finish()


class WindowPart:
    """Frames of one window part; unpacks as rsdtlib's `(timestamps, asc, dsc, opt)`.

    `frames` is the assembled `[n, ty, tx, 2*sar + opt]` view into the tile's
    stack (no copy); the per-modality arrays are views of it. `observed` is the
    stack's bool `[n, ty, tx, 3]` observed mask of these frames (None if not known).
    """

    __slots__ = ("timestamps", "frames", "observed", "_stack")

    def __init__(self, stack: TileStack, span: tuple[int, int]):
        self.timestamps = stack.times[span[0] : span[1]]
        self.frames = stack.frames[span[0] : span[1]]
        self.observed = stack.observed[span[0] : span[1]] if stack.observed is not None else None
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


def _shifted(span: WindowSpan, by: int) -> WindowSpan:
    def move(part):
        return None if part is None else (part[0] - by, part[1] - by)

    return WindowSpan(span.window_id, move(span.current), move(span.previous), move(span.next))


class StreamedWindows:
    """A tile's kept windows from frames that arrive one at a time, in time order.

    For Stage 3 fed by a stack streamed through time: only the frames some
    window still to come can use are held (`WindowSpanStream.needed_from` on:
    at most `Omega` frames, plus for triples the frames within `2*Delta`),
    never the series. Each Window is a view into that buffer, valid until the
    next `add` or `finish`: encode it before. The buffer grows by doubling and
    drops unneeded frames when full, so a window's frames are always contiguous.
    """

    def __init__(self, tile: tuple[int, int], params: WindowParams, bands: BandCounts):
        self._tile = tile
        self._bands = bands
        self._spans = WindowSpanStream(params)
        self._times = np.empty(0, np.float64)
        self._frames: np.ndarray | None = None
        self._observed: np.ndarray | None = None  # kept only when the frames come with it
        self._first = 0  # global index of the buffer's first frame
        self._count = 0

    @property
    def held(self) -> int:
        """Frames in the buffer now."""
        return self._count

    def add(self, time: float, frame: np.ndarray, observed: np.ndarray | None = None) -> Iterator[Window]:
        """Copies the next frame (and its observed mask) in; returns the windows it decides (views, use them
        before the next call)."""
        self._store(float(time), frame, observed)
        return self._windows(self._spans.push(time))

    def finish(self) -> Iterator[Window]:
        return self._windows(self._spans.finish())

    def _store(self, time: float, frame: np.ndarray, observed: np.ndarray | None) -> None:
        if self._frames is None:
            self._frames = np.empty((8, *frame.shape), np.float32)
            self._times = np.empty(8, np.float64)
            if observed is not None:
                self._observed = np.empty((8, *observed.shape), bool)
        buffers = [b for b in (self._frames, self._times, self._observed) if b is not None]
        if self._count == len(self._frames):
            drop = self._spans.needed_from - self._first
            if drop > 0:
                for buffer in buffers:
                    buffer[: self._count - drop] = buffer[drop : self._count]
                self._first += drop
                self._count -= drop
            if self._count == len(self._frames):
                buffers = [np.concatenate([b, np.empty_like(b)]) for b in buffers]
                self._frames, self._times = buffers[:2]
                self._observed = buffers[2] if len(buffers) > 2 else None
        self._frames[self._count] = frame
        self._times[self._count] = time
        if self._observed is not None:
            self._observed[self._count] = observed
        self._count += 1

    def _windows(self, spans: list[WindowSpan]) -> Iterator[Window]:
        if not spans:
            return
        view = TileStack(
            self._tile,
            self._times[: self._count],
            self._frames[: self._count],
            self._bands,
            None if self._observed is None else self._observed[: self._count],
        )
        for span in spans:
            yield Window(view, _shifted(span, self._first))


def streamed_windows(stack, params: WindowParams) -> Iterator[Window]:
    """The kept windows of `stack` (a TileStack, or a StackFile read record by record: anything with
    `tile`, `bands` and `iter_frames()`), through StreamedWindows: each a view valid until the next."""
    streamed = StreamedWindows(stack.tile, params, stack.bands)
    for time, frame, observed in stack.iter_frames():
        yield from streamed.add(time, frame, observed)
    yield from streamed.finish()


def windows(stack: TileStack, params: WindowParams) -> Iterator[Window]:
    """The tile's kept windows, one at a time, as views into its stack."""
    for span in window_spans(stack.times, params):
        yield Window(stack, span)
