"""Stage 1 STAC against a local STAC API and a Range file server (tests/fake_stac.py) over real sockets.

The catalog holds COGs made from the real files of tests/data (tests/stac_catalog.py); pystac-client
and GDAL talk to the servers unmocked. Pixels are checked against independent rasterio reads of the
same COGs on disk.
"""

import contextlib
import dataclasses
import json
import math
import os
import shlex
import shutil
import time
import uuid

import numpy as np
import pytest
import rasterio
from rasterio.warp import Resampling, reproject

from rsdt_beam.acquire.stac import (
    ITEMS_TAG,
    PROFILES,
    StacAccess,
    StacParams,
    acquisitions,
    parse_stac_bands,
    read_stac_window,
    search_items,
)
from rsdt_beam.acquire.store import GeoTiffObservationReader, list_store, read_grid
from rsdt_beam.cli.commands import SCHEDULED, STAC
from rsdt_beam.cli.run import execute
from rsdt_beam.common.observations import ObservationError
from rsdt_beam.common.times import parse_time, time_name
from rsdt_beam.errors import UserError
from rsdt_beam.grid import Grid, PixelWindow
from rsdt_beam.pipelines import scheduled
from rsdt_beam.schedule.manifest import SUCCEEDED
from tests.fake_stac import FileServer, StacApi
from tests.stac_catalog import LANDSAT, build_catalog

S1_DIR = os.path.join(os.path.dirname(__file__), "data", "s1_vv_db")
WORLD = (-180.0, -90.0, 180.0, 90.0)
LANDSAT_BANDS = ("red", "nir08", "swir16")
LANDSAT_SOURCE = [
    "--stac_collections",
    "landsat-c2-l2",
    "--stac_bands",
    ",".join(LANDSAT_BANDS),
    "--maxcc",
    "0.5",
    "--aoi",
    "336375,4460595,338205,4462425",
    "--aoi_crs",
    "EPSG:32613",
    "--resolution",
    "30",
    "--no_progress",
]
LANDSAT_FLAGS = [*LANDSAT_SOURCE, "--starttime", "2008-04-01", "--endtime", "2008-09-01"]
WINDOW_FLAGS = ["--tile_size", "20", "--delta_step", "5d", "--Delta", "30d", "--omega", "2", "--Omega", "6"]


@dataclasses.dataclass
class Catalog:
    files: FileServer
    api: StacApi
    items: list
    root: str

    def local(self, href: str) -> str:
        return os.path.join(self.root, href[len(self.files.url) + 1 :])

    def item(self, item_id: str) -> dict:
        return next(i for i in self.items if i["id"] == item_id)

    def asset_requests(self) -> list:
        return [e for e in self.files.log if e.method == "GET"]


@pytest.fixture(scope="session")
def stac_catalog(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("cogs"))
    with FileServer(root) as files:
        items = build_catalog(root, files.url)
        with StacApi(items, "query") as api:
            yield Catalog(files, api, items, root)


@pytest.fixture
def catalog(stac_catalog):
    """The session's catalog with empty logs and no faults."""
    stac_catalog.files.log.clear()
    stac_catalog.api.log.clear()
    stac_catalog.files.faults.clear()
    yield stac_catalog
    stac_catalog.files.faults.clear()
    stac_catalog.files.latency = 0.0


@contextlib.contextmanager
def served_anew(catalog, items=None):
    """The catalog's files behind a new file server and API (new URLs: nothing of them in GDAL's
    process-wide cache of earlier reads): `(files, api, items)`."""
    with FileServer(catalog.root) as files:
        text = json.dumps(items if items is not None else catalog.items).replace(catalog.files.url, files.url)
        items = json.loads(text)
        with StacApi(items, "query") as api:
            yield files, api, items


def of(items, collection):
    return [i for i in items if i["collection"] == collection]


@pytest.mark.e2e
@pytest.mark.parametrize("conformance", ["query", "filter", None])
def test_search_follows_pages_and_filters_clouds_by_what_the_api_conforms_to(catalog, conformance):
    start, end = parse_time("2008-01-01"), parse_time("2009-01-01")
    with StacApi(catalog.items, conformance, page_size=2) as api:
        found = search_items(api.url, ["landsat-c2-l2"], WORLD, start, end, 0.5, {})
    landsat = of(catalog.items, "landsat-c2-l2")
    expected = sorted(i["id"] for i in landsat if i["properties"]["eo:cloud_cover"] < 50)
    assert 5 <= len(expected) < len(landsat)
    assert sorted(i["id"] for i in found) == expected
    searches = [e for e in api.log if e.path.startswith("/search")]
    served = len(expected) if conformance else len(landsat)  # without either extension the launcher filters
    assert len(searches) == math.ceil(served / 2)  # every page followed
    body = searches[0].body
    if conformance == "query":
        assert body["query"] == {"eo:cloud_cover": {"lt": 50.0}} and "filter" not in body
    elif conformance == "filter":
        assert body["filter"]["args"][1] == 50.0 and body["filter-lang"] == "cql2-json" and "query" not in body
    else:
        assert "query" not in body and "filter" not in body


@pytest.mark.e2e
def test_items_of_one_pass_are_one_acquisition_and_sar_splits_by_orbit_state(stac_catalog):
    items = of(stac_catalog.items, "sentinel-2-l1c") + of(stac_catalog.items, "sentinel-1-rtc")
    bands = dict(parse_stac_bands("blue,swir16;sentinel-1-rtc=vv", ("sentinel-2-l1c", "sentinel-1-rtc")))
    sources, rejected = acquisitions(items, bands, 60.0)
    assert not rejected
    assert [(s.modality, [p.item for p in s.parts]) for s in sources] == [
        ("sar_ascending", ["S1A_IW_GRDH_1SDV_20150309T173017_rtc"]),
        ("optical", ["S2A_33UUU_20170216_0_L1C_E", "S2A_33UUU_20170216_0_L1C_W"]),  # mosaic order: ascending id
        ("sar_descending", ["S1A_IW_GRDH_1SDV_20170309T054356_rtc"]),
        ("sar_descending", ["S1A_IW_GRDH_1SDV_20171210T054359_rtc"]),
    ]
    assert sources[1].time == parse_time("2017-02-16T10:21:01")  # the earliest item's datetime
    split, _ = acquisitions(items, bands, 1.0)  # 3 s apart: two acquisitions with a tolerance of 1 s
    assert sum(s.collection == "sentinel-2-l1c" for s in split) == 2
    _, missing = acquisitions(of(stac_catalog.items, "landsat-c2-l2"), {}, 60.0)  # the table's default bands
    assert missing and "has none of the band asset sets [['red', 'green', 'blue', 'nir08']]" in missing[0].reason
    with pytest.raises(ValueError, match="unknown collections"):
        parse_stac_bands(None, ("sentinel-3",))


def warped_reference(catalog, source, grid, resampling=Resampling.bilinear):
    """An independent read: every band file on disk reprojected onto the whole grid with
    rasterio.warp.reproject, scaled, mosaicked first-valid in the source's item order."""
    data = np.zeros((grid.height, grid.width, len(source.band_names)), np.float32)
    valid = np.zeros((grid.height, grid.width), bool)
    for part in source.parts:
        values, ok = [], np.ones_like(valid)
        for href, (scale, offset) in zip(part.bands, part.scales):
            with rasterio.open(catalog.local(href)) as src:
                out = np.zeros((grid.height, grid.width), src.dtypes[0])  # GDAL rounds into the file's dtype
                reproject(
                    rasterio.band(src, 1),
                    out,
                    dst_transform=rasterio.Affine(*grid.transform),
                    dst_crs=grid.crs,
                    resampling=resampling,
                    dst_nodata=src.nodata,
                    init_dest_nodata=True,
                )
                ok &= out != src.nodata
                values.append(out.astype(np.float32) * np.float32(scale) + np.float32(offset))
        take = ok & ~valid
        data[take] = np.stack(values, -1)[take]
        valid |= take
    return data, valid


@pytest.mark.e2e
def test_mosaic_across_two_items_equals_an_independent_warped_read(catalog):
    items = of(catalog.items, "sentinel-2-l1c")
    (source,), _ = acquisitions(items, {"sentinel-2-l1c": ("blue", "swir16")}, 60.0)
    # 15 m, off the 10 m pixel edges, across the seam of the two items (cols 700-800 of the scene: x 337000-338000)
    grid = Grid("EPSG:32633", (15.0, 0.0, 336003.0, 0.0, -15.0, 5821003.0), 90, 180)
    expected, expected_valid = warped_reference(catalog, source, grid)
    windows = [
        PixelWindow(r, min(r + 64, 90), c, min(c + 64, 180)) for r in range(0, 90, 64) for c in range(0, 180, 64)
    ]
    data = np.zeros_like(expected)
    valid = np.zeros_like(expected_valid)
    for window in windows:
        block, ok = read_stac_window(source, grid, window, StacParams(), StacAccess())
        data[window.row_start : window.row_stop, window.col_start : window.col_stop] = block
        valid[window.row_start : window.row_stop, window.col_start : window.col_stop] = ok
    assert valid.all() and np.array_equal(valid, expected_valid)
    np.testing.assert_allclose(data, expected, rtol=0, atol=1e-6)
    assert 0.05 < data[..., 0].mean() < 0.5  # DN x 1e-4 (the table's scale: L1C items carry none)
    east = {e.path.rsplit("/", 2)[1] for e in catalog.asset_requests()}
    assert east == {"S2A_33UUU_20170216_0_L1C_E", "S2A_33UUU_20170216_0_L1C_W"}
    # A window inside the east item alone never asks for the west item's assets.
    catalog.files.log.clear()
    read_stac_window(source, grid, PixelWindow(0, 10, 170, 180), StacParams(), StacAccess())
    assert {e.path.rsplit("/", 2)[1] for e in catalog.asset_requests()} == {"S2A_33UUU_20170216_0_L1C_E"}


def landsat_grid(catalog, item):
    with rasterio.open(catalog.local(item["assets"]["red"]["href"])) as src:
        return Grid(src.crs.to_string(), tuple(src.transform)[:6], src.height, src.width)


@pytest.mark.e2e
def test_landsat_qa_pixel_bits_and_raster_bands_scale(catalog):
    item = catalog.item("LT05_L2SP_035032_20080606_02_T1")  # about half cloud and shadow
    (source,), _ = acquisitions([item], {"landsat-c2-l2": LANDSAT_BANDS}, 60.0)
    grid = landsat_grid(catalog, item)
    data, valid = read_stac_window(source, grid, PixelWindow(0, grid.height, 0, grid.width), StacParams(), StacAccess())
    scene = os.path.join(LANDSAT, "LT50350322008158PAC01", "LT50350322008158PAC01_")
    with rasterio.open(scene + "fmask.tif") as f:
        fmask = f.read(1)
    raw = np.stack([rasterio.open(scene + b + ".tif").read(1) for b in ("b3", "b4", "b5")], -1)
    expected_valid = np.isin(fmask, (0, 1, 3)) & (raw != -9999).all(-1)  # fill, cloud, shadow are invalid
    assert 0.2 < expected_valid.mean() < 0.8
    assert np.array_equal(valid, expected_valid)
    np.testing.assert_allclose(data[valid], raw[valid] * np.float32(1e-4), rtol=1e-6)
    assert (data[~valid] == 0).all()


@pytest.mark.e2e
def test_sentinel2_l2a_scl_classes_and_offset(catalog):
    item = catalog.item("S2A_33UUU_20170216_0_L2A_W")
    (source,), _ = acquisitions([item], {"sentinel-2-l2a": ("blue",)}, 60.0)
    with rasterio.open(catalog.local(item["assets"]["blue"]["href"])) as src:
        grid = Grid(src.crs.to_string(), tuple(src.transform)[:6], 100, 120)  # its own 10 m grid, a corner
        blue = src.read(1, window=((0, 100), (0, 120)))
    with rasterio.open(catalog.local(item["assets"]["scl"]["href"])) as src:
        scl = src.read(1, window=((0, 100), (0, 120)))
    full = PixelWindow(0, 100, 0, 120)
    data, valid = read_stac_window(source, grid, full, StacParams(), StacAccess())
    assert np.array_equal(valid, ~np.isin(scl, (0, 1, 3, 8, 9, 10)))
    assert 0.05 < valid.mean() < 0.95
    np.testing.assert_allclose(data[valid, 0], blue[valid] * np.float32(1e-4) - np.float32(0.1), atol=1e-7)
    _, only_nodata = read_stac_window(source, grid, full, StacParams(scl_invalid=(0,)), StacAccess())
    assert only_nodata.all()  # the set of invalid classes is configurable


@pytest.mark.e2e
def test_sentinel1_rtc_nodata_linear_and_db(catalog):
    item = catalog.item("S1A_IW_GRDH_1SDV_20170309T054356_rtc")  # with a nodata wedge at its swath edge
    nothing, without_vh = acquisitions([item], {}, 60.0)  # the table's default is vv and vh
    assert not nothing and "[['vv', 'vh']]" in without_vh[0].reason
    (source,), _ = acquisitions([item], {"sentinel-1-rtc": ("vv",)}, 60.0)
    with rasterio.open(catalog.local(item["assets"]["vv"]["href"])) as src:
        grid = Grid(src.crs.to_string(), tuple(src.transform)[:6], src.height, src.width)
        linear = src.read(1)
    full = PixelWindow(0, grid.height, 0, grid.width)
    data, valid = read_stac_window(source, grid, full, StacParams(), StacAccess())
    assert np.array_equal(valid, linear != -32768) and 0.9 < valid.mean() < 1
    np.testing.assert_array_equal(data[valid, 0], linear[valid])
    db, _ = read_stac_window(source, grid, full, StacParams(sar_db=True), StacAccess())
    with rasterio.open(os.path.join(S1_DIR, "S1A__IW___D_20170309T054356_VV_grd_mli_geo_norm_db.tif")) as src:
        original = src.read(1)
    np.testing.assert_allclose(db[valid, 0], original[valid], atol=1e-4)


@pytest.mark.e2e
def test_stac_command_to_windows_skips_filtered_items_and_resumes_without_reading(catalog, tmp_path):
    store, windows = str(tmp_path / "store"), str(tmp_path / "windows")
    with served_anew(catalog) as (files, api, items):
        flags = ["--stac_api", api.url, *LANDSAT_FLAGS, "--store", store, *WINDOW_FLAGS]
        execute(STAC, [*flags, "--window_output", windows])
        landsat = of(items, "landsat-c2-l2")
        kept = [i for i in landsat if i["properties"]["eo:cloud_cover"] < 50]
        requested = {e.path.split("/")[2] for e in files.log if e.method == "GET"}
        assert requested == {i["id"] for i in kept}  # assets of filtered items never requested
        refs, _ = list_store(store)
        assert len(refs) == len(kept)
        ref = refs[0]
        with rasterio.open(ref.uri) as dataset:
            item_id = dataset.tags()[ITEMS_TAG]
            assert item_id in requested and dataset.descriptions == LANDSAT_BANDS
        assert len(open(os.path.join(windows, "windows.csv")).read().splitlines()) > 10
        metadata = json.load(open(os.path.join(windows, "metadata.json")))
        assert (metadata["bands_sar"], metadata["bands_opt"]) == (0, 3)
        described = json.load(open(os.path.join(store, "bands.json")))["optical"]
        assert described["names"] == list(LANDSAT_BANDS) and described["units"] == PROFILES["landsat-c2-l2"].units
        # The stored pixels are those of a direct read.
        item = next(i for i in items if i["id"] == item_id)
        (source,), _ = acquisitions([item], {"landsat-c2-l2": LANDSAT_BANDS}, 60.0)
        grid = read_grid(store)
        whole = PixelWindow(0, grid.height, 0, grid.width)
        expected, expected_valid = read_stac_window(source, grid, whole, StacParams(), StacAccess())
        stored, stored_valid = GeoTiffObservationReader().read(ref.uri, whole)
        assert np.array_equal(stored_valid, expected_valid) and np.array_equal(stored, expected)
        # Resume: no file is written again (nor, GDAL's cache aside, read).
        stamps = {r.uri: os.path.getmtime(r.uri) for r in refs}
        files.log.clear()
        counts = execute(STAC, [*flags, "--window_output", str(tmp_path / "windows2")]).counters
        assert counts["observations_already_converted"] == len(kept) and "convert_pixels_read" not in counts
        assert files.log == []
        assert {r.uri: os.path.getmtime(r.uri) for r in list_store(store)[0]} == stamps


def readme_scheduled_stac(api: str, store: str, root: str) -> list[str]:
    """The flags of the README's scheduled launch over the local catalog, with this test's server and folders."""
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")) as f:
        text = f.read()
    lines = []
    for line in text[text.index("python -m rsdt_beam.pipelines.scheduled --stac_api http://127.0.0.1:") :].splitlines():
        lines.append(line.rstrip().removesuffix("\\"))
        if not line.rstrip().endswith("\\"):
            break
    words = shlex.split(" ".join(lines))[3:]
    ours = {"--stac_api": api, "--store": store, "--output_root": root}
    return [ours.get(words[n - 1], word) if n else word for n, word in enumerate(words)] + ["--no_progress"]


def window_ids(folder: str) -> set[int]:
    with open(os.path.join(folder, "windows.csv")) as f:
        return {int(row.split(",")[2]) for row in f.read().splitlines()[1:]}


def item_of(entry) -> str:
    """The item id in an asset request's path (<collection>/<item>/<file>)."""
    return entry.path.split("/")[2]


@pytest.mark.e2e
def test_scheduled_launches_read_only_the_items_new_in_the_catalog(catalog, tmp_path, capsys):
    store, root = str(tmp_path / "store"), str(tmp_path / "scheduled")
    with served_anew(catalog, of(catalog.items, "landsat-c2-l2")) as (files, api, items):
        later = [i for i in items if i["properties"]["datetime"] >= "2008-06-01"]
        api.items = [i for i in items if i not in later]  # the catalog before the June items are published
        kept = {
            i["id"]: parse_time(i["properties"]["datetime"]) for i in items if i["properties"]["eo:cloud_cover"] < 50
        }
        flags = readme_scheduled_stac(api.url, store, root)  # --end 2008-06-01 --lookback 60d
        first = execute(SCHEDULED, flags).record
        start, end = parse_time(first.start), parse_time(first.end)
        read_first = {i for i, t in kept.items() if start <= t < end}
        assert first.status == SUCCEEDED and len(read_first) == 4
        assert {item_of(e) for e in files.log if e.method == "GET"} == read_first
        assert first.inputs["observations"] == first.inputs["listed_in_range"] == 4
        assert first.counts["windows_written"] > 0
        stored = {r.uri: os.path.getmtime(r.uri) for r in list_store(store)[0]}
        assert len(stored) == 4

        api.items.extend(later)  # published between the launches
        files.log.clear()
        api.log.clear()
        second = execute(SCHEDULED, [*flags, "--end", "2008-07-15"]).record
        read_second = {i for i, t in kept.items() if end <= t < parse_time(second.end)}
        assert second.status == SUCCEEDED and second.previous_run == first.run_id and len(read_second) == 4
        # Only the new items' assets are requested; the catalog is searched from the first run's start on.
        assert {item_of(e) for e in files.log if e.method == "GET"} == read_second
        searched = {e.body["datetime"] for e in api.log if e.path == "/search" and e.body}
        assert searched == {f"{first.start}/{second.end}"}
        assert (second.inputs["observations"], second.inputs["listed"], second.inputs["listed_in_range"]) == (4, 8, 4)
        assert second.late_observations == 0 and second.counts["frames_written"] == 4
        # Nothing is duplicated: the first run's observations are not written again, window ids continue.
        now = {r.uri: os.path.getmtime(r.uri) for r in list_store(store)[0]}
        assert len(now) == 8 and {uri: now[uri] for uri in stored} == stored
        ids = [window_ids(os.path.join(root, "runs", run, "windows")) for run in (first.run_id, second.run_id)]
        assert max(ids[0]) < first.carry["windows_written"] == min(ids[1]) and ids[1]

        # The scheduler retries the launch: its acquisitions are in the store, listed once, read never.
        files.log.clear()
        csv = os.path.join(root, "runs", second.run_id, "windows", "windows.csv")
        rows = open(csv).read()
        again = execute(SCHEDULED, [*flags, "--end", "2008-07-15"]).record
        assert (again.run_id, again.inputs, again.counts) == (second.run_id, second.inputs, second.counts)
        assert [e for e in files.log if e.method == "GET"] == [] and open(csv).read() == rows

        files.log.clear()
        capsys.readouterr()
        argv = [*flags, "--end", "2008-08-01"]
        assert scheduled.main(argv) == 0  # nothing new in the catalog: no failure
        report = capsys.readouterr().err.splitlines()[-1]
        assert report.startswith(f"rsdt_beam scheduled: run {time_name(parse_time(second.end))}-")
        assert f"succeeded: no new observations in [{second.end}, " in report
        assert [e for e in files.log if e.method == "GET"] == []


@pytest.mark.e2e
def test_plan_only_lists_acquisitions_and_reads_no_asset(catalog, tmp_path, capsys):
    execute(
        STAC,
        [
            "--stac_api",
            catalog.api.url,
            "--stac_collections",
            "sentinel-2-l1c",
            "--stac_bands",
            "blue,swir16",
            "--aoi",
            "336000,5815000,339000,5820000",
            "--aoi_crs",
            "EPSG:32633",
            "--resolution",
            "20",
            "--starttime",
            "2017-01-01",
            "--endtime",
            "2017-03-01",
            "--store",
            str(tmp_path / "store"),
            "--plan_only",
        ],
    )
    out = capsys.readouterr().out
    assert "2 item(s): S2A_33UUU_20170216_0_L1C_E, S2A_33UUU_20170216_0_L1C_W" in out
    assert catalog.files.log == [] and not os.path.exists(tmp_path / "store")


def faulty_items(catalog):
    """The Landsat items with one asset missing (its href names no file)."""
    items = json.loads(json.dumps(of(catalog.items, "landsat-c2-l2")))
    broken = next(i for i in items if i["id"] == "LE07_L2SP_035032_20080614_02_T1")
    broken["assets"]["nir08"]["href"] = broken["assets"]["nir08"]["href"].replace("_SR_B4.TIF", "_SR_B9.TIF")
    return items


def path_of(files, items, item_id, asset):
    return next(i for i in items if i["id"] == item_id)["assets"][asset]["href"][len(files.url) :]


@pytest.mark.e2e
def test_throttling_and_server_errors_are_retried_and_a_missing_asset_sets_its_observation_aside(catalog, tmp_path):
    store = str(tmp_path / "store")
    flags = [*LANDSAT_FLAGS, "--store", store, "--stac_retry_sleep", "0.1"]
    with served_anew(catalog, faulty_items(catalog)) as (files, api, items):
        throttled = path_of(files, items, "LT05_L2SP_035032_20080505_02_T1", "red")
        failing = path_of(files, items, "LT05_L2SP_035032_20080521_02_T1", "swir16")
        files.add_fault(throttled, 429, times=2, retry_after=1.5)
        files.add_fault(failing, 503, times=1)
        execute(STAC, ["--stac_api", api.url, *flags])
        assert [e.status for e in files.log if e.path == throttled][:3] == [429, 429, 200]  # GDAL, our HEAD, GDAL
        assert [e.status for e in files.log if e.path == failing][:2] == [503, 200]
        stored = {os.path.basename(r.uri)[:-4] for r in list_store(store)[0]}
        assert {"20080505T172000", "20080521T172000"} <= stored and len(stored) == 7
        rejected = json.load(open(os.path.join(store, "rejected", "optical_20080614T172000.json")))
        assert rejected["observation"] == "LE07_L2SP_035032_20080614_02_T1"
        assert "_SR_B9.TIF" in rejected["reason"] and "HTTP response code: 404" in rejected["reason"]
        # A re-run reads only what it lacks: the set-aside observation, whose asset is still missing.
        files.log.clear()
        counts = execute(STAC, ["--stac_api", api.url, *flags]).counters
        assert counts["observations_already_converted"] == 7 and counts["convert_blocks_failed"] == 1
        assert "convert_pixels_read" not in counts  # nothing read but the failing observation's block
        assert {e.path.split("/")[2] for e in files.log} <= {"LE07_L2SP_035032_20080614_02_T1"}


@pytest.mark.e2e
def test_an_asset_that_appears_after_a_404_is_read_by_a_resume_in_the_same_process(catalog, tmp_path):
    """GDAL's /vsicurl/ cache outlives a run: without the failed read dropped, the resume gets the old 404."""
    store = str(tmp_path / "store")
    flags = [*LANDSAT_SOURCE, "--starttime", "2008-06-10", "--endtime", "2008-06-20", "--store", store]
    with served_anew(catalog, faulty_items(catalog)) as (files, api, items):
        missing = path_of(files, items, "LE07_L2SP_035032_20080614_02_T1", "nir08")
        execute(STAC, ["--stac_api", api.url, *flags])
        assert list_store(store)[0] == [] and [e.status for e in files.requests_of(missing)] == [404]
        rejected = os.path.join(store, "rejected", "optical_20080614T172000.json")
        assert "HTTP response code: 404" in json.load(open(rejected))["reason"]
        appeared = os.path.join(catalog.root, missing.lstrip("/"))
        shutil.copy(appeared.replace("_SR_B9.TIF", "_SR_B4.TIF"), appeared)  # the asset is published late
        try:
            counts = execute(STAC, ["--stac_api", api.url, *flags]).counters
        finally:
            os.remove(appeared)
        assert counts["observations_converted"] == 1 and "convert_blocks_failed" not in counts
        assert [os.path.basename(r.uri) for r in list_store(store)[0]] == ["20080614T172000.tif"]
        assert not os.path.exists(rejected)
        assert [e.status for e in files.requests_of(missing)][:2] == [404, 200]  # asked again: HEAD, then ranges


@pytest.mark.e2e
def test_retry_after_is_waited_and_persistent_errors_are_told(catalog):
    with served_anew(catalog) as (files, _, items):
        item = next(i for i in items if i["id"] == "LT05_L2SP_035032_20080419_02_T1")
        (source,), _ = acquisitions([item], {"landsat-c2-l2": ("red",)}, 60.0)
        grid = landsat_grid(catalog, item)
        path = path_of(files, items, item["id"], "red")
        files.add_fault(path, 429, times=2, retry_after=1.5)
        began = time.monotonic()
        read_stac_window(source, grid, PixelWindow(0, 8, 0, 8), StacParams(), StacAccess(retry_sleep=0.01))
        assert time.monotonic() - began >= 1.5
    with served_anew(catalog) as (files, _, items):
        item = next(i for i in items if i["id"] == "LT05_L2SP_035032_20080419_02_T1")
        (source,), _ = acquisitions([item], {"landsat-c2-l2": ("red",)}, 60.0)
        files.add_fault(path_of(files, items, item["id"], "red"), 500, times=None)
        with pytest.raises(ObservationError, match="HTTP response code: 500"):
            read_stac_window(source, grid, PixelWindow(0, 8, 0, 8), StacParams(), StacAccess(max_attempts=2))
        assert len(files.log) == 2


@pytest.mark.e2e
def test_headers_come_from_the_environment_and_planetary_computer_signs_on_the_worker(catalog, monkeypatch):
    monkeypatch.setenv("RSDT_TEST_HEADERS", json.dumps({"Authorization": "Bearer abc"}))
    access = StacAccess(headers_env="RSDT_TEST_HEADERS")
    assert "abc" not in repr(access)  # the job graph carries the variable's name only
    with served_anew(catalog) as (files, _, items):
        item = next(i for i in items if i["id"] == "LT05_L2SP_035032_20080419_02_T1")
        (source,), _ = acquisitions([item], {"landsat-c2-l2": ("red",)}, 60.0)
        read_stac_window(source, landsat_grid(catalog, item), PixelWindow(0, 8, 0, 8), StacParams(), access)
        assert {e.authorization for e in files.log if e.method == "GET"} == {"Bearer abc"}
    monkeypatch.delenv("RSDT_TEST_HEADERS")
    with pytest.raises(UserError, match="RSDT_TEST_HEADERS is not set"):
        access.headers()

    import planetary_computer
    from planetary_computer.settings import Settings

    monkeypatch.setenv("PC_SDK_SAS_URL", catalog.api.url + "/sas/token")
    Settings.get.cache_clear()
    try:
        href = "https://pcdata.blob.core.windows.net/sentinel1-grd-rtc/a/vv.tif"
        assert StacAccess(sign="planetary_computer").href(href) == href + "?sig=pcdata-sentinel1-grd-rtc"
        assert StacAccess().href(href) == href
        assert planetary_computer.sas.TOKEN_CACHE  # one token per container, reused
    finally:
        Settings.get.cache_clear()


@pytest.mark.e2e
def test_store_and_windows_on_gcs(catalog, tmp_path):
    from tests.gcs_emulator import gcs_emulator

    with gcs_emulator(str(tmp_path / "gcs")) as gcs:
        store, windows = gcs.url("store"), gcs.url("windows")
        flags = ["--stac_api", catalog.api.url, *LANDSAT_FLAGS, "--store", store, *WINDOW_FLAGS]
        execute(STAC, [*flags, "--window_output", windows])
        stored = gcs.download_tree(store)
        written = gcs.download_tree(windows)
    kept = [i for i in of(catalog.items, "landsat-c2-l2") if i["properties"]["eo:cloud_cover"] < 50]
    assert sum(name.startswith("optical/") for name in stored) == len(kept)
    assert {"grid.json", "bands.json", "metadata.json"} <= set(stored)
    assert {"windows.csv", "metadata.json", "rejected.json"} <= set(written)
    assert any(name.endswith(".tfrecords") for name in written)


def test_bad_stac_flags_are_one_line_errors(tmp_path):
    base = ["--store", str(tmp_path / "s"), "--aoi", "0,0,1,1", "--aoi_crs", "EPSG:32633", "--resolution", "1"]
    with pytest.raises(UserError, match="--stac_api is required"):
        execute(STAC, [*base, "--starttime", "2020-01-01", "--endtime", "2020-02-01"])
    base += ["--starttime", "2020-01-01", "--endtime", "2020-02-01"]
    with pytest.raises(UserError, match="--stac_collections: unknown collections \\['sentinel-3'\\]"):
        execute(STAC, [*base, "--stac_api", "http://127.0.0.1:9", "--stac_collections", "sentinel-3"])
    with pytest.raises(UserError, match="--stac_bands: names collections not searched"):
        execute(STAC, [*base, "--stac_api", "http://127.0.0.1:9", "--stac_bands", "landsat-c2-l2=red"])
    with pytest.raises(UserError, match="--stac_scl_invalid: expected integers"):
        execute(STAC, [*base, "--stac_api", "http://127.0.0.1:9", "--stac_scl_invalid", "cloud"])
    with pytest.raises(UserError, match="--stac_api http://127.0.0.1:9: cannot open the STAC API"):
        execute(STAC, [*base, "--stac_api", "http://127.0.0.1:9"])
    scheduled_flags = ["--output_root", str(tmp_path / "r"), "--end", "2020-02-01"]
    with pytest.raises(UserError, match="--store is a flag of a STAC source: give --stac_api too"):
        execute(SCHEDULED, [*scheduled_flags, "--observations", str(tmp_path / "o"), "--store", str(tmp_path / "s")])
    with pytest.raises(UserError, match="--store is required with --stac_api"):
        execute(SCHEDULED, [*scheduled_flags, "--stac_api", "http://127.0.0.1:9"])
    with pytest.raises(UserError, match="--observations .*: with --stac_api the launch lists --store"):
        execute(SCHEDULED, [*scheduled_flags, *base[:2], "--stac_api", "http://127.0.0.1:9", "--observations", "o"])


@pytest.mark.e2e
def test_no_header_value_in_the_translated_dataflow_job(catalog, tmp_path, monkeypatch):
    """The STAC command translated by the Dataflow runner (dry run): the job names the variable that holds
    the request headers, never their value."""
    from tests.project import DATAFLOW_FLAGS, project_copy
    from tests.test_fetch import decoded

    secret = f"Bearer {uuid.uuid4().hex}"
    monkeypatch.setenv("RSDT_STAC_HEADERS", json.dumps({"Authorization": secret}))
    setup_file = os.path.join(project_copy(str(tmp_path / "project")), "setup.py")
    outcome = execute(
        STAC,
        [
            *DATAFLOW_FLAGS,
            "--setup_file",
            setup_file,
            "--stac_api",
            catalog.api.url,
            *LANDSAT_FLAGS,
            "--store",
            str(tmp_path / "store"),
            "--stac_headers_env",
            "RSDT_STAC_HEADERS",
        ],
    )
    job = outcome.result.job
    graph = decoded(job.proto_pipeline.SerializeToString()) + decoded(job.json().encode())
    assert b"StacJob" in graph and b"RSDT_STAC_HEADERS" in graph  # the pickled job, unpacked
    assert secret.encode() not in graph and secret.split()[1].encode() not in graph
