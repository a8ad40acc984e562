"""Stage 2 resolved on the launcher: the grid, band counts, time rules and tiling, and the metadata they fix."""

from __future__ import annotations

import dataclasses

from rsdt_beam.common.modalities import MODALITIES, BandCounts
from rsdt_beam.common.names import BANDS_KEY, PREPROCESSING_KEY, RSDTLIB_METADATA_KEYS
from rsdt_beam.common.times import iso_time
from rsdt_beam.grid import DEFAULT_CHUNK_SIZE, Grid, TileLayout, work_items
from rsdt_beam.specs import StackSpec
from rsdt_beam.stack.rules import StackParams


def stack_metadata(layout: TileLayout, bands: BandCounts, grid: Grid, params: StackParams) -> dict:
    """rsdtlib's metadata.json keys first, in its order, then rsdt_beam's additions."""
    metadata = {
        "tile_size_y": layout.tile_size_y,
        "tile_size_x": layout.tile_size_x,
        "bands_sar": bands.sar,
        "bands_opt": bands.opt,
        "deadzone_y": layout.deadzone_y,
        "deadzone_x": layout.deadzone_x,
    }
    assert tuple(metadata) == RSDTLIB_METADATA_KEYS
    metadata.update(
        num_tiles_y=layout.num_tiles_y,
        num_tiles_x=layout.num_tiles_x,
        grid=grid.to_json(),
        starttime=iso_time(params.starttime),
        endtime=iso_time(params.endtime),
        delta_step=params.delta_step,
    )
    return metadata


def model_card(band_description: dict) -> dict:
    """metadata.json's `bands` (names and units per modality) and `preprocessing` of a band description
    (`{modality: {"names", "units", "preprocessing"}}`, as the store's bands.json)."""
    present = [m for m in MODALITIES if m in band_description]
    return {
        BANDS_KEY: {
            m: {key: band_description[m][key] for key in ("names", "units") if key in band_description[m]}
            for m in present
        },
        PREPROCESSING_KEY: {m: band_description[m].get("preprocessing", {}) for m in present},
    }


@dataclasses.dataclass(frozen=True)
class StackPlan:
    """Everything Stage 2 needs, resolved and validated before the pipeline runs."""

    grid: Grid
    bands: BandCounts
    params: StackParams
    layout: TileLayout
    chunk_size: int
    metadata: dict

    @classmethod
    def create(
        cls, spec: StackSpec, grid: Grid, bands: BandCounts, modalities=None, band_description: dict | None = None
    ) -> StackPlan:
        """`modalities`, when known on the launcher, are recorded in the metadata, and so are the band
        names, units and preprocessing of `band_description` (as `bands` and `preprocessing`)."""
        params = spec.params
        layout = TileLayout(grid.height, grid.width, *spec.tile_size, *spec.deadzone)
        metadata = stack_metadata(layout, bands, grid, params)
        if modalities is not None:
            metadata["modalities"] = sorted(set(modalities))
        if band_description:
            metadata.update(model_card(band_description))
        return cls(grid, bands, params, layout, spec.chunk_size or DEFAULT_CHUNK_SIZE, metadata)

    def tile_count(self, selector=None) -> int:
        """Tiles Stage 2 stacks: all, or those `selector(j, i)` keeps."""
        return sum(1 for tile in self.layout.tiles() if selector is None or selector(*tile))

    def describe(self) -> str:
        return (
            f"{self.layout.num_tiles} tiles ({self.layout.num_tiles_y} x {self.layout.num_tiles_x}); "
            f"{work_items(self.layout, self.chunk_size).describe()}"
        )
