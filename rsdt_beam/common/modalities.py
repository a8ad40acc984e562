"""The three modalities of rsdtlib's record schema and their band counts."""

from __future__ import annotations

import dataclasses

SAR_ASCENDING = "sar_ascending"
SAR_DESCENDING = "sar_descending"
OPTICAL = "optical"
MODALITIES = (SAR_ASCENDING, SAR_DESCENDING, OPTICAL)


@dataclasses.dataclass(frozen=True)
class BandCounts:
    """Bands per modality; SAR ascending and descending share `sar` as in rsdtlib."""

    sar: int
    opt: int

    @property
    def total(self) -> int:
        return 2 * self.sar + self.opt

    def slice_of(self, modality: str) -> slice:
        return {
            SAR_ASCENDING: slice(0, self.sar),
            SAR_DESCENDING: slice(self.sar, 2 * self.sar),
            OPTICAL: slice(2 * self.sar, self.total),
        }[modality]

    def bands_of(self, modality: str) -> int:
        return self.opt if modality == OPTICAL else self.sar

    @classmethod
    def of_modalities(cls, bands: dict[str, int]) -> BandCounts:
        """From per-modality band counts; SAR ascending and descending must agree (one `bands_sar`)."""
        sar = {bands[m] for m in (SAR_ASCENDING, SAR_DESCENDING) if m in bands}
        if len(sar) > 1:
            raise ValueError(
                f"SAR ascending has {bands[SAR_ASCENDING]} bands but SAR descending has "
                f"{bands[SAR_DESCENDING]}; rsdtlib's record schema needs one bands_sar"
            )
        return cls(sar.pop() if sar else 0, bands.get(OPTICAL, 0))
