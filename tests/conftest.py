"""Shared fixtures: the bundled real sample as rsdtlib EOPatch folders, and small synthetic archives."""

import contextlib
import json
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def pytest_configure(config):
    """Under pytest-xdist (`.ci/run`), each worker and what it starts keeps to a core of its own: the
    workers do not take turns on both cores, and the DirectRunner's default for one usable core, in_memory
    (rsdt_beam.cli.runners), spends less CPU than threads (test_schedule + test_gcs: 19 % less). The
    multi_threading default is still run where it matters: the fault matrix asks for it (tests/test_faults.py)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ...
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if worker and len(cores) > 1:
        os.sched_setaffinity(0, {cores[int(worker.removeprefix("gw")) % len(cores)]})
        os.environ[ALL_CORES] = ",".join(map(str, cores))


ALL_CORES = "RSDT_BEAM_TEST_CORES"  # the cores pytest was given, for processes that should have them all


@contextlib.contextmanager
def on_every_core():
    """Processes started inside may use every core pytest was given (a cluster of several processes), not
    only this worker's."""
    if ALL_CORES not in os.environ:
        yield
        return
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(core) for core in os.environ[ALL_CORES].split(",")})
    try:
        yield
    finally:
        os.sched_setaffinity(0, saved)


from rsdt_beam.acquire.eopatch import write_eopatch  # noqa: E402
from rsdt_beam.common.times import parse_time_name, time_name  # noqa: E402
from rsdt_beam.sample_data import EOLEARN_TEST_EOPATCH as SAMPLE_DIR  # noqa: E402


@pytest.fixture(scope="session")
def sample_eopatches(tmp_path_factory):
    """The real eo-learn TestEOPatch split into one EOPatch folder per date (NDVI + IS_VALID)."""
    from rsdt_beam.sample import split_sample

    root = str(tmp_path_factory.mktemp("sample") / "optical")
    split_sample(root)
    return root


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory):
    """The README's main job (`rsdt_beam.pipelines.sample`) once per session: `<dir>/obs`, `<dir>/stack`,
    `<dir>/windows`.

    Read-only for tests; a test adding outputs puts them in its own sub-folder.
    """
    from rsdt_beam.pipelines.sample import main

    out = str(tmp_path_factory.mktemp("sample_run"))
    main(["--output", out, "--no_progress"])
    return out


@pytest.fixture(scope="session")
def sample_arrays():
    """(times as UTC epoch seconds, NDVI (T,H,W,1), IS_VALID (T,H,W)) of the bundled sample."""
    with open(os.path.join(SAMPLE_DIR, "timestamps.json")) as f:
        stamps = json.load(f)
    times = np.array([parse_time_name(s.replace("-", "").replace(":", "")) for s in stamps])
    ndvi = np.load(os.path.join(SAMPLE_DIR, "data", "NDVI.npy"))
    valid = np.load(os.path.join(SAMPLE_DIR, "mask", "IS_VALID.npy"))[..., 0]
    return times, ndvi, valid


BBOX = {
    "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}},
    "type": "Polygon",
    "coordinates": [
        [
            [500000.0, 5000000.0],
            [500000.0, 5000400.0],
            [500400.0, 5000400.0],
            [500400.0, 5000000.0],
            [500000.0, 5000000.0],
        ]
    ],
}


def write_synthetic_eopatches(root, modality_bands, times_by_modality, shape=(40, 40), seed=0, valid_fraction=0.7):
    """Writes EOPatch folders per modality with random data and masks; returns {modality: (times, data, valid)}."""
    rng = np.random.default_rng(seed)
    out = {}
    for modality, times in times_by_modality.items():
        bands = modality_bands[modality]
        data = rng.random((len(times), *shape, bands), dtype=np.float32)
        valid = rng.random((len(times), *shape)) < valid_fraction
        feature = "L1_GND" if modality.startswith("sar") else "L1C_data"
        for k, time in enumerate(times):
            write_eopatch(
                os.path.join(root, modality, time_name(time)), data[k], valid[k], BBOX, time, feature, "dataMask"
            )
        out[modality] = (np.asarray(times, float), data, valid)
    return out


def reference_stack(observations, written, window, bands_sar, bands_opt):
    """Independent Stage 2 reference: forward fill per modality over all observations, then assemble."""
    (r0, r1, c0, c1) = window
    frames = []
    for t_written in written:
        parts = []
        for modality, bands in (("sar_ascending", bands_sar), ("sar_descending", bands_sar), ("optical", bands_opt)):
            state = np.zeros((r1 - r0, c1 - c0, bands), np.float32)
            if modality in observations:
                times, data, valid = observations[modality]
                for k in np.argsort(times, kind="stable"):
                    if times[k] <= t_written:
                        state = np.where(valid[k, r0:r1, c0:c1, None], data[k, r0:r1, c0:c1], state)
            parts.append(state)
        frames.append(np.concatenate(parts, -1))
    return np.stack(frames)


# The sample job's Stage 2 and Stage 3 flags (rsdt_beam.sample.sample_specs), for tests that run it by hand.
SAMPLE_STACK_FLAGS = [
    "--opt_bands_feature",
    "NDVI",
    "--opt_mask_feature",
    "IS_VALID",
    "--starttime",
    "2016-01-01",
    "--endtime",
    "2017-07-01",
    "--delta_step",
    "10d",
    "--tile_size",
    "32",
    "--deadzone",
    "2",
]
SAMPLE_WINDOW_FLAGS = ["--Delta", "60d", "--omega", "3", "--Omega", "6"]


# The longest files (about a minute or more each, `--durations`), started first: pytest-xdist hands out files
# in collection order, and one of these left to the end keeps one worker busy while the other has nothing.
LONGEST_FIRST = ("test_faults.py", "test_dask.py", "test_gcs.py", "test_schedule.py", "test_inference.py")
LONGEST_FIRST += ("test_stac.py", "test_readme_commands.py", "test_benchmark_ratios.py")


@pytest.hookimpl(tryfirst=True)  # before `-m` selects
def pytest_collection_modifyitems(config, items):
    rank = {name: n for n, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
    for item in items:
        if "sample_run" in item.fixturenames:  # reads a pipeline's output: e2e, like the run itself
            item.add_marker(pytest.mark.e2e)
