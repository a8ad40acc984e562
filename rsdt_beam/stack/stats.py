"""Per-band statistics of stacked frames (count, mean, std, min, max), mergeable in any order.

Pure numpy. Stage 2 and Stage 3 compute them in Beam
(`rsdt_beam.stack.transforms.BandStatistics`) and record them in `metadata.json` under `band_stats`,
per modality: `{"sar_ascending": {"mean": [...], "std": [...], "min": [...], "max": [...]}, ...}`,
plus each tile's moments under `"tiles"` (`{"j_i": {"count", "mean", "m2", "min", "max"}}`), so the
statistics of a tile selection (the training tiles) are merged without reading a pixel again
(`select_band_stats`). Readers normalise features with them (`normalization`).

Each pixel counts once: a tile contributes its interior only (`interior`: without the `deadzone`
margins it shares with its neighbours; those pixels belong to the neighbours' interiors, or, at the
area's edge, to no tile's interior and to no statistic). Merging uses Chan et al.'s pairwise update
of mean and squared deviations, and merged totals are taken in tile order, so the result does not
depend on how tiles are split among workers.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from rsdt_beam.common.modalities import MODALITIES, BandCounts

BAND_STATS_KEY = "band_stats"
TILES_KEY = "tiles"

Tile = tuple[int, int]


def interior(frame: np.ndarray, deadzone: tuple[int, int]) -> np.ndarray:
    """A tile's `[ty, tx, ...]` frame without its `(deadzone_y, deadzone_x)` margins: the pixels it owns
    (neighbouring tiles overlap by twice the deadzone, their interiors do not)."""
    dy, dx = int(deadzone[0]), int(deadzone[1])
    return frame[dy : frame.shape[0] - dy, dx : frame.shape[1] - dx]


def stack_deadzone(metadata: dict) -> tuple[int, int]:
    """`(deadzone_y, deadzone_x)` of a stack folder's metadata.json (0 where it gives none)."""
    return int(metadata.get("deadzone_y", 0)), int(metadata.get("deadzone_x", 0))


@dataclasses.dataclass
class BandMoments:
    """Running statistics of each band: values seen, mean, sum of squared deviations, min, max."""

    count: int
    mean: np.ndarray
    m2: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray

    @classmethod
    def empty(cls, bands: int) -> BandMoments:
        return cls(0, np.zeros(bands), np.zeros(bands), np.full(bands, np.inf), np.full(bands, -np.inf))

    @classmethod
    def of(cls, frames: np.ndarray) -> BandMoments:
        """Statistics of `[..., bands]` values."""
        values = np.asarray(frames).reshape(-1, frames.shape[-1]).astype(np.float64)
        if not len(values):
            return cls.empty(frames.shape[-1])
        mean = values.mean(axis=0)
        return cls(len(values), mean, ((values - mean) ** 2).sum(axis=0), values.min(axis=0), values.max(axis=0))

    def merge(self, other: BandMoments) -> BandMoments:
        if not other.count:
            return self
        if not self.count:
            return other
        count = self.count + other.count
        delta = other.mean - self.mean
        return BandMoments(
            count,
            self.mean + delta * other.count / count,
            self.m2 + other.m2 + delta**2 * self.count * other.count / count,
            np.minimum(self.minimum, other.minimum),
            np.maximum(self.maximum, other.maximum),
        )

    def to_tile_json(self) -> dict:
        return {
            "count": self.count,
            "mean": self.mean.tolist(),
            "m2": self.m2.tolist(),
            "min": self.minimum.tolist(),
            "max": self.maximum.tolist(),
        }

    @classmethod
    def of_tile_json(cls, record: dict) -> BandMoments:
        return cls(
            int(record["count"]),
            *(np.asarray(record[key], np.float64) for key in ("mean", "m2", "min", "max")),
        )

    def to_json(self, bands: BandCounts) -> dict:
        """`{modality: {"count", "mean", "std", "min", "max"}}` for the modalities with bands (population std)."""
        std = np.sqrt(self.m2 / self.count) if self.count else np.zeros_like(self.m2)
        out = {}
        for modality in MODALITIES:
            part = bands.slice_of(modality)
            if part.stop > part.start:
                out[modality] = {
                    "count": self.count,
                    "mean": self.mean[part].tolist(),
                    "std": std[part].tolist(),
                    "min": self.minimum[part].tolist(),
                    "max": self.maximum[part].tolist(),
                }
        return out


def band_stats_json(tiles: dict[Tile, BandMoments], bands: BandCounts) -> dict:
    """metadata.json's `band_stats`: the tiles' moments merged in tile order, and each tile's."""
    total = BandMoments.empty(bands.total)
    for tile in sorted(tiles):
        total = total.merge(tiles[tile])
    return {
        **total.to_json(bands),
        TILES_KEY: {f"{j}_{i}": tiles[(j, i)].to_tile_json() for j, i in sorted(tiles)},
    }


def select_band_stats(band_stats: dict, keep, bands: BandCounts) -> dict:
    """`band_stats` of the tiles `keep(j, i)` selects; as they are when they hold no per-tile moments
    (rsdtlib's or an older rsdt_beam's: a statistic of every tile)."""
    if TILES_KEY not in band_stats:
        return band_stats
    tiles = {}
    for name, record in band_stats[TILES_KEY].items():
        j, i = (int(v) for v in name.split("_"))
        if keep(j, i):
            tiles[(j, i)] = BandMoments.of_tile_json(record)
    return band_stats_json(tiles, bands)


def normalization(metadata: dict, bands: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) float32 `[bands]` of the frames' bands (SAR ascending, descending, optical) from
    metadata.json's `band_stats`; a band with std 0 keeps scale 1."""
    stats = metadata.get(BAND_STATS_KEY)
    if not stats:
        raise ValueError("metadata.json has no band_stats (written by rsdtlib or an older rsdt_beam): cannot normalise")
    mean = np.concatenate([stats[m]["mean"] for m in MODALITIES if m in stats]).astype(np.float32)
    std = np.concatenate([stats[m]["std"] for m in MODALITIES if m in stats]).astype(np.float32)
    if len(mean) != bands:
        raise ValueError(
            f"band_stats cover {len(mean)} bands but the features have {bands}: normalise "
            f"features of the stacks' bands only (a label function may have changed them)"
        )
    return mean, np.where(std > 0, std, 1.0).astype(np.float32)
