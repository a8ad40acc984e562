"""Stage 1 fetch as Beam work: Sentinel Hub acquisitions -> the observation store.

    launcher: credentials checked (its own OAuth token), Catalog search per collection,
              store listed (resume) -> FetchItem per (collection, timestamp, chunk) still missing
    FetchChunks          FetchItem -> ChunkOutcome   keyed into `max_requests_in_flight` lanes,
                         GroupByKey, each lane sends its requests one after another; the chunk is
                         staged under <store>/.fetch_chunks/ (atomic write, acquire.staging)
    AssembleObservations ChunkOutcome -> ObservationRef (+ Rejection)  GroupByKey per observation of
                         the outcomes (path and valid pixel count, no pixels): all chunks there ->
                         streamed one at a time, row-major, into <store>/<modality>/<time>.tif;
                         no valid pixel (from the counts) -> <store>/rejected/<modality>_<time>.json;
                         a chunk failed -> Rejection only

Why lanes: a key's values are processed by one DoFn call, so N keys bound the
requests in flight to N across the whole job whatever the worker count
(autoscaling adds workers, not lanes); the client's own limiter then spaces
requests within a lane and honours 429 Retry-After.

Resume: an observation whose final file exists, or that is in `rejected/`,
is not fetched again; a chunk already staged is not fetched again (a killed
run, or a failure in another chunk of the same observation). Files appear
under their final name only when complete (fs.atomic_write), so a half-written
file is never taken as done. Failed chunks leave no trace but the Rejection
and the counter, so the next run retries them.

Credentials: the plan carries `sh.Credentials`, the place they are read, never
the secret nor the launcher's token; each worker process reads them and gets
its own token (sentinelhub.open_session), so nothing secret is in the job graph.

A runner may run a step twice (a retried bundle; the DaskRunner runs again what
a side input depends on): a lane skips chunks of observations assembled
already and assembling tolerates another attempt's work, so no request is sent
twice for an observation that is stored.

Chunks are blocks of the whole grid of at most `--fetch_chunk_size` (<= 2500)
px a side: the store holds the area's data, also the pixels right of or below
the last whole tile of any tiling. Assembling holds one chunk at a time (the
file is a `StreamedGeoTiff`), as a lane does, never a whole observation; a
chunk staged by an earlier attempt or run carries no count, so its mask
alone is read to tell an observation without a valid pixel.

Every file is written under a temporary name carrying the run's id; the store's
`metadata.json` is written after every other write of the run
(rsdt_beam.outputs), and empty staging folders are removed.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import apache_beam as beam
import numpy as np

from rsdt_beam import fs
from rsdt_beam.acquire import sentinelhub as sh
from rsdt_beam.acquire import staging
from rsdt_beam.acquire.geotiff import block_windows
from rsdt_beam.acquire.store import (
    REJECTED_DIR,
    GeoTiffObservationReader,
    list_store,
    observation_path,
    read_grid,
    rejection_path,
    store_folder,
    write_band_description,
    write_grid,
    write_rejection,
)
from rsdt_beam.aoi import area_of
from rsdt_beam.common.modalities import MODALITIES, OPTICAL, BandCounts
from rsdt_beam.common.observations import ObservationRef, Rejection
from rsdt_beam.common.times import iso_time, time_name
from rsdt_beam.errors import UserError
from rsdt_beam.graph import split
from rsdt_beam.grid import Grid, PixelWindow
from rsdt_beam.outputs import OutputFolder, new_run_id
from rsdt_beam.progress import Counter, set_total
from rsdt_beam.specs import AreaSpec, FetchSpec, StackSpec

_LOG = logging.getLogger(__name__)
STAGING_DIR = staging.FETCH_DIR
REJECTED = "rejected"
OBSERVATIONS = "observations"


@dataclasses.dataclass(frozen=True)
class FetchItem:
    """One Process request: a chunk of the grid at one acquisition, in request lane `lane`."""

    modality: str
    time: float
    chunk: PixelWindow
    chunks: int  # chunks of this observation in all (fetched now or staged before)
    lane: int


@dataclasses.dataclass(frozen=True)
class ChunkOutcome:
    """A chunk staged at `path` with `valid_pixels` valid pixels (None: not known, staged by an earlier
    attempt or run), or failed with `reason`."""

    modality: str
    time: float
    chunk: PixelWindow
    chunks: int
    path: str | None = None
    reason: str | None = None
    valid_pixels: int | None = None


def staged_chunk_path(store: str, modality: str, time: float, chunk: PixelWindow) -> str:
    return staging.block_path(store, STAGING_DIR, modality, time, chunk)


def fetch_chunks(grid: Grid, chunk_size: int) -> list[PixelWindow]:
    """The whole grid in blocks within Sentinel Hub's request limit."""
    if not 0 < chunk_size <= sh.MAX_REQUEST_PIXELS:
        raise UserError(f"--fetch_chunk_size must be within 1..{sh.MAX_REQUEST_PIXELS}, got {chunk_size}")
    return block_windows(grid, chunk_size)


def plan_items(
    acquisitions: dict[str, list[float]],
    chunks: list[PixelWindow],
    done: set[tuple[str, str]],
    staged: set[str],
    store: str,
    lanes: int,
) -> tuple[list[FetchItem], list[ChunkOutcome]]:
    """Work items still to fetch, and chunks staged by an earlier run (pure; no I/O).

    `done`: (modality, time name) of observations stored or rejected already;
    `staged`: paths of staged chunk files. Items are dealt round-robin into `lanes`.
    """
    if lanes < 1:
        raise ValueError(f"max_requests_in_flight must be at least 1, got {lanes}")
    items, outcomes = [], []
    for modality in sorted(acquisitions):
        for time in acquisitions[modality]:
            if (modality, time_name(time)) in done:
                continue
            for chunk in chunks:
                path = staged_chunk_path(store, modality, time, chunk)
                if path in staged:
                    outcomes.append(ChunkOutcome(modality, time, chunk, len(chunks), path=path))
                else:
                    items.append(FetchItem(modality, time, chunk, len(chunks), len(items) % lanes))
    return items, outcomes


def stored_keys(store: str) -> tuple[list[ObservationRef], set[tuple[str, str]]]:
    """Observations already in the store, and (modality, time name) of them plus the rejected ones."""
    refs, _ = list_store(store)
    done = {(ref.modality, time_name(ref.time)) for ref in refs}
    for name in fs.list_children(fs.join(store, REJECTED_DIR)):
        if name.endswith(".json") and not name.startswith("."):
            modality, _, stamp = name[:-5].rpartition("_")
            if modality in MODALITIES:
                done.add((modality, stamp))
    return refs, done


def staged_paths(store: str) -> set[str]:
    return staging.staged_paths(store, STAGING_DIR)


@dataclasses.dataclass
class FetchPlan:
    """Everything the fetch needs, resolved on the launcher before the pipeline runs."""

    settings: sh.SentinelHubSettings
    grid: Grid
    store: str
    chunks: list[PixelWindow]
    acquisitions: dict[str, list[float]]
    items: list[FetchItem]
    staged: list[ChunkOutcome]
    stored: list[ObservationRef]
    lanes: int
    rejected_before: list[Rejection] = dataclasses.field(default_factory=list)  # set aside by earlier runs
    run_id: str = dataclasses.field(default_factory=new_run_id)  # in the names of the run's temporaries

    @property
    def folder(self) -> OutputFolder:
        return store_folder(self.store, self.grid, {"source": "sentinelhub"}, self.run_id)

    @classmethod
    def create(
        cls,
        settings: sh.SentinelHubSettings,
        grid: Grid,
        store: str,
        modalities: list[str],
        start: float,
        end: float,
        chunk_size: int = sh.MAX_REQUEST_PIXELS,
        lanes: int = 4,
        overwrite: bool = False,
    ) -> FetchPlan:
        """Checks credentials (raises CredentialsError before anything else), searches, lists the store
        (with `overwrite`, whose contents the run replaces: taken as empty)."""
        unknown = [m for m in modalities if m not in sh.COLLECTIONS]
        if unknown or not modalities:
            raise UserError(f"--collections: unknown {unknown}; choose from {', '.join(sh.COLLECTIONS)}")
        chunks = fetch_chunks(grid, chunk_size)
        store = store if fs.is_remote(store) else os.path.abspath(store)  # staged paths compare as listed
        sh.open_session(settings)  # rejected or missing credentials stop the run here
        stored_grid = None if overwrite else read_grid(store)
        if stored_grid is not None and not stored_grid.matches(grid):
            raise UserError(
                f"--store {store} holds observations on grid {stored_grid.describe()}, "
                f"but this run's grid is {grid.describe()}; use another store"
            )
        acquisitions = {m: sh.search_acquisitions(settings, sh.COLLECTIONS[m], grid, start, end) for m in modalities}
        stored, done = stored_keys(store) if not overwrite else ([], set())
        stored = [ref for ref in stored if ref.modality in modalities and start <= ref.time < end]
        stored_names = {(ref.modality, time_name(ref.time)) for ref in stored}
        rejected_before = [
            Rejection(**fs.read_json(fs.join(store, REJECTED_DIR, f"{m}_{time_name(t)}.json")))
            for m, times in sorted(acquisitions.items())
            for t in times
            if (m, time_name(t)) in done - stored_names
        ]
        items, staged = plan_items(
            acquisitions, chunks, done, set() if overwrite else staged_paths(store), store, lanes
        )
        return cls(settings, grid, store, chunks, acquisitions, items, staged, stored, lanes, rejected_before)

    @classmethod
    def from_spec(cls, area: AreaSpec, stack: StackSpec, spec: FetchSpec, overwrite: bool = False) -> FetchPlan:
        """The grid (the store's, or the AOI's) and the time range of a fetch run; with `overwrite` the
        store's contents are not taken into account (the run replaces them)."""
        if not area.store:
            raise UserError("--store is required (the observation store to fetch into)")
        settings = settings_of(spec)
        grid = read_grid(area.store) if not (overwrite and area.aoi) else None
        if area.aoi:
            if not area.resolution:
                raise UserError("--aoi needs --resolution (e.g. 10)")
            _aoi, aoi_grid = area_of(area)
            grid = grid or aoi_grid
            if not grid.matches(aoi_grid):
                raise UserError(
                    f"--store {area.store} holds grid {grid.describe()} but --aoi gives "
                    f"{aoi_grid.describe()}; use another store (or --overwrite)"
                )
        if grid is None:
            raise UserError("no grid: give --aoi and --resolution, or a --store with grid.json")
        params = stack.params
        return cls.create(
            settings,
            grid,
            area.store,
            list(spec.collections),
            params.starttime,
            params.endtime,
            spec.chunk_size,
            spec.max_requests_in_flight,
            overwrite,
        )

    @property
    def bands(self) -> BandCounts:
        sar = any(m != OPTICAL for m in self.acquisitions)
        return BandCounts(len(sh.S1_BANDS) if sar else 0, len(sh.S2_BANDS) if OPTICAL in self.acquisitions else 0)

    def band_description(self) -> dict:
        """`{modality: {"names", "units", "preprocessing"}}` of the fetched collections (store's bands.json)."""
        out = {}
        for modality in self.acquisitions:
            collection = sh.COLLECTIONS[modality]
            out[modality] = {
                "names": list(collection.bands),
                "units": collection.units,
                "preprocessing": {
                    "source": f"Sentinel Hub {collection.stock_name}",
                    "valid": " and ".join(collection.masks),
                },
            }
        return out

    def estimated_units(self) -> float:
        return sum(
            sh.estimate_processing_units(sh.COLLECTIONS[i.modality], i.chunk.height, i.chunk.width) for i in self.items
        )

    def describe(self) -> str:
        per = ", ".join(f"{m} {len(t)}" for m, t in sorted(self.acquisitions.items()))
        return (
            f"acquisitions: {per}; {len(self.chunks)} chunk(s) per acquisition; "
            f"{len(self.stored)} observation(s) already stored, {len(self.rejected_before)} already set aside, "
            f"{len(self.staged)} chunk(s) staged; "
            f"{len(self.items)} request(s) to send in {self.lanes} lane(s), "
            f"about {self.estimated_units():.2f} processing units; grid {self.grid.describe()}"
        )

    def item_lines(self) -> list[str]:
        return [
            f"{i.modality}\t{iso_time(i.time)}\trows {i.chunk.row_start}:{i.chunk.row_stop}\t"
            f"cols {i.chunk.col_start}:{i.chunk.col_stop}\t"
            f"{sh.estimate_processing_units(sh.COLLECTIONS[i.modality], i.chunk.height, i.chunk.width):.3f} PU"
            for i in self.items
        ]


def settings_of(spec: FetchSpec) -> sh.SentinelHubSettings:
    """Settings of a FetchSpec; credentials from the spec, env or profile (CredentialsError if none)."""
    credentials = sh.Credentials(file=spec.credentials_file, secret=spec.secret, profile=spec.profile)
    return sh.SentinelHubSettings(
        base_url=spec.base_url,
        token_url=spec.token_url or sh.default_token_url(spec.base_url),
        credentials=credentials,
        maxcc=spec.maxcc,
        time_difference=spec.time_difference,
        max_download_attempts=spec.max_attempts,
        retry_sleep=spec.retry_sleep,
        request_timeout=spec.timeout,
        max_throttle_retries=spec.max_throttle_retries,
    )


class _FetchLane(beam.DoFn):
    def __init__(self, settings: sh.SentinelHubSettings, grid: Grid, store: str, run_id: str):
        self._settings = settings
        self._grid = grid
        self._store = store
        self._run_id = run_id
        self._chunks = Counter("fetch_chunks")
        self._failed = Counter("fetch_chunks_failed")
        self._requests = Counter("fetch_requests")
        self._throttled = Counter("fetch_throttled")
        self._server_errors = Counter("fetch_server_errors")
        self._units = Counter("processing_units_milli")

    def _count(self, stats: sh.RequestStats) -> None:
        self._requests.inc(stats.requests)
        self._throttled.inc(stats.throttled)
        self._server_errors.inc(stats.server_errors)
        self._units.inc(round(stats.processing_units * 1000))

    def process(self, lane: tuple[int, list[FetchItem]]):
        for item in lane[1]:
            path = staged_chunk_path(self._store, item.modality, item.time, item.chunk)
            if fs.exists(path):  # a retried bundle: this chunk was staged already
                yield ChunkOutcome(item.modality, item.time, item.chunk, item.chunks, path=path)
                continue
            if _assembled(self._store, item.modality, item.time):  # ... and even assembled: nothing to send
                yield ChunkOutcome(item.modality, item.time, item.chunk, item.chunks)
                continue
            collection = sh.COLLECTIONS[item.modality]
            try:
                data, valid, stats = sh.fetch_chunk(self._settings, collection, self._grid, item.chunk, item.time)
            except sh.FetchError as error:
                self._count(error.stats)
                self._failed.inc()
                _LOG.warning(
                    "%s %s rows %d:%d cols %d:%d failed: %s",
                    item.modality,
                    iso_time(item.time),
                    item.chunk.row_start,
                    item.chunk.row_stop,
                    item.chunk.col_start,
                    item.chunk.col_stop,
                    error,
                )
                yield ChunkOutcome(item.modality, item.time, item.chunk, item.chunks, reason=str(error))
                continue
            self._count(stats)
            staging.stage_block(path, data, valid, self._run_id)
            self._chunks.inc()
            count = int(np.count_nonzero(valid))
            yield ChunkOutcome(item.modality, item.time, item.chunk, item.chunks, path=path, valid_pixels=count)


class FetchChunks(beam.PTransform):
    """PCollection[FetchItem] -> PCollection[ChunkOutcome]: each chunk downloaded and staged, or failed.

    Items are grouped by their lane, so at most `lanes` requests are in
    flight in the whole job.
    """

    def __init__(self, settings: sh.SentinelHubSettings, grid: Grid, store: str, run_id: str = ""):
        super().__init__()
        self._args = (settings, grid, store, run_id)

    def expand(self, items):
        return (
            items
            | "By lane" >> beam.Map(lambda item: (item.lane, item))
            | "Group lanes" >> beam.GroupByKey()
            | "Fetch lane" >> beam.ParDo(_FetchLane(*self._args))
        )


class _Assemble(beam.DoFn):
    def __init__(self, grid: Grid, store: str, run_id: str):
        self._grid = grid
        self._store = store
        self._run_id = run_id
        self._written = Counter("observations_fetched")
        self._empty = Counter("observations_empty")
        self._failed = Counter("observations_fetch_failed")

    def process(self, group: tuple[tuple[str, float], list[ChunkOutcome]]):
        (modality, time), outcomes = group
        outcomes = list(outcomes)
        uri = observation_path(self._store, modality, time)
        done = _assembled(self._store, modality, time)
        if done is not None:
            return [done]
        failed = [o for o in outcomes if o.reason is not None]
        expected = outcomes[0].chunks
        if failed or len(outcomes) != expected:
            self._failed.inc()
            reason = (
                f"fetch failed for {len(failed)} of {expected} chunk(s): {failed[0].reason}"
                if failed
                else f"only {len(outcomes)} of {expected} chunks arrived"
            )
            # The staged chunks stay for the next run.
            return [(REJECTED, Rejection(uri, reason, modality, iso_time(time)))]
        try:
            return [self._write(modality, time, uri, outcomes)]
        except OSError:  # FileNotFoundError, Beam's BeamIOError
            # Another attempt of this step stored the observation and removed the staged chunks while this
            # one was reading them.
            done = _assembled(self._store, modality, time)
            if done is None:
                raise
            return [done]

    def _write(self, modality: str, time: float, uri: str, outcomes: list[ChunkOutcome]):
        collection = sh.COLLECTIONS[modality]
        # Chunks staged by an earlier attempt or run carry no count: their masks (not their bands) are read.
        counts = [o.valid_pixels if o.valid_pixels is not None else staging.valid_pixels(o.path) for o in outcomes]
        if any(counts):
            tags = {"RSDT_SOURCE": "sentinelhub", "RSDT_COLLECTION": collection.stock_name}
            chunks = [(o.chunk, o.path) for o in outcomes]
            staging.write_staged_observation(
                self._store, self._grid, modality, time, chunks, collection.bands, tags, run_id=self._run_id
            )
            self._written.inc()
            result = OBSERVATIONS, ObservationRef(modality, time, uri, GeoTiffObservationReader())
        else:
            rejection = Rejection(
                uri,
                "no valid pixel (dataMask" + (" and not cloud)" if "CLM" in collection.masks else ")"),
                modality,
                iso_time(time),
            )
            write_rejection(self._store, rejection, modality, time, self._run_id)
            self._empty.inc()
            result = REJECTED, rejection
        staging.remove_blocks(o.path for o in outcomes)
        return result  # empty staging folders go when the store is finished (rsdt_beam.outputs.sweep)


def _assembled(store: str, modality: str, time: float):
    """(OBSERVATIONS, ref) or (REJECTED, rejection) of an observation another attempt of this job assembled
    already, else None."""
    uri = observation_path(store, modality, time)
    if fs.exists(uri):
        return OBSERVATIONS, ObservationRef(modality, time, uri, GeoTiffObservationReader())
    recorded = rejection_path(store, modality, time)
    return (REJECTED, Rejection(**fs.read_json(recorded))) if fs.exists(recorded) else None


class AssembleObservations(beam.PTransform):
    """PCollection[ChunkOutcome] -> {'observations': ObservationRef, 'rejected': Rejection}.

    Groups the chunks of each observation and writes it to the store once all
    arrived; an observation without a valid pixel is recorded in the store's
    rejected list, one with a failed chunk only in the run's rejections.
    """

    def __init__(self, grid: Grid, store: str, run_id: str = ""):
        super().__init__()
        self._grid = grid
        self._store = store
        self._run_id = run_id

    def expand(self, outcomes):
        return split(
            outcomes
            | "By observation" >> beam.Map(lambda o: ((o.modality, o.time), o))
            | "Group chunks" >> beam.GroupByKey()
            | "Write observation" >> beam.ParDo(_Assemble(self._grid, self._store, self._run_id)),
            (OBSERVATIONS, REJECTED),
        )


class FetchObservations(beam.PTransform):
    """PBegin -> {'observations': ObservationRef (fetched now and stored before), 'rejected': Rejection
    (set aside now and before, within the run's range), 'grid' and 'bands': the writing of grid.json and
    bands.json}.

    The store's `metadata.json` is not written here: the caller finishes the store
    (`rsdt_beam.outputs.FinishFolder(plan.folder)`) after these and any other writes into it.
    """

    def __init__(self, plan: FetchPlan):
        super().__init__()
        self._plan = plan

    def expand(self, pbegin):
        plan = self._plan
        # The progress line's totals: each chunk sent is fetched or failed, each observation assembled now
        # (from chunks sent or staged before) is stored, empty or failed.
        set_total("fetch_chunks", len(plan.items), ("fetch_chunks", "fetch_chunks_failed"))
        assembled = {(item.modality, item.time) for item in [*plan.items, *plan.staged]}
        outcomes = ("observations_fetched", "observations_empty", "observations_fetch_failed")
        set_total("observations", len(assembled), outcomes)
        grid = (
            pbegin
            | "Grid" >> beam.Create([plan.grid])
            | "Write grid.json" >> beam.Map(lambda g: write_grid(plan.store, g, plan.run_id))
        )
        bands = (
            pbegin
            | "Band description" >> beam.Create([plan.band_description()])
            | "Write bands.json"
            >> beam.Map(lambda description: write_band_description(plan.store, description, plan.run_id))
        )
        fetched = (
            pbegin
            | "Work items" >> beam.Create(plan.items)
            | "Fetch chunks" >> FetchChunks(plan.settings, plan.grid, plan.store, plan.run_id)
        )
        staged = pbegin | "Staged chunks" >> beam.Create(plan.staged)
        assembled = (
            (fetched, staged)
            | "All chunks" >> beam.Flatten()
            | "Assemble" >> AssembleObservations(plan.grid, plan.store, plan.run_id)
        )
        stored = pbegin | "Stored before" >> beam.Create(plan.stored)
        observations = (assembled[OBSERVATIONS], stored) | "All observations" >> beam.Flatten()
        rejected_before = pbegin | "Set aside before" >> beam.Create(plan.rejected_before)
        rejected = (assembled[REJECTED], rejected_before) | "All rejections" >> beam.Flatten()
        return {OBSERVATIONS: observations, REJECTED: rejected, "grid": grid, "bands": bands}
