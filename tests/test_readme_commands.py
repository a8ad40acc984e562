"""Every shell command of README.md runs as written on the bundled data (issue 18, point 6).

What a README command is: a part of a line of an indented or fenced (not Python) code block, `\\`
continuations joined, comments dropped, split at `&&`, `;` and `&`, that runs rsdt_beam: `<python> -m
rsdt_beam...` (`python`, `.venv/bin/python`, `~/rsdt/bin/python`), a `rsdt-beam-*` console script, or any
other program handed `-m rsdt_beam...` (`docker run`). Each is either run here or listed in `NOT_RUN`
(a stable substring of the command -> why it cannot run on these machines); a command matching no entry
that cannot be run, and an entry matching no command, fail `test_every_readme_command_is_run_or_listed`.

How they run (`readme_run`, one fixture, one test): in README order, identical command lines once, in one
temporary working directory holding what the README says a user has: the checkout's `examples/` and
`tests/data` (linked), `model.keras`, `weights.weights.h5` with `mypackage/models.py` (its `build()`),
the fake Sentinel Hub (`tests/fake_sentinelhub.py`) on 127.0.0.1:8765, the local STAC catalog
(`tests/stac_catalog.py`, `tests/fake_stac.py`) on 127.0.0.1:8766 and Beam's job service on 127.0.0.1:8099
(the portable runner's example), the ports the README names, and the fake's credentials in the environment
as the README exports them. The first command (the sample) runs as
a real `python -m rsdt_beam.pipelines.sample` subprocess; every other one in-process through its entry
point's `main(argv)` (`rsdt_beam/pipelines/<name>.py`, for a console script the one pyproject.toml names),
with the working directory changed. Each must exit 0 and leave what its flags promise: `metadata.json` in
every output folder it names, `grid.json` in a store, the `--csv` file and PNGs in the `--png` folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import traceback

import pytest
import tomllib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHONS = {"python", ".venv/bin/python", "~/rsdt/bin/python"}
SEPARATORS = {"&&", ";", "&", "||"}
MODULE = re.compile(r"rsdt_beam(\.[a-z_]+)+")  # a module name, not a description such as `rsdt_beam.pipelines.<name>`
FAKE_SENTINELHUB_PORT = 8765  # as README.md's "Testing without an account"
STAC_PORT = 8766  # as README.md's local STAC catalog
JOB_SERVICE_PORT = 8099  # as README.md's portable runner example

NOT_RUN = {
    "pipelines.fetch --aoi": "Sentinel Hub itself needs an account and the internet; the same flags with "
    "--sh_base_url of the fake Sentinel Hub run (README's 'Testing without an account')",
    "earth-search.aws.element84.com": "Earth Search is on the internet, which these machines cannot reach; "
    "the local catalog's command runs the same code",
    "planetarycomputer.microsoft.com": "Planetary Computer is on the internet, which these machines cannot reach",
    "pipelines.run --observations gs://my-bucket": "a real GCS bucket; tests/test_gcs.py runs the same against "
    "a GCS emulator",
    "--runner DataflowRunner": "Dataflow needs a GCP project; tests/test_runners.py translates it with --dry_run",
    "--dask_client_address tcp://HOST:8786": "needs a Dask cluster at HOST; tests/test_dask.py runs the sample "
    "on a local one",
    "--runner FlinkRunner": "Flink's job server jar comes from Maven Central, unreachable here",
    "pipelines.scheduled --observations gs://my-bucket": "a real GCS bucket; tests/test_schedule.py and "
    "tests/test_gcs.py run scheduled launches locally and on a GCS emulator",
    "docker run": "no Docker here; tests/test_deploy.py runs the Dockerfile's install lines",
}


@dataclasses.dataclass(frozen=True)
class Command:
    line: int  # README line where it starts
    text: str  # as written, continuations joined
    argv: tuple[str, ...]  # shlex-split, this command's part of the line

    @property
    def runnable(self) -> bool:
        return (self.argv[0] in PYTHONS and self.argv[1:2] == ("-m",)) or self.argv[0].startswith("rsdt-beam-")

    @property
    def key(self) -> tuple[str, ...]:
        """What runs: `-m module args` (whichever interpreter the README names), or the console script's argv."""
        return self.argv[self.argv.index("-m") :] if self.argv[0] in PYTHONS else self.argv

    def __str__(self) -> str:
        return f"README.md:{self.line}: {self.text}"


def _code_lines(text: str):
    """(line number, text) of the shell code blocks: indented 4+ spaces, or fenced but not Python."""
    fence = None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            fence = None if fence is not None else (stripped[3:].strip() or "text")
            continue
        if fence is not None:
            if fence != "python":
                yield number, line
        elif line.startswith("    ") and stripped:
            yield number, line


def readme_commands(text: str | None = None) -> list[Command]:
    """Every rsdt_beam command of the README's code blocks, in README order."""
    if text is None:
        with open(os.path.join(REPO, "README.md")) as f:
            text = f.read()
    logical: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, line in _code_lines(text):
        if pending is not None:
            number, line = pending[0], pending[1] + " " + line.strip()
        if line.rstrip().endswith("\\"):
            pending = (number, line.rstrip()[:-1].rstrip())
            continue
        pending = None
        logical.append((number, line.strip()))
    commands = []
    for number, line in logical:
        if "rsdt_beam" not in line and "rsdt-beam-" not in line:
            continue
        tokens = shlex.split(line, comments=True)
        parts, part = [], []
        for token in tokens + [";"]:
            if token in SEPARATORS:
                parts.append(part)
                part = []
            else:
                part.append(token)
        for part in parts:
            module_run = any(a == "-m" and MODULE.fullmatch(b) for a, b in zip(part, part[1:]))
            if part and (module_run or part[0].startswith("rsdt-beam-")):
                commands.append(Command(number, shlex.join(part), tuple(part)))
    return commands


def listed_reason(command: Command) -> str | None:
    reasons = [reason for key, reason in NOT_RUN.items() if key in command.text]
    return reasons[0] if reasons else None


COMMANDS = readme_commands()


def test_every_readme_command_is_run_or_listed():
    assert len(COMMANDS) >= 20, "the README's commands were found"
    cannot = [str(c) for c in COMMANDS if not c.runnable and listed_reason(c) is None]
    assert not cannot, f"README commands neither runnable here nor listed in NOT_RUN: {cannot}"
    stale = [key for key in NOT_RUN if not any(key in c.text for c in COMMANDS)]
    assert not stale, f"NOT_RUN entries that match no README command any more: {stale}"
    placeholder = re.compile(r"\.\.\.|<|\[--|PORT|HOST")
    placeholders = [str(c) for c in COMMANDS if listed_reason(c) is None and placeholder.search(c.text)]
    assert not placeholders, f"README commands with placeholders cannot run as written: {placeholders}"


def test_the_extraction_joins_continuations_and_splits_command_lists():
    text = (
        "Text `python -m rsdt_beam.pipelines.stack --inline` is no command.\n\n"
        "    bash .ci/setup && .venv/bin/python -m rsdt_beam.pipelines.sample --output out/sample   # note\n"
        "    python -m rsdt_beam.pipelines.window --stack_dir a \\\n"
        "        --csv 'x y.csv' ; rsdt-beam-inspect a &\n\n"
        "```python\nrun.main(['python', '-m', 'rsdt_beam.pipelines.run'])\n```\n"
        "```\ndocker run img -m rsdt_beam.pipelines.sample\n```\n"
    )
    found = [(c.line, c.argv) for c in readme_commands(text)]
    assert found == [
        (3, (".venv/bin/python", "-m", "rsdt_beam.pipelines.sample", "--output", "out/sample")),
        (4, ("python", "-m", "rsdt_beam.pipelines.window", "--stack_dir", "a", "--csv", "x y.csv")),
        (4, ("rsdt-beam-inspect", "a")),
        (11, ("docker", "run", "img", "-m", "rsdt_beam.pipelines.sample")),
    ]


# --- running them --------------------------------------------------------------------------------------

MODEL_SOURCE = '''"""The README's example model module: build() makes the model whose weights --model holds."""

import keras


def build():
    """[6, 32, 32, 1] windows of the sample (Omega 6, one band) -> a [32, 32] map: a weighted sum over time."""
    inputs = keras.Input((6, 32, 32, 1))
    x = keras.layers.Permute((2, 3, 1, 4))(inputs)
    x = keras.layers.Reshape((32, 32, 6))(x)
    x = keras.layers.Dense(1)(x)
    return keras.Model(inputs, keras.layers.Reshape((32, 32))(x))
'''


def prepare_user_files(work: str) -> None:
    """What the README says the user has, besides the sample the first command makes."""
    os.symlink(os.path.join(REPO, "examples"), os.path.join(work, "examples"))
    os.makedirs(os.path.join(work, "tests"))
    os.symlink(os.path.join(REPO, "tests", "data"), os.path.join(work, "tests", "data"))
    os.makedirs(os.path.join(work, "mypackage"))
    open(os.path.join(work, "mypackage", "__init__.py"), "w").close()
    with open(os.path.join(work, "mypackage", "models.py"), "w") as f:
        f.write(MODEL_SOURCE)
    namespace: dict = {}
    exec(compile(MODEL_SOURCE, "mypackage/models.py", "exec"), namespace)
    model = namespace["build"]()
    model.save(os.path.join(work, "model.keras"))
    model.save_weights(os.path.join(work, "weights.weights.h5"))


def wait_for_port(port: int, process: subprocess.Popen, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while process.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} (exit {process.poll()})")


@contextlib.contextmanager
def servers(work: str):
    """On the README's ports: Beam's job service (the README's own command line before the portable runner's),
    the fake Sentinel Hub and the local STAC catalog."""
    import fake_sentinelhub
    from fake_stac import FileServer, StacApi
    from stac_catalog import build_catalog

    job_service = subprocess.Popen(
        [sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main"]
        + ["--port", str(JOB_SERVICE_PORT)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    hub = fake_sentinelhub.FakeSentinelHub(port=FAKE_SENTINELHUB_PORT).start()
    cogs = os.path.join(work, ".cogs")
    try:
        with FileServer(cogs) as files, StacApi(build_catalog(cogs, files.url), "query", port=STAC_PORT):
            wait_for_port(JOB_SERVICE_PORT, job_service)
            yield
    finally:
        hub.stop()
        job_service.terminate()
        job_service.wait(timeout=30)


@contextlib.contextmanager
def user_session(work: str):
    """The working directory, the README's `export`s, and the user's module on the path, undone after."""
    saved_env, saved_cwd, saved_path = dict(os.environ), os.getcwd(), list(sys.path)
    os.environ.update(SH_CLIENT_ID="cid", SH_CLIENT_SECRET="csecret")
    os.chdir(work)
    sys.path.insert(0, work)
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        sys.path[:] = saved_path
        os.environ.clear()
        os.environ.update(saved_env)


@dataclasses.dataclass
class Result:
    status: int
    output: str
    seconds: float


def entry_point(argv: tuple[str, ...]):
    """The `main` of `-m rsdt_beam.pipelines.X` or of a `rsdt-beam-*` console script (pyproject.toml)."""
    if argv[0] == "-m":
        return importlib.import_module(argv[1]).main, list(argv[2:])
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        module, function = tomllib.load(f)["project"]["scripts"][argv[0]].split(":")
    return getattr(importlib.import_module(module), function), list(argv[1:])


def start_subprocess(argv: tuple[str, ...], work: str) -> tuple[subprocess.Popen, float]:
    """`python -m ...` as a real process in `work`, importing this checkout."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))
    process = subprocess.Popen(
        [sys.executable, *argv], cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    return process, time.perf_counter()


def finish_subprocess(started: tuple[subprocess.Popen, float]) -> Result:
    process, start = started
    output, _ = process.communicate(timeout=300)
    return Result(process.returncode, output, time.perf_counter() - start)


def run_one(argv: tuple[str, ...]) -> Result:
    """A command in-process, through its entry point's `main(argv)`, in the current directory."""
    start = time.perf_counter()
    main, args = entry_point(argv)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            status = main(args)
        except SystemExit as exit_:
            status = exit_.code
        except Exception:  # a bug: reported with its command by the test of that command
            status = 1
            out.write(traceback.format_exc())
    return Result(status or 0, out.getvalue(), time.perf_counter() - start)


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory):
    """{argv after the interpreter: Result} of every README command that is not listed, and the work dir."""
    work = str(tmp_path_factory.mktemp("readme"))
    runs = list({c.key: c for c in COMMANDS if listed_reason(c) is None and c.runnable})
    assert runs[0][0] == "-m", "the README's first command is a `python -m` one: it runs as a subprocess"
    first = start_subprocess(runs[0], work)  # no command before it: it runs while the rest is set up
    prepare_user_files(work)
    with servers(work), user_session(work):
        results = {runs[0]: finish_subprocess(first)}
        for key in runs[1:]:
            results[key] = run_one(key)
    return work, results


def promised_outputs(argv: tuple[str, ...]) -> list[str]:
    """What a command's flags say it leaves behind (nothing for a --plan_only run)."""
    if "--plan_only" in argv:
        return []
    files = {
        "--store": "grid.json",
        "--stack_output": "metadata.json",
        "--window_output": "metadata.json",
        "--map_output": "metadata.json",
        "--csv": "",
        "--png": "",
        "--output_root": "runs",  # a scheduled launch: runs/<start>-<end>/ and runs/index.json
    }
    promised = []
    for flag, value in zip(argv, argv[1:]):
        if flag in files:
            promised.append(os.path.join(value, files[flag]) if files[flag] else value)
        if flag == "--output":  # the sample
            promised += [os.path.join(value, "stack", "metadata.json"), os.path.join(value, "windows", "metadata.json")]
    return promised


def failure(work: str, command: Command, result: Result) -> str | None:
    """Why a command did not do what the README says, or None."""
    if result.status != 0:
        return f"{command}\nexit {result.status}:\n{result.output[-3000:]}"
    for path in promised_outputs(command.key):
        full = os.path.join(work, path)
        if not (os.path.isfile(full) or (os.path.isdir(full) and os.listdir(full))):
            return f"{command}: no {path}"
    if "--png" in command.key:
        folder = os.path.join(work, command.key[command.key.index("--png") + 1])
        if not any(name.endswith(".png") for name in os.listdir(folder)):
            return f"{command}: no PNG in {folder}"
    return None


@pytest.mark.e2e
def test_every_readme_command_runs_as_written(readme_run):
    """One test for all of them: they share one working directory and the servers' fixed ports (one
    pytest-xdist worker)."""
    work, results = readme_run
    run = [c for c in COMMANDS if listed_reason(c) is None]
    assert run and all(c.key in results for c in run)
    failures = [f for f in (failure(work, c, results[c.key]) for c in run) if f]
    assert not failures, "\n\n".join(failures)


SAMPLE_FLAGS = {  # flag in the README's list of the sample's parameters -> its key in metadata.json's parameters
    "--opt_bands_feature": ("preprocessing", "optical", "eopatch_data_feature"),
    "--opt_mask_feature": ("preprocessing", "optical", "eopatch_mask_feature"),
    "--starttime": ("stack_starttime",),
    "--endtime": ("stack_endtime",),
    "--delta_step": ("stack_delta_step",),
    "--tile_size": ("tile_size_y",),
    "--deadzone": ("deadzone_y",),
    "--mode": ("mode",),
    "--Delta": ("Delta",),
    "--window_stride": ("window_stride",),
    "--omega": ("omega",),
    "--Omega": ("Omega",),
    "--label_fn": ("label_fn",),
}


def readme_sample_parameters() -> dict[str, str]:
    """The flags the README's list of the sample job's parameters states."""
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    start = text.index("The sample job's parameters")
    block = text[start : text.index("\n\n", text.index("- Stage 3:", start))]
    stated = {}
    for code in re.findall(r"`([^`]+)`", block):
        tokens = code.split()
        stated.update({a: b for a, b in zip(tokens, tokens[1:]) if a.startswith("--") and not b.startswith("--")})
    return stated


@pytest.mark.e2e
def test_the_readme_states_the_sample_jobs_parameters_as_its_metadata_records_them(sample_run):
    from rsdt_beam.common.times import parse_duration, parse_time

    with open(os.path.join(sample_run, "windows", "metadata.json")) as f:
        meta = json.load(f)
    parameters = meta["parameters"]
    stated = readme_sample_parameters()
    assert set(SAMPLE_FLAGS) | {"--optical"} == set(stated), "every parameter of the sample is stated"
    assert stated["--optical"] == "out/sample/obs/optical"
    for flag, keys in SAMPLE_FLAGS.items():
        recorded = parameters
        for key in keys:
            recorded = recorded[key]
        value = stated[flag]
        if flag in ("--starttime", "--endtime"):
            assert parse_time(value) == parse_time(recorded), flag
        elif flag in ("--delta_step", "--Delta"):
            assert parse_duration(value) == recorded, flag
        else:
            assert str(recorded) == value, flag
    assert (parameters["tile_size_x"], parameters["deadzone_x"], parameters["triple"]) == (32, 2, False)
    assert (parameters["bands_opt"], parameters["bands_sar"], parameters["stack_modalities"]) == (1, 0, ["optical"])
    assert (meta["num_tiles_y"], meta["num_tiles_x"], meta["windows_written"]) == (3, 3, 9 * 30)
    assert (parameters["grid"]["height"], parameters["grid"]["width"], parameters["grid"]["crs"]) == (
        101,
        100,
        "EPSG:32633",
    )


def readme_sample_summary() -> list[str]:
    """The summary lines the README shows for its first command (the block after "a summary on stderr:")."""
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    start = text.index("\n\n", text.index("a summary on stderr:")) + 2
    return [line.strip() for line in text[start : text.index("\n\n", start)].splitlines()]


def matches(shown: str, printed: str) -> bool:
    """A README line against a printed one: `...` stands for any text, a duration `in N s` for any."""
    parts = re.split(r"(\.\.\.|in [0-9.]+ s)", shown)  # odd parts are the wildcards
    wildcard = {"...": ".*"}
    pattern = "".join(
        re.escape(part) if n % 2 == 0 else wildcard.get(part, r"in [0-9.]+ s") for n, part in enumerate(parts)
    )
    return re.fullmatch(pattern, printed) is not None


def test_matches_the_wildcards_only():
    assert matches("done in 3.3 s: chunks read 45, ...", "done in 12.0 s: chunks read 45, folders 2")
    assert not matches("done in 3.3 s: chunks read 45", "done in 3.3 s: chunks read 180")


@pytest.mark.e2e
def test_the_sample_prints_the_summary_the_readme_shows(readme_run):
    """The README's example output is the sample's real output, counts and all (the time aside)."""
    _, results = readme_run
    sample = next(key for key in results if key[:2] == ("-m", "rsdt_beam.pipelines.sample"))
    printed = [line.strip() for line in results[sample].output.splitlines()]
    for shown in readme_sample_summary():
        assert any(matches(shown, line) for line in printed), f"README shows {shown!r}; the sample printed {printed}"
