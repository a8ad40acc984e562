"""What every Stage 1 source produces: observations on the run's grid.

An `ObservationRef` names one acquisition (modality, UTC time, location) and
carries the `ObservationReader` that can open it; readers return the
observation's header (grid, band count) and any pixel window of it as
`float32 [h, w, bands]` data plus a boolean validity mask `[h, w]`.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

from rsdt_beam.common.modalities import MODALITIES
from rsdt_beam.common.times import iso_time
from rsdt_beam.grid import Grid, PixelWindow


class ObservationError(Exception):
    """An observation that cannot be used, with the reason."""

    def __init__(self, observation: str, reason: str):
        super().__init__(f"{observation}: {reason}")
        self.observation = observation
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class ObservationHeader:
    grid: Grid
    bands: int


class ObservationReader(Protocol):
    def header(self, uri: str) -> ObservationHeader:
        """Grid and band count, from metadata only; raises ObservationError."""

    def read(self, uri: str, window: PixelWindow) -> tuple[np.ndarray, np.ndarray]:
        """`(data float32 [h, w, bands], valid bool [h, w])` of a window; raises ObservationError."""


@dataclasses.dataclass(frozen=True)
class ObservationRef:
    modality: str
    time: float
    uri: str
    reader: ObservationReader

    def __post_init__(self):
        if self.modality not in MODALITIES:
            raise ValueError(f"unknown modality {self.modality!r}; expected one of {MODALITIES}")

    @property
    def name(self) -> str:
        return f"{self.modality} {iso_time(self.time)} ({self.uri})"


@dataclasses.dataclass(frozen=True)
class Rejection:
    """An observation set aside, and why (written to the run's rejected list)."""

    observation: str
    reason: str
    modality: str | None = None
    time: str | None = None

    def to_json(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def of(cls, ref: ObservationRef, reason: str) -> Rejection:
        return cls(ref.uri, reason, ref.modality, iso_time(ref.time))
