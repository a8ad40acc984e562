"""Stage 2's inputs as listed on the launcher: the observation store and/or rsdtlib EOPatch folders.

Listing reads folder names and, per modality, the header of the first readable observation (its band
count); every other header and all pixels are read by the workers.
"""

from __future__ import annotations

import dataclasses
import logging

from rsdt_beam import fs
from rsdt_beam.acquire.eopatch import EOPatchReader, list_eopatches
from rsdt_beam.acquire.store import list_store, read_band_description, read_grid
from rsdt_beam.common.modalities import MODALITIES, OPTICAL, SAR_ASCENDING, SAR_DESCENDING, BandCounts
from rsdt_beam.common.observations import ObservationError, ObservationRef, Rejection
from rsdt_beam.common.times import iso_time
from rsdt_beam.errors import UserError
from rsdt_beam.grid import Grid
from rsdt_beam.specs import InputsSpec

_LOG = logging.getLogger(__name__)


@dataclasses.dataclass
class Observations:
    """The observations of a run as listed on the launcher, with the grid and band counts they fix."""

    refs: list[ObservationRef]
    rejected: list[Rejection]
    grid: Grid
    bands: BandCounts
    after_end: int = 0
    band_description: dict = dataclasses.field(default_factory=dict)  # {modality: {names, units, preprocessing}}

    def summary(self) -> str:
        per = {m: sum(r.modality == m for r in self.refs) for m in MODALITIES}
        return (
            f"{len(self.refs)} observations ({', '.join(f'{m} {n}' for m, n in per.items())}), "
            f"bands sar {self.bands.sar} opt {self.bands.opt}, grid {self.grid.describe()}"
        )


def discover_observations(inputs: InputsSpec, endtime: float) -> Observations:
    """Lists the Stage 2 inputs (store and/or EOPatch folders): the observations before `endtime`."""
    refs: list[ObservationRef] = []
    rejected: list[Rejection] = []
    sources = []
    grid = None
    description: dict = {}
    if inputs.observations:
        sources.append(inputs.observations)
        found, skipped = list_store(inputs.observations)
        refs += found
        rejected += skipped
        grid = read_grid(inputs.observations)
        description.update(read_band_description(inputs.observations))
    for modality, folder, reader in (
        (SAR_ASCENDING, inputs.sar_ascending, EOPatchReader(inputs.sar_bands_feature, inputs.sar_mask_feature)),
        (SAR_DESCENDING, inputs.sar_descending, EOPatchReader(inputs.sar_bands_feature, inputs.sar_mask_feature)),
        (OPTICAL, inputs.optical, EOPatchReader(inputs.opt_bands_feature, inputs.opt_mask_feature)),
    ):
        if folder:
            if not fs.folder_exists(folder):
                raise UserError(f"--{modality} folder {folder} does not exist")
            sources.append(folder)
            found, skipped = list_eopatches(folder, modality, reader)
            refs += found
            rejected += skipped
            description[modality] = {
                "units": "as stored in the EOPatches",
                "preprocessing": {
                    "eopatch_data_feature": reader.bands_feature,
                    "eopatch_mask_feature": reader.mask_feature,
                },
            }
    if not sources:
        raise UserError("no input: give --observations and/or --sar_ascending/--sar_descending/--optical")
    for item in rejected:
        _LOG.warning("set aside %s: %s", item.observation, item.reason)
    # Observations at or after endtime can never be written: not loaded at all (rsdtlib loads them).
    after_end = sum(ref.time >= endtime for ref in refs)
    refs = sorted((ref for ref in refs if ref.time < endtime), key=lambda r: (r.time, r.modality))
    unique: list[ObservationRef] = []
    for ref in refs:
        if unique and (unique[-1].modality, unique[-1].time) == (ref.modality, ref.time):
            rejected.append(Rejection.of(ref, f"same modality and time stamp as {unique[-1].uri}"))
            continue
        unique.append(ref)
    if not unique:
        raise UserError(
            f"no observations before endtime {iso_time(endtime)} in {', '.join(sources)}"
            + (
                f" ({len(rejected)} entries set aside: {rejected[0].observation}: {rejected[0].reason} ...)"
                if rejected
                else ""
            )
        )
    headers = {}
    for ref in unique:
        if ref.modality in headers:
            continue
        try:
            headers[ref.modality] = ref.reader.header(ref.uri)
        except ObservationError as error:
            _LOG.warning("cannot take band count from %s, trying the next one", error)
    if not headers:
        raise UserError(f"none of the {len(unique)} observations in {', '.join(sources)} is readable")
    if grid is None:
        grid = next(iter(headers.values())).grid
    bands = BandCounts.of_modalities({m: header.bands for m, header in headers.items()})
    for modality, entry in description.items():
        if "names" not in entry and modality in headers:  # EOPatches name no bands: feature[k]
            feature = entry["preprocessing"]["eopatch_data_feature"]
            entry["names"] = [f"{feature}[{k}]" for k in range(headers[modality].bands)]
    return Observations(unique, rejected, grid, bands, after_end, description)
