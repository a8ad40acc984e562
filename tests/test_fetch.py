"""Stage 1 fetch from Sentinel Hub: request building, planning/resume, and runs against a fake server.

The server tests (`e2e`) start `fake_sentinelhub.FakeSentinelHub` on a free
port of 127.0.0.1; the real `sentinelhub` client talks to it over HTTP.
"""

from __future__ import annotations

import base64
import bz2
import gzip
import json
import os
import pickle
import re
import uuid
import zlib

import apache_beam as beam
import fake_sentinelhub as fake
import numpy as np
import pytest
import rasterio
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from project import DATAFLOW_FLAGS, project_copy

from rsdt_beam.acquire import fetch, staging
from rsdt_beam.acquire import sentinelhub as sh
from rsdt_beam.acquire.store import list_store, write_grid
from rsdt_beam.cli.commands import FETCH
from rsdt_beam.cli.run import counters, execute
from rsdt_beam.cli.specs import parse_maxcc
from rsdt_beam.common.names import REJECTED_FILE
from rsdt_beam.common.times import parse_time, time_name
from rsdt_beam.errors import UserError
from rsdt_beam.grid import Grid, PixelWindow
from rsdt_beam.pipelines import fetch as fetch_command
from rsdt_beam.rejections import WriteRejections
from rsdt_beam.stack.files import read_stack_metadata, read_tile_stack

S2_SCENES = fake.s2_scenes()
S1_SCENES = fake.s1_scenes()
S2_GRID = Grid(S2_SCENES[0].crs, S2_SCENES[0].transform, *S2_SCENES[0].shape)
S1_GRID = Grid(S1_SCENES[0].crs, S1_SCENES[0].transform, *S1_SCENES[0].shape)
CLOUDY = {"2015-07-31T10:00:09", "2015-08-20T10:07:28"}  # CLM all cloud on these two dates
OPTICAL = sh.COLLECTIONS["optical"]


def s2_scene(stamp: str) -> fake.Scene:
    return next(s for s in S2_SCENES if s.time.strftime("%Y-%m-%dT%H:%M:%S") == stamp)


@pytest.fixture(autouse=True)
def credentials_in_the_environment(monkeypatch):
    """The fake server's credentials where `sh.Credentials()` reads them (launcher and in-process workers)."""
    monkeypatch.setenv("SH_CLIENT_ID", fake.CLIENT_ID)
    monkeypatch.setenv("SH_CLIENT_SECRET", fake.CLIENT_SECRET)


def credentials_file(path, client_id: str = fake.CLIENT_ID, client_secret: str = fake.CLIENT_SECRET) -> str:
    path.write_text(json.dumps({"client_id": client_id, "client_secret": client_secret}))
    return str(path)


def settings_for(server, **kwargs) -> sh.SentinelHubSettings:
    values = dict(
        base_url=server.url, token_url=server.token_url, retry_sleep=0.02, max_download_attempts=3, request_timeout=10
    )
    values.update(kwargs)
    return sh.SentinelHubSettings(**values)


# --- pure parts: no server -----------------------------------------------------------------------------


def test_evalscript_asks_float32_bands_and_uint8_masks_one_response_each():
    script = sh.evalscript(OPTICAL)
    assert script.startswith("//VERSION=3")
    assert 'units: "REFLECTANCE"' in script and '"B8A"' in script and '"CLM"' in script
    assert script.count('sampleType: "FLOAT32"') == 13 and script.count('sampleType: "UINT8"') == 2
    assert 'units: "LINEAR_POWER"' in sh.evalscript(sh.COLLECTIONS["sar_ascending"])


def test_process_request_is_the_chunk_bbox_and_size_at_the_acquisition_plus_minus_1s():
    settings = sh.SentinelHubSettings(base_url="http://127.0.0.1:9", token_url="http://127.0.0.1:9/t", maxcc=0.8)
    window = PixelWindow(32, 96, 0, 64)
    request = sh.process_request(settings, OPTICAL, S2_GRID, window, parse_time("2015-07-11T10:00:08"))
    download = request.download_list[0]
    assert download.url == "http://127.0.0.1:9/api/v1/process"  # the derived collection's URL
    body = download.post_values
    a, _, c, _, e, f = S2_GRID.transform
    assert body["input"]["bounds"]["bbox"] == pytest.approx([c, f + e * 96, c + a * 64, f + e * 32])
    assert body["input"]["bounds"]["properties"]["crs"].endswith("/32633")
    assert (body["output"]["width"], body["output"]["height"]) == (64, 64)
    data = body["input"]["data"][0]
    assert data["type"] == "sentinel-2-l1c" and data["dataFilter"]["maxCloudCoverage"] == 80
    assert data["dataFilter"]["timeRange"] == {"from": "2015-07-11T10:00:07Z", "to": "2015-07-11T10:00:09Z"}
    assert [r["identifier"] for r in body["output"]["responses"]] == list(sh.S2_BANDS) + ["dataMask", "CLM"]
    s1 = sh.process_request(settings, sh.COLLECTIONS["sar_descending"], S2_GRID, window, 0.0)
    s1_data = s1.download_list[0].post_values["input"]["data"][0]
    assert s1_data["dataFilter"]["orbitDirection"] == "DESCENDING"
    assert s1_data["processing"] == {"orthorectify": True, "demInstance": "COPERNICUS"}
    with pytest.raises(ValueError, match="at most 2500"):
        sh.process_request(
            settings, OPTICAL, Grid("EPSG:32633", (10, 0, 0, 0, -10, 0), 3000, 3000), PixelWindow(0, 2600, 0, 10), 0.0
        )


def test_decode_bands_valid_is_datamask_and_not_cloud():
    h, w = 2, 3
    members = {f"{b}.tif": np.full((h, w), k, np.float32) for k, b in enumerate(sh.S2_BANDS)}
    members["dataMask.tif"] = np.array([[1, 1, 1], [0, 1, 1]], np.uint8)
    members["CLM.tif"] = np.array([[0, 1, 255], [0, 0, 0]], np.uint8)  # 255: no CLM, kept (rsdtlib)
    data, valid = sh.decode_bands(OPTICAL, members, h, w)
    assert data.shape == (2, 3, 13) and data.dtype == np.float32 and data[0, 0, 12] == 12
    assert valid.tolist() == [[True, False, True], [False, True, True]]
    with pytest.raises(sh.FetchError, match="CLM.tif"):
        sh.decode_bands(OPTICAL, {k: v for k, v in members.items() if k != "CLM.tif"}, h, w)
    with pytest.raises(sh.FetchError, match="requested 4 x 3"):
        sh.decode_bands(OPTICAL, members, 4, 3)


def test_processing_unit_estimate_follows_sentinel_hubs_rule():
    assert sh.estimate_processing_units(OPTICAL, 512, 512) == pytest.approx(14 / 3 * 2)
    assert sh.estimate_processing_units(sh.COLLECTIONS["sar_ascending"], 512, 512) == pytest.approx(2 / 3 * 4)
    assert sh.estimate_processing_units(sh.COLLECTIONS["sar_ascending"], 10, 10) == pytest.approx(0.01 * 2 / 3 * 4)


def test_chunks_cover_the_whole_grid_within_the_request_limit():
    grid = Grid("EPSG:32633", (10, 0, 0, 0, -10, 0), 6000, 3000)
    chunks = fetch.fetch_chunks(grid, 2500)
    assert max(c.height for c in chunks) <= 2500 and max(c.width for c in chunks) <= 2500
    covered = np.zeros((6000, 3000), int)
    for c in chunks:
        covered[c.row_start : c.row_stop, c.col_start : c.col_stop] += 1
    assert (covered == 1).all()  # every pixel once, also those right of/below the last whole tile
    small = Grid("EPSG:32633", (10, 0, 0, 0, -10, 0), 101, 100)
    assert fetch.fetch_chunks(small, 2500) == [PixelWindow(0, 101, 0, 100)]
    assert len(fetch.fetch_chunks(small, 64)) == 4
    tiled = Grid("EPSG:32633", (10, 0, 0, 0, -10, 0), 600, 520)  # chunks of whole 256 px tiles of the store file
    assert {(c.row_start % 256, c.col_start % 256) for c in fetch.fetch_chunks(tiled, 100)} == {(0, 0)}
    with pytest.raises(UserError, match="--fetch_chunk_size must be within 1..2500"):
        fetch.fetch_chunks(grid, 4000)


def test_plan_items_skips_stored_and_staged_and_deals_lanes(tmp_path):
    store = str(tmp_path)
    chunks = [PixelWindow(0, 64, 0, 64), PixelWindow(0, 64, 64, 96)]
    t1, t2, t3 = (parse_time(t) for t in ("2015-07-11T10:00:08", "2015-07-31T10:00:09", "2015-08-20T10:07:28"))
    done = {("optical", time_name(t1))}
    staged = {fetch.staged_chunk_path(store, "optical", t2, chunks[0])}
    items, outcomes = fetch.plan_items({"optical": [t1, t2, t3]}, chunks, done, staged, store, lanes=2)
    assert [(i.time, i.chunk) for i in items] == [(t2, chunks[1]), (t3, chunks[0]), (t3, chunks[1])]
    assert [i.lane for i in items] == [0, 1, 0]
    assert [(o.time, o.chunk, o.path) for o in outcomes] == [(t2, chunks[0], next(iter(staged)))]


def test_assemble_writes_complete_observations_and_rejects_empty_or_failed(tmp_path):
    store = str(tmp_path)
    grid = Grid("EPSG:32633", (10, 0, 0, 0, -10, 40), 4, 6)
    chunks = [PixelWindow(0, 4, 0, 3), PixelWindow(0, 4, 3, 6)]
    t_ok, t_empty, t_failed = 1e9, 1e9 + 86400, 1e9 + 2 * 86400
    outcomes = []
    for t in (t_ok, t_empty, t_failed):
        for k, c in enumerate(chunks):
            path = fetch.staged_chunk_path(store, "optical", t, c)
            if t == t_failed and k == 1:
                outcomes.append(fetch.ChunkOutcome("optical", t, c, 2, reason="HTTP 500: boom"))
                continue
            data = np.full((c.height, c.width, 13), k + 1, np.float32)
            valid = np.full((c.height, c.width), t == t_ok)
            staging.stage_block(path, data, valid)
            outcomes.append(fetch.ChunkOutcome("optical", t, c, 2, path=path))
    with TestPipeline() as p:
        out = p | beam.Create(outcomes) | fetch.AssembleObservations(grid, store)
        assert_that(
            out["observations"] | "uri" >> beam.Map(lambda r: os.path.basename(r.uri)),
            equal_to([time_name(t_ok) + ".tif"]),
            label="written",
        )
        assert_that(
            out["rejected"] | "reason" >> beam.Map(lambda r: r.reason.split(" (")[0].split(":")[0]),
            equal_to(["no valid pixel", "fetch failed for 1 of 2 chunk(s)"]),
            label="rejected",
        )
    with rasterio.open(os.path.join(store, "optical", time_name(t_ok) + ".tif")) as dataset:
        assert dataset.read(1).tolist() == [[1, 1, 1, 2, 2, 2]] * 4
    assert os.listdir(os.path.join(store, "rejected")) == [f"optical_{time_name(t_empty)}.json"]
    # the failed observation keeps its good chunk staged for the next run
    assert fetch.staged_paths(store) == {fetch.staged_chunk_path(store, "optical", t_failed, chunks[0])}


def test_assemble_tells_no_valid_pixel_from_the_counts_and_a_lost_chunk_publishes_nothing(tmp_path):
    """Chunk outcomes carry their valid counts: an observation whose chunks all count 0 is set aside without
    a chunk file opened (here they are gone); one chunk missing at write time publishes no half file."""
    store = str(tmp_path)
    grid = Grid("EPSG:32633", (10, 0, 0, 0, -10, 5120), 512, 512)
    chunks = fetch.fetch_chunks(grid, 256)
    t_empty, t_lost = 1e9, 1e9 + 86400
    gone = [fetch.staged_chunk_path(store, "optical", t_empty, c) for c in chunks]
    empty = [fetch.ChunkOutcome("optical", t_empty, c, 4, path=p, valid_pixels=0) for c, p in zip(chunks, gone)]
    lost = []
    for k, c in enumerate(chunks):
        path = fetch.staged_chunk_path(store, "optical", t_lost, c)
        if k < 3:  # the last chunk in row-major order is missing
            staging.stage_block(path, np.ones((256, 256, 13), np.float32), np.ones((256, 256), bool))
        lost.append(fetch.ChunkOutcome("optical", t_lost, c, 4, path=path, valid_pixels=256 * 256))
    assemble = fetch._Assemble(grid, store, "run")
    [(tag, rejection)] = assemble.process((("optical", t_empty), empty))
    assert tag == fetch.REJECTED and rejection.reason == "no valid pixel (dataMask and not cloud)"
    with pytest.raises(OSError):
        assemble.process((("optical", t_lost), lost))
    assert os.listdir(tmp_path / "optical") == []  # neither the file nor its temporary
    assert len(fetch.staged_paths(store)) == 3  # staged chunks stay for the next attempt


def test_credentials_are_read_where_they_are_named(monkeypatch, tmp_path):
    monkeypatch.delenv("SH_CLIENT_ID")
    monkeypatch.delenv("SH_CLIENT_SECRET")
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(sh.CredentialsError, match="SH_CLIENT_ID"):
        sh.Credentials().resolve()
    monkeypatch.setenv("SH_CLIENT_ID", "env-id")
    monkeypatch.setenv("SH_CLIENT_SECRET", "env-secret")
    assert sh.Credentials().resolve() == ("env-id", "env-secret")
    path = credentials_file(tmp_path / "sh.json", "file-id", "file-secret")
    assert sh.Credentials(file=path).resolve() == ("file-id", "file-secret")
    (tmp_path / "bad.json").write_text('{"client_id": "x"}')
    with pytest.raises(sh.CredentialsError, match="bad.json is not JSON with client_id and client_secret"):
        sh.Credentials(file=str(tmp_path / "bad.json")).resolve()
    with pytest.raises(sh.CredentialsError, match="cannot read --sh_credentials_file .*missing.json"):
        sh.Credentials(file=str(tmp_path / "missing.json")).resolve()
    monkeypatch.delenv("SH_CLIENT_ID")  # sentinelhub's SHConfig lets these override any profile
    monkeypatch.delenv("SH_CLIENT_SECRET")
    config_dir = tmp_path / ".config" / "sentinelhub"
    config_dir.mkdir(parents=True)
    (config_dir / "config.toml").write_text('[rsdt]\nsh_client_id = "p-id"\nsh_client_secret = "p-secret"\n')
    assert sh.Credentials(profile="rsdt").resolve() == ("p-id", "p-secret")
    with pytest.raises(sh.CredentialsError, match="'nope'"):
        sh.Credentials(profile="nope").resolve()
    with pytest.raises(sh.CredentialsError, match="give one of --sh_credentials_file, --sh_profile"):
        sh.Credentials(file=path, profile="rsdt")
    with pytest.raises(sh.CredentialsError, match="not a Secret Manager version name"):
        sh.Credentials(secret="projects/p/secrets/s")


def test_secret_manager_credentials_are_named_not_read_on_the_launcher(monkeypatch, tmp_path):
    """Without a Secret Manager to talk to, only this much: the settings that travel to the workers hold the
    version's name, nothing read; Secret Manager's client library is imported only when a worker reads it,
    and an unreachable service is a one-line CredentialsError naming the secret (no credentials here)."""
    name = "projects/rsdt-test-project/secrets/sentinelhub/versions/3"
    settings = sh.SentinelHubSettings(credentials=sh.Credentials(secret=name))
    assert pickle.loads(pickle.dumps(settings)).credentials.secret == name
    assert sh.Credentials(secret=name).describe() == f"Secret Manager {name}"
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "none.json"))
    with pytest.raises(sh.CredentialsError, match=f"cannot read --sh_secret {name}: DefaultCredentialsError"):
        sh.Credentials(secret=name).resolve()


# --- against the fake server -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server():
    instance = fake.FakeSentinelHub().start()
    yield instance
    instance.stop()


@pytest.fixture
def hub(server):
    server.reset()
    yield server
    server.reset()


def plan_for(
    server,
    store,
    grid=S2_GRID,
    modalities=("optical",),
    chunk_size=64,
    lanes=2,
    start="2015-07-01",
    end="2015-10-01",
    tile_size=32,
    **settings,
):
    return fetch.FetchPlan.create(
        settings_for(server, **settings),
        grid,
        str(store),
        list(modalities),
        parse_time(start),
        parse_time(end),
        chunk_size,
        lanes,
    )


def run_fetch(plan):
    """Runs FetchObservations alone; returns (counters, this run's rejections from <store>/rejected.json)."""
    pipeline = beam.Pipeline()
    out = pipeline | fetch.FetchObservations(plan)
    (out["rejected"],) | WriteRejections(plan.store)
    result = pipeline.run()
    result.wait_until_finish()
    with open(os.path.join(plan.store, REJECTED_FILE)) as f:
        return counters(result), json.load(f)


def stored_times(store, modality="optical"):
    refs, _ = list_store(str(store))
    return sorted(time_name(r.time) for r in refs if r.modality == modality)


@pytest.mark.e2e
def test_catalog_search_pages_and_filters(hub):
    settings = settings_for(hub, maxcc=0.5)
    times = sh.search_acquisitions(settings, OPTICAL, S2_GRID, parse_time("2015-01-01"), parse_time("2016-01-01"))
    assert [time_name(t) for t in times] == ["20150711T100008", "20150830T100547", "20150909T100017"]
    searches = hub.requests_to("/api/v1/catalog/1.0.0/search")
    assert len(searches) == 2 and searches[1].body["next"] == 2  # paged with context.next
    assert searches[0].body["filter"] == "eo:cloud_cover < 50"
    asc = sh.search_acquisitions(settings, sh.COLLECTIONS["sar_ascending"], S1_GRID, 0, parse_time("2018-01-01"))
    assert [time_name(t) for t in asc] == ["20150309T173017"]
    assert sh.search_acquisitions(settings, sh.COLLECTIONS["sar_ascending"], S2_GRID, 0, 2e9) == []  # elsewhere


@pytest.mark.e2e
def test_fetch_stack_windows_pixel_for_pixel(hub, tmp_path):
    """The command, fused: catalog -> fetch (4 chunks per date) -> stack -> windows on the fake server."""
    store, stack, windows = tmp_path / "obs", tmp_path / "stack", tmp_path / "windows"
    write_grid(str(store), S2_GRID)  # the run's grid, shared through the store
    argv = [
        "--store",
        str(store),
        "--collections",
        "optical",
        "--sh_base_url",
        hub.url,
        "--sh_token_url",
        hub.token_url,
        "--sh_retry_sleep",
        "0.02",
        "--starttime",
        "2015-07-01",
        "--endtime",
        "2015-10-01",
        "--tile_size",
        "32",
        "--fetch_chunk_size",
        "64",
        "--max_requests_in_flight",
        "3",
        "--delta_step",
        "5d",
        "--stack_output",
        str(stack),
        "--Delta",
        "40d",
        "--omega",
        "1",
        "--Omega",
        "4",
        "--window_output",
        str(windows),
        "--no_progress",
    ]
    assert fetch_command.main(argv) == 0
    assert len(hub.requests_to("/api/v1/process")) == 5 * 4
    assert len(hub.requests_to("/oauth/token")) <= 1  # one token for the launcher and the workers
    clear = sorted(s for s in (s.time.strftime("%Y-%m-%dT%H:%M:%S") for s in S2_SCENES) if s not in CLOUDY)
    assert stored_times(store) == [time_name(parse_time(s)) for s in clear]
    for stamp in clear:
        scene = s2_scene(stamp)
        with rasterio.open(store / "optical" / (time_name(parse_time(stamp)) + ".tif")) as dataset:
            data = np.moveaxis(dataset.read(), 0, -1)
            valid = dataset.dataset_mask() > 0
        expected = np.stack([scene.arrays[b] for b in sh.S2_BANDS], -1)
        expected_valid = scene.arrays["CLM"] != 1  # the whole grid, not only whole tiles; dataMask is all 1
        assert np.array_equal(valid, expected_valid)
        assert np.array_equal(data[valid], expected[valid])
    assert sorted(os.listdir(store / "rejected")) == sorted(f"optical_{time_name(parse_time(s))}.json" for s in CLOUDY)
    rejected = json.loads((windows / "rejected.json").read_text())
    assert sorted(r["time"] for r in rejected) == sorted(s + "Z" for s in CLOUDY)
    assert all(r["reason"].startswith("no valid pixel") for r in rejected)
    assert not os.path.exists(store / fetch.STAGING_DIR / "optical" / "20150711T100008")
    metadata = read_stack_metadata(str(stack))
    first = read_tile_stack(str(stack), (1, 2), metadata)
    scene = s2_scene(clear[0])  # 2015-07-11: no cloud in the whole scene
    assert np.array_equal(
        first.modality("optical")[0], np.stack([scene.arrays[b] for b in sh.S2_BANDS], -1)[32:64, 64:96]
    )
    meta = json.loads((windows / "metadata.json").read_text())
    assert meta["windows_written"] > 0


@pytest.mark.e2e
def test_sentinel1_both_orbits_as_linear_power(hub, tmp_path):
    plan = plan_for(
        hub,
        tmp_path,
        grid=S1_GRID,
        modalities=("sar_ascending", "sar_descending"),
        chunk_size=2500,
        start="2015-01-01",
        end="2018-01-01",
    )
    assert len(plan.items) == 2 and plan.bands.sar == 2 and plan.bands.opt == 0
    counts, rejected = run_fetch(plan)
    assert rejected == [] and counts["observations_fetched"] == 2
    for scene, modality in zip(S1_SCENES, ("sar_ascending", "sar_descending")):
        with rasterio.open(tmp_path / modality / (scene.time.strftime("%Y%m%dT%H%M%S") + ".tif")) as dataset:
            vv, vh = dataset.read(1), dataset.read(2)
            valid = dataset.dataset_mask() > 0
        with rasterio.open(os.path.join(fake.S1_DIR, sorted(os.listdir(fake.S1_DIR))[S1_SCENES.index(scene)])) as src:
            db = src.read(1)
        assert np.array_equal(valid, db != -99)  # the whole grid, also right of/below whole tiles
        assert np.allclose(vv[valid], 10 ** (db[valid] / 10), rtol=1e-6)
        assert np.allclose(vh[valid], 10 ** ((db[valid] - 7) / 10), rtol=1e-6)


@pytest.mark.e2e
def test_throttling_and_5xx_burst_and_broken_replies_are_retried(hub, tmp_path):
    hub.add_fault("429", times=3, retry_after_ms=30)
    hub.add_fault("500", times=2)
    hub.add_fault("truncate", times=1)
    hub.add_fault("slow", times=1, delay=1.5)
    hub.add_fault("corrupt", times=1)
    plan = plan_for(hub, tmp_path, chunk_size=2500, request_timeout=0.5, max_download_attempts=5)
    counts, rejected = run_fetch(plan)
    assert rejected and all(r["reason"].startswith("no valid pixel") for r in rejected)  # only the cloudy dates
    assert counts["observations_fetched"] == 3
    assert counts["fetch_throttled"] == 3
    assert counts["fetch_server_errors"] == 2 + 1 + 1  # 500s, truncated body, timeout
    assert counts["fetch_requests"] == 5 + 3 + 4 + 1  # + the corrupt reply, asked again
    assert counts["processing_units_milli"] > 0


@pytest.mark.e2e
def test_item_that_keeps_failing_is_recorded_and_a_rerun_fetches_only_what_is_missing(hub, tmp_path):
    # 2015-09-09T10:00:17: the first of its 4 chunks succeeds, the others fail every attempt.
    hub.add_fault("500", times=None, when='"from": "2015-09-09T10:00:16Z"', skip=1)
    plan = plan_for(hub, tmp_path, max_download_attempts=2)
    assert len(plan.items) == 20
    counts, rejected = run_fetch(plan)
    failed = [r for r in rejected if r["reason"].startswith("fetch failed")]
    assert [r["time"] for r in failed] == ["2015-09-09T10:00:17Z"]
    assert "3 of 4 chunk(s): HTTP 500" in failed[0]["reason"]
    assert counts["fetch_chunks_failed"] == 3 and counts["observations_fetched"] == 2
    assert counts["fetch_server_errors"] == 3 * 2 and counts["fetch_requests"] == 17 + 3 * 2
    assert stored_times(tmp_path) == ["20150711T100008", "20150830T100547"]
    # A write that died half-way leaves only a hidden temporary file: not taken as done.
    os.remove(tmp_path / "optical" / "20150830T100547.tif")
    (tmp_path / "optical" / ".20150830T100547.tif.tmp-0123456789ab").write_bytes(b"II*\x00half")

    hub.reset()
    plan = plan_for(hub, tmp_path)
    assert len(plan.staged) == 1 and len(plan.stored) == 1
    assert sorted((time_name(i.time), i.chunk.row_start, i.chunk.col_start) for i in plan.items) == sorted(
        [("20150909T100017", 0, 64), ("20150909T100017", 64, 0), ("20150909T100017", 64, 64)]
        + [("20150830T100547", r, c) for r in (0, 64) for c in (0, 64)]
    )
    counts, rejected = run_fetch(plan)
    assert len(hub.requests_to("/api/v1/process")) == 7
    assert sorted(r["time"] for r in rejected) == sorted(s + "Z" for s in CLOUDY)  # set aside by the first run
    assert all(r["reason"].startswith("no valid pixel") for r in rejected)
    assert stored_times(tmp_path) == ["20150711T100008", "20150830T100547", "20150909T100017"]
    assert fetch.staged_paths(str(tmp_path)) == set()
    assert len(os.listdir(tmp_path / "optical")) == 4  # 3 observations + the dead temporary file, no duplicates

    hub.reset()
    plan = plan_for(hub, tmp_path)
    assert plan.items == [] and len(plan.stored) == 3  # the cloudy dates stay rejected, nothing to fetch


@pytest.mark.e2e
def test_rejected_token_gets_one_new_token(hub, tmp_path):
    plan = plan_for(hub, tmp_path, chunk_size=2500)
    tokens = len(hub.requests_to("/oauth/token"))
    hub.add_fault("401", times=1)
    counts, rejected = run_fetch(plan)
    assert counts["observations_fetched"] == 3 and len(hub.requests_to("/oauth/token")) == tokens + 1


@pytest.mark.e2e
def test_bad_or_missing_credentials_stop_before_any_work(hub, tmp_path, monkeypatch, capsys):
    with pytest.raises(sh.CredentialsError, match="rejected the credentials") as error:
        plan_for(
            hub,
            tmp_path,
            credentials=sh.Credentials(file=credentials_file(tmp_path / "sh.json", client_secret="wrong-secret-123")),
        )
    assert "wrong-secret-123" not in str(error.value)
    assert hub.requests_to("/api/v1/catalog/1.0.0/search") == [] and hub.requests_to("/api/v1/process") == []
    monkeypatch.delenv("SH_CLIENT_ID", raising=False)
    monkeypatch.delenv("SH_CLIENT_SECRET", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    argv = [
        "--store",
        str(tmp_path / "obs"),
        "--aoi",
        "465181,5079245,466180,5080254",
        "--aoi_crs",
        "EPSG:32633",
        "--resolution",
        "10",
        "--sh_base_url",
        hub.url,
        "--sh_token_url",
        hub.token_url,
        "--starttime",
        "2015-07-01",
        "--endtime",
        "2015-10-01",
    ]
    assert fetch_command.main(argv) == 2
    assert "no Sentinel Hub credentials" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "obs")
    bad = credentials_file(tmp_path / "bad.json", client_secret="bad-secret-456")
    assert fetch_command.main(argv + ["--sh_credentials_file", bad]) == 2
    err = capsys.readouterr().err
    assert "rejected the credentials" in err and "bad-secret-456" not in err


def plan_only_flags(hub, store, collections: str) -> list[str]:
    """`fetch --plan_only` of the sample's area, summer 2015, against the fake server."""
    return [
        "--plan_only",
        "--store",
        str(store),
        "--aoi",
        "465181,5079245,466180,5080254",
        "--aoi_crs",
        "EPSG:32633",
        "--resolution",
        "10",
        "--collections",
        collections,
        "--sh_base_url",
        hub.url,
        "--sh_token_url",
        hub.token_url,
        "--starttime",
        "2015-07-01",
        "--endtime",
        "2015-10-01",
    ]


@pytest.mark.e2e
def test_plan_only_lists_requests_and_processing_units(hub, tmp_path, capsys):
    argv = plan_only_flags(hub, tmp_path / "obs", "optical,sar_ascending") + ["--maxcc", "0.5"]
    assert fetch_command.main(argv) == 0
    out = capsys.readouterr()
    lines = out.out.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("optical\t2015-") and line.endswith(" PU") for line in lines)
    assert "optical 3" in out.err and "sar_ascending 0" in out.err and "processing units" in out.err
    assert hub.requests_to("/api/v1/process") == [] and not os.path.exists(tmp_path / "obs")


@pytest.mark.e2e
def test_killed_run_resumes_without_refetching_finished_chunks(hub, tmp_path):
    """`python -m rsdt_beam.pipelines.fetch` killed (SIGKILL) mid-run; the re-run sends only the missing requests."""
    import signal
    import subprocess
    import sys
    import time

    store = tmp_path / "obs"
    write_grid(str(store), S2_GRID)
    hub.add_fault("slow", times=None, delay=0.4)
    argv = [
        sys.executable,
        "-m",
        "rsdt_beam.pipelines.fetch",
        "--store",
        str(store),
        "--collections",
        "optical",
        "--sh_base_url",
        hub.url,
        "--sh_token_url",
        hub.token_url,
        "--starttime",
        "2015-07-01",
        "--endtime",
        "2015-10-01",
        "--tile_size",
        "32",
        "--fetch_chunk_size",
        "64",
        "--max_requests_in_flight",
        "1",
        "--no_progress",
    ]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(
        os.environ,
        SH_CLIENT_ID=fake.CLIENT_ID,
        SH_CLIENT_SECRET=fake.CLIENT_SECRET,
        PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    process = subprocess.Popen(argv, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90
        while len(fetch.staged_paths(str(store))) < 3 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
        process.stderr.close()
    hub.wait_idle()
    staged = fetch.staged_paths(str(store))
    sent_before = len(hub.requests_to("/api/v1/process"))
    assert 3 <= len(staged) < 20 and stored_times(store) == []

    hub.reset()
    plan = plan_for(hub, store)
    assert len(plan.staged) == len(staged) and len(plan.items) == 20 - len(staged)
    counts, rejected = run_fetch(plan)
    assert len(hub.requests_to("/api/v1/process")) == 20 - len(staged) <= 20 - 3
    assert sent_before >= len(staged)
    assert stored_times(store) == ["20150711T100008", "20150830T100547", "20150909T100017"]
    assert sorted(os.listdir(store / "optical")) == [t + ".tif" for t in stored_times(store)]
    assert fetch.staged_paths(str(store)) == set()


@pytest.mark.e2e
def test_requests_in_flight_stay_within_the_lanes_whatever_the_worker_count(hub, tmp_path):
    from apache_beam.options.pipeline_options import PipelineOptions

    hub.add_fault("slow", times=None, delay=0.05)
    plan = plan_for(hub, tmp_path, chunk_size=32, lanes=2)
    pipeline = beam.Pipeline(
        options=PipelineOptions(["--direct_running_mode=multi_threading", "--direct_num_workers=6"])
    )
    pipeline | fetch.FetchObservations(plan)
    pipeline.run().wait_until_finish()
    assert len(hub.requests_to("/api/v1/process")) == len(plan.items) == 5 * 16
    assert 1 <= hub.peak_process_in_flight <= 2
    assert stored_times(tmp_path) == ["20150711T100008", "20150830T100547", "20150909T100017"]


def decoded(data: bytes) -> bytes:
    """`data` and, appended, every base64 run in it decoded and (when it is) decompressed, recursively: Beam
    ships pickled DoFns as base64(bz2 or zlib(pickle)) inside the pipeline proto."""
    parts = [data]
    for run in re.findall(rb"[A-Za-z0-9+/]{40,}={0,2}", data):
        try:
            raw = base64.b64decode(run + b"=" * (-len(run) % 4))
        except ValueError:  # binascii.Error: not base64 after all
            continue
        for decompress in (bz2.decompress, zlib.decompress):
            try:
                parts.append(decoded(decompress(raw)))
            except (OSError, ValueError, zlib.error):
                continue
    return b"\n".join(parts)


@pytest.mark.e2e
def test_no_secret_or_token_in_the_translated_dataflow_job(tmp_path):
    """Fetch translated by the Dataflow runner (dry run): the proto with every pickled DoFn unpacked, the job
    with its options, and the staged files hold the credentials file's path but neither its secret nor
    the launcher's OAuth token."""
    secret = f"s3cret-{uuid.uuid4().hex}"
    hub = fake.FakeSentinelHub(client_id="rsdt-client", client_secret=secret).start()
    try:
        path = credentials_file(tmp_path / "sh.json", "rsdt-client", secret)
        store = str(tmp_path / "obs")
        write_grid(store, S2_GRID)
        setup_file = os.path.join(project_copy(str(tmp_path / "project")), "setup.py")
        outcome = execute(
            FETCH,
            DATAFLOW_FLAGS
            + [
                "--setup_file",
                setup_file,
                "--store",
                store,
                "--collections",
                "optical",
                "--sh_base_url",
                hub.url,
                "--sh_token_url",
                hub.token_url,
                "--sh_credentials_file",
                path,
                "--starttime",
                "2015-07-01",
                "--endtime",
                "2015-10-01",
                "--tile_size",
                "32",
                "--fetch_chunk_size",
                "64",
            ],
        )
        tokens = list(hub.tokens_issued)  # the launcher's: checking the credentials, searching the catalog
    finally:
        hub.stop()
    job = outcome.result.job
    graph = decoded(job.proto_pipeline.SerializeToString()) + decoded(job.json().encode())
    assert b"_FetchLane" in graph and store.encode() in graph  # the pickled DoFns, unpacked
    assert path.encode() in graph  # the credentials' place travels ...
    (environment,) = job.proto_pipeline.components.environments.values()
    staged = [beam_runner_api_pb2.ArtifactFilePayload.FromString(d.type_payload).path for d in environment.dependencies]
    assert any(name.endswith(".tar.gz") for name in staged)  # the sdist of setup.py
    for name in staged:
        data = open(name, "rb").read()
        graph += gzip.decompress(data) if name.endswith(".gz") else data
    assert tokens
    for value in (secret, *tokens, *(token.split(".")[1] for token in tokens)):  # ... never the secret or a token
        assert value.encode() not in graph


def test_maxcc_none_means_no_cloud_filter_and_out_of_range_is_refused(hub):
    assert parse_maxcc("none") is None and parse_maxcc("0.3") == 0.3
    with pytest.raises(UserError, match="--maxcc must be within 0..1"):
        parse_maxcc("1.5")
    with pytest.raises(UserError, match="--maxcc must be a fraction"):
        parse_maxcc("lots")
    times = sh.search_acquisitions(
        settings_for(hub, maxcc=None), OPTICAL, S2_GRID, parse_time("2015-01-01"), parse_time("2016-01-01")
    )
    assert len(times) == 5  # every scene, the fully cloudy ones too
    assert all("filter" not in request.body for request in hub.requests_to("/api/v1/catalog/1.0.0/search"))


FETCH_AOI = [
    "--aoi",
    "465181,5079245,466180,5080254",
    "--aoi_crs",
    "EPSG:32633",
    "--resolution",
    "10",
    "--collections",
    "optical",
    "--starttime",
    "2015-07-01",
    "--endtime",
    "2015-10-01",
    "--no_progress",
]


@pytest.mark.e2e
def test_run_where_every_request_failed_exits_1_with_a_summary(hub, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SH_CLIENT_ID", fake.CLIENT_ID)
    monkeypatch.setenv("SH_CLIENT_SECRET", fake.CLIENT_SECRET)
    hub.add_fault("500", times=None, when='"from": "2015-')  # every Process request, not the catalog
    argv = [
        "--store",
        str(tmp_path / "obs"),
        *FETCH_AOI,
        "--sh_base_url",
        hub.url,
        "--sh_token_url",
        hub.token_url,
        "--sh_max_attempts",
        "1",
        "--sh_retry_sleep",
        "0.01",
    ]
    assert fetch_command.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("rsdt_beam fetch: all 5 request(s) failed, nothing fetched") and hub.url in err[-1]


@pytest.mark.e2e
def test_server_down_names_the_url_and_the_cause(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SH_CLIENT_ID", fake.CLIENT_ID)
    monkeypatch.setenv("SH_CLIENT_SECRET", fake.CLIENT_SECRET)
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    argv = [
        "--store",
        str(tmp_path / "obs"),
        *FETCH_AOI,
        "--sh_base_url",
        url,
        "--sh_token_url",
        url + "/oauth/token",
        "--sh_max_attempts",
        "1",
    ]
    assert fetch_command.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err == f"rsdt_beam fetch: cannot get a Sentinel Hub token from {url}/oauth/token: "
        f"[Errno 111] Connection refused"
    )


@pytest.mark.e2e
def test_plan_only_counts_observations_set_aside_before_and_staging_folders_go(hub, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SH_CLIENT_ID", fake.CLIENT_ID)
    monkeypatch.setenv("SH_CLIENT_SECRET", fake.CLIENT_SECRET)
    store = tmp_path / "obs"
    argv = [
        "--store",
        str(store),
        *FETCH_AOI,
        "--sh_base_url",
        hub.url,
        "--sh_token_url",
        hub.token_url,
        "--fetch_chunk_size",
        "64",
    ]
    assert fetch_command.main(argv) == 0
    assert not os.path.exists(store / fetch.STAGING_DIR)  # emptied chunk folders are removed
    capsys.readouterr()
    assert fetch_command.main(["--plan_only", *argv]) == 0
    err = capsys.readouterr().err
    assert "3 observation(s) already stored, 2 already set aside" in err and "0 request(s) to send" in err


def test_credentials_from_the_environment_are_refused_where_workers_cannot_read_them(hub, tmp_path, capsys):
    """Dataflow's workers do not get the launcher's environment: refused at launch in one line naming the
    flags that do reach them; a Dask cluster's workers may have it: a warning, and the run goes on."""
    argv = plan_only_flags(hub, tmp_path / "obs", "optical")
    assert fetch_command.main([*DATAFLOW_FLAGS, *argv]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("rsdt_beam fetch: Sentinel Hub credentials from the environment variables")
    assert "DataflowRunner" in line and all(
        f in line for f in ("--sh_credentials_file gs://", "--sh_secret", "--sh_profile")
    )
    assert hub.log == []  # refused before any request

    dask = ["--runner", "apache_beam.runners.dask.dask_runner.DaskRunner", "--dask_client_address", "tcp://h:8786"]
    dask += ["--dask_npartitions", "2"]  # else the launch asks the (absent) scheduler for its threads
    assert fetch_command.main([*dask, *argv]) == 0
    err = capsys.readouterr().err
    assert (
        "warning: Sentinel Hub credentials from the environment variables" in err
        and "DaskRunner at tcp://h:8786" in err
    )

    path = credentials_file(tmp_path / "sh.json")
    assert fetch_command.main([*dask, *argv, "--sh_credentials_file", path]) == 0
    assert "warning" not in capsys.readouterr().err
