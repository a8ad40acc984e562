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
from collections.abc import Iterable

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
    """One observation cut to one tile: bands `[ty, tx, b]` and validity `[ty, tx]` (None: all valid)."""

    time: float
    modality: str
    data: np.ndarray
    mask: np.ndarray | None


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


def stack_tile(tile: tuple[int, int], pieces: Iterable[Piece], written: np.ndarray,
               tile_shape: tuple[int, int], bands: BandCounts) -> TileStack:
    """Forward-fills a tile's pieces through time and snapshots it at each written time.

    `pieces` may come in any order and may leave out observations with no
    valid pixel in this tile (they change nothing). Pieces after the last
    written time cannot be written and are ignored.
    """
    ordered = sorted(pieces, key=lambda piece: piece.time)
    state = np.zeros((*tile_shape, bands.total), np.float32)
    frames = np.empty((len(written), *tile_shape, bands.total), np.float32)
    observed = np.zeros((len(written), *tile_shape, len(MODALITIES)), bool)
    next_piece = 0
    for k, time in enumerate(written):
        while next_piece < len(ordered) and ordered[next_piece].time <= time:
            piece = ordered[next_piece]
            target = state[..., bands.slice_of(piece.modality)]
            seen = observed[k, ..., MODALITIES.index(piece.modality)]
            if piece.mask is None:
                target[...] = piece.data
                seen[...] = True
            else:
                np.copyto(target, piece.data, where=piece.mask[..., None])
                seen |= piece.mask
            next_piece += 1
        frames[k] = state
    return TileStack(tile, np.asarray(written, np.float64), frames, bands, observed)
