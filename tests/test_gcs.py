"""The whole pipeline against gs:// (a GCS emulator on 127.0.0.1), checked against the same run on local disk.

Inputs are the bundled real sample (eo-learn's TestEOPatch, Sentinel-2 NDVI): its EOPatch folders
uploaded with google-cloud-storage, and an observation store of GeoTIFFs written to gs:// by
`write_observation` (read back by rasterio through Beam's filesystem). Outputs are downloaded with
google-cloud-storage and must equal the local run's byte for byte (sharded outputs: record for record).
"""

import contextlib
import io
import json
import os
import tracemalloc

import numpy as np
import pytest

from rsdt_beam import fs
from rsdt_beam.acquire import sentinelhub as sh
from rsdt_beam.acquire.eopatch import EOPatchReader, list_eopatches
from rsdt_beam.acquire.store import GeoTiffObservationReader, list_store, write_grid, write_observation
from rsdt_beam.cli.commands import RUN, STACK, WINDOW, scheduled_command
from rsdt_beam.cli.run import execute
from rsdt_beam.common.times import parse_time
from rsdt_beam.grid import PixelWindow
from rsdt_beam.sample import split_sample
from rsdt_beam.schedule.manifest import list_runs
from rsdt_beam.tfrecord import read_records
from tests.gcs_emulator import gcs_emulator

pytestmark = pytest.mark.e2e

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
    "--tile_size",
    "32",
    "--deadzone",
    "2",
    "--no_progress",
]
WINDOW_FLAGS = ["--Delta", "60d", "--omega", "3", "--Omega", "6", "--mode", "training"]
CORRUPT = "optical/20160105T101010.tif"


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    with gcs_emulator(tmp_path_factory.mktemp("gcs")) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def inputs(gcs, tmp_path_factory):
    """The sample as EOPatch folders and as an observation store (plus one corrupt file), locally and on gs://."""
    local = str(tmp_path_factory.mktemp("inputs"))
    eopatches = os.path.join(local, "eopatches")
    split_sample(eopatches)
    gcs.upload_tree(eopatches, gcs.url("inputs", "eopatches"))
    refs, _ = list_eopatches(eopatches, "optical", EOPatchReader("NDVI", "IS_VALID"))
    grid = refs[0].reader.header(refs[0].uri).grid
    window = PixelWindow(0, grid.height, 0, grid.width)
    stores = {"local": os.path.join(local, "store"), "gs": gcs.url("inputs", "store")}
    for root in stores.values():
        write_grid(root, grid)
        for ref in refs[::2]:
            data, valid = ref.reader.read(ref.uri, window)
            write_observation(root, grid, data, valid, "optical", ref.time, ["NDVI"])
        fs.write_bytes(fs.join(root, CORRUPT), b"not a GeoTIFF")
    return {
        "local": {"eopatches": eopatches, "store": stores["local"], "out": os.path.join(local, "out")},
        "gs": {"eopatches": gcs.url("inputs", "eopatches"), "store": stores["gs"], "out": gcs.url("out")},
    }


def test_listings_from_a_time_on_are_alike_on_gs_and_local(inputs):
    """A scheduled launch lists from the previous run's start: the same names on gs:// and on local disk,
    folders (EOPatches) and files (the store) alike, none before the start."""
    since = parse_time("2016-01-01")
    for listing in (
        lambda place: list_eopatches(inputs[place]["eopatches"], "optical", EOPatchReader("NDVI", "IS_VALID"), since),
        lambda place: list_store(inputs[place]["store"], since),
    ):
        local, remote = listing("local"), listing("gs")
        times = [ref.time for ref in local[0]]
        assert times and min(times) >= since
        assert times == [ref.time for ref in remote[0]]
        assert [fs.basename(ref.uri) for ref in local[0]] == [fs.basename(ref.uri) for ref in remote[0]]


def local_tree(root: str) -> dict[str, bytes]:
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, root).replace(os.sep, "/")] = f.read()
    return files


def records_of(files: dict[str, bytes], suffix=".tfrecords") -> list[bytes]:
    return sorted(
        record
        for name, data in files.items()
        if name.endswith(suffix)
        for record in read_records(io.BytesIO(data), gzip=True, name=name)
    )


def without_paths(files: dict[str, bytes], root: str) -> dict[str, bytes]:
    """rejected.json names observations by location (and GDAL's reason quotes it): compared without both."""
    out = dict(files)
    if "rejected.json" in out:
        entries = json.loads(out["rejected.json"])
        out["rejected.json"] = [
            dict(entry, observation=entry["observation"].replace(root, "<root>"), reason=entry["reason"].split(":")[0])
            for entry in entries
        ]
    return out


def test_rasterio_reads_a_window_of_a_gs_observation(gcs, inputs):
    refs, rejected = list_store(inputs["gs"]["store"])
    assert [r.observation for r in rejected] == []
    local_refs, _ = list_store(inputs["local"]["store"])
    reader = GeoTiffObservationReader()
    window = PixelWindow(10, 60, 20, 90)
    remote, local = reader.read(refs[1].uri, window), reader.read(local_refs[1].uri, window)
    assert refs[1].uri.startswith("gs://")
    np.testing.assert_array_equal(remote[0], local[0])
    np.testing.assert_array_equal(remote[1], local[1])


def test_stack_then_window_on_gs_equals_local(gcs, inputs):
    for where in ("local", "gs"):
        paths = inputs[where]
        execute(
            STACK, ["--optical", paths["eopatches"], "--stack_output", fs.join(paths["out"], "stack"), *STACK_FLAGS]
        )
        execute(
            WINDOW,
            [
                "--stack_dir",
                fs.join(paths["out"], "stack"),
                "--window_output",
                fs.join(paths["out"], "windows"),
                *WINDOW_FLAGS,
                "--no_progress",
            ],
        )
    for part in ("stack", "windows"):
        remote = gcs.download_tree(fs.join(inputs["gs"]["out"], part))
        local = local_tree(os.path.join(inputs["local"]["out"], part))
        assert sorted(remote) == sorted(local)
        assert "metadata.json" in remote and any(name.endswith(".tfrecords") for name in remote)
        assert without_paths(remote, inputs["gs"]["eopatches"]) == without_paths(local, inputs["local"]["eopatches"])
        assert records_of(remote)


def test_fused_sharded_from_a_gs_observation_store_equals_local(gcs, inputs):
    results = {}
    for where in ("local", "gs"):
        paths = inputs[where]
        results[where] = execute(
            RUN,
            [
                "--observations",
                paths["store"],
                "--stack_output",
                fs.join(paths["out"], "fused_stack"),
                "--window_output",
                fs.join(paths["out"], "fused_windows"),
                "--layout",
                "sharded",
                "--records_per_shard",
                "4",
                *STACK_FLAGS,
                *WINDOW_FLAGS,
                # worker processes reach the emulator through the environment they inherit
                *(["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"] if where == "gs" else []),
            ],
        )
    assert results["gs"].counters == results["local"].counters
    assert results["gs"].counters["observations_rejected"] == 1
    for part in ("fused_stack", "fused_windows"):
        remote = gcs.download_tree(fs.join(inputs["gs"]["out"], part))
        local = local_tree(os.path.join(inputs["local"]["out"], part))
        # Shards hold the same records; how Beam cuts them into files may differ between runs.
        assert records_of(remote) == records_of(local) != []
        if part == "fused_windows":
            shards = {name: data for name, data in remote.items() if name.startswith("windows-")}
            assert len(shards) > 1 and all(len(records_of({n: d})) <= 4 for n, d in shards.items())
        plain = lambda files: {k: v for k, v in files.items() if not k.startswith("windows-")}
        assert without_paths(plain(remote), inputs["gs"]["store"]) == without_paths(
            plain(local), inputs["local"]["store"]
        )
    rejected = gcs.download_tree(fs.join(inputs["gs"]["out"], "fused_windows"))["rejected.json"]
    assert CORRUPT.encode() in rejected


def test_scheduled_runs_with_a_gs_output_root(gcs, inputs):
    """Manifests, state and windows on gs://: a failed run is deleted there, and the files equal those of a local
    root that saw no failure."""
    flags = [
        "--opt_bands_feature",
        "NDVI",
        "--opt_mask_feature",
        "IS_VALID",
        "--delta_step",
        "10d",
        "--tile_size",
        "32",
        "--deadzone",
        "2",
        "--lookback",
        "120d",
        *WINDOW_FLAGS,
        "--no_progress",
    ]
    manifests = {}
    for where in ("local", "gs"):
        paths = inputs[where]
        root = fs.join(paths["out"], "scheduled")
        common = flags + ["--optical", paths["eopatches"], "--output_root", root]
        first = execute(scheduled_command(0), common + ["--end", "2016-01-01"]).record
        if where == "gs":  # (test_schedule.py fails one on local disk)
            with pytest.raises(Exception, match="worker lost"):
                execute(
                    scheduled_command(0),
                    common + ["--end", "2016-04-01", "--window_filter", "tests.test_schedule:explode"],
                )
        third = execute(scheduled_command(0), common + ["--end", "2016-05-01"]).record
        assert bool(third.replaced_runs) == (where == "gs") and third.previous_run == first.run_id
        assert [m.run_id for m in list_runs(root)] == [first.run_id, third.run_id]
        manifests[where] = third
    remote = gcs.download_tree(fs.join(inputs["gs"]["out"], "scheduled"))
    local = local_tree(os.path.join(inputs["local"]["out"], "scheduled"))
    assert sorted(remote) == sorted(local)
    assert not any(manifests["gs"].replaced_runs[0] in name for name in remote)
    for name in remote:
        if name.endswith("manifest.json"):
            gs_manifest, local_manifest = json.loads(remote[name]), json.loads(local[name])
            assert gs_manifest["status"] == "succeeded"
            assert gs_manifest["counts"] == local_manifest["counts"]
            assert gs_manifest["carry"] == local_manifest["carry"]
            assert gs_manifest["outputs"]["windows"].startswith("gs://")
        elif not name.endswith("rejected.json"):
            assert remote[name] == local[name], name


def test_sentinel_hub_credentials_from_a_gs_file(gcs):
    """`--sh_credentials_file gs://...`: read through Beam's filesystem, as a worker reads it."""
    url = gcs.url("secrets", "sentinelhub.json")
    fs.write_bytes(url, json.dumps({"client_id": "gs-id", "client_secret": "gs-secret"}).encode())
    assert sh.Credentials(file=url).resolve() == ("gs-id", "gs-secret")
    with pytest.raises(sh.CredentialsError, match="cannot read --sh_credentials_file gs://.*/missing.json"):
        sh.Credentials(file=gcs.url("secrets", "missing.json")).resolve()


def test_children_of_a_gs_folder_are_listed_per_folder(gcs, tmp_path):
    """One delimiter listing: the folders and files right under the root, not the files inside the folders."""
    local = tmp_path / "tree"
    for name in (
        "20160101T000000/data/NDVI.npy",
        "20160101T000000/mask/IS_VALID.npy",
        "20160111T000000/bbox.pkl",
        "notes.txt",
    ):
        (local / name).parent.mkdir(parents=True, exist_ok=True)
        (local / name).write_bytes(b"x")
    gcs.upload_tree(str(local), gcs.url("listing", "root"))
    gcs.upload_tree(str(local), gcs.url("listing", "root_other"))  # a sibling sharing the name's prefix
    expected = ["20160101T000000", "20160111T000000", "notes.txt"]
    assert fs.list_children(gcs.url("listing", "root")) == expected
    assert fs.list_children(gcs.url("listing", "root") + "/") == expected
    assert fs.list_children(gcs.url("listing", "root", "20160101T000000")) == ["data", "mask"]
    assert fs.list_children(gcs.url("listing", "missing")) == []


def test_many_open_gs_files_wait_on_local_disk_and_appear_only_complete(gcs):
    """Stage 2's case: a work item's tile files open at once, written in turns. Spooled (`fs.spooled_write`),
    their bytes wait on local disk, not in an upload buffer per stream: the memory traced over the whole
    write, uploads included, stays far below the 40 MiB they hold (each stream buffered them all before).
    Each file appears whole once closed; one whose block fails appears not at all, nor its temporary."""
    root = gcs.url("spooled")
    piece = np.random.default_rng(3).bytes(1 << 18)
    contents = {f"{n}.bin": piece * (4 + n % 3) for n in range(32)}  # 1 to 1.5 MiB each, 40 MiB in all
    tracemalloc.start()
    try:
        with contextlib.ExitStack() as files:
            handles = {name: files.enter_context(fs.spooled_write(fs.join(root, name), "run1")) for name in contents}
            for start in range(0, 6 * len(piece), len(piece)):
                for name, data in contents.items():
                    handles[name].write(memoryview(data)[start : start + len(piece)])
            assert fs.list_files(root) == []  # nothing published while open
        traced_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert traced_peak < 16 * 2**20
    assert gcs.download_tree(root) == contents
    with pytest.raises(RuntimeError, match="stop"), fs.spooled_write(fs.join(root, "failed.bin"), "run1") as handle:
        handle.write(piece * 4)
        raise RuntimeError("stop")
    assert fs.list_files(root) == sorted(contents)
