"""The commands: which flag groups each takes, and how its specs become a pipeline (or a report).

stack       Stage 2: observations -> stacks
window      Stage 3: stacks -> windows
run         Stages 2 and 3 fused
convert     Stage 1 from GeoTIFF archives (optionally on through Stages 2 and 3)
fetch       Stage 1 from Sentinel Hub (optionally on through Stages 2 and 3)
stac        Stage 1 from a STAC catalog of COGs (optionally on through Stages 2 and 3)
infer       a Keras model over windows -> maps
scheduled   one incremental run under an output root (its observations from a store, or a STAC catalog)
sample      the bundled sample through Stages 2 and 3
windows_list, inspect    read-only tools (no Beam pipeline)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable

from rsdt_beam import builders, deploy
from rsdt_beam.acquire.fetch import FetchPlan
from rsdt_beam.acquire.sentinelhub import ENV_CLIENT_ID, ENV_CLIENT_SECRET, CredentialsError
from rsdt_beam.acquire.stac import StacPlan
from rsdt_beam.cli import run, specs
from rsdt_beam.cli.flags import GROUPS, Flag, all_flags, parser
from rsdt_beam.cli.run import Launch, Outcome
from rsdt_beam.errors import UserError
from rsdt_beam.inspect import inspect_output
from rsdt_beam.numpy_reader import window_metadata
from rsdt_beam.sample import sample_specs, sample_summary, split_sample
from rsdt_beam.schedule.launch import LISTED_IN_RANGE, ScheduledRun
from rsdt_beam.specs import FetchSpec, InputsSpec
from rsdt_beam.stack.files import read_stack_metadata
from rsdt_beam.window.listing import format_windows_list, tile_windows_list, write_ranges_csv

_STAGE_2 = ("inputs", "time_range", "tiling", "stack")
_STAGE_3 = ("window_parameters", "window_selection", "window_records")
_FUSED_OUTPUTS = ("stack_output", "window_output", "window_layout", "observed", "output")


@dataclasses.dataclass(frozen=True)
class Command:
    """One entry point: its flag groups, and either `launch(args)` (a pipeline) or `action(args)` (a tool).

    `report(outcome)` prints what a finished pipeline produced, for a person; it may return an exit status.
    """

    name: str
    groups: tuple[str, ...]
    launch: Callable[[argparse.Namespace], Launch] | None = None
    action: Callable[[argparse.Namespace], None] | None = None
    report: Callable[[Outcome], int | None] | None = None
    positional: tuple[Flag, ...] = ()
    required: tuple[str, ...] = ()  # flags the command cannot run without (marked in --help)

    def parser(self, description: str | None = None) -> argparse.ArgumentParser:
        return _CommandParser(self, description)


class _CommandParser:
    """The command's argparse parser, which also refuses flags that are neither the command's nor Beam's,
    and a missing required flag."""

    def __init__(self, command: Command, description: str | None):
        self._command = command
        self._prog = f"python -m rsdt_beam.pipelines.{command.name}"
        self._description = description
        self._parser = parser(self._prog, description, command.groups, command.positional, required=command.required)
        self._given = parser(self._prog, description, command.groups, command.positional, suppress_defaults=True)

    def print_help(self, full: bool = False) -> None:
        """The essential flags; `full`: every flag (`--help-all`)."""
        command = self._command
        parser(
            self._prog, self._description, command.groups, command.positional, required=command.required, full=full
        ).print_help()

    def parse_known_args(self, argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
        args, rest = self._parser.parse_known_args(argv)
        known = all_flags()
        for word in rest:
            name = word[2:].split("=", 1)[0] if word.startswith("--") else None
            if name in known:
                raise UserError(f"--{name} is not a flag of {self._command.name} (see --help)")
        run.refuse_unknown(rest, run.flag_names(self._parser), beam=self._command.launch is not None)
        for name in self._command.required:
            if getattr(args, name) in (None, ""):
                raise UserError(f"--{name} is required")
        given = set(vars(self._given.parse_known_args(argv)[0]))
        args.given = given - {"help", "help_all", *(flag.name for flag in self._command.positional)}
        args.remote_workers = deploy.remote_workers(rest)
        return args, rest


def _output_launch(output, build, written: str | None) -> Launch:
    return Launch(build=build, progress=output.progress, written=written)


def _plan_only(inputs, stack) -> Launch:
    """`--plan_only` of stack and run: the inputs listed, the plan line printed (tiles, work items), nothing run."""
    lines = [builders.listed_stack_plan(inputs, stack)[3]]
    return Launch(build=lambda pipeline: lines, listing=lines)


def _stack(args) -> Launch:
    inputs, output = specs.inputs_spec(args), specs.output_spec(args)
    stack = specs.stack_spec(args)
    if args.plan_only:
        return _plan_only(inputs, stack)
    return _output_launch(output, lambda pipeline: builders.build_stack(pipeline, inputs, stack, output), stack.output)


def _window(args) -> Launch:
    window, output = specs.window_spec(args), specs.output_spec(args)
    return _output_launch(output, lambda pipeline: builders.build_window(pipeline, window, output), window.output)


def _fused(args) -> Launch:
    window = specs.window_spec(args)  # window flags are checked before any listing
    inputs, stack, output = specs.inputs_spec(args), specs.stack_spec(args), specs.output_spec(args)
    if args.plan_only:
        return _plan_only(inputs, stack)
    return _output_launch(
        output, lambda pipeline: builders.build_fused(pipeline, inputs, stack, window, output), window.output
    )


def _fused_on(args):
    """Stage 2 and 3 specs of a source command: (None, None) unless --window_output is given."""
    if not args.window_output:
        return None, None
    return specs.stack_spec(args), specs.window_spec(args)


def _convert(args) -> Launch:
    area, convert, output = specs.area_spec(args), specs.convert_spec(args), specs.output_spec(args)
    stack, window = _fused_on(args)
    return _output_launch(
        output,
        lambda pipeline: builders.build_convert(pipeline, area, convert, stack, window, output),
        window.output if window is not None else None,
    )


def _credentials_reach(fetch: FetchSpec, workers: deploy.RemoteWorkers | None) -> None:
    """Refuses Sentinel Hub credentials from the launcher's environment variables when the runner's workers
    do not get that environment (Dataflow's VMs, Docker containers), and warns where they may not (workers
    the user started): each worker reads the credentials again itself (`sentinelhub.Credentials`)."""
    if workers is None or fetch.credentials_file or fetch.secret or fetch.profile:
        return
    problem = (
        f"Sentinel Hub credentials from the environment variables {ENV_CLIENT_ID}/{ENV_CLIENT_SECRET} "
        f"{'do' if workers.certain else 'may'} not reach the workers of {workers.runner}: give "
        f"--sh_credentials_file gs://BUCKET/sh.json, --sh_secret projects/P/secrets/S/versions/V or "
        f"--sh_profile (a sentinelhub config profile on every worker)"
    )
    if workers.certain:
        raise UserError(problem)
    print(f"rsdt_beam fetch: warning: {problem}, unless their environment sets them", file=sys.stderr)


def _fetch(args) -> Launch:
    area, fetch, output = specs.area_spec(args), specs.fetch_spec(args), specs.output_spec(args)
    _credentials_reach(fetch, args.remote_workers)
    stack, window = _fused_on(args)
    stack = stack or specs.stack_spec(args)
    try:
        plan = FetchPlan.from_spec(area, stack, fetch, output.overwrite)
    except CredentialsError as error:
        raise UserError(str(error)) from None
    if fetch.plan_only:
        return Launch(build=lambda pipeline: [plan.describe()], listing=plan.item_lines())
    return Launch(
        build=lambda pipeline: builders.build_fetch(pipeline, plan, stack, window, output),
        progress=output.progress,
        finished=lambda: plan,
        written=window.output if window is not None else None,
    )


def _stac(args) -> Launch:
    area, stac, output = specs.area_spec(args), specs.stac_spec(args), specs.output_spec(args)
    stack, window = _fused_on(args)
    plan = StacPlan.from_stac_spec(area, stack or specs.stack_spec(args), stac, output.overwrite)
    if args.plan_only:
        return Launch(build=lambda pipeline: [plan.describe()], listing=plan.item_lines())
    return _output_launch(
        output,
        lambda pipeline: builders.build_source(pipeline, plan, stack, window, output),
        window.output if window is not None else None,
    )


def _report_fetch(outcome: Outcome) -> int:
    """Exit 1, with a summary line, when every request of the run failed."""
    plan, counts = outcome.record, outcome.counters
    if plan is None or not plan.items or counts.get("fetch_chunks", 0) or not counts.get("fetch_chunks_failed", 0):
        return 0
    print(
        f"rsdt_beam fetch: all {counts['fetch_chunks_failed']} request(s) failed, nothing fetched (reasons in "
        f"the warnings above and in rejected.json); is {plan.settings.base_url} reachable?",
        file=sys.stderr,
    )
    return 1


def _infer(args) -> Launch:
    inference, output = specs.inference_spec(args), specs.output_spec(args)
    window = specs.window_spec(args)
    online = not inference.windows and not window.stack_dir
    if inference.normalization is not None and not online:  # online: the stacks' bands are those of the inputs
        source = inference.windows or window.stack_dir
        metadata = window_metadata(source) if inference.windows else read_stack_metadata(source)
        inference.normalization.check(metadata, source)
    inputs, stack = (specs.inputs_spec(args), specs.stack_spec(args)) if online else (None, None)
    model = inference.model or inference.model_fn_name

    def failed(error: BaseException) -> None:
        """The model's own errors (it does not load, or does not fit the windows) name the model."""
        if run.reported(error) is None and any(step in str(error) for step in ("Predict in batches", "Predict")):
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UserError(f"--model {model}: {type(error).__name__}: {first}") from error

    return Launch(
        build=lambda pipeline: builders.build_infer(pipeline, inference, window, inputs, stack),
        progress=output.progress,
        check=lambda: specs.model_file(inference.model),
        failed=failed,
    )


_STAC_SOURCE = ("area", "stac", "cloud_cover", "reads")  # the flag groups of a scheduled launch's STAC source


def _scheduled_source(args, inputs: InputsSpec, overwrite: bool):
    """A scheduled launch's inputs and Stage 1 source: with `--stac_api`, the catalog read into `--store`,
    which the launch then lists with its other inputs; else the inputs as given and no source."""
    if not args.stac_api:
        stray = sorted(args.given & {flag.name for group in _STAC_SOURCE for flag in GROUPS[group].flags})
        if stray:
            raise UserError(f"--{stray[0]} is a flag of a STAC source: give --stac_api too")
        return inputs, None
    area, stac = specs.area_spec(args), specs.stac_spec(args)
    if not area.store:
        raise UserError("--store is required with --stac_api (the observation store the launches read into)")
    if inputs.observations:
        raise UserError(
            f"--observations {inputs.observations}: with --stac_api the launch lists --store, the store it reads "
            f"into; give that store once, as --store"
        )
    return dataclasses.replace(inputs, observations=area.store), lambda stack: StacPlan.from_stac_spec(
        area, stack, stac, overwrite
    )


def _scheduled_at(now: float | None):
    """The scheduled command's launch, with `--end today` resolved against `now` (default: the clock)."""

    def launch(args) -> Launch:
        schedule, output = specs.schedule_spec(args), specs.output_spec(args)
        window = specs.window_spec(args)
        inputs, source = _scheduled_source(args, specs.inputs_spec(args), output.overwrite)
        clock = time.time() if now is None else now
        run = ScheduledRun.plan(schedule, inputs, specs.stack_spec(args), window, clock, source)

        def build(pipeline) -> list[str]:
            run.build(pipeline, output)
            return [run.describe()]

        return Launch(build=build, progress=output.progress, start=run.start, failed=run.failed, finished=run.finished)

    return launch


def _report_scheduled(outcome: Outcome) -> None:
    manifest = outcome.record
    if manifest is None:
        return
    counts = ", ".join(f"{name.replace('_', ' ')} {value}" for name, value in manifest.counts.items())
    # Nothing new is no failure for a schedule (the next launch covers the time again from its start): said, exit 0.
    new = "" if manifest.inputs.get(LISTED_IN_RANGE) else f"no new observations in [{manifest.start}, {manifest.end})"
    details = "; ".join(part for part in (new, counts) if part)
    print(
        f"rsdt_beam scheduled: run {manifest.run_id} {manifest.status}" + (f": {details}" if details else ""),
        file=sys.stderr,
    )


def _sample(args) -> Launch:
    output = specs.output_spec(args)
    inputs, stack, window = sample_specs(args.output)
    count = split_sample(inputs.optical)
    print(f"rsdt_beam sample: {count} EOPatch folders in {inputs.optical}", file=sys.stderr)
    return Launch(
        build=lambda pipeline: builders.build_fused(pipeline, inputs, stack, window, output),
        progress=output.progress,
        finished=lambda: args.output,
    )


def _report_sample(outcome: Outcome) -> None:
    print(sample_summary(outcome.record), file=sys.stderr)


def _windows_list(args) -> None:
    ranges = tile_windows_list(args.stack_dir, specs.tile(args.tile), specs.window_params(args))
    print("\n".join(format_windows_list(ranges)))
    if args.csv:
        write_ranges_csv(args.csv, ranges)


def _inspect(args) -> None:
    # A stack folder's windows are listed when window parameters are given, not for their defaults.
    params = specs.window_params(args) if args.given & {"Delta", "window_stride", "omega", "Omega", "triple"} else None
    for line in inspect_output(
        args.path,
        specs.tile(args.tile),
        params,
        all_timestamps=args.all_timestamps,
        csv_path=args.csv,
        png_dir=args.png,
        max_frames=args.max_frames,
        maps=args.maps,
    ):
        print(line)


STACK = Command(
    "stack",
    (*_STAGE_2, "stack_output", "observed", "output", "plan"),
    launch=_stack,
    required=("starttime", "endtime", "stack_output"),
)
WINDOW = Command(
    "window",
    ("stack_input", *_STAGE_3, "window_output", "window_layout", "observed", "output"),
    launch=_window,
    required=("stack_dir", "window_output"),
)
RUN = Command(
    "run",
    (*_STAGE_2, *_STAGE_3, *_FUSED_OUTPUTS, "plan"),
    launch=_fused,
    required=("starttime", "endtime", "window_output"),
)
CONVERT = Command(
    "convert",
    ("area", "convert_archive", "convert_values", "reads", *_STAGE_2[1:], *_STAGE_3, *_FUSED_OUTPUTS),
    launch=_convert,
    required=("store",),
)
FETCH = Command(
    "fetch",
    ("area", "fetch", "cloud_cover", *_STAGE_2[1:], *_STAGE_3, *_FUSED_OUTPUTS, "plan"),
    launch=_fetch,
    report=_report_fetch,
    required=("store", "starttime", "endtime"),
)
STAC = Command(
    "stac",
    ("area", "stac", "cloud_cover", "reads", *_STAGE_2[1:], *_STAGE_3, *_FUSED_OUTPUTS, "plan"),
    launch=_stac,
    required=("store", "stac_api", "starttime", "endtime"),
)
INFER = Command(
    "infer",
    ("inference", "stack_input", "window_parameters", "window_selection", *_STAGE_2, "output"),
    launch=_infer,
    required=("map_output",),
)
SAMPLE = Command("sample", ("sample", "output"), launch=_sample, report=_report_sample)
WINDOWS_LIST = Command(
    "windows_list", ("stack_input", "tile", "window_parameters", "csv"), action=_windows_list, required=("stack_dir",)
)
INSPECT = Command(
    "inspect",
    ("tile", "inspect", "csv", "window_parameters"),
    action=_inspect,
    positional=(Flag("path", "stack folder, window folder, map folder or map .tif (local or gs://)"),),
)


def scheduled_command(now: float | None = None) -> Command:
    """The scheduled command; `now` fixes the clock (tests, back-fills)."""
    return Command(
        "scheduled",
        ("schedule", "inputs", *_STAC_SOURCE, "tiling", "stack", *_STAGE_3, "window_layout", "output"),
        launch=_scheduled_at(now),
        report=_report_scheduled,
        required=("output_root",),
    )


SCHEDULED = scheduled_command()

COMMANDS = (FETCH, CONVERT, STAC, STACK, WINDOW, RUN, INFER, SCHEDULED, SAMPLE, WINDOWS_LIST, INSPECT)
