"""The commands: which flag groups each takes, and how its specs become a pipeline (or a report).

stack       Stage 2: observations -> stacks
window      Stage 3: stacks -> windows
run         Stages 2 and 3 fused
convert     Stage 1 from GeoTIFF archives (optionally on through Stages 2 and 3)
fetch       Stage 1 from Sentinel Hub (optionally on through Stages 2 and 3)
stac        Stage 1 from a STAC catalog of COGs (optionally on through Stages 2 and 3)
infer       a Keras model over windows -> maps
scheduled   one incremental run under an output root
sample      the bundled sample through Stages 2 and 3
windows_list, inspect    read-only tools (no Beam pipeline)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable

from rsdt_beam import builders
from rsdt_beam.acquire.fetch import FetchPlan
from rsdt_beam.acquire.sentinelhub import CredentialsError
from rsdt_beam.acquire.stac import StacPlan
from rsdt_beam.cli import specs
from rsdt_beam.cli.flags import Flag, all_flags, parser
from rsdt_beam.cli.run import Launch, Outcome
from rsdt_beam.errors import UserError
from rsdt_beam.inspect import inspect_output
from rsdt_beam.sample import sample_specs, sample_summary, split_sample
from rsdt_beam.schedule.launch import ScheduledRun
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

    def parser(self, description: str | None = None) -> argparse.ArgumentParser:
        return _CommandParser(self, description)


class _CommandParser:
    """The command's argparse parser, which also refuses rsdt_beam flags the command does not take."""

    def __init__(self, command: Command, description: str | None):
        self._command = command
        prog = f"python -m rsdt_beam.pipelines.{command.name}"
        self._parser = parser(prog, description, command.groups, command.positional)
        self._given = parser(prog, description, command.groups, command.positional, suppress_defaults=True)

    def print_help(self) -> None:
        self._parser.print_help()

    def parse_known_args(self, argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
        args, rest = self._parser.parse_known_args(argv)
        known = all_flags()
        for word in rest:
            name = word[2:].split("=", 1)[0] if word.startswith("--") else None
            if name in known:
                raise UserError(f"--{name} is not a flag of {self._command.name} (see --help)")
        if self._command.launch is None and rest:
            raise UserError(f"unrecognized arguments: {' '.join(rest)}")
        given = set(vars(self._given.parse_known_args(argv)[0]))
        args.given = given - {"help", *(flag.name for flag in self._command.positional)}
        return args, rest


def _output_launch(output, build) -> Launch:
    return Launch(build=build, progress=output.progress)


def _plan_only(inputs, stack) -> Launch:
    """`--plan_only` of stack and run: the inputs listed, the plan line printed (tiles, work items), nothing run."""
    lines = [builders.listed_stack_plan(inputs, stack)[3]]
    return Launch(build=lambda pipeline: lines, listing=lines)


def _stack(args) -> Launch:
    inputs, output = specs.inputs_spec(args), specs.output_spec(args)
    stack = specs.stack_spec(args, output_required=True)
    if args.plan_only:
        return _plan_only(inputs, stack)
    return _output_launch(output, lambda pipeline: builders.build_stack(pipeline, inputs, stack, output))


def _window(args) -> Launch:
    if not args.stack_dir:
        raise UserError("--stack_dir is required")
    window, output = specs.window_spec(args), specs.output_spec(args)
    return _output_launch(output, lambda pipeline: builders.build_window(pipeline, window, output))


def _fused(args) -> Launch:
    window = specs.window_spec(args)  # window flags are checked before any listing
    inputs, stack, output = specs.inputs_spec(args), specs.stack_spec(args), specs.output_spec(args)
    if args.plan_only:
        return _plan_only(inputs, stack)
    return _output_launch(output, lambda pipeline: builders.build_fused(pipeline, inputs, stack, window, output))


def _fused_on(args):
    """Stage 2 and 3 specs of a source command: (None, None) unless --window_output is given."""
    if not args.window_output:
        return None, None
    return specs.stack_spec(args), specs.window_spec(args)


def _convert(args) -> Launch:
    area, convert, output = specs.area_spec(args), specs.convert_spec(args), specs.output_spec(args)
    stack, window = _fused_on(args)
    return _output_launch(
        output, lambda pipeline: builders.build_convert(pipeline, area, convert, stack, window, output)
    )


def _fetch(args) -> Launch:
    area, fetch, output = specs.area_spec(args), specs.fetch_spec(args), specs.output_spec(args)
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
    )


def _stac(args) -> Launch:
    area, stac, output = specs.area_spec(args), specs.stac_spec(args), specs.output_spec(args)
    stack, window = _fused_on(args)
    plan = StacPlan.from_stac_spec(area, stack or specs.stack_spec(args), stac, output.overwrite)
    if stac.plan_only:
        return Launch(build=lambda pipeline: [plan.describe()], listing=plan.item_lines())
    return _output_launch(output, lambda pipeline: builders.build_source(pipeline, plan, stack, window, output))


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
    window = specs.window_spec(args, output_required=False)
    online = not inference.windows and not window.stack_dir
    inputs, stack = (specs.inputs_spec(args), specs.stack_spec(args)) if online else (None, None)
    return _output_launch(output, lambda pipeline: builders.build_infer(pipeline, inference, window, inputs, stack))


def _scheduled_at(now: float | None):
    """The scheduled command's launch, with `--end today` resolved against `now` (default: the clock)."""

    def launch(args) -> Launch:
        schedule, inputs, output = specs.schedule_spec(args), specs.inputs_spec(args), specs.output_spec(args)
        window = specs.window_spec(args, output_required=False)
        run = ScheduledRun.plan(schedule, inputs, specs.stack_spec(args), window, time.time() if now is None else now)

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
    print(
        f"rsdt_beam scheduled: run {manifest.run_id} {manifest.status}" + (f": {counts}" if counts else ""),
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
    if not args.stack_dir:
        raise UserError("--stack_dir is required")
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


STACK = Command("stack", (*_STAGE_2, "stack_output", "observed", "output", "plan"), launch=_stack)
WINDOW = Command(
    "window", ("stack_input", *_STAGE_3, "window_output", "window_layout", "observed", "output"), launch=_window
)
RUN = Command("run", (*_STAGE_2, *_STAGE_3, *_FUSED_OUTPUTS, "plan"), launch=_fused)
CONVERT = Command(
    "convert",
    ("area", "convert_archive", "convert_values", "reads", *_STAGE_2[1:], *_STAGE_3, *_FUSED_OUTPUTS),
    launch=_convert,
)
FETCH = Command(
    "fetch",
    ("area", "fetch", "cloud_cover", *_STAGE_2[1:], *_STAGE_3, *_FUSED_OUTPUTS, "plan"),
    launch=_fetch,
    report=_report_fetch,
)
STAC = Command(
    "stac", ("area", "stac", "cloud_cover", "reads", *_STAGE_2[1:], *_STAGE_3, *_FUSED_OUTPUTS, "plan"), launch=_stac
)
INFER = Command(
    "infer", ("inference", "stack_input", "window_parameters", "window_selection", *_STAGE_2, "output"), launch=_infer
)
SAMPLE = Command("sample", ("sample", "output"), launch=_sample, report=_report_sample)
WINDOWS_LIST = Command("windows_list", ("stack_input", "tile", "window_parameters", "csv"), action=_windows_list)
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
        ("schedule", "inputs", "tiling", "stack", *_STAGE_3, "window_layout", "output"),
        launch=_scheduled_at(now),
        report=_report_scheduled,
    )


SCHEDULED = scheduled_command()

COMMANDS = (FETCH, CONVERT, STAC, STACK, WINDOW, RUN, INFER, SCHEDULED, SAMPLE, WINDOWS_LIST, INSPECT)
