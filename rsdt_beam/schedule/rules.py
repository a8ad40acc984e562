"""Scheduled runs' pure rules: run ranges on the delta_step bins, and windows across runs (the carry).

Pure numpy: no Beam, no I/O. See `rsdt_beam.schedule` for the whole scheme.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from rsdt_beam.common.modalities import MODALITIES
from rsdt_beam.common.times import parse_time
from rsdt_beam.stack.rules import Piece, TileStack
from rsdt_beam.window.rules import Window, WindowParams, WindowSpan, window_spans

_DAY = 86400.0


def resolve_end(text: str, now: float) -> float:
    """`today` (00:00 UTC of `now`), `yesterday`, `now`, or an ISO 8601 time, as UTC epoch seconds."""
    word = str(text).strip().lower()
    midnight = math.floor(now / _DAY) * _DAY
    if word == "today":
        return midnight
    if word == "yesterday":
        return midnight - _DAY
    if word == "now":
        return now
    return parse_time(text)


def align_down(time: float, origin: float, step: float) -> float:
    """The bin boundary `origin + k * step` at or before `time`."""
    return origin + math.floor((time - origin) / step) * step


def fill_time(end: float) -> float:
    """Time stamp of the forward-fill state kept at a run's end: after every observation before `end`."""
    return float(np.nextafter(end, -np.inf))


@dataclasses.dataclass(frozen=True)
class Carry:
    """What a run hands the next, the same for every tile.

    `times` are the frames `first_frame ...` that windows from `first_pending` on may still use;
    `windows_written` is the next window id; `end` is the end of the run that wrote it.
    """

    end: float
    first_frame: int = 0
    first_pending: int = 0
    windows_written: int = 0
    times: tuple[float, ...] = ()

    @property
    def frames_total(self) -> int:
        return self.first_frame + len(self.times)

    def to_json(self) -> dict:
        return dict(dataclasses.asdict(self), times=list(self.times))

    @classmethod
    def from_json(cls, data: dict) -> Carry:
        return cls(**dict(data, times=tuple(float(t) for t in data["times"])))


def window_complete(times: np.ndarray, begin: int, params: WindowParams, end: float) -> bool:
    """Whether frames at or after `end` can no longer change the candidate window starting at `begin`.

    Later frames only append to `times`: a current part is final once it spans `Delta` before `end`
    or holds `Omega` frames; a triple's next part starts `Delta` after the start and is final once
    it spans `Delta` before `end` or holds `Omega` frames. (Previous parts lie in the past.)
    """
    t0 = times[begin]
    if not params.triple:
        return t0 + params.delta_size <= end or len(times) - begin >= params.Omega
    if t0 + params.delta_size > end:
        return False
    next_start = int(np.searchsorted(times, t0 + params.delta_size))
    return t0 + 2 * params.delta_size <= end or len(times) - next_start >= params.Omega


@dataclasses.dataclass(frozen=True)
class Selection:
    """The windows a run writes (spans into its frames, with global ids) and the carry it hands on."""

    spans: tuple[WindowSpan, ...]
    carry: Carry


def select_windows(times: np.ndarray, carry: Carry, end: float, params: WindowParams) -> Selection:
    """Windows complete at `end` and not written before, over `times` = carried + new frame times.

    `times[0]` is global frame `carry.first_frame`, a multiple of the stride, so candidate starts
    line up with one launch over everything; window ids continue from `carry.windows_written`.
    Completeness only grows with the start index, so the pending candidates are a suffix.
    """
    times = np.asarray(times, np.float64)
    offset, stride = carry.first_frame, params.window_stride
    pending = carry.first_pending
    while pending < offset + len(times) and window_complete(times, pending - offset, params, end):
        pending += stride
    spans, next_id = [], carry.windows_written
    for span in window_spans(times, params):
        if carry.first_pending <= span.current[0] + offset < pending:
            spans.append(dataclasses.replace(span, window_id=next_id))
            next_id += 1
    # A pending window's previous part reaches at most Omega frames back.
    keep = min(max(pending - (params.Omega if params.triple else 0), 0), offset + len(times))
    keep -= keep % stride
    carried = tuple(float(t) for t in times[keep - offset :])
    return Selection(tuple(spans), Carry(end, keep, pending, next_id, carried))


def run_times(carry: Carry, written: np.ndarray, end: float) -> np.ndarray:
    """The time stamps a run stacks at: the carried frames', its new ones, then the fill state's at `end`."""
    return np.concatenate([carry.times, written, [fill_time(end)]])


def seed_pieces(carried: TileStack) -> list[Piece]:
    """A tile's carried frames (its fill state last) as all-valid pieces: stacking them at their own
    times reproduces them exactly, and the last one seeds the forward fill of the new observations."""
    bands = carried.bands
    return [
        Piece(float(time), m, frame[..., bands.slice_of(m)], None)
        for time, frame in zip(carried.times, carried.frames)
        for m in MODALITIES
        if bands.bands_of(m)
    ]


def frames_between(stack: TileStack, start: int, stop: int | None) -> TileStack:
    """The tile's frames `start:stop` (views)."""
    observed = stack.observed[start:stop] if stack.observed is not None else None
    return TileStack(stack.tile, stack.times[start:stop], stack.frames[start:stop], stack.bands, observed)


@dataclasses.dataclass(frozen=True)
class CompleteWindows:
    """A window selection (WindowOutput.selection) over extended tile stacks (carried frames, new frames,
    fill state last): only the windows that became complete at `end`, numbered as in one launch over
    everything."""

    carry: Carry
    end: float

    def __call__(self, stack: TileStack, params: WindowParams):
        frames = frames_between(stack, 0, -1)
        for span in select_windows(frames.times, self.carry, self.end, params).spans:
            yield Window(frames, span)
