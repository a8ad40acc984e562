"""Stage 2 resolved on the launcher: the grid, band counts, time rules and tiling, and the metadata they fix."""

from __future__ import annotations

import dataclasses

from rsdt_beam.common.modalities import BandCounts
from rsdt_beam.common.names import RSDTLIB_METADATA_KEYS
from rsdt_beam.common.times import iso_time
from rsdt_beam.grid import Grid, TileLayout
from rsdt_beam.specs import StackSpec
from rsdt_beam.stack.rules import StackParams


def stack_metadata(layout: TileLayout, bands: BandCounts, grid: Grid, params: StackParams) -> dict:
    """rsdtlib's metadata.json keys first, in its order, then rsdt_beam's additions."""
    metadata = {"tile_size_y": layout.tile_size_y, "tile_size_x": layout.tile_size_x,
                "bands_sar": bands.sar, "bands_opt": bands.opt,
                "deadzone_y": layout.deadzone_y, "deadzone_x": layout.deadzone_x}
    assert tuple(metadata) == RSDTLIB_METADATA_KEYS
    metadata.update(num_tiles_y=layout.num_tiles_y, num_tiles_x=layout.num_tiles_x, grid=grid.to_json(),
                    starttime=iso_time(params.starttime), endtime=iso_time(params.endtime),
                    delta_step=params.delta_step)
    return metadata


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
    def create(cls, spec: StackSpec, grid: Grid, bands: BandCounts, modalities=None) -> StackPlan:
        """`modalities`, when known on the launcher, are recorded in the metadata."""
        params = spec.params
        layout = TileLayout(grid.height, grid.width, *spec.tile_size, *spec.deadzone)
        metadata = stack_metadata(layout, bands, grid, params)
        if modalities is not None:
            metadata["modalities"] = sorted(set(modalities))
        return cls(grid, bands, params, layout, spec.chunk_size, metadata)

    def describe(self) -> str:
        return f"{self.layout.num_tiles} tiles ({self.layout.num_tiles_y} x {self.layout.num_tiles_x})"
