"""Convert as Beam transforms: GeoTIFF archives -> observation store on the run's grid.

    ConvertSource --InspectSources--> to convert (+ already converted refs, + Rejection)
      --ReadSourceBlocks--> ((modality, time), BlockRead)   fan-out per (observation, block): each block
                                                            read, warped and staged in the store under
                                                            <store>/.convert_blocks/ (acquire.staging)
      --WriteConvertedObservations--> ObservationRef        GroupByKey per observation of the references,
                                                            the staged blocks streamed into one file each
                                                            (+ Rejection when nothing is valid)

`ConvertObservations` wires the three and returns the `ObservationRef`s of
every observation in the store for this run (new and already converted), the
PCollection Stage 2 takes as `refs` in the fused pipeline.

The transforms see a source only through the job (`ConvertJob`): its fingerprint,
`inspect` (band names, or ObservationError), `read_window` and the file `tags`; a
source has `modality`, `time`, `name` and `where` (the file a rejection names). The
STAC source (`rsdt_beam.acquire.stac.StacJob`) is another job over the same transforms.

Why blocks and a GroupByKey: reading and warping is the expensive part and
splits by pixel window, so a large area's observation keeps many workers
busy; the store wants one GeoTIFF per observation, so blocks meet again
per observation before the single atomic write. Why staged blocks: the
GroupByKey carries a small `BlockRead` per block (window, staged path,
valid pixel count), not its pixels, and the writer reads one staged block
at a time into a `StreamedGeoTiff`, so no worker holds a whole observation
and no pixels are shuffled. The counts decide a fully masked observation
without opening a file; blocks with no valid pixel (or outside the AOI,
never read) are not staged and are written as zeros, invalid. The staged
blocks are removed once the observation is written (or set aside), and
the whole staging folder (blocks a killed run left) once every
observation of the run is; a retried write whose blocks another attempt
removed checks the stored file's fingerprint instead. Convert does not
resume from staged blocks (fetch does: they cost requests).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
from collections.abc import Iterable

import apache_beam as beam
import numpy as np
import rasterio.errors

from rsdt_beam import fs
from rsdt_beam.acquire.geotiff import (
    FINGERPRINT_TAG,
    SOURCE_TAG,
    ConvertParams,
    ConvertSource,
    Listing,
    block_windows,
    drop_duplicates,
    file_header,
    fingerprint,
    glob_sources,
    inspect_source,
    open_raster,
    read_manifest,
    read_source_window,
)
from rsdt_beam.acquire.staging import CONVERT_DIR, block_path, remove_blocks, stage_block, write_staged_observation
from rsdt_beam.acquire.store import (
    REJECTED_DIR,
    GeoTiffObservationReader,
    observation_path,
    read_grid,
    store_folder,
    write_band_description,
    write_grid,
)
from rsdt_beam.acquire.store import rejection_path as observation_rejection_path
from rsdt_beam.aoi import AreaOfInterest, anchor_of, area_of, mask_for_grid
from rsdt_beam.common.modalities import MODALITIES, OPTICAL, BandCounts
from rsdt_beam.common.observations import ObservationError, ObservationRef, Rejection
from rsdt_beam.common.times import iso_time
from rsdt_beam.errors import UserError
from rsdt_beam.graph import Spread, split
from rsdt_beam.grid import Grid, PixelWindow
from rsdt_beam.outputs import AllDone, FinishFolder, OutputFolder, new_run_id
from rsdt_beam.progress import Counter, set_total
from rsdt_beam.specs import AreaSpec, ConvertSpec

_LOG = logging.getLogger(__name__)
REJECTED = "rejected"
CONVERTED = "converted"  # already in the store from an earlier run with the same fingerprint
RECORDED = "recorded"  # rejections already written to the store's rejected/
VALID = "valid"  # sources to convert
WRITTEN = "written"  # observations converted now
# The counters of which exactly one counts each source and each listing rejection (the progress total).
OBSERVATION_OUTCOMES = (
    "observations_converted",
    "observations_fully_masked",
    "observations_already_converted",
    "observations_already_fully_masked",
    "sources_set_aside",
)
# Every block of every source: read now (or failed), or skipped with its source (converted before, set aside).
BLOCKS, BLOCKS_SKIPPED = "convert_blocks", "convert_blocks_skipped"


@dataclasses.dataclass(frozen=True)
class ConvertJob:
    """Everything a worker needs: where to write, the grid, the parameters and the AOI.

    `bands` fixes the band count of each modality (the first readable source
    of each at launch, as Stage 2 takes it from its first observation).
    """

    store: str
    grid: Grid
    params: ConvertParams
    bands: tuple[tuple[str, int], ...]
    aoi: AreaOfInterest | None = None
    block_size: int = 2048
    run_id: str = dataclasses.field(default_factory=new_run_id)  # in the names of the run's temporaries

    @property
    def folder(self) -> OutputFolder:
        """The store as this run's output: grid and convert parameters (and the AOI, when clipping)."""
        return store_folder(
            self.store,
            self.grid,
            {"source": "convert", **self.params.to_json(), "aoi": self.aoi_wkt if self.params.clip_to_aoi else None},
            self.run_id,
        )

    @functools.cached_property
    def blocks(self) -> list[PixelWindow]:
        """The blocks each source is read in (`ReadSourceBlocks`)."""
        return block_windows(self.grid, self.block_size)

    @functools.cached_property
    def aoi_wkt(self) -> str | None:
        return self.aoi.to_crs(self.grid.crs).geometry.wkt if self.aoi is not None else None

    def fingerprint(self, source: ConvertSource) -> str:
        return fingerprint(source, self.grid, self.params, self.aoi_wkt)

    def area_mask(self) -> np.ndarray | None:
        """bool [H, W] of pixels inside the AOI polygon, or None when not clipping."""
        if self.aoi is None or not self.params.clip_to_aoi:
            return None
        return mask_for_grid(self.aoi, self.grid)

    def inspect(self, source: ConvertSource) -> tuple[str, ...]:
        """The band names of a source; ObservationError when a file is unreadable, misses the grid or has
        another band count than the run's."""
        header = inspect_source(source, self.grid)
        expected = dict(self.bands).get(source.modality)
        if header.bands != expected:
            raise ObservationError(
                source.where,
                f"has {header.bands} bands but {source.modality} observations of this run have {expected}",
            )
        return header.band_names

    def read_window(
        self, source: ConvertSource, window: PixelWindow, area: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """`(float32 [h, w, bands], bool valid [h, w])` of a source on one grid window."""
        return read_source_window(source, self.grid, window, self.params, area)

    def tags(self, source: ConvertSource) -> dict:
        """Tags of the stored file that tell where it came from."""
        return {SOURCE_TAG: ";".join(source.bands)}


def _stored_fingerprint(path: str) -> str | None:
    try:
        with open_raster(path) as dataset:
            return dataset.tags().get(FINGERPRINT_TAG)
    except (rasterio.errors.RasterioError, OSError):
        return None  # unreadable leftovers are converted again


def rejection_path(store: str, source: ConvertSource) -> str:
    return observation_rejection_path(store, source.modality, source.time)


def _rejection(source: ConvertSource, where: str, reason: str) -> Rejection:
    return Rejection(where, reason, source.modality, iso_time(source.time))


class _Inspect(beam.DoFn):
    def __init__(self, job: ConvertJob):
        self._job = job
        self._inspected = Counter("sources_inspected")
        self._skipped = Counter("observations_already_converted")
        self._masked_before = Counter("observations_already_fully_masked")
        self._blocks_skipped = Counter(BLOCKS_SKIPPED)

    def process(self, source: ConvertSource):
        self._inspected.inc()
        for tag, value in self._inspect(source):
            if tag != VALID:  # its blocks are done without a read: the progress total counts them
                self._blocks_skipped.inc(len(self._job.blocks))
            yield tag, value

    def _inspect(self, source: ConvertSource):
        stamp = self._job.fingerprint(source)
        path = observation_path(self._job.store, source.modality, source.time)
        if fs.exists(path) and _stored_fingerprint(path) == stamp:
            self._skipped.inc()
            yield CONVERTED, ObservationRef(source.modality, source.time, path, GeoTiffObservationReader())
            return
        recorded = rejection_path(self._job.store, source)
        if fs.exists(recorded):
            entry = fs.read_json(recorded)
            if entry.pop("fingerprint", None) == stamp:
                self._masked_before.inc()
                yield RECORDED, Rejection(**entry)
                return
        try:
            names = self._job.inspect(source)
        except ObservationError as error:
            _LOG.warning("set aside %s: %s", source.name, error)
            yield REJECTED, (source, _rejection(source, error.observation, error.reason))
            return
        yield VALID, (source, names)


class InspectSources(beam.PTransform):
    """ConvertSource -> `(source, band names)` to convert; tagged `converted` (ObservationRef of
    observations already in the store with the same fingerprint), `rejected` (`(source, Rejection)`)
    and `recorded` (Rejection already in the store: fully masked with the same fingerprint)."""

    def __init__(self, job: ConvertJob):
        super().__init__()
        self._job = job

    def expand(self, sources):
        return split(sources | "Inspect" >> beam.ParDo(_Inspect(self._job)), (VALID, CONVERTED, REJECTED, RECORDED))


@dataclasses.dataclass(frozen=True)
class BlockRead:
    """What reading one block of an observation left: the block staged at `path` with `valid_pixels`
    valid pixels (no path: nothing valid there, or outside the AOI and never read), or the `error`."""

    source: ConvertSource  # or another job's source (acquire.stac.StacSource)
    band_names: tuple[str, ...]
    window: PixelWindow
    path: str | None = None
    valid_pixels: int = 0
    error: str | None = None


class _ReadBlock(beam.DoFn):
    def __init__(self, job: ConvertJob):
        self._job = job
        self._area = None
        self._pixels = Counter("convert_pixels_read")
        self._failed = Counter("convert_blocks_failed")
        self._blocks = Counter(BLOCKS)

    def setup(self):
        self._area = self._job.area_mask()

    def process(self, item: tuple[tuple[ConvertSource, tuple[str, ...]], PixelWindow]):
        (source, names), window = item
        key = (source.modality, source.time)
        self._blocks.inc()  # whatever comes of it
        area = None
        if self._area is not None:
            area = self._area[window.row_start : window.row_stop, window.col_start : window.col_stop]
            if not area.any():  # nothing of the AOI here: no read at all
                yield key, BlockRead(source, names, window)
                return
        try:
            data, valid = self._job.read_window(source, window, area)
        except ObservationError as error:
            self._failed.inc()
            yield key, BlockRead(source, names, window, error=error.observation + ": " + error.reason)
            return
        self._pixels.inc(window.height * window.width)
        count = int(np.count_nonzero(valid))
        if not count:  # all zeros and invalid: the writer makes it without a file
            yield key, BlockRead(source, names, window)
            return
        path = block_path(self._job.store, CONVERT_DIR, source.modality, source.time, window)
        stage_block(path, data, valid, self._job.run_id)
        yield key, BlockRead(source, names, window, path, count)


class ReadSourceBlocks(beam.PTransform):
    """`(source, band names)` -> `((modality, time), BlockRead)`, one element per (observation, block of
    about `job.block_size` px a side); the block's pixels are staged in the store, not in the element."""

    def __init__(self, job: ConvertJob):
        super().__init__()
        self._job = job

    def expand(self, sources):
        windows = self._job.blocks
        return (
            sources
            | "Fan out blocks" >> beam.FlatMap(lambda item: [(item, w) for w in windows])
            | "Spread blocks"
            >> Spread(lambda block: (block[0][0].modality, block[0][0].time, block[1].row_start, block[1].col_start))
            | "Read block" >> beam.ParDo(_ReadBlock(self._job))
        )


class _WriteObservation(beam.DoFn):
    def __init__(self, job: ConvertJob):
        self._job = job
        self._written = Counter("observations_converted")
        self._masked = Counter("observations_fully_masked")
        self._bytes = Counter("convert_written_bytes")

    def process(self, item: tuple[tuple[str, float], Iterable[BlockRead]]):
        _, reads = item
        reads = sorted(reads, key=lambda read: read.window)
        source, names = reads[0].source, reads[0].band_names
        staged = [read.path for read in reads if read.path is not None]
        errors = [read.error for read in reads if read.error is not None]
        if errors:
            remove_blocks(staged)
            yield REJECTED, (source, _rejection(source, source.where, errors[0]))
            return
        if not any(read.valid_pixels for read in reads):  # decided from the counts: no block staged
            self._masked.inc()
            _LOG.warning("set aside %s: no valid pixel inside the area of interest", source.name)
            rejection = _rejection(source, source.where, "fully masked: no valid pixel inside the area of interest")
            # With the fingerprint, a re-run with the same inputs skips it without reading again.
            fs.write_json(
                rejection_path(self._job.store, source),
                {**rejection.to_json(), "fingerprint": self._job.fingerprint(source)},
                self._job.run_id,
            )
            fs.delete_if_exists(observation_path(self._job.store, source.modality, source.time))
            yield RECORDED, rejection
            return
        stamp = self._job.fingerprint(source)
        tags = {FINGERPRINT_TAG: stamp, **self._job.tags(source)}
        path = observation_path(self._job.store, source.modality, source.time)
        try:
            write_staged_observation(
                self._job.store,
                self._job.grid,
                source.modality,
                source.time,
                [(read.window, read.path) for read in reads],
                names,
                tags,
                self._job.params.dtype,
                self._job.run_id,
            )
        except OSError:  # FileNotFoundError, Beam's BeamIOError
            # Another attempt of this step wrote the observation and removed the staged blocks while this one
            # was reading them (nothing of this attempt is published).
            if _stored_fingerprint(path) != stamp:
                raise
        remove_blocks(staged)
        # A success replaces the rejection an earlier run may have recorded for this observation.
        fs.delete_if_exists(rejection_path(self._job.store, source))
        self._written.inc()
        self._bytes.inc(self._job.grid.height * self._job.grid.width * len(names) * 4)
        yield WRITTEN, ObservationRef(source.modality, source.time, path, GeoTiffObservationReader())


class WriteConvertedObservations(beam.PTransform):
    """`((modality, time), BlockRead)` -> ObservationRef of its store file, written from the staged blocks
    (which are then removed); tagged `rejected` (`(source, Rejection)`) when a block failed, `recorded`
    (Rejection, already written to the store) when no block has a valid pixel inside the area."""

    def __init__(self, job: ConvertJob):
        super().__init__()
        self._job = job

    def expand(self, blocks):
        return split(
            blocks
            | "Blocks per observation" >> beam.GroupByKey()
            | "Write from staged blocks" >> beam.ParDo(_WriteObservation(self._job)),
            (WRITTEN, REJECTED, RECORDED),
        )


class _RecordRejection(beam.DoFn):
    """Writes a rejection to the store's rejected/ folder: `(source, Rejection)` under the
    observation's name (and removes an outdated observation file of it), a listing rejection
    under a name of its path (a duplicate must not take the name of the observation kept)."""

    def __init__(self, store: str, run_id: str):
        self._store = store
        self._run_id = run_id
        self._recorded = Counter("sources_set_aside")

    def process(self, item):
        self._recorded.inc()
        if isinstance(item, Rejection):
            name = "listing_" + hashlib.sha1(item.observation.encode()).hexdigest()[:12] + ".json"
            fs.write_json(fs.join(self._store, REJECTED_DIR, name), item.to_json(), self._run_id)
            yield item
            return
        source, rejection = item
        fs.write_json(rejection_path(self._store, source), rejection.to_json(), self._run_id)
        fs.delete_if_exists(observation_path(self._store, source.modality, source.time))
        yield rejection


class ConvertObservations(beam.PTransform):
    """ConvertSource -> `(ObservationRef of every stored observation, Rejection)` PCollections.

    The refs cover observations written now and those already converted
    with the same fingerprint; every rejection (including `listed`, the
    launcher's listing rejections) is also written to the store's `rejected/`.
    """

    def __init__(self, job: ConvertJob, listed: list[Rejection] | None = None):
        super().__init__()
        self._job = job
        self._listed = list(listed or ())

    def expand(self, sources):
        inspected = sources | "Inspect sources" >> InspectSources(self._job)
        blocks = inspected[VALID] | "Read blocks" >> ReadSourceBlocks(self._job)
        written = blocks | "Write observations" >> WriteConvertedObservations(self._job)
        refs = (written[WRITTEN], inspected[CONVERTED]) | "All observations" >> beam.Flatten()
        listed = sources.pipeline | "Listing rejections" >> beam.Create(self._listed)
        recorded = (
            (listed, inspected[REJECTED], written[REJECTED])
            | "All new rejections" >> beam.Flatten()
            | "Record rejections" >> beam.ParDo(_RecordRejection(self._job.store, self._job.run_id))
        )
        rejected = (recorded, inspected[RECORDED], written[RECORDED]) | "All convert rejections" >> beam.Flatten()
        return refs, rejected


def check_store_grid(store: str, grid: Grid, overwrite: bool) -> None:
    """A store that already holds another grid is an error (unless `overwrite`: the run replaces it)."""
    existing = None if overwrite else read_grid(store)
    if existing is not None and not existing.matches(grid):
        raise UserError(
            f"--store {store} holds observations on another grid ({existing.describe()}); "
            f"this run's grid is {grid.describe()}: use a new store"
        )


def run_grid(area: AreaSpec, anchor: tuple[float, float] = (0.0, 0.0)) -> tuple[AreaOfInterest | None, Grid]:
    """The AOI and grid of a run: the AOI's, or the store's when adding to it."""
    if area.aoi:
        return area_of(area, anchor)
    if read_grid(area.store) is not None:
        return None, read_grid(area.store)  # adding observations to an existing store
    raise UserError("--aoi and --resolution are required (the store has no grid.json yet)")


@dataclasses.dataclass
class ConvertPlan:
    """A convert run resolved on the launcher: the job, the sources and what listing set aside."""

    job: ConvertJob
    sources: list[ConvertSource]
    rejected: list[Rejection]
    band_names: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)

    @classmethod
    def create(
        cls,
        store: str,
        grid: Grid,
        listing: Listing,
        params: ConvertParams,
        aoi: AreaOfInterest | None = None,
        block_size: int = 2048,
        overwrite: bool = False,
    ) -> ConvertPlan:
        """Drops duplicate (modality, time) sources and fixes each modality's band count from its
        first readable source; a store that already holds another grid is an error (unless `overwrite`:
        the run replaces the store's contents)."""
        check_store_grid(store, grid, overwrite)
        unique = drop_duplicates(listing.sources)
        rejected = list(listing.rejected) + unique.rejected
        bands: dict[str, int] = {}
        names: dict[str, tuple[str, ...]] = {}
        for source in unique.sources:
            if source.modality in bands:
                continue
            try:
                header = inspect_source(source, grid)
                bands[source.modality], names[source.modality] = header.bands, header.band_names
            except ObservationError as error:
                _LOG.warning("cannot take the %s band count from %s, trying the next one", source.modality, error)
        for item in rejected:
            _LOG.warning("set aside %s: %s", item.observation, item.reason)
        job = ConvertJob(store, grid, params, tuple(sorted(bands.items())), aoi, block_size)
        return cls(job, unique.sources, rejected, names)

    @classmethod
    def from_spec(cls, area: AreaSpec, spec: ConvertSpec, overwrite: bool = False) -> ConvertPlan:
        """Lists the archive and fixes the grid: the AOI's, or the store's when adding to it (with
        `overwrite`, the store's grid is not checked: the run replaces the store's contents)."""
        if not area.store:
            raise UserError("--store is required (the observation store to write)")
        if spec.manifest:
            listing = read_manifest(spec.manifest, spec.band_selection)
        else:
            listing = glob_sources(
                list(spec.band_files), spec.archive_modality, spec.time_pattern, spec.mask_files, spec.band_selection
            )
        anchor = (0.0, 0.0)
        if spec.align_to:
            if not area.resolution:
                raise UserError("--align_to needs --resolution")
            anchor = anchor_of(file_header(spec.align_to, "--align_to raster").transform, area.resolution)
        aoi, grid = run_grid(area, anchor)
        return cls.create(area.store, grid, listing, spec.params, aoi, spec.block_size, overwrite)

    @property
    def band_counts(self) -> BandCounts:
        """Stage 2's band counts; SAR ascending and descending must agree."""
        return BandCounts.of_modalities(dict(self.job.bands))

    def band_description(self) -> dict:
        """`{modality: {"names", "units", "preprocessing"}}` of this run's modalities (store's bands.json)."""
        params = self.job.params
        out = {}
        for modality, _ in self.job.bands:
            sar_db = params.db_to_linear and modality != OPTICAL
            divisor = params.divisor(modality)
            preprocessing = {
                "divisor": divisor,
                "db_to_linear": sar_db,
                "mask_rule": params.mask_rule.describe(),
                "resampling": params.resampling,
                "dtype": params.dtype,
            }
            units = "linear power (from dB)" if sar_db else f"source value / {divisor:g}"
            out[modality] = {
                "names": list(self.band_names.get(modality, ())),
                "units": units,
                "preprocessing": preprocessing,
            }
        return out

    def modality_counts(self) -> str:
        """`optical 3, sar_ascending 2`: the sources per modality (those with any)."""
        per = {m: sum(s.modality == m for s in self.sources) for m in MODALITIES}
        return ", ".join(f"{m} {n}" for m, n in per.items() if n)

    def describe(self) -> str:
        return (
            f"convert {len(self.sources)} sources ({self.modality_counts()}), "
            f"{len(self.rejected)} set aside at listing, bands {dict(self.job.bands)}, "
            f"grid {self.job.grid.describe()} -> {self.job.store}"
        )

    def expand(self, pipeline):
        """Adds convert: returns (ObservationRef PCollection, Rejection PCollection); the store's
        `metadata.json` follows every write of the run."""
        grid, store, run_id = self.job.grid, self.job.store, self.job.run_id
        grid_written = (
            pipeline
            | "Grid" >> beam.Create([grid])
            | "Write grid.json" >> beam.Map(lambda g: write_grid(store, g, run_id))
        )
        bands_written = (
            pipeline
            | "Band description" >> beam.Create([self.band_description()])
            | "Write bands.json" >> beam.Map(lambda description: write_band_description(store, description, run_id))
        )
        set_total("blocks", len(self.sources) * len(self.job.blocks), (BLOCKS, BLOCKS_SKIPPED))
        set_total("observations", len(self.sources) + len(self.rejected), OBSERVATION_OUTCOMES)
        sources = pipeline | "Sources" >> beam.Create(self.sources)
        refs, rejected = sources | "Convert" >> ConvertObservations(self.job, self.rejected)
        # Each write removes its own staged blocks; this takes those of a killed run's finished observations
        # (skipped now), once every observation of this run is written.
        staging_removed = (
            (refs, rejected)
            | "Observations done" >> AllDone()
            | "Remove staged blocks" >> beam.Map(lambda _: fs.delete_tree(fs.join(store, CONVERT_DIR)))
        )
        (grid_written, bands_written, refs, rejected, staging_removed) | "Finish store" >> FinishFolder(self.job.folder)
        return refs, rejected
