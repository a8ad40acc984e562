"""Per-band statistics of stacked frames (count, mean, std, min, max), mergeable in any order.

Pure numpy. Stage 2 and Stage 3 compute them over every written frame with a Beam CombineFn
(`rsdt_beam.stack.transforms.BandStatistics`) and record them in `metadata.json` under `band_stats`,
per modality: `{"sar_ascending": {"mean": [...], "std": [...], "min": [...], "max": [...]}, ...}`.
Readers normalise features with them (`normalization`). Merging uses Chan et al.'s pairwise update
of mean and squared deviations, so the result does not depend on how tiles are split among workers.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from rsdt_beam.common.modalities import MODALITIES, BandCounts

BAND_STATS_KEY = "band_stats"


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
