"""The fault matrix: convert, fetch, stack, window and infer, each on local disk and on gs:// (a GCS emulator).

For every stage and file system, on one output folder, one after another:
1. the command (`python -m rsdt_beam.pipelines.<stage>`) is killed with SIGKILL at a random point after it claimed the
   folder, then run again (resumed);
2. run again with the same parameters: a no-op in content, byte-identical;
3. run with changed parameters: refused at launch, the folder untouched;
4. run with the changed parameters and `--overwrite`: only the new contents remain.
After each step the folder must equal a clean run's output (into a fresh folder) byte for byte: no half file,
no stale file, no temporary; `metadata.json` is the last file written (on gs://: the highest object
generation, which the emulator takes from the clock at each write) and the run marker the first.
"""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import subprocess
import sys
import time

import fake_sentinelhub as fake
import pytest

from rsdt_beam import fs
from rsdt_beam.cli.commands import CONVERT, FETCH, INFER, STACK, WINDOW
from rsdt_beam.cli.run import execute
from rsdt_beam.cli.run import main as run_main
from rsdt_beam.common.names import METADATA_FILE, RUN_FILE
from tests.gcs_emulator import gcs_emulator
from tests.test_convert import LANDSAT, LANDSAT_BBOX, LANDSAT_PATTERN
from tests.test_inference import mean_model

pytestmark = pytest.mark.e2e

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = int(os.environ.get("RSDT_FAULT_SEED", "13"))
STACK_FLAGS = [
    "--opt_bands_feature",
    "NDVI",
    "--opt_mask_feature",
    "IS_VALID",
    "--starttime",
    "2015-09-01",
    "--endtime",
    "2016-05-01",
    "--delta_step",
    "10d",
    "--deadzone",
    "2",
    "--no_progress",
]
WINDOW_FLAGS = ["--Delta", "60d", "--omega", "3", "--no_progress"]
# The DirectRunner's default on a machine of several cores, asked for explicitly: the pytest-xdist workers keep to
# one core each (conftest.py), where the default would be in_memory; threads writing at once must not change a byte.
THREADS = ("--direct_running_mode", "multi_threading", "--direct_num_workers", "2")


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    flag: str  # the output folder's flag
    command: object  # rsdt_beam.cli.commands
    base: tuple  # flags of the first runs
    changed: tuple  # flags that replace some of them: refused, then with --overwrite
    changed_name: str  # a parameter the refusal names
    kill_window: float  # seconds after the folder is claimed within which the kill falls

    def argv(self, inputs: dict, out: str, changed: bool = False) -> list[str]:
        flags = [flag.format(**inputs) for flag in self.base]
        if changed:
            flags += [flag.format(**inputs) for flag in self.changed]  # later flags win
        return [self.flag, out, *flags, *THREADS]


STAGES = [
    Stage(
        "convert",
        "--store",
        CONVERT,
        (
            "--aoi",
            LANDSAT_BBOX,
            "--aoi_crs",
            "EPSG:32613",
            "--resolution",
            "30",
            "--band_files",
            "{landsat}/*/*_b3.tif,{landsat}/*/*_b4.tif,{landsat}/*/*_b5.tif",
            "--mask_files",
            "{landsat}/*/*_fmask.tif",
            "--mask_rule",
            "fmask",
            "--time_pattern",
            LANDSAT_PATTERN,
            "--archive_modality",
            "optical",
            "--divisor",
            "10000",
            "--no_progress",
        ),
        ("--divisor", "255"),
        "divisors",
        2.0,
    ),
    Stage(
        "fetch",
        "--store",
        FETCH,
        (
            "--aoi",
            "465181,5079245,466180,5080254",
            "--aoi_crs",
            "EPSG:32633",
            "--resolution",
            "10",
            "--collections",
            "optical",
            "--sh_base_url",
            "{hub}",
            "--sh_token_url",
            "{hub_token}",
            "--sh_retry_sleep",
            "0.02",
            "--starttime",
            "2015-07-01",
            "--endtime",
            "2015-10-01",
            "--fetch_chunk_size",
            "64",
            "--max_requests_in_flight",
            "2",
            "--no_progress",
        ),
        ("--resolution", "20"),
        "grid",
        1.5,
    ),
    Stage(
        "stack",
        "--stack_output",
        STACK,
        ("--optical", "{eopatches}", "--tile_size", "32", *STACK_FLAGS),
        ("--tile_size", "48"),
        "tile_size_y",
        1.5,
    ),
    Stage(
        "window",
        "--window_output",
        WINDOW,
        ("--stack_dir", "{stack}", "--mode", "training", "--Omega", "6", *WINDOW_FLAGS),
        ("--Omega", "3", "--layout", "sharded", "--records_per_shard", "100"),
        "Omega",
        1.5,
    ),
    Stage(
        "infer",
        "--map_output",
        INFER,
        ("--stack_dir", "{stack}", "--model", "{model}", "--Omega", "6", *WINDOW_FLAGS),
        (
            "--Omega",
            "3",
        ),
        "Omega",
        4.0,
    ),
]
RESULTS: dict[tuple[str, str], list[str]] = {}
_CLEAN: dict[tuple[str, bool], tuple[str, dict[str, bytes]]] = {}


@pytest.fixture(scope="module")
def hub():
    server = fake.FakeSentinelHub().start()
    server.add_fault("slow", times=None, delay=0.05)  # spreads the fetch over about a second
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    with gcs_emulator(tmp_path_factory.mktemp("gcs")) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, sample_eopatches, hub):
    root = tmp_path_factory.mktemp("fault_inputs")
    stack = str(root / "stack")
    execute(STACK, ["--optical", sample_eopatches, "--tile_size", "32", *STACK_FLAGS, "--stack_output", stack])
    model = str(root / "mean.keras")
    mean_model().save(model)
    return {
        "landsat": LANDSAT,
        "eopatches": sample_eopatches,
        "stack": stack,
        "model": model,
        "hub": hub.url,
        "hub_token": hub.token_url,
    }


@pytest.fixture(autouse=True)
def credentials(monkeypatch):
    monkeypatch.setenv("SH_CLIENT_ID", fake.CLIENT_ID)
    monkeypatch.setenv("SH_CLIENT_SECRET", fake.CLIENT_SECRET)


def invoke(stage: Stage, argv: list[str], capsys=None) -> tuple[int, str]:
    """Runs the stage's command in this process: (exit status, what it printed on stderr if `capsys`)."""
    status = run_main(stage.command, argv)
    return status, capsys.readouterr().err if capsys is not None else ""


def kill_at_random(stage: Stage, argv: list[str], out: str, rng: random.Random) -> bool:
    """Starts the command, SIGKILLs it a random time after it claimed `out`; True if it was still running."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    process = subprocess.Popen(
        [sys.executable, "-m", f"rsdt_beam.pipelines.{stage.name}", *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not fs.exists(fs.join(out, RUN_FILE)) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert fs.exists(fs.join(out, RUN_FILE)), process.stderr.read().decode()[-3000:]
        time.sleep(rng.uniform(0, stage.kill_window))
        running = process.poll() is None
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
        process.stderr.close()
    return running


def clean_run(stage: Stage, inputs: dict, changed: bool, root) -> tuple[str, dict[str, bytes]]:
    """(folder, files) of a clean run on local disk, once per stage and parameters (gs:// runs must equal it)."""
    if (stage.name, changed) not in _CLEAN:
        folder = str(root / f"{stage.name}_{'changed' if changed else 'base'}")
        assert invoke(stage, stage.argv(inputs, folder, changed))[0] == 0
        _CLEAN[(stage.name, changed)] = folder, tree(folder, None)[0]
    return _CLEAN[(stage.name, changed)]


def tree(out: str, gcs) -> tuple[dict[str, bytes], list[str]]:
    """({relative name: bytes}, names in the order they were written) of a folder, local or gs://."""
    if not fs.is_remote(out):
        files = {name: open(os.path.join(out, name), "rb").read() for name in fs.list_files(out)}
        order = sorted(files, key=lambda name: os.stat(os.path.join(out, name)).st_mtime_ns)
        return files, order
    prefix = out[len(f"gs://{gcs.bucket}/") :].rstrip("/") + "/"
    blobs = list(gcs.client().list_blobs(gcs.bucket, prefix=prefix))
    order = [blob.name[len(prefix) :] for blob in sorted(blobs, key=lambda blob: int(blob.generation))]
    return {blob.name[len(prefix) :]: blob.download_as_bytes() for blob in blobs}, order


def assert_complete(out: str, expected: dict[str, bytes], reference: str, gcs) -> None:
    """`out` holds exactly the clean run's files, byte for byte; marker first, metadata.json last."""
    files, order = tree(out, gcs)
    temporaries = [name for name in files if fs.temporary_run(name) is not None]
    assert not temporaries
    wanted = {name: data.replace(reference.encode(), out.encode()) for name, data in expected.items()}
    assert sorted(files) == sorted(wanted), "stale or missing files"
    changed = [name for name in files if files[name] != wanted[name]]
    assert not changed, f"files differ from a clean run: {changed}"
    assert order[-1] == METADATA_FILE, order[-3:]
    if fs.is_remote(out):  # (local mtimes are those of the temporaries, written before their rename)
        assert order[0] == RUN_FILE, order[:3]


@pytest.mark.parametrize("where", ["local", "gs"])
@pytest.mark.parametrize("stage", STAGES, ids=[s.name for s in STAGES])
def test_fault_matrix(stage, where, inputs, gcs, tmp_path, tmp_path_factory, capsys):
    rng = random.Random(f"{SEED}-{stage.name}-{where}")
    out = str(tmp_path / "out") if where == "local" else gcs.url(tmp_path.name, "out")
    passed = []
    clean, expected = clean_run(stage, inputs, False, tmp_path_factory.getbasetemp())
    clean_changed, expected_changed = clean_run(stage, inputs, True, tmp_path_factory.getbasetemp())

    killed = kill_at_random(stage, stage.argv(inputs, out), out, rng)
    assert invoke(stage, stage.argv(inputs, out))[0] == 0
    assert_complete(out, expected, clean, gcs)
    passed.append("kill+resume" + ("" if killed else " (run had ended)"))

    assert invoke(stage, stage.argv(inputs, out))[0] == 0
    assert_complete(out, expected, clean, gcs)
    passed.append("same")

    capsys.readouterr()
    status, message = invoke(stage, stage.argv(inputs, out, changed=True), capsys)
    assert status == 2 and f"{stage.flag} {out}" in message and stage.changed_name in message, message
    assert_complete(out, expected, clean, gcs)
    passed.append("changed refused")

    assert invoke(stage, [*stage.argv(inputs, out, changed=True), "--overwrite"])[0] == 0
    assert_complete(out, expected_changed, clean_changed, gcs)
    passed.append("overwrite")
    RESULTS[(stage.name, where)] = passed
    print(f"fault matrix {stage.name} {where}: {', '.join(passed)}")
