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
    known_modalities: tuple[str, ...] = ()  # seen by an earlier launch (KnownInputs), maybe not listed now

    @property
    def modalities(self) -> list[str]:
        return sorted({ref.modality for ref in self.refs} | set(self.known_modalities))

    def summary(self) -> str:
        per = {m: sum(r.modality == m for r in self.refs) for m in MODALITIES}
        return (
            f"{len(self.refs)} observations ({', '.join(f'{m} {n}' for m, n in per.items())}), "
            f"bands sar {self.bands.sar} opt {self.bands.opt}, grid {self.grid.describe()}"
        )


@dataclasses.dataclass(frozen=True)
class KnownInputs:
    """What an earlier launch established about the inputs, so that a later one lists only from `since` on:
    the grid, the band counts and the modalities, which the new observations alone may not show. (`since`
    None: the whole history, its grid and bands fixed by a Stage 1 source about to write the store.)"""

    since: float | None
    grid: Grid
    bands: BandCounts
    modalities: tuple[str, ...]


def discover_observations(inputs: InputsSpec, endtime: float, known: KnownInputs | None = None) -> Observations:
    """Lists the Stage 2 inputs (store and/or EOPatch folders): the observations before `endtime`; with
    `known`, only those from `known.since` on (the listing itself starts there, so a scheduled launch lists
    what is new, not the history), and none at all is no error."""
    since = known.since if known else None
    refs: list[ObservationRef] = []
    rejected: list[Rejection] = []
    sources = []
    grid = None
    description: dict = {}
    if inputs.observations:
        sources.append(inputs.observations)
        found, skipped = list_store(inputs.observations, since)
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
            found, skipped = list_eopatches(folder, modality, reader, since)
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
    refs = sorted(
        (ref for ref in refs if ref.time < endtime and (since is None or ref.time >= since)),
        key=lambda r: (r.time, r.modality),
    )
    unique: list[ObservationRef] = []
    for ref in refs:
        if unique and (unique[-1].modality, unique[-1].time) == (ref.modality, ref.time):
            rejected.append(Rejection.of(ref, f"same modality and time stamp as {unique[-1].uri}"))
            continue
        unique.append(ref)
    if not unique and not known:
        raise UserError(
            f"no observations before endtime {iso_time(endtime)} in {', '.join(sources)}"
            + (
                f" ({len(rejected)} entries set aside: {rejected[0].observation}: {rejected[0].reason} ...)"
                if rejected
                else ""
            )
        )
    if known:  # a later launch keeps the grid and band counts of the first
        grid, bands = grid or known.grid, known.bands
    else:
        grid, bands = _grid_and_bands(unique, sources, grid)
    observations = Observations(
        unique, rejected, grid, bands, after_end, description, known.modalities if known else ()
    )
    for modality, entry in description.items():
        if "names" not in entry and modality in observations.modalities:  # EOPatches name no bands: feature[k]
            feature = entry["preprocessing"]["eopatch_data_feature"]
            entry["names"] = [f"{feature}[{k}]" for k in range(bands.opt if modality == OPTICAL else bands.sar)]
    return observations


def _grid_and_bands(refs: list[ObservationRef], sources: list[str], grid: Grid | None) -> tuple[Grid, BandCounts]:
    """The band counts from the header of the first readable observation of each modality, and the grid
    (the store's, else that of the headers)."""
    headers = {}
    for ref in refs:
        if ref.modality in headers:
            continue
        try:
            headers[ref.modality] = ref.reader.header(ref.uri)
        except ObservationError as error:
            _LOG.warning("cannot take band count from %s, trying the next one", error)
    if not headers:
        raise UserError(f"none of the {len(refs)} observations in {', '.join(sources)} is readable")
    if grid is None:
        grid = next(iter(headers.values())).grid
    return grid, BandCounts.of_modalities({m: header.bands for m, header in headers.items()})
