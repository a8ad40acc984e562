"""The one way a command runs: help, parsing into specs, building, running, the summary and exit codes.

    exit 0   done (or `--help`, or `--dry_run=True`: translated, nothing written)
    exit 1   nothing to write (one line saying why, in numbers, refused at launch), or the job failed: an
             I/O error (one line naming the file), or a bug (the traceback is shown)
    exit 2   a user error: one line naming the flag or file (a bad input file, a model that does not load)
             `--debug` shows the traceback of either

Everything a command does not declare is handed to Beam as pipeline options (`--runner`, ...); this
module and `rsdt_beam.cli.commands` are the only places that see PipelineOptions.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import importlib
import importlib.util
import logging
import re
import sys
import time
from collections.abc import Callable, Iterable

import apache_beam as beam
from apache_beam.options.pipeline_options import (
    DirectOptions,
    PipelineOptions,
    SetupOptions,
    StandardOptions,
    TestOptions,
    WorkerOptions,
    _BeamArgumentParser,
)
from apache_beam.runners.runner import PipelineState

from rsdt_beam import deploy, fs, progress
from rsdt_beam.cli.flags import parse_bool
from rsdt_beam.cli.runners import runner_defaults
from rsdt_beam.common.names import METADATA_FILE
from rsdt_beam.errors import NothingToWrite, UserError
from rsdt_beam.graph import join_ends
from rsdt_beam.outputs import claim_outputs, pipeline_outputs
from rsdt_beam.progress import NAMESPACE, enable_progress_line


@dataclasses.dataclass
class Launch:
    """A command's specs, ready to run: `build(pipeline)` adds the graph and returns describing lines.

    `progress` turns the local progress line on; `check()` looks at inputs a dry run must not need (a
    model file) before any output is claimed; the hooks bracket the job: `start()` just before it runs
    (never on a dry run), `failed(error)` if it fails, `finished()` after it is done (its return value
    is the outcome's `record`).
    """

    build: Callable[[beam.Pipeline], list[str]]
    progress: bool = True
    listing: list[str] | None = None  # print these (stdout) instead of running: a plan-only launch
    check: Callable[[], None] | None = None
    start: Callable[[], None] | None = None
    failed: Callable[[BaseException], None] | None = None
    finished: Callable[[], object] | None = None
    # The run's last output folder (windows, else stacks): a run whose metadata.json there says it wrote nothing fails.
    written: str | None = None


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


class _BeamFlags(_BeamArgumentParser):
    def error(self, message: str):  # a bad value of a Beam option: one line, exit 2
        raise UserError(message)


# Beam registers the DaskRunner's options only when its module is imported (0.6 s): done when a flag needs it.
_DASK_RUNNER = "apache_beam.runners.dask.dask_runner"


def _beam_parser() -> argparse.ArgumentParser:
    """Every option of Beam's PipelineOptions classes (all of them imported so far), as Beam parses them."""
    classes: dict[str, type] = {}
    pending = [PipelineOptions]
    while pending:
        for cls in pending.pop().__subclasses__():
            classes.setdefault(str(cls), cls)  # a class defined twice (a re-run main module) counts once
            pending.append(cls)
    parser = _BeamFlags(allow_abbrev=False, add_help=False, conflict_handler="resolve")
    for cls in classes.values():
        cls._add_argparse_args(parser)
    return parser


def flag_names(parser: argparse.ArgumentParser) -> list[str]:
    """The `--name` flags a parser takes, without the dashes."""
    return [word[2:] for action in parser._actions for word in action.option_strings if word.startswith("--")]


def refuse_unknown(rest: list[str], own: Iterable[str], beam: bool = True) -> None:
    """Raises a UserError for the first word of `rest` (what the command did not parse) that is no Beam
    option (`beam=False`: no word at all), naming it and the nearest flag of the command or of Beam."""
    if not rest:
        return
    own = list(own)
    parser = _beam_parser() if beam else None
    leftover = parser.parse_known_args(rest)[1] if parser else rest
    wants_dask = any(word.startswith("--dask_") for word in leftover)
    if beam and wants_dask and _DASK_RUNNER not in sys.modules and importlib.util.find_spec("dask") is not None:
        importlib.import_module(_DASK_RUNNER)
        parser = _beam_parser()
        leftover = parser.parse_known_args(rest)[1]
    for word in leftover:
        if word == "--":
            break
        if not word.startswith("-"):
            raise UserError(f"unexpected argument {word!r} (flags take the form --name value)")
        name = word.lstrip("-").split("=", 1)[0]
        if beam and name.startswith("dask_") and importlib.util.find_spec("dask") is None:
            raise UserError(
                f"--{name} is a DaskRunner option, but dask is not installed (pip install 'dask[distributed]')"
            )
        nearest = difflib.get_close_matches(name, own, n=1) or difflib.get_close_matches(
            name, flag_names(parser) if parser else [], n=1
        )
        raise UserError(f"unknown flag --{name}" + (f"; did you mean --{nearest[0]}?" if nearest else " (see --help)"))


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
    if launch.check is not None:
        launch.check()
    # Every output folder checked, then claimed, before anything runs: a refused run touches nothing.
    claim_outputs(pipeline_outputs(pipeline), bool(getattr(args, "overwrite", False)))
    if launch.start is not None:
        launch.start()
    # Its first line (the totals the builders declared) now, before the runner's own start-up.
    enable_progress_line(
        (progress.TTY if sys.stderr.isatty() else progress.LOG) if launch.progress else None, _counted_here(options)
    )
    try:
        result = pipeline.run()
        result.wait_until_finish()
        if PipelineState.is_terminal(result.state) and result.state != PipelineState.DONE:
            raise RuntimeError(f"pipeline ended in state {result.state}")
    except BaseException as error:
        if launch.failed is not None:
            launch.failed(error)
        # A runner that sends a worker's error as traceback text (the DirectRunner's multi_threading and
        # multi_processing modes, portable runners): a user error reaches Python callers as a UserError too.
        found = reported(error) if isinstance(error, Exception) and not isinstance(error, UserError) else None
        if found is not None and found[0] == 2:
            raise UserError(found[1]) from error
        raise
    finally:
        progress.finish_progress_line()  # ends an overwritten line before the summary or an error
    if result.state != PipelineState.DONE:  # submitted without waiting (e.g. a template): the job ends itself
        print(f"rsdt_beam {command.name}: job {result.state}", file=sys.stderr)
        return Outcome(result, {})
    values = counters(result)
    print(summary(values, time.monotonic() - started), file=sys.stderr)
    if launch.written is not None:
        _refuse_nothing_written(launch.written)
    record = launch.finished() if launch.finished is not None else None
    return Outcome(result, values, record)


def _counted_here(options: PipelineOptions) -> bool:
    """Whether the job counts in this process: the DirectRunner's in-memory or thread modes."""
    runner = str(options.view_as(StandardOptions).runner or "DirectRunner").lower()
    return runner.endswith(("directrunner", "direct")) and (
        options.view_as(DirectOptions).direct_running_mode != "multi_processing"
    )


def _refuse_nothing_written(folder: str) -> None:
    """NothingToWrite when the run wrote no window, or no frame, into `folder` (decided on the workers:
    the window filter or sample kept none, or every observation was set aside); the folder's
    metadata.json goes, so that it does not look complete."""
    path = fs.join(folder, METADATA_FILE)
    metadata = fs.read_json(path) if fs.exists(path) else {}
    if metadata.get("windows_written", 1) == 0:
        why = f"0 windows written to {folder} from {metadata.get('tiles_written', 0)} tiles: the window filter or "
        why += "sample kept none, or observations were set aside (see rejected.json)"
    elif "timestamps" in metadata and not metadata["timestamps"]:
        why = f"0 frames written to {folder}: every observation was set aside (see rejected.json)"
    else:
        return
    fs.delete_if_exists(path)
    raise NothingToWrite(f"{why}; its metadata.json is removed")


def _true(text: str) -> bool:
    try:
        return parse_bool(text)
    except argparse.ArgumentTypeError:
        return False


_BEAM_STEP = re.compile(r"\s*\[while running '[^']*'\]")
_REMOTE = re.compile(
    r"^(?:[\w.]+\.)?(\w*(?:UserError|CorruptRecordError|OSError|FileNotFoundError|NotADirectoryError|"
    r"IsADirectoryError|PermissionError|FileExistsError)): (.+)$",
    re.MULTILINE,
)


def _one_line(text: str) -> str:
    return " ".join(_BEAM_STEP.sub("", text).split())


def reported(error: BaseException) -> tuple[int, str] | None:
    """(exit status, one line) of a user or I/O error, also as Beam re-raises it from a DoFn (the same
    type with the step appended, or a RuntimeError carrying a remote traceback); None for anything else."""
    while True:
        if isinstance(error, NothingToWrite):
            return 1, _one_line(str(error))
        if isinstance(error, UserError):
            return 2, _one_line(str(error))
        if isinstance(error, OSError):
            original = error.__context__  # Beam re-raises a copy without filename/strerror
            if type(original) is type(error) and original.filename:
                error = original
            where = " -> ".join(str(name) for name in (error.filename, error.filename2) if name is not None)
            return 1, _one_line(f"{error.strerror}: {where}" if where and error.strerror else str(error))
        if error.__cause__ is None:
            break
        error = error.__cause__
    remote = _REMOTE.findall(str(error))  # a runner that sends the worker's traceback as text
    if remote:
        kind, message = remote[-1]
        return (2 if kind.endswith(("UserError", "CorruptRecordError")) else 1), _one_line(message)
    return None


def main(command, argv: list[str] | None = None, description: str | None = None) -> int:
    """The entry point of a command: help, one-line user errors (exit 2), tracebacks for the rest."""
    argv = sys.argv[1:] if argv is None else list(argv)
    logging.basicConfig(level=logging.WARNING)
    if "-h" in argv or "--help" in argv or "--help-all" in argv:
        command.parser(description).print_help(full="--help-all" in argv)
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
    except Exception as error:
        found = None if debug else reported(error)
        if found is None:
            raise
        status, message = found
        print(f"rsdt_beam {command.name}: {message}", file=sys.stderr)
        return status
    if command.report is not None and not outcome.dry_run:
        return command.report(outcome) or 0  # a report may judge the outcome a failure (exit 1)
    return 0
