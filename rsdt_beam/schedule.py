"""Scheduled incremental launches: each run processes only what is new since the last successful one.

A fixed command line (`--end today --lookback 30d`) can run from cron, Cloud Scheduler or Airflow:

    <output_root>/runs/index.json                     every run's id, status, start, end (rsdt_beam.run_index)
    <output_root>/runs/<start>-<end>/manifest.json   time range, inputs, counts, outputs, status, carry
    <output_root>/runs/<start>-<end>/windows/        the windows that became complete in this run
    <output_root>/runs/<start>-<end>/stack/          the run's new Stage 2 frames (--write_stacks)
    <output_root>/runs/<start>-<end>/state/          per tile: the frames later windows still need
    <output_root>/runs/<start>-<end>/rejected.json

Time is cut into runs `[start, end)` whose ends lie on the `delta_step` bins (`--bin_origin` +
k * `delta_step`), so every bin, and with it every written frame, belongs to exactly one run. The
first run starts at `end - lookback`; every later one where the last successful run ended.

Windows are rsdtlib's (`rsdt_beam.window.rules`): a window that starts at a frame may take frames up
to `Delta` (triples `2 * Delta`) later, so a run writes the windows that frames after its end can no
longer change, with the window ids of one launch over everything, and hands the rest on. What it
hands on (the carry) is the same for every tile, because all tiles share their frame times: the
global index of the first candidate window not yet written, the window count so far, and the times
of the frames those windows may still use. Per tile the state folder holds those frames plus the
forward-fill state at the run's end, so the next run reads only new observations. (Recomputing the
tail instead re-reads about as much, yet without the fill state its frames are wrong wherever a
pixel stayed invalid through the tail: see the README's measurement.)

A run is complete when, and only when, its manifest says `succeeded`: the launcher writes it
`running`, the job's last step `succeeded`, and the launcher `failed` (with the error) if the job
fails. A failed run's files are never used (windows/metadata.json is written last, so its window
folder never looks complete); the next run covers its time range again and then deletes it.
Re-running a run (same end, same inputs) rewrites the same files. Observations that appear after
the run that covered their time are counted in the next manifest (`late_observations`), not
processed. Launches must not overlap (cron: `flock`; Airflow: `max_active_runs=1`).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import math
import sys
import time as wallclock

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineState

from rsdt_beam import fs
from rsdt_beam.acquire.observation import iso_time, time_name
from rsdt_beam.options import (OutputOptions, ScheduleOptions, StackOptions, WindowOptions, parse_duration,
                               parse_time)
from rsdt_beam.pipeline import StackPlan, summary, temporary_stack_dir, window_output_from_options, write_rejected
from rsdt_beam.run_index import RunEntry, read_index, update_index
from rsdt_beam.stack.files import read_tile_stack
from rsdt_beam.stack.rules import MODALITIES, Piece, TileStack
from rsdt_beam.stack.transforms import (REJECTED, InspectObservations, StackChunks, WriteStacks, WrittenTimes,
                                        clear_output)
from rsdt_beam.window.rules import Window, WindowParams, WindowSpan, window_spans
from rsdt_beam.window.selection import tile_selector
from rsdt_beam.window.transforms import WindowOutput, WriteWindows

_LOG = logging.getLogger(__name__)
RUNS_DIR = "runs"
MANIFEST_FILE = "manifest.json"
RUNNING, SUCCEEDED, FAILED = "running", "succeeded", "failed"
_DAY = 86400.0


# ---------------------------------------------------------------- time ranges (pure)

def resolve_end(text: str, now: float) -> float:
    """`today` (00:00 UTC of `now`), `yesterday`, `now`, or an ISO 8601 time, as UTC epoch seconds."""
    word = str(text).strip().lower()
    midnight = math.floor(now / _DAY) * _DAY
    if word == "today":
        return midnight
    if word == "yesterday":
        return midnight - _DAY
    if word == "now":
        return now
    return parse_time(text)


def align_down(time: float, origin: float, step: float) -> float:
    """The bin boundary `origin + k * step` at or before `time`."""
    return origin + math.floor((time - origin) / step) * step


def fill_time(end: float) -> float:
    """Time stamp of the forward-fill state kept at a run's end: after every observation before `end`."""
    return float(np.nextafter(end, -np.inf))


# ---------------------------------------------------------------- windows across runs (pure)

@dataclasses.dataclass(frozen=True)
class Carry:
    """What a run hands the next, the same for every tile.

    `times` are the frames `first_frame ...` that windows from `first_pending` on may still use;
    `windows_written` is the next window id; `end` is the end of the run that wrote it.
    """

    end: float
    first_frame: int = 0
    first_pending: int = 0
    windows_written: int = 0
    times: tuple[float, ...] = ()

    @property
    def frames_total(self) -> int:
        return self.first_frame + len(self.times)

    def to_json(self) -> dict:
        return dict(dataclasses.asdict(self), times=list(self.times))

    @classmethod
    def from_json(cls, data: dict) -> "Carry":
        return cls(**dict(data, times=tuple(float(t) for t in data["times"])))


def window_complete(times: np.ndarray, begin: int, params: WindowParams, end: float) -> bool:
    """Whether frames at or after `end` can no longer change the candidate window starting at `begin`.

    Later frames only append to `times`: a current part is final once it spans `Delta` before `end`
    or holds `Omega` frames; a triple's next part starts `Delta` after the start and is final once
    it spans `Delta` before `end` or holds `Omega` frames. (Previous parts lie in the past.)
    """
    t0 = times[begin]
    if not params.triple:
        return t0 + params.delta_size <= end or len(times) - begin >= params.Omega
    if t0 + params.delta_size > end:
        return False
    next_start = int(np.searchsorted(times, t0 + params.delta_size))
    return t0 + 2 * params.delta_size <= end or len(times) - next_start >= params.Omega


@dataclasses.dataclass(frozen=True)
class Selection:
    """The windows a run writes (spans into its frames, with global ids) and the carry it hands on."""

    spans: tuple[WindowSpan, ...]
    carry: Carry


def select_windows(times: np.ndarray, carry: Carry, end: float, params: WindowParams) -> Selection:
    """Windows complete at `end` and not written before, over `times` = carried + new frame times.

    `times[0]` is global frame `carry.first_frame`, a multiple of the stride, so candidate starts
    line up with one launch over everything; window ids continue from `carry.windows_written`.
    Completeness only grows with the start index, so the pending candidates are a suffix.
    """
    times = np.asarray(times, np.float64)
    offset, stride = carry.first_frame, params.window_stride
    pending = carry.first_pending
    while pending < offset + len(times) and window_complete(times, pending - offset, params, end):
        pending += stride
    spans, next_id = [], carry.windows_written
    for span in window_spans(times, params):
        if carry.first_pending <= span.current[0] + offset < pending:
            spans.append(dataclasses.replace(span, window_id=next_id))
            next_id += 1
    # A pending window's previous part reaches at most Omega frames back.
    keep = min(max(pending - (params.Omega if params.triple else 0), 0), offset + len(times))
    keep -= keep % stride
    carried = tuple(float(t) for t in times[keep - offset:])
    return Selection(tuple(spans), Carry(end, keep, pending, next_id, carried))


def run_times(carry: Carry, written: np.ndarray, end: float) -> np.ndarray:
    """The time stamps a run stacks at: the carried frames', its new ones, then the fill state's at `end`."""
    return np.concatenate([carry.times, written, [fill_time(end)]])


def seed_pieces(carried: TileStack) -> list[Piece]:
    """A tile's carried frames (its fill state last) as all-valid pieces: stacking them at their own
    times reproduces them exactly, and the last one seeds the forward fill of the new observations."""
    bands = carried.bands
    return [Piece(float(time), m, frame[..., bands.slice_of(m)], None)
            for time, frame in zip(carried.times, carried.frames) for m in MODALITIES if bands.bands_of(m)]


def _frames(stack: TileStack, start: int, stop: int | None) -> TileStack:
    return TileStack(stack.tile, stack.times[start:stop], stack.frames[start:stop], stack.bands)


# ---------------------------------------------------------------- Beam transforms

@dataclasses.dataclass(frozen=True)
class IncrementalWindowOutput(WindowOutput):
    """WindowOutput over extended tile stacks (carried + new frames + fill state): only the windows
    that became complete in this run, numbered as in one launch over everything."""

    carry: Carry | None = None
    end: float = 0.0

    def windows(self, stack: TileStack):
        frames = _frames(stack, 0, -1)
        for span in select_windows(frames.times, self.carry, self.end, self.params).spans:
            yield Window(frames, span)


@dataclasses.dataclass(frozen=True)
class CarriedFrames:
    """`seeds(tile)` of StackChunks: a tile's frames from the previous run's state folder, as pieces."""

    state_dir: str
    metadata: dict
    carry: Carry

    def __call__(self, tile: tuple[int, int]) -> list[Piece]:
        carried = read_tile_stack(self.state_dir, tile, self.metadata)
        expected = (*self.carry.times, fill_time(self.carry.end))
        if tuple(carried.times) != expected:
            raise ValueError(f"{self.state_dir} tile {tile}: carried frame times {list(carried.times)} differ "
                             f"from its run's manifest {list(expected)}")
        return seed_pieces(carried)


# ---------------------------------------------------------------- runs and manifests

@dataclasses.dataclass
class RunManifest:
    """`manifest.json` of a run: what it covered, read, wrote and hands on, and whether it finished."""

    run_id: str
    status: str
    start: str
    end: str
    parameters: dict
    inputs: dict
    outputs: dict
    previous_run: str | None = None
    counts: dict = dataclasses.field(default_factory=dict)
    carry: dict | None = None
    replaced_runs: list = dataclasses.field(default_factory=list)
    late_observations: int = 0
    error: str | None = None
    launched_at: str | None = None
    finished_at: str | None = None

    @property
    def end_time(self) -> float:
        return parse_time(self.end)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "RunManifest":
        return cls(**data)


def run_dir(output_root: str, run_id: str) -> str:
    return fs.join(output_root, RUNS_DIR, run_id)


def read_manifest(output_root: str, run_id: str) -> RunManifest:
    return RunManifest.from_json(fs.read_json(fs.join(run_dir(output_root, run_id), MANIFEST_FILE)))


def _entry(manifest: RunManifest) -> RunEntry:
    return RunEntry(manifest.run_id, manifest.status, manifest.start, manifest.end, manifest.end_time)


def _entries_from_manifests(output_root: str):
    """For an output root from before runs/index.json: every manifest, read once."""
    return lambda: [_entry(RunManifest.from_json(fs.read_json(path)))
                    for path in fs.glob(fs.join(output_root, RUNS_DIR, "*", MANIFEST_FILE))]


def run_entries(output_root: str) -> list[RunEntry]:
    """Every run under `output_root` by end time, from runs/index.json (no manifest is read)."""
    return read_index(fs.join(output_root, RUNS_DIR), _entries_from_manifests(output_root))


def list_runs(output_root: str) -> list[RunManifest]:
    """Every run's manifest, by end time (for tools and tests; a launch reads only the one it needs)."""
    return [read_manifest(output_root, entry.run_id) for entry in run_entries(output_root)]


def _write_manifest(output_root: str, manifest: RunManifest) -> None:
    fs.write_json(fs.join(run_dir(output_root, manifest.run_id), MANIFEST_FILE), manifest.to_json())
    update_index(fs.join(output_root, RUNS_DIR), _entry(manifest), rebuild=_entries_from_manifests(output_root))


def _utc_now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass
class RunPlan:
    """One launch resolved on the launcher: time range, previous run, observations to read."""

    output_root: str
    run_id: str
    start: float
    end: float
    stack: StackPlan
    refs: list
    carry: Carry
    previous: RunManifest | None
    parameters: dict
    late_observations: int

    @property
    def directory(self) -> str:
        return run_dir(self.output_root, self.run_id)

    @property
    def state_dir(self) -> str:
        return fs.join(self.directory, "state")

    @property
    def previous_state_dir(self) -> str | None:
        return fs.join(run_dir(self.output_root, self.previous.run_id), "state") if self.previous else None


def _parameters(options: PipelineOptions, stack: StackPlan | None = None) -> dict:
    """What every run of one output root must share: a carry is only valid under the same rules."""
    sopts, wopts, sched = (options.view_as(c) for c in (StackOptions, WindowOptions, ScheduleOptions))
    parameters = dict(delta_step=parse_duration(sopts.delta_step), bin_origin=iso_time(parse_time(sched.bin_origin)),
                      tile_size=sopts.tile_size, deadzone=sopts.deadzone, Delta=parse_duration(wopts.Delta),
                      window_stride=wopts.window_stride, omega=wopts.omega, Omega=wopts.Omega,
                      triple=wopts.triple)
    if stack is not None:
        parameters.update(grid=stack.grid.to_json(), bands_sar=stack.bands.sar, bands_opt=stack.bands.opt)
    return parameters


def plan_run(options: PipelineOptions, now: float) -> RunPlan:
    """Resolves the time range against earlier runs and lists the observations (sets start/end times)."""
    sched, sopts = options.view_as(ScheduleOptions), options.view_as(StackOptions)
    wopts = options.view_as(WindowOptions)
    if not sched.output_root:
        raise ValueError("--output_root is required")
    if sopts.stack_output or wopts.window_output:
        raise ValueError("scheduled runs write under --output_root; drop --stack_output/--window_output")
    step, origin = parse_duration(sopts.delta_step), parse_time(sched.bin_origin)
    end = align_down(resolve_end(sched.end, now), origin, step)
    succeeded = [e for e in run_entries(sched.output_root) if e.status == SUCCEEDED]
    later = [e for e in succeeded if e.end_time > end]
    if later:
        raise ValueError(f"run {later[-1].run_id} already covers time up to {later[-1].end}, after this run's "
                         f"end {iso_time(end)}: earlier ranges cannot be re-run on top of it")
    earlier = [e for e in succeeded if e.end_time < end]
    previous = read_manifest(sched.output_root, earlier[-1].run_id) if earlier else None
    start = previous.end_time if previous else align_down(end - parse_duration(sched.lookback), origin, step)
    if start >= end:
        raise ValueError(f"empty time range [{iso_time(start)}, {iso_time(end)}): "
                         f"--lookback must be positive, got {sched.lookback!r}")
    sopts.starttime, sopts.endtime = iso_time(start), iso_time(end)
    stack = StackPlan.from_options(options)
    parameters = _parameters(options, stack)
    if previous is not None and previous.parameters != parameters:
        changed = sorted(k for k in parameters if previous.parameters.get(k) != parameters[k])
        raise ValueError(f"{', '.join(changed)} differ from run {previous.run_id}'s; windows cannot continue "
                         f"across a change: use a new --output_root")
    refs = stack.observations.refs
    late = 0
    if previous is not None:
        # The first run read the whole history (it seeds the forward fill); later runs read only new times.
        late = sum(ref.time < start for ref in refs) - previous.inputs["listed_before_end"]
        refs = [ref for ref in refs if ref.time >= start]
        if late > 0:
            _LOG.warning("%d observations before %s appeared after the run that covered their time; they are "
                         "in no window (delete the runs from their time on to re-process them)", late,
                         iso_time(start))
    carry = Carry.from_json(previous.carry) if previous else Carry(start)
    run_id = f"{time_name(start)}-{time_name(end)}"
    return RunPlan(sched.output_root, run_id, start, end, stack, refs, carry, previous, parameters, max(late, 0))


def _outputs(run: RunPlan, write_stacks: bool) -> dict:
    outputs = {"windows": fs.join(run.directory, "windows"), "state": run.state_dir,
               "rejected": fs.join(run.directory, "rejected.json")}
    if write_stacks:
        outputs["stack"] = fs.join(run.directory, "stack")
    return outputs


def _finish_run(output_root: str, manifest: RunManifest, frames_before: int, carry: Carry, rejected: int) -> str:
    """The pipeline's last step: manifest `succeeded`, then the superseded incomplete runs go."""
    windows = fs.read_json(fs.join(manifest.outputs["windows"], "metadata.json"))
    replaced = [e.run_id for e in run_entries(output_root) if e.status != SUCCEEDED and e.run_id != manifest.run_id]
    done = dataclasses.replace(
        manifest, status=SUCCEEDED, carry=carry.to_json(), replaced_runs=replaced, finished_at=_utc_now_iso(),
        counts=dict(frames_written=carry.frames_total - frames_before, windows_written=windows["windows_written"],
                    tiles_windowed=windows["tiles_written"], observations_rejected=rejected))
    _write_manifest(output_root, done)
    for run_id in replaced:  # their time is covered by this run now
        fs.delete_tree(run_dir(output_root, run_id))
    update_index(fs.join(output_root, RUNS_DIR), removed=replaced)
    return done.run_id


def build_scheduled(pipeline, options: PipelineOptions, run: RunPlan, manifest: RunManifest) -> None:
    """Stage 2 (continued from the carry) and Stage 3 for one run, into `runs/<id>/`; its manifest last.

    The pipeline itself marks the run `succeeded`, so a launcher that does not wait for the job
    (a Flex Template, an Airflow operator) still leaves a complete record.
    """
    plan, out = run.stack, options.view_as(OutputOptions)
    windows_out = window_output_from_options(options)
    output = IncrementalWindowOutput(**{f.name: getattr(windows_out, f.name)
                                        for f in dataclasses.fields(WindowOutput)},
                                     carry=run.carry, end=run.end)
    selector = tile_selector(options.view_as(WindowOptions).tiles)
    carry, end, params, state_dir = run.carry, run.end, output.params, run.state_dir
    refs = pipeline | "Observations" >> beam.Create(run.refs)
    inspected = refs | "Inspect observations" >> InspectObservations(plan.grid, plan.bands)
    written = inspected["valid"] | "Written time stamps" >> WrittenTimes(plan.params)
    stacked_at = written | "With carried frames" >> beam.Map(lambda times: run_times(carry, times, end))
    seeds = CarriedFrames(run.previous_state_dir, plan.metadata, carry) if run.previous else None
    # The extended stacks (carried frames, new frames, fill state at the run's end) stream to files first.
    extended_dir = temporary_stack_dir(run.directory)
    cleared = clear_output(pipeline, extended_dir, "Extended stacks")
    stacked = inspected["valid"] | "Stack tiles" >> StackChunks(plan.layout, plan.chunk_size, plan.bands,
                                                                 stacked_at, extended_dir, out.gzip_level,
                                                                 cleared, seeds=seeds)
    extended = stacked["stacks"] | "Load extended stacks" >> beam.Map(lambda stack: stack.load())
    next_carry = written | "Select windows" >> beam.Map(
        lambda times: select_windows(np.concatenate([carry.times, times]), carry, end, params).carry)
    state_times = next_carry | "State times" >> beam.Map(lambda c: np.asarray([*c.times, fill_time(end)]))
    done = [extended
            | "Frames still needed" >> beam.Map(
                lambda stack, c: _frames(stack, c.first_frame - carry.first_frame, None),
                beam.pvalue.AsSingleton(next_carry))
            | "Write state" >> WriteStacks(state_dir, plan.metadata, out.gzip_level, state_times)]
    if "stack" in manifest.outputs:
        done.append(extended
                    | "New frames" >> beam.Map(lambda stack: _frames(stack, len(carry.times), -1))
                    | "Write stacks" >> WriteStacks(manifest.outputs["stack"], plan.metadata, out.gzip_level,
                                                    written))
    done.append(extended
                | "Selected tiles" >> beam.Filter(lambda stack: selector(*stack.tile))
                | "Write windows" >> WriteWindows(output, plan.metadata))
    rejected = write_rejected([inspected[REJECTED], stacked[REJECTED]], plan.listed_rejections(), run.directory,
                              pipeline)
    output_root, frames_before = run.output_root, carry.frames_total
    (pipeline
     | "Run" >> beam.Create([manifest])
     | "Write manifest.json" >> beam.Map(
         lambda started, c, n, *_: (fs.delete_tree(extended_dir),
                                    _finish_run(output_root, started, frames_before, c, n))[1],
         beam.pvalue.AsSingleton(next_carry), beam.pvalue.AsSingleton(rejected),
         *(beam.pvalue.AsList(pcoll) for pcoll in done)))


def start_run(options: PipelineOptions, now: float) -> tuple[RunPlan, RunManifest]:
    """Plans the run and records it as `running` (points --window_output into the run's folder)."""
    run = plan_run(options, now)
    outputs = _outputs(run, options.view_as(ScheduleOptions).write_stacks)
    options.view_as(WindowOptions).window_output = outputs["windows"]
    sources = {key: getattr(options.view_as(StackOptions), key)
               for key in ("observations", "sar_ascending", "sar_descending", "optical")
               if getattr(options.view_as(StackOptions), key)}
    inputs = {"sources": sources, "observations": len(run.refs),
              "listed_before_end": len(run.stack.observations.refs),
              "first": iso_time(min(r.time for r in run.refs)) if run.refs else None,
              "last": iso_time(max(r.time for r in run.refs)) if run.refs else None}
    manifest = RunManifest(run.run_id, RUNNING, iso_time(run.start), iso_time(run.end), run.parameters, inputs,
                           outputs, previous_run=run.previous.run_id if run.previous else None,
                           late_observations=run.late_observations, launched_at=_utc_now_iso())
    _write_manifest(run.output_root, manifest)
    return run, manifest


def launch(argv: list[str], now: float | None = None) -> RunManifest:
    """Plans, runs and records one scheduled run; returns its manifest (raises if the run failed)."""
    options = PipelineOptions(argv)
    run, manifest = start_run(options, wallclock.time() if now is None else now)
    print(f"rsdt_beam scheduled: run {run.run_id} [{manifest.start}, {manifest.end}) after "
          f"{manifest.previous_run or 'no earlier run'}; {run.stack.describe()}", file=sys.stderr)
    started = wallclock.monotonic()
    try:
        pipeline = beam.Pipeline(options=options)
        build_scheduled(pipeline, options, run, manifest)
        result = pipeline.run()
        result.wait_until_finish()
        if PipelineState.is_terminal(result.state) and result.state != PipelineState.DONE:
            raise RuntimeError(f"pipeline ended in state {result.state}")
    except BaseException as error:
        failed = dataclasses.replace(manifest, status=FAILED, error=f"{type(error).__name__}: {error}",
                                     finished_at=_utc_now_iso())
        _write_manifest(run.output_root, failed)
        raise
    if result.state != PipelineState.DONE:  # submitted without waiting: the job records its end itself
        print(f"rsdt_beam scheduled: job {result.state}; it marks {run.run_id} succeeded when done",
              file=sys.stderr)
        return manifest
    print(summary(result, wallclock.monotonic() - started), file=sys.stderr)
    return RunManifest.from_json(fs.read_json(fs.join(run.directory, MANIFEST_FILE)))
