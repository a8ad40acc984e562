"""Stage 2 rules: which time stamps are written, forward fill, assembling.

Pure numpy, no Beam, no I/O. These are rsdtlib's `Stack` rules (see
docs/semantics.md): all observations on one time line; per modality and
pixel the last valid value carried forward (zeros before the first valid
one); a frame written at the last time stamp of every non-empty `delta_step`
bin in `[starttime, endtime)`; SAR ascending, SAR descending and optical
assembled per frame as `[asc | dsc | opt]` on the band axis.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

import numpy as np

from rsdt_beam.common.modalities import MODALITIES, BandCounts


@dataclasses.dataclass(frozen=True)
class StackParams:
    """The time range and step of Stage 2; times are UTC epoch seconds."""

    starttime: float
    endtime: float
    delta_step: float

    def __post_init__(self):
        if self.delta_step <= 0:
            raise ValueError(f"delta_step must be positive, got {self.delta_step} s")
        if self.endtime <= self.starttime:
            raise ValueError(f"endtime ({self.endtime}) must be after starttime ({self.starttime})")


def written_times(times: Iterable[float], params: StackParams) -> np.ndarray:
    """The time stamps Stage 2 writes a frame at: the last one of every non-empty bin.

    Bins are `[starttime + k*delta_step, starttime + (k+1)*delta_step)`; time
    stamps outside `[starttime, endtime)` are never written (earlier ones
    still feed the forward fill). Equal time stamps count once.
    """
    ts = np.unique(np.asarray(list(times), dtype=np.float64))
    ts = ts[(ts >= params.starttime) & (ts < params.endtime)]
    if ts.size == 0:
        return ts
    bins = np.floor((ts - params.starttime) / params.delta_step)
    last_of_bin = np.append(bins[1:] != bins[:-1], True)
    return ts[last_of_bin]


@dataclasses.dataclass
class Piece:
    """One observation over (part of) a fill area: bands `[h, w, b]` and validity `[h, w]` (None: all valid).

    `at` is `(row_start, row_stop, col_start, col_stop)` of the area the piece covers; None: all of it.
    """

    time: float
    modality: str
    data: np.ndarray
    mask: np.ndarray | None
    at: tuple[int, int, int, int] | None = None


@dataclasses.dataclass
class TileStack:
    """A tile's written frames: `times[n]` and assembled `frames[n, ty, tx, 2*sar + opt]`."""

    tile: tuple[int, int]
    times: np.ndarray
    frames: np.ndarray
    bands: BandCounts
    # bool [n, ty, tx, 3]: a valid observation of SAR ascending / descending / optical arrived since the
    # previous frame (False: forward-filled); None for stacks read from files that do not record it.
    observed: np.ndarray | None = None

    def modality(self, name: str) -> np.ndarray:
        """A view of one modality's bands of every frame."""
        return self.frames[..., self.bands.slice_of(name)]

    def __len__(self) -> int:
        return len(self.times)

    def iter_frames(self) -> Iterator[tuple[float, np.ndarray, np.ndarray | None]]:
        """(time, frame `[ty, tx, bands]`, observed `[ty, tx, 3]` or None) in time order, as a streamed
        stack gives them."""
        for k, time in enumerate(self.times):
            yield float(time), self.frames[k], None if self.observed is None else self.observed[k]


def fold_frames(
    pieces: Iterable[Piece], written: np.ndarray, shape: tuple[int, int], bands: BandCounts
) -> Iterator[tuple[int, float, np.ndarray, np.ndarray]]:
    """Forward-fills time-ordered pieces over an area of `shape` px; yields `(k, written[k], state, observed)`.

    Lazy in both directions: pieces are drawn one at a time and frame k is
    yielded as soon as a piece after `written[k]` is drawn (or the pieces
    end), so the caller holds the fill state `[h, w, 2*sar + opt]` and one
    piece, never the series. `observed` (bool `[h, w, 3]`) says which
    modality had a valid observation since the previous frame. Both arrays
    are reused for the next frame: copy what you keep. Pieces after the last
    written time are never drawn. Pieces out of time order raise ValueError:
    the fold cannot go back.
    """
    written = np.asarray(written, np.float64)
    state = np.zeros((*shape, bands.total), np.float32)
    observed = np.zeros((*shape, len(MODALITIES)), bool)
    if not len(written):
        return
    k, last = 0, -np.inf
    for piece in pieces:
        if piece.time < last:
            raise ValueError(f"pieces out of time order: {piece.time} after {last}")
        last = piece.time
        while piece.time > written[k]:
            yield k, float(written[k]), state, observed
            observed[...] = False
            k += 1
            if k == len(written):
                return
        rows, cols = (
            (slice(piece.at[0], piece.at[1]), slice(piece.at[2], piece.at[3]))
            if piece.at
            else (slice(None), slice(None))
        )
        target = state[rows, cols, bands.slice_of(piece.modality)]
        seen = observed[rows, cols, MODALITIES.index(piece.modality)]
        if piece.mask is None:
            target[...] = piece.data
            seen[...] = True
        else:
            np.copyto(target, piece.data, where=piece.mask[..., None])
            seen |= piece.mask
    for rest in range(k, len(written)):  # bins after the last observation: the state as it stands
        yield rest, float(written[rest]), state, observed
        observed[...] = False


def stack_tile(
    tile: tuple[int, int], pieces: Iterable[Piece], written: np.ndarray, tile_shape: tuple[int, int], bands: BandCounts
) -> TileStack:
    """A tile's frames at each written time, all in memory (`fold_frames` collected).

    `pieces` may come in any order and may leave out observations with no
    valid pixel in this tile (they change nothing). Pieces after the last
    written time cannot be written and are ignored.
    """
    frames = np.empty((len(written), *tile_shape, bands.total), np.float32)
    observed = np.zeros((len(written), *tile_shape, len(MODALITIES)), bool)
    for k, _, state, seen in fold_frames(sorted(pieces, key=lambda piece: piece.time), written, tile_shape, bands):
        frames[k] = state
        observed[k] = seen
    return TileStack(tile, np.asarray(written, np.float64), frames, bands, observed)
