"""The one way a command runs: help, parsing into specs, building, running, the summary and exit codes.

    exit 0   done (or `--help`, or `--dry_run=True`: translated, nothing written)
    exit 1   the job failed (a bug or a data problem: the traceback is shown)
    exit 2   a user error: one line naming the flag or file (`--debug` shows the traceback too)

Everything a command does not declare is handed to Beam as pipeline options (`--runner`, ...); this
module and `rsdt_beam.cli.commands` are the only places that see PipelineOptions.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import sys
import time
from collections.abc import Callable

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, TestOptions, WorkerOptions
from apache_beam.runners.runner import PipelineState

from rsdt_beam import deploy, progress
from rsdt_beam.cli.flags import parse_bool
from rsdt_beam.cli.runners import runner_defaults
from rsdt_beam.errors import UserError
from rsdt_beam.graph import join_ends
from rsdt_beam.outputs import claim_outputs, pipeline_outputs
from rsdt_beam.progress import NAMESPACE, enable_progress_line


@dataclasses.dataclass
class Launch:
    """A command's specs, ready to run: `build(pipeline)` adds the graph and returns describing lines.

    `progress` turns the local progress line on; the hooks bracket the job: `start()` just before it
    runs (never on a dry run), `failed(error)` if it fails, `finished()` after it is done (its return
    value is the outcome's `record`).
    """

    build: Callable[[beam.Pipeline], list[str]]
    progress: bool = True
    listing: list[str] | None = None  # print these (stdout) instead of running: a plan-only launch
    start: Callable[[], None] | None = None
    failed: Callable[[BaseException], None] | None = None
    finished: Callable[[], object] | None = None


@dataclasses.dataclass
class Outcome:
    """What a run left: Beam's result, the rsdt_beam counters and the `finished()` record (if any)."""

    result: object
    counters: dict[str, int]
    record: object = None
    dry_run: bool = False


def counters(result) -> dict[str, int]:
    """rsdt_beam's counters of a finished run; none from a runner that collects no metrics (DaskRunner)."""
    totals: dict[str, int] = {}
    try:
        metrics = result.metrics()
    except NotImplementedError:
        return totals
    for counter in metrics.query(beam.metrics.MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + counter.committed
    return totals


def summary(values: dict[str, int], seconds: float) -> str:
    parts = [
        f"{name.replace('_', ' ')} {value / 1e6:.1f} MB"
        if name.endswith("bytes")
        else f"{name.replace('_', ' ')} {value}"
        for name, value in sorted(values.items())
    ]
    return f"rsdt_beam: done in {seconds:.1f} s: " + ", ".join(parts)


def _translation(pipeline: beam.Pipeline, options: PipelineOptions) -> list[str]:
    """What a dry run would launch: runner, top-level steps, leaf transform count, staged code."""
    proto = pipeline.to_runner_api()
    transforms = proto.components.transforms
    steps = [
        transforms[t].unique_name for root in proto.root_transform_ids for t in transforms[root].subtransforms
    ] or [transforms[t].unique_name for t in proto.root_transform_ids]
    leaves = sum(1 for t in transforms.values() if not t.subtransforms)
    setup, worker = options.view_as(SetupOptions), options.view_as(WorkerOptions)
    staged = [
        f"{name} {value}"
        for name, value in (
            ("setup_file", setup.setup_file),
            ("requirements_file", setup.requirements_file),
            ("extra_packages", ",".join(setup.extra_packages or []) or None),
            ("sdk_container_image", worker.sdk_container_image),
        )
        if value
    ]
    runner = options.get_all_options()["runner"] or "DirectRunner"
    return [
        f"dry run: {runner} would run {len(steps)} steps ({leaves} transforms); nothing was written",
        *(f"  step: {step}" for step in steps),
        f"  staged: {', '.join(staged) if staged else 'nothing (code must be in the worker image)'}",
    ]


@contextlib.contextmanager
def _launch_errors():
    """Bad values found while planning (a grid that does not match, a missing file) as UserErrors."""
    try:
        yield
    except UserError:
        raise
    except (ValueError, FileNotFoundError, NotADirectoryError) as error:
        raise UserError(str(error)) from error


def execute(command, argv: list[str]) -> Outcome:
    """Parses `argv` into the command's specs, builds and runs its pipeline; raises UserError."""
    args, beam_argv = command.parser().parse_known_args(argv)
    # Remote workers get the package and the launcher's pinned dependencies (nothing for local runners).
    beam_argv += deploy.worker_flags(command.name, beam_argv)
    beam_argv += runner_defaults(beam_argv)  # every core, every worker (rsdt_beam.cli.runners)
    options = PipelineOptions(beam_argv)
    dry_run = bool(options.view_as(TestOptions).dry_run)
    started = time.monotonic()
    pipeline = beam.Pipeline(options=options)
    progress.clear_totals()  # the builders declare this run's totals
    with _launch_errors():  # planning on the launcher: what goes wrong here is the input's fault
        launch = command.launch(args)
        lines = launch.build(pipeline)
    for line in lines:
        print(f"rsdt_beam {command.name}: {line}", file=sys.stderr)
    if launch.listing is not None:
        print("\n".join(launch.listing))
        return Outcome(None, {}, dry_run=True)
    join_ends(pipeline)  # Beam's DaskRunner runs only what the last step depends on (rsdt_beam.graph)
    if dry_run:
        is_dataflow = "Dataflow" in str(options.get_all_options()["runner"])
        result = pipeline.run() if is_dataflow else None  # the Dataflow runner translates and stops
        print("\n".join(_translation(pipeline, options)))
        return Outcome(result, {}, dry_run=True)
    # Every output folder checked, then claimed, before anything runs: a refused run touches nothing.
    claim_outputs(pipeline_outputs(pipeline), bool(getattr(args, "overwrite", False)))
    enable_progress_line((progress.TTY if sys.stderr.isatty() else progress.LOG) if launch.progress else None)
    if launch.start is not None:
        launch.start()
    try:
        result = pipeline.run()
        result.wait_until_finish()
        if PipelineState.is_terminal(result.state) and result.state != PipelineState.DONE:
            raise RuntimeError(f"pipeline ended in state {result.state}")
    except BaseException as error:
        if launch.failed is not None:
            launch.failed(error)
        raise
    if result.state != PipelineState.DONE:  # submitted without waiting (e.g. a template): the job ends itself
        print(f"rsdt_beam {command.name}: job {result.state}", file=sys.stderr)
        return Outcome(result, {})
    values = counters(result)
    progress.finish_progress_line()
    print(summary(values, time.monotonic() - started), file=sys.stderr)
    record = launch.finished() if launch.finished is not None else None
    return Outcome(result, values, record)


def _true(text: str) -> bool:
    try:
        return parse_bool(text)
    except argparse.ArgumentTypeError:
        return False


def main(command, argv: list[str] | None = None, description: str | None = None) -> int:
    """The entry point of a command: help, one-line user errors (exit 2), tracebacks for the rest."""
    argv = sys.argv[1:] if argv is None else list(argv)
    logging.basicConfig(level=logging.WARNING)
    if "-h" in argv or "--help" in argv:
        command.parser(description).print_help()
        return 0
    # Read before parsing, so a flag error can still show its traceback; the same reading as the parser's.
    debug = "--debug" in argv or any(a.startswith("--debug=") and _true(a.split("=", 1)[1]) for a in argv)
    if not debug:  # Beam logs a failing DoFn's traceback before raising it: the error is reported below, once
        logging.getLogger("apache_beam.runners.common").setLevel(logging.CRITICAL)
    try:
        if command.action is not None:
            args, _rest = command.parser().parse_known_args(argv)
            command.action(args)
            return 0
        outcome = execute(command, argv)
    except UserError as error:
        if debug:
            raise
        print(f"rsdt_beam {command.name}: {error}", file=sys.stderr)
        return 2
    if command.report is not None and not outcome.dry_run:
        return command.report(outcome) or 0  # a report may judge the outcome a failure (exit 1)
    return 0
