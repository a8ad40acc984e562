"""Launching one scheduled run: plan it against earlier runs, record it, build it, record how it ended.

`ScheduledRun.plan(...)` derives the run's specs (its time range, its output folders) from the
command's specs; nothing is mutated. The command-line layer calls `start()` just before the job runs
(never on a dry run), `failed(error)` if it fails, and `finished()` once it is done.

A launch may also read its observations from a Stage 1 source first (a STAC catalog: `source`, a
function of the listing's time range returning a convert-shaped plan, `acquire.convert.ConvertPlan`,
that writes into the store the launch lists). The catalog is searched over the range the store is
listed over; the store's observations and the source's acquisitions are one listing, keyed by
modality and second (the store's file names), so the counts that compare launches, and the late
observations, are the same as for a store alone. In the job the source's refs (read now, or already
in the store: it resumes) join the store's other refs before Stage 2, as in the fused `stac` command.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from rsdt_beam import fs
from rsdt_beam.acquire.convert import ConvertPlan
from rsdt_beam.acquire.listing import KnownInputs, Observations, discover_observations
from rsdt_beam.common.modalities import BandCounts
from rsdt_beam.common.names import MANIFEST_FILE, REJECTED_FILE
from rsdt_beam.common.observations import ObservationRef, Rejection
from rsdt_beam.common.times import iso_time, parse_time, time_name, utc_now_iso
from rsdt_beam.errors import UserError
from rsdt_beam.grid import Grid
from rsdt_beam.outputs import differences
from rsdt_beam.schedule.manifest import (
    FAILED,
    RUNNING,
    SUCCEEDED,
    RunManifest,
    read_manifest,
    run_dir,
    run_entries,
    write_manifest,
)
from rsdt_beam.schedule.rules import Carry, align_down, resolve_end
from rsdt_beam.schedule.transforms import build_scheduled
from rsdt_beam.specs import InputsSpec, OutputSpec, ScheduleSpec, StackSpec, WindowSpec
from rsdt_beam.stack.plan import StackPlan

_LOG = logging.getLogger(__name__)

LISTED_IN_RANGE = "listed_in_range"  # manifest input: observations of the run's range, as its launch listed them


def _size_text(size: tuple[int, int]) -> str:
    return str(size[0]) if size[0] == size[1] else f"{size[0]}x{size[1]}"


def run_parameters(schedule: ScheduleSpec, stack: StackSpec, window: WindowSpec, plan: StackPlan) -> dict:
    """What every run of one output root must share: a carry is only valid under the same rules."""
    params = window.params
    return dict(
        delta_step=stack.delta_step,
        bin_origin=iso_time(schedule.bin_origin),
        tile_size=_size_text(stack.tile_size),
        deadzone=_size_text(stack.deadzone),
        Delta=params.delta_size,
        window_stride=params.window_stride,
        omega=params.omega,
        Omega=params.Omega,
        triple=params.triple,
        grid=plan.grid.to_json(),
        bands_sar=plan.bands.sar,
        bands_opt=plan.bands.opt,
    )


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """One launch resolved on the launcher: time range, previous run, observations to read."""

    output_root: str
    run_id: str
    start: float
    end: float
    stack: StackPlan
    refs: tuple[ObservationRef, ...]
    listed_rejections: tuple[Rejection, ...]
    listed: int  # observations listed, from `listed_from` (None: the whole history) to the end
    listed_from: float | None
    listed_in_range: int  # ... of them in [start, end): what the next launch compares its listing with
    carry: Carry
    previous: RunManifest | None
    parameters: dict
    late_observations: int
    source: ConvertPlan | None = None  # Stage 1 of the run's new observations, into the store (refs: the rest)

    @property
    def times(self) -> list[float]:
        """The times of the observations the run stacks: the store's and the source's."""
        return [ref.time for ref in self.refs] + [s.time for s in (self.source.sources if self.source else ())]

    @property
    def directory(self) -> str:
        return run_dir(self.output_root, self.run_id)

    @property
    def state_dir(self) -> str:
        return fs.join(self.directory, "state")

    @property
    def previous_state_dir(self) -> str | None:
        return fs.join(run_dir(self.output_root, self.previous.run_id), "state") if self.previous else None

    def outputs(self, write_stacks: bool) -> dict:
        outputs = {
            "windows": fs.join(self.directory, "windows"),
            "state": self.state_dir,
            "rejected": fs.join(self.directory, REJECTED_FILE),
        }
        if write_stacks:
            outputs["stack"] = fs.join(self.directory, "stack")
        return outputs


Source = Callable[[StackSpec], ConvertPlan]  # Stage 1 over a stack spec's time range, into the listed store


def _key(modality: str, time: float) -> tuple[str, str]:
    """An observation's identity in the store: its modality and file name (whole seconds)."""
    return modality, time_name(time)


def _list_inputs(inputs: InputsSpec, end: float, known: KnownInputs | None, source: ConvertPlan | None) -> Observations:
    """The store's (and EOPatch folders') observations; before a source's first launch its store may be
    empty or missing: the source's acquisitions then fix the grid and band counts."""
    if known is None and source is not None and source.sources:
        modalities = tuple(sorted({s.modality for s in source.sources}))
        known = KnownInputs(None, source.job.grid, source.band_counts, modalities)
    return discover_observations(inputs, end, known)


def _check_source_bands(source: ConvertPlan, bands: BandCounts) -> None:
    for modality, count in source.job.bands:
        if count != bands.bands_of(modality):
            raise UserError(
                f"--stac_bands: {modality} acquisitions give {count} bands, the runs under this --output_root "
                f"{bands.bands_of(modality)}; windows cannot continue across a change: use a new --output_root"
            )


def plan_run(
    schedule: ScheduleSpec,
    inputs: InputsSpec,
    stack: StackSpec,
    window: WindowSpec,
    now: float,
    source: Source | None = None,
) -> tuple[RunPlan, StackSpec]:
    """Resolves the time range against earlier runs, searches the `source` (if any) and lists the
    observations; returns the run and the stack spec of its time range."""
    step, origin = stack.delta_step, schedule.bin_origin
    try:
        end = align_down(resolve_end(schedule.end, now), origin, step)
    except ValueError as error:
        raise UserError(f"--end: {error}") from None
    succeeded = [e for e in run_entries(schedule.output_root) if e.status == SUCCEEDED]
    later = [e for e in succeeded if e.end_time > end]
    if later:
        raise UserError(
            f"--end {schedule.end}: run {later[-1].run_id} already covers time up to {later[-1].end}, "
            f"after this run's end {iso_time(end)}: earlier ranges cannot be re-run on top of it"
        )
    earlier = [e for e in succeeded if e.end_time < end]
    previous = read_manifest(schedule.output_root, earlier[-1].run_id) if earlier else None
    start = previous.end_time if previous else align_down(end - schedule.lookback, origin, step)
    if start >= end:
        raise UserError(
            f"empty time range [{iso_time(start)}, {iso_time(end)}): "
            f"--lookback must be positive, got {schedule.lookback:g} s"
        )
    stack = stack.between(start, end)
    known = None
    if previous is not None and LISTED_IN_RANGE in previous.inputs:
        # Lists from the previous run's start on, not the history: the carried state holds the fill before it.
        known = KnownInputs(
            parse_time(previous.start),
            Grid.from_json(previous.parameters["grid"]),
            BandCounts(previous.parameters["bands_sar"], previous.parameters["bands_opt"]),
            tuple(previous.inputs["modalities"]),
        )
    # The source is searched over the range the store is listed over (a first run: its own range).
    found = source(stack.between(known.since if known else start, end)) if source is not None else None
    observations = _list_inputs(inputs, end, known, found)
    modalities = observations.modalities
    listed = {_key(ref.modality, ref.time): ref.time for ref in observations.refs}
    refs = observations.refs
    if found is not None:
        _check_source_bands(found, observations.bands)
        modalities = sorted({*modalities, *(s.modality for s in found.sources)})
        acquired = {_key(s.modality, s.time): s.time for s in found.sources}
        listed.update(acquired)
        # The source yields the refs of its acquisitions (read now, or already stored): the store's are the rest.
        refs = [ref for ref in refs if _key(ref.modality, ref.time) not in acquired]
    plan = StackPlan.create(stack, observations.grid, observations.bands, modalities=modalities)
    parameters = run_parameters(schedule, stack, window, plan)
    if previous is not None and previous.parameters != parameters:
        raise UserError(
            f"--output_root {schedule.output_root}: parameters differ from run {previous.run_id}'s: "
            f"{'; '.join(differences(previous.parameters, parameters))}; windows cannot continue "
            f"across a change: use a new --output_root"
        )
    late = 0
    if previous is not None:
        # The first run read the whole history (it seeds the forward fill); later runs read only new times.
        # Observations listed before `start` that the previous run did not count arrived after it: late.
        # (A manifest of an earlier version counted the whole history it listed.)
        counted = previous.inputs[LISTED_IN_RANGE] if known else previous.inputs["listed_before_end"]
        late = sum(time < start for time in listed.values()) - counted
        refs = [ref for ref in refs if ref.time >= start]
        if found is not None:  # the acquisitions before `start` are in the store, in no pending window
            found = dataclasses.replace(
                found,
                sources=[s for s in found.sources if s.time >= start],
                rejected=[r for r in found.rejected if r.time is None or parse_time(r.time) >= start],
            )
        if late > 0:
            _LOG.warning(
                "%d observations before %s appeared after the run that covered their time; they are "
                "in no window (delete the runs from their time on to re-process them)",
                late,
                iso_time(start),
            )
    carry = Carry.from_json(previous.carry) if previous else Carry(start)
    run_id = f"{time_name(start)}-{time_name(end)}"
    run = RunPlan(
        schedule.output_root,
        run_id,
        start,
        end,
        plan,
        tuple(refs),
        tuple(observations.rejected),
        len(listed),
        known.since if known else None,
        sum(start <= time < end for time in listed.values()),
        carry,
        previous,
        parameters,
        max(late, 0),
        found,
    )
    return run, stack


@dataclasses.dataclass
class ScheduledRun:
    """One scheduled launch: its plan and manifest, the graph it adds, and the manifest's life cycle."""

    run: RunPlan
    manifest: RunManifest
    window: WindowSpec

    @classmethod
    def plan(
        cls,
        schedule: ScheduleSpec,
        inputs: InputsSpec,
        stack: StackSpec,
        window: WindowSpec,
        now: float,
        source: Source | None = None,
    ) -> ScheduledRun:
        run, _stack = plan_run(schedule, inputs, stack, window, now, source)
        outputs = run.outputs(schedule.write_stacks)
        observed = run.times
        manifest_inputs = {
            "sources": inputs.sources(),
            "stage_1": run.source.describe() if run.source else None,
            "observations": len(observed),
            "listed": run.listed,
            "listed_from": iso_time(run.listed_from) if run.listed_from is not None else None,
            LISTED_IN_RANGE: run.listed_in_range,
            "modalities": run.stack.metadata["modalities"],
            "first": iso_time(min(observed)) if observed else None,
            "last": iso_time(max(observed)) if observed else None,
        }
        manifest = RunManifest(
            run.run_id,
            RUNNING,
            iso_time(run.start),
            iso_time(run.end),
            run.parameters,
            manifest_inputs,
            outputs,
            previous_run=run.previous.run_id if run.previous else None,
            late_observations=run.late_observations,
            launched_at=utc_now_iso(),
        )
        return cls(run, manifest, dataclasses.replace(window, output=outputs["windows"]))

    def describe(self) -> str:
        return (
            f"run {self.run.run_id} [{self.manifest.start}, {self.manifest.end}) after "
            f"{self.manifest.previous_run or 'no earlier run'}; {len(self.run.times)} observations, "
            f"{self.run.stack.describe()}"
        )

    def build(self, pipeline, output: OutputSpec) -> None:
        build_scheduled(pipeline, self.run, self.manifest, self.window, output)

    def start(self) -> None:
        """Records the run as `running` (just before the job starts)."""
        write_manifest(self.run.output_root, self.manifest)

    def failed(self, error: BaseException) -> None:
        write_manifest(
            self.run.output_root,
            dataclasses.replace(
                self.manifest, status=FAILED, error=f"{type(error).__name__}: {error}", finished_at=utc_now_iso()
            ),
        )

    def finished(self) -> RunManifest:
        """The manifest as the job left it (`succeeded`)."""
        return RunManifest.from_json(fs.read_json(fs.join(self.run.directory, MANIFEST_FILE)))
