"""Convert on real archives: Landsat 7/5 + Fmask, Sentinel-1 VV dB, Sentinel-2 L1C JPEG2000 bands.

Every value is checked against a direct rasterio read of the source pixel the
grid pixel lands on; outputs' georeference against the grid.
"""

import dataclasses
import json
import os
import pickle
import shutil

import apache_beam as beam
import numpy as np
import pytest
import rasterio
import shapely
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from rsdt_beam import fs
from rsdt_beam.acquire import convert
from rsdt_beam.acquire.convert import BlockRead, ConvertPlan, ReadSourceBlocks, WriteConvertedObservations
from rsdt_beam.acquire.geotiff import (
    FINGERPRINT_TAG,
    ConvertParams,
    ConvertSource,
    Listing,
    MaskRule,
    block_windows,
    glob_sources,
    inspect_source,
    parse_divisor,
    read_manifest,
    read_source_window,
    time_from_path,
    time_pattern_regex,
)
from rsdt_beam.acquire.staging import CONVERT_DIR, block_path
from rsdt_beam.acquire.store import GeoTiffObservationReader, list_store, read_grid, write_observation
from rsdt_beam.aoi import AreaOfInterest, anchor_of, grid_for_aoi, load_aoi, mask_for_grid
from rsdt_beam.cli.commands import CONVERT, RUN
from rsdt_beam.cli.run import execute
from rsdt_beam.common.observations import ObservationError
from rsdt_beam.common.times import parse_time, parse_time_name, time_name
from rsdt_beam.grid import Grid, PixelWindow

DATA = os.path.join(os.path.dirname(__file__), "data", "convert")
LANDSAT = os.path.join(DATA, "landsat7")
S1 = os.path.join(os.path.dirname(DATA), "s1_vv_db")  # shared with the fetch tests' fake Sentinel Hub
S2 = os.path.join(DATA, "s2l1c")
S1_ASC = os.path.join(S1, "S1A__IW___A_20150309T173017_VV_grd_mli_geo_norm_db.tif")
S1_DSC = os.path.join(S1, "S1A__IW___D_20170309T054356_VV_grd_mli_geo_norm_db.tif")
S1_OTHER = os.path.join(DATA, "s1_other_grid", "S1A__IW___D_20171210T054359_VV_grd_mli_geo_norm_db.tif")
LANDSAT_PATTERN = "?????????%Y%j*"
LANDSAT_BBOX = "336375,4460595,338205,4462425"  # the scenes' own footprint, EPSG:32613
FULLY_CLOUDY = "2008-08-17T00:00:00Z"  # LE70350322008230EDC00: Fmask only cloud, shadow and fill


def landsat_listing(root=LANDSAT, mask=True):
    return glob_sources(
        [f"{root}/*/*_b3.tif", f"{root}/*/*_b4.tif", f"{root}/*/*_b5.tif"],
        "optical",
        LANDSAT_PATTERN,
        f"{root}/*/*_fmask.tif" if mask else None,
    )


def landsat_grid():
    aoi = load_aoi(LANDSAT_BBOX, bbox_crs="EPSG:32613")
    with rasterio.open(landsat_listing().sources[0].bands[0]) as dataset:
        return aoi, grid_for_aoi(aoi, 30.0, anchor=anchor_of(tuple(dataset.transform), 30.0))


def full(grid):
    return PixelWindow(0, grid.height, 0, grid.width)


def source_pixel(path, grid, row, col, band=1):
    """Direct read of the source pixel under the centre of grid pixel (row, col) (same CRS)."""
    a, _, c, _, e, f = grid.transform
    x, y = c + (col + 0.5) * a, f + (row + 0.5) * e
    with rasterio.open(path) as dataset:
        r, q = dataset.index(x, y)
        if not (0 <= r < dataset.height and 0 <= q < dataset.width):
            return None
        return dataset.read(band, window=((r, r + 1), (q, q + 1)))[0, 0]


# --- listing ---------------------------------------------------------------------------------------


def test_time_patterns_of_real_names():
    landsat = time_pattern_regex(LANDSAT_PATTERN)
    assert time_from_path(f"{LANDSAT}/LE70350322008118EDC00/LE70350322008118EDC00_b3.tif", landsat) == parse_time(
        "2008-04-27"
    )
    assert time_from_path(S1_ASC, time_pattern_regex("%Y%m%dT%H%M%S")) == parse_time("2015-03-09T17:30:17")
    assert time_from_path("T33UUU_20170216T102101_B02.jp2", time_pattern_regex("*_%Y%m%dT%H%M%S_*")) == parse_time(
        "2017-02-16T10:21:01"
    )
    with pytest.raises(ValueError, match="no part of the path"):
        time_from_path("/data/scene_b3.tif", landsat)
    with pytest.raises(ValueError, match="not a valid time"):
        time_from_path("x_20171340T000000_y.tif", time_pattern_regex("%Y%m%dT%H%M%S"))


def test_landsat_glob_groups_band_and_mask_files_by_time():
    listing = landsat_listing()
    assert listing.rejected == []
    assert len(listing.sources) == 11
    first = listing.sources[0]
    assert first.time == parse_time("2008-04-19")  # LT50350322008110: 2008, day 110
    assert [os.path.basename(p) for p in first.bands] == [f"LT50350322008110PAC01_b{b}.tif" for b in (3, 4, 5)]
    assert os.path.basename(first.mask) == "LT50350322008110PAC01_fmask.tif"


def test_glob_sets_aside_missing_mask_duplicates_and_unparseable_names(tmp_path):
    root = tmp_path / "lsts"
    shutil.copytree(LANDSAT, root)
    os.remove(root / "LE70350322008118EDC00" / "LE70350322008118EDC00_fmask.tif")
    # A reprocessed copy of one scene: same date, so the same modality and time stamp.
    shutil.copytree(root / "LE70350322008150EDC00", root / "LE70350322008150EDC01")
    (root / "broken").mkdir()
    shutil.copy(root / "LE70350322008166EDC00" / "LE70350322008166EDC00_b3.tif", root / "broken" / "scene_b3.tif")
    listing = landsat_listing(str(root))
    reasons = {r.time: r.reason for r in listing.rejected if r.time}
    assert "missing mask file" in reasons["2008-04-27T00:00:00Z"]
    assert "two files with the same modality and time stamp" in reasons["2008-05-29T00:00:00Z"]
    unparseable = [r for r in listing.rejected if r.time is None]
    assert len(unparseable) == 1 and "time stamp not parseable" in unparseable[0].reason
    assert len(listing.sources) == 9


def test_manifest_csv_and_json_lines(tmp_path):
    csv_path = tmp_path / "archive.csv"
    csv_path.write_text(
        "modality,time,bands,mask,band_selection\n"
        f"sar_ascending,2015-03-09T17:30:17,{S1_ASC},,\n"
        f"sar_descending,2017-03-09T05:43:56Z,{S1_DSC},,1\n"
        "optical,yesterday,x.tif,,\n"
        "optical,2017-01-01,,,\n"
    )
    listing = read_manifest(str(csv_path))
    assert [(s.modality, s.time) for s in listing.sources] == [
        ("sar_ascending", parse_time("2015-03-09T17:30:17")),
        ("sar_descending", parse_time("2017-03-09T05:43:56")),
    ]
    assert listing.sources[1].band_selection == (1,)
    assert [r.observation for r in listing.rejected] == [f"{csv_path} line 4", f"{csv_path} line 5"]
    assert "not an ISO 8601 time" in listing.rejected[0].reason and "missing bands" in listing.rejected[1].reason

    shutil.copy(S1_ASC, tmp_path / "asc.tif")
    jsonl = tmp_path / "archive.jsonl"
    jsonl.write_text(
        json.dumps(
            {"modality": "sar_ascending", "time": "2015-03-09T17:30:17", "bands": ["asc.tif"], "band_selection": [1]}
        )
        + "\n{broken\n"
    )
    listing = read_manifest(str(jsonl))
    assert listing.sources == [
        ConvertSource("sar_ascending", parse_time("2015-03-09T17:30:17"), (str(tmp_path / "asc.tif"),), None, (1,))
    ]
    assert "not JSON" in listing.rejected[0].reason

    # Two rows for one modality and time stamp: one is kept, the other set aside naming it.
    twice = tmp_path / "twice.csv"
    twice.write_text(
        "modality,time,bands\n"
        f"sar_descending,2017-03-09T05:43:56,{S1_DSC}\nsar_descending,2017-03-09T05:43:56,{S1_ASC}\n"
    )
    aoi = load_aoi(",".join(str(v) for v in rasterio.open(S1_ASC).bounds), bbox_crs="EPSG:32631")
    plan = ConvertPlan.create(
        str(tmp_path / "store"), grid_for_aoi(aoi, 20.0), read_manifest(str(twice)), ConvertParams.create(), aoi
    )
    assert [s.bands[0] for s in plan.sources] == [S1_ASC]
    assert plan.rejected[0].observation == S1_DSC and f"{S1_ASC} is kept" in plan.rejected[0].reason


# --- values ----------------------------------------------------------------------------------------


def test_mask_rules():
    fmask = np.array([0, 1, 2, 3, 4, 255], dtype=np.uint8)
    assert MaskRule.parse("fmask").decode(fmask).tolist() == [True, True, False, False, False, False]
    assert MaskRule.parse("values:0,1").decode(fmask).tolist() == [True, True, False, False, False, False]
    assert MaskRule.parse("nonzero").decode(fmask).tolist() == [False, True, True, True, True, True]
    assert MaskRule.parse("bits:0,2").decode(np.array([0, 1, 2, 4, 8])).tolist() == [True, False, True, False, True]
    scl = np.arange(12)
    assert np.flatnonzero(MaskRule.parse("scl").decode(scl)).tolist() == [4, 5, 6, 7, 11]
    rule = MaskRule.parse("function:numpy:isfinite")
    assert rule.decode(np.array([1.0, np.nan])).tolist() == [True, False]
    with pytest.raises(ValueError, match="unknown mask rule"):
        MaskRule.parse("clouds")


def test_divisors_per_modality():
    assert parse_divisor("255") == {"sar_ascending": 255.0, "sar_descending": 255.0, "optical": 255.0}
    assert parse_divisor("optical=10000,sar=1") == {"sar_ascending": 1.0, "sar_descending": 1.0, "optical": 10000.0}
    with pytest.raises(ValueError, match="unknown modality"):
        parse_divisor("radar=1")
    with pytest.raises(ValueError, match="non-zero"):
        parse_divisor("0")


def test_landsat_on_its_own_grid_equals_direct_reads():
    aoi, grid = landsat_grid()
    assert grid.transform == (30.0, 0.0, 336375.0, 0.0, -30.0, 4462425.0) and (grid.height, grid.width) == (61, 61)
    params = ConvertParams.create(divisor=10000, mask_rule="fmask")
    for source in landsat_listing().sources[:4]:
        data, valid = read_source_window(source, grid, full(grid), params)
        with rasterio.open(source.mask) as m:
            fmask = m.read(1)
        expected_valid = np.isin(fmask, (0, 1))
        for path in source.bands:
            with rasterio.open(path) as dataset:
                raw = dataset.read(1)
                expected_valid &= raw != dataset.nodata
        np.testing.assert_array_equal(valid, expected_valid)
        for k, path in enumerate(source.bands):
            with rasterio.open(path) as dataset:
                raw = dataset.read(1).astype(np.float32) / np.float32(10000)
            np.testing.assert_array_equal(data[..., k][valid], raw[valid])
        assert (data[~valid] == 0).all()


def test_landsat_window_reads_assemble_to_the_whole():
    _, grid = landsat_grid()
    params = ConvertParams.create(divisor=10000, mask_rule="fmask")
    source = landsat_listing().sources[1]
    whole = read_source_window(source, grid, full(grid), params)
    windows = block_windows(grid, 20)
    assert len(windows) == 16 and windows[-1] == PixelWindow(60, 61, 60, 61)
    for w in windows:
        data, valid = read_source_window(source, grid, w, params)
        np.testing.assert_array_equal(data, whole[0][w.row_start : w.row_stop, w.col_start : w.col_stop])
        np.testing.assert_array_equal(valid, whole[1][w.row_start : w.row_stop, w.col_start : w.col_stop])


def test_sentinel1_warped_onto_a_snapped_grid_nearest_and_db_to_linear():
    with rasterio.open(S1_ASC) as dataset:
        left, bottom, right, top = dataset.bounds
    aoi = load_aoi(f"{left},{bottom},{right},{top}", bbox_crs="EPSG:32631")
    grid = grid_for_aoi(aoi, 20.0)
    assert grid.transform[2] == 620040.0  # snapped: the source's 620048.24 origin is no multiple of 20
    params = ConvertParams.create(divisor="sar=1", resampling="nearest", db_to_linear=True)
    for path in (S1_ASC, S1_DSC):
        source = ConvertSource("sar_ascending", 0.0, (path,))
        data, valid = read_source_window(source, grid, full(grid), params)
        rng = np.random.default_rng(1)
        for row, col in zip(rng.integers(0, grid.height, 200), rng.integers(0, grid.width, 200)):
            db = source_pixel(path, grid, row, col)
            if db is None or db == -99.0:
                assert not valid[row, col]
            else:
                assert valid[row, col]
                assert data[row, col, 0] == pytest.approx(10.0 ** (db / 10.0), rel=1e-5)
    # The third file lies 24 km away: it does not overlap this area.
    with pytest.raises(ObservationError, match="does not overlap the area"):
        inspect_source(ConvertSource("sar_descending", 0.0, (S1_OTHER,)), grid)


def bilinear_from_source(path, grid, row, col):
    """Bilinear interpolation of the 2 x 2 source pixels around grid pixel (row, col)'s centre, read
    directly (None where one of them is nodata or outside)."""
    a, _, c, _, e, f = grid.transform
    x, y = c + (col + 0.5) * a, f + (row + 0.5) * e
    with rasterio.open(path) as dataset:
        t = dataset.transform
        fc, fr = (x - t.c) / t.a - 0.5, (y - t.f) / t.e - 0.5
        c0, r0 = int(np.floor(fc)), int(np.floor(fr))
        if not (0 <= r0 < dataset.height - 1 and 0 <= c0 < dataset.width - 1):
            return None
        p = dataset.read(1, window=((r0, r0 + 2), (c0, c0 + 2))).astype(np.float64)
        if (p == dataset.nodata).any():
            return None
    dx, dy = fc - c0, fr - r0
    return p[0, 0] * (1 - dx) * (1 - dy) + p[0, 1] * dx * (1 - dy) + p[1, 0] * (1 - dx) * dy + p[1, 1] * dx * dy


def test_sentinel1_other_grid_warped_onto_common_grid_bilinear():
    # A 40 m grid over both footprints; the third file is warped onto it (bilinear, dB kept).
    aoi = load_aoi("620000,4802900,649800,4830200", bbox_crs="EPSG:32631")
    grid = grid_for_aoi(aoi, 40.0)
    params = ConvertParams.create(divisor=1)
    data, valid = read_source_window(ConvertSource("sar_descending", 0.0, (S1_OTHER,)), grid, full(grid), params)
    assert valid.sum() > 10000
    rows, cols = np.nonzero(valid)
    rng = np.random.default_rng(3)
    checked = 0
    for k in rng.choice(len(rows), 300, replace=False):
        expected = bilinear_from_source(S1_OTHER, grid, rows[k], cols[k])
        if expected is not None:
            assert data[rows[k], cols[k], 0] == pytest.approx(expected, abs=1e-4)
            checked += 1
    assert checked > 250
    # Nothing valid where the file has no data: the north-west of the grid is the other two files' area.
    assert not valid[: grid.height // 3, : grid.width // 3].any()


def test_sentinel2_bands_at_10_20_60_m_resampled_onto_one_10_m_grid():
    names = ["B02", "B05", "B11", "B01"]
    paths = [os.path.join(S2, f"T33UUU_20170216T102101_{b}.jp2") for b in names]
    aoi = load_aoi("333000,5816000,337000,5819000", bbox_crs="EPSG:32633")
    grid = grid_for_aoi(aoi, 10.0)
    assert (grid.height, grid.width) == (300, 400)
    source = ConvertSource("optical", parse_time_name("20170216T102101"), tuple(paths))
    header = inspect_source(source, grid)
    assert header.bands == 4
    data, valid = read_source_window(
        source, grid, full(grid), ConvertParams.create(divisor=10000, resampling="nearest")
    )
    assert data.shape == (300, 400, 4) and valid.all()
    rng = np.random.default_rng(2)
    for row, col in zip(rng.integers(0, 300, 100), rng.integers(0, 400, 100)):
        for k, path in enumerate(paths):
            assert data[row, col, k] == np.float32(source_pixel(path, grid, row, col)) / np.float32(10000)
    # Band selection: 1-based over the concatenated bands of all files.
    selected = ConvertSource("optical", source.time, tuple(paths), band_selection=(4, 1))
    picked, _ = read_source_window(
        selected, grid, PixelWindow(0, 10, 0, 10), ConvertParams.create(divisor=10000, resampling="nearest")
    )
    np.testing.assert_array_equal(picked, data[:10, :10][..., [3, 0]])
    # Bilinear 20 m -> 10 m stays within the neighbours' range.
    smooth, _ = read_source_window(source, grid, full(grid), ConvertParams.create(divisor=10000))
    np.testing.assert_array_equal(smooth[..., 0], data[..., 0])  # 10 m band sits on the grid: copied
    assert abs(smooth[..., 1].mean() - data[..., 1].mean()) < 0.01 * data[..., 1].mean()


def test_aoi_polygon_clips_validity_of_the_bounding_box():
    _, grid = landsat_grid()
    left, bottom, right, top = grid.bounds
    triangle = AreaOfInterest(shapely.Polygon([(left, bottom), (right, bottom), (left, top)]), "EPSG:32613")
    params = ConvertParams.create(divisor=10000, mask_rule="fmask")
    source = landsat_listing().sources[0]
    unclipped, valid_box = read_source_window(source, grid, full(grid), params)
    area = mask_for_grid(triangle, grid)
    assert 0.45 < area.mean() < 0.55 and area[-1, 0] and not area[0, -1]
    clipped, valid = read_source_window(source, grid, full(grid), params, area)
    np.testing.assert_array_equal(valid, valid_box & area)
    np.testing.assert_array_equal(clipped[valid], unclipped[valid])


def test_bad_files_are_clear_errors(tmp_path):
    _, grid = landsat_grid()
    truncated = tmp_path / "truncated_b3.tif"
    truncated.write_bytes(
        open(os.path.join(LANDSAT, "LE70350322008118EDC00", "LE70350322008118EDC00_b3.tif"), "rb").read()[:200]
    )
    with pytest.raises(ObservationError, match="band file is truncated or unreadable: .*TIFFReadDirectory"):
        inspect_source(ConvertSource("optical", 0.0, (str(truncated),)), grid)
    source = landsat_listing().sources[0]
    cut_mask = tmp_path / "cut_fmask.tif"  # opens, but its CRS tags and pixels are gone
    cut_mask.write_bytes(open(source.mask, "rb").read()[:300])
    with pytest.raises(ObservationError, match="mask file is truncated or unreadable: .*Read error at scanline"):
        inspect_source(ConvertSource("optical", 0.0, source.bands, str(cut_mask)), grid)
    missing = ConvertSource("optical", 0.0, source.bands, str(tmp_path / "nothing_fmask.tif"))
    with pytest.raises(ObservationError, match="mask file does not exist"):
        inspect_source(missing, grid)
    with pytest.raises(ObservationError, match="band selection"):
        inspect_source(ConvertSource("optical", 0.0, source.bands, band_selection=(4,)), grid)


# --- Beam ------------------------------------------------------------------------------------------


def bad_landsat_archive(root):
    """The real Landsat subset plus: a truncated band file, a scene with a fourth band file, a missing mask."""
    shutil.copytree(LANDSAT, root)
    b3 = root / "LT50350322008126PAC01" / "LT50350322008126PAC01_b3.tif"
    b3.write_bytes(b3.read_bytes()[:3029])  # header intact, pixels cut: fails at the read
    os.remove(root / "LT50350322008142PAC01" / "LT50350322008142PAC01_fmask.tif")
    listing = landsat_listing(str(root))
    sources = []
    for source in listing.sources:
        if source.time == parse_time("2008-06-14"):  # LE70350322008166: one band more than the others
            source = ConvertSource(source.modality, source.time, source.bands + source.bands[:1], source.mask)
        sources.append(source)
    return Listing(sources, listing.rejected)


@pytest.mark.e2e
def test_convert_transform_writes_store_sets_aside_bad_and_skips_on_rerun(tmp_path):
    store = str(tmp_path / "store")
    aoi, grid = landsat_grid()
    listing = bad_landsat_archive(tmp_path / "lsts")
    params = ConvertParams.create(divisor=10000, mask_rule="fmask")
    plan = ConvertPlan.create(store, grid, listing, params, aoi, block_size=32)
    assert dict(plan.job.bands) == {"optical": 3}
    good = ["2008-04-19", "2008-04-27", "2008-05-29", "2008-06-06", "2008-06-22", "2008-06-30", "2008-07-08"]
    bad = {
        "2008-05-05": "band file is truncated or unreadable",
        "2008-05-21": "missing mask file",
        "2008-06-14": "has 4 bands but optical observations of this run have 3",
        FULLY_CLOUDY[:10]: "fully masked",
    }

    def check(refs_and_rejections):
        refs, rejections = refs_and_rejections
        assert_that(
            refs | beam.Map(lambda r: (r.modality, r.time)),
            equal_to([("optical", parse_time(t)) for t in good]),
            label="refs",
        )
        assert_that(rejections | beam.Map(lambda r: r.time[:10]), equal_to(list(bad)), label="rejections")

    with BeamTestPipeline() as pipeline:
        check(plan.expand(pipeline))

    refs, rejected = list_store(store)
    assert rejected == [] and len(refs) == len(good)
    assert read_grid(store).matches(grid)
    folder = os.path.join(store, "rejected")
    recorded = {
        entry["time"][:10]: entry["reason"]
        for entry in (json.load(open(os.path.join(folder, n))) for n in os.listdir(folder))
    }
    assert set(recorded) == set(bad)
    for name, reason in bad.items():
        assert reason in recorded[name]
    # Outputs: georeference of the grid, values of the direct reads, validity of Fmask + nodata.
    for ref in refs:
        source = next(s for s in plan.sources if s.time == ref.time)
        with rasterio.open(ref.uri) as out:
            assert out.crs.to_string() == "EPSG:32613" and tuple(out.transform)[:6] == grid.transform
            assert out.tags()[FINGERPRINT_TAG] == plan.job.fingerprint(source)
        data, valid = GeoTiffObservationReader().read(ref.uri, full(grid))
        with rasterio.open(source.mask) as m:
            expected_valid = np.isin(m.read(1), (0, 1))
        with rasterio.open(source.bands[1]) as b4:
            nir = b4.read(1)
        expected_valid &= nir != -9999
        np.testing.assert_array_equal(valid[expected_valid], True)
        np.testing.assert_array_equal(data[..., 1][valid], nir[valid].astype(np.float32) / np.float32(10000))
    mtimes = {ref.uri: os.stat(ref.uri).st_mtime_ns for ref in refs}
    assert not os.path.exists(os.path.join(store, CONVERT_DIR))  # every staged block removed

    # Re-run: the same observations come back without being written again; a block a killed run staged
    # for an observation it then finished is removed.
    leftover = block_path(store, CONVERT_DIR, "optical", refs[0].time, PixelWindow(0, 32, 0, 32))
    os.makedirs(os.path.dirname(leftover))
    open(leftover, "wb").close()
    with BeamTestPipeline() as pipeline:
        check(ConvertPlan.create(store, grid, listing, params, aoi, block_size=32).expand(pipeline))
    assert {ref.uri: os.stat(ref.uri).st_mtime_ns for ref in list_store(store)[0]} == mtimes
    assert not os.path.exists(os.path.join(store, CONVERT_DIR))
    assert not [n for n in os.listdir(os.path.join(store, "optical")) if n.startswith(".")]

    # Another divisor is another fingerprint: converted again.
    other = ConvertPlan.create(store, grid, listing, ConvertParams.create(divisor=255, mask_rule="fmask"), aoi)
    with BeamTestPipeline() as pipeline:
        other.expand(pipeline)
    assert all(os.stat(uri).st_mtime_ns != t for uri, t in mtimes.items())


def one_landsat_job(store, time="2008-04-27", block_size=20):
    aoi, grid = landsat_grid()
    source = next(s for s in landsat_listing().sources if s.time == parse_time(time))
    params = ConvertParams.create(divisor=10000, mask_rule="fmask")
    plan = ConvertPlan.create(store, grid, Listing([source], []), params, aoi, block_size=block_size)
    return plan.job, source, plan.band_names["optical"]


@pytest.mark.e2e
def test_blocks_cross_the_group_by_key_as_references_and_staged_blocks_go_after_the_write(tmp_path):
    """What convert shuffles per observation is a BlockRead per block (window, staged path, valid count),
    no pixels: the staged blocks are the pixels' only route to the writer, and are removed after it."""
    store = str(tmp_path / "store")
    job, source, names = one_landsat_job(store)

    def references_only(elements):
        assert len(elements) == 16  # 61 x 61 px in 20 px blocks
        for key, read in elements:
            assert key == ("optical", source.time) and isinstance(read, BlockRead)
            assert not any(isinstance(getattr(read, f.name), np.ndarray) for f in dataclasses.fields(read))
            assert len(pickle.dumps(read)) < 2000
            assert (read.path is not None) == (read.valid_pixels > 0)
            if read.path is not None:
                assert read.path == block_path(store, CONVERT_DIR, "optical", source.time, read.window)

    with BeamTestPipeline() as pipeline:
        blocks = pipeline | beam.Create([(source, names)]) | ReadSourceBlocks(job)
        assert_that(blocks, references_only)
        blocks | WriteConvertedObservations(job)
    assert fs.list_files(os.path.join(store, CONVERT_DIR)) == []  # folders go when the store is finished
    data, valid = GeoTiffObservationReader().read(list_store(store)[0][0].uri, full(job.grid))
    whole = read_source_window(source, job.grid, full(job.grid), job.params)
    np.testing.assert_array_equal(data, whole[0])
    np.testing.assert_array_equal(valid, whole[1])


def read_blocks(job, source, names):
    reader = convert._ReadBlock(job)
    reader.setup()
    return [read for w in block_windows(job.grid, job.block_size) for _, read in reader.process(((source, names), w))]


def test_fully_masked_is_told_by_the_counts_with_no_block_staged(tmp_path):
    store = str(tmp_path / "store")
    job, source, names = one_landsat_job(store, FULLY_CLOUDY[:10])
    reads = read_blocks(job, source, names)
    assert len(reads) == 16 and all(read.path is None and read.valid_pixels == 0 for read in reads)
    assert not os.path.exists(os.path.join(store, CONVERT_DIR))
    [(tag, rejection)] = convert._WriteObservation(job).process((("optical", source.time), reads))
    assert tag == convert.RECORDED and rejection.reason.startswith("fully masked")
    assert os.listdir(os.path.join(store, "rejected")) == [f"optical_{time_name(source.time)}.json"]


def test_a_write_missing_a_block_publishes_nothing_and_a_retry_after_the_write_takes_the_stored_file(tmp_path):
    store = str(tmp_path / "store")
    job, source, names = one_landsat_job(store)
    reads = read_blocks(job, source, names)
    key = ("optical", source.time)
    lost = next(read.path for read in reversed(reads) if read.path is not None)
    kept = open(lost, "rb").read()
    os.remove(lost)  # the last block to write is gone: the file was half written when it failed
    with pytest.raises(OSError):
        list(convert._WriteObservation(job).process((key, reads)))
    assert os.listdir(os.path.join(store, "optical")) == []  # neither the file nor its temporary
    with open(lost, "wb") as f:
        f.write(kept)
    [(tag, ref)] = convert._WriteObservation(job).process((key, reads))
    assert tag == convert.WRITTEN and os.listdir(os.path.join(store, "optical")) == [os.path.basename(ref.uri)]
    assert not [p for p in (read.path for read in reads) if p is not None and os.path.exists(p)]
    written = os.stat(ref.uri).st_mtime_ns
    # A retried bundle of the same write, after this attempt removed the staged blocks: the stored file is it.
    [(tag, again)] = convert._WriteObservation(job).process((key, reads))
    assert tag == convert.WRITTEN and again.uri == ref.uri and os.stat(ref.uri).st_mtime_ns == written


@pytest.mark.e2e
def test_store_with_another_grid_is_refused(tmp_path):
    store = str(tmp_path / "store")
    aoi, grid = landsat_grid()
    plan = ConvertPlan.create(store, grid, Listing(landsat_listing().sources[:1], []), ConvertParams.create(), aoi)
    with BeamTestPipeline() as pipeline:
        plan.expand(pipeline)
    shifted = Grid(grid.crs, (30.0, 0.0, 336405.0, 0.0, -30.0, 4462425.0), grid.height, grid.width)
    with pytest.raises(ValueError, match="another grid"):
        ConvertPlan.create(store, shifted, landsat_listing(), ConvertParams.create(), aoi)


# --- end to end ------------------------------------------------------------------------------------

LANDSAT_FLAGS = [
    "--aoi",
    LANDSAT_BBOX,
    "--aoi_crs",
    "EPSG:32613",
    "--resolution",
    "30",
    "--align_to",
    os.path.join(LANDSAT, "LE70350322008118EDC00", "LE70350322008118EDC00_b3.tif"),
    "--band_files",
    f"{LANDSAT}/*/*_b3.tif,{LANDSAT}/*/*_b4.tif,{LANDSAT}/*/*_b5.tif",
    "--mask_files",
    f"{LANDSAT}/*/*_fmask.tif",
    "--mask_rule",
    "fmask",
    "--time_pattern",
    LANDSAT_PATTERN,
    "--divisor",
    "10000",
    "--no_progress",
]
STACK_WINDOW_FLAGS = [
    "--starttime",
    "2008-04-01",
    "--endtime",
    "2008-09-01",
    "--delta_step",
    "8d",
    "--tile_size",
    "24",
    "--deadzone",
    "2",
    "--Delta",
    "40d",
    "--omega",
    "2",
    "--Omega",
    "5",
]


@pytest.mark.e2e
def test_landsat_series_fused_to_windows_equals_convert_then_stack_and_window(tmp_path):
    store = str(tmp_path / "store")
    fused, separate = tmp_path / "fused", tmp_path / "separate"
    execute(
        CONVERT,
        [
            "--store",
            store,
            *LANDSAT_FLAGS,
            *STACK_WINDOW_FLAGS,
            "--stack_output",
            str(fused / "stack"),
            "--window_output",
            str(fused / "windows"),
        ],
    )
    refs, _ = list_store(store)
    assert len(refs) == 10
    rejected = json.load(open(fused / "windows" / "rejected.json"))
    assert [(r["time"], r["reason"][:12]) for r in rejected] == [(FULLY_CLOUDY, "fully masked")]
    metadata = json.load(open(fused / "stack" / "metadata.json"))
    assert (metadata["bands_sar"], metadata["bands_opt"]) == (0, 3)
    assert Grid.from_json(metadata["grid"]).matches(read_grid(store))
    assert len((fused / "windows" / "windows.csv").read_text().splitlines()) > 10

    # The store alone through the existing Stage 2+3 pipeline gives the same stacks and windows.
    execute(
        RUN,
        [
            "--observations",
            store,
            *STACK_WINDOW_FLAGS,
            "--stack_output",
            str(separate / "stack"),
            "--window_output",
            str(separate / "windows"),
            "--no_progress",
        ],
    )
    for folder in ("stack", "windows"):
        names = sorted(n for n in os.listdir(fused / folder) if n.endswith((".tfrecords", ".csv")))
        assert names and names == sorted(n for n in os.listdir(separate / folder) if n.endswith((".tfrecords", ".csv")))
        for name in names:
            assert (fused / folder / name).read_bytes() == (separate / folder / name).read_bytes(), name


@pytest.mark.e2e
def test_sentinel1_manifest_command_warps_and_sets_aside_the_far_file(tmp_path):
    manifest = tmp_path / "s1.jsonl"
    manifest.write_text(
        "\n".join(
            json.dumps(row)
            for row in [
                {"modality": "sar_ascending", "time": "2015-03-09T17:30:17", "bands": S1_ASC},
                {"modality": "sar_descending", "time": "2017-03-09T05:43:56", "bands": S1_DSC},
                {"modality": "sar_descending", "time": "2017-12-10T05:43:59", "bands": S1_OTHER},
            ]
        )
    )
    store = str(tmp_path / "store")
    with rasterio.open(S1_ASC) as dataset:
        bounds = ",".join(str(v) for v in dataset.bounds)
    execute(
        CONVERT,
        [
            "--store",
            store,
            "--manifest",
            str(manifest),
            "--aoi",
            bounds,
            "--aoi_crs",
            "EPSG:32631",
            "--resolution",
            "20",
            "--divisor",
            "sar=1",
            "--db_to_linear",
            "--no_progress",
        ],
    )
    refs, _ = list_store(store)
    assert sorted(r.modality for r in refs) == ["sar_ascending", "sar_descending"]
    grid = read_grid(store)
    for ref in refs:
        with rasterio.open(ref.uri) as out:
            assert out.crs.to_string() == "EPSG:32631" and tuple(out.transform)[:6] == grid.transform
            assert (out.height, out.width) == (grid.height, grid.width) == (218, 269)
        data, valid = GeoTiffObservationReader().read(ref.uri, full(grid))
        assert valid.mean() > 0.9 and (data[valid] > 0).all()  # linear power is positive
    entry = json.load(open(os.path.join(store, "rejected", "sar_descending_20171210T054359.json")))
    assert "does not overlap the area" in entry["reason"]


@pytest.mark.e2e
def test_archive_and_store_on_gcs(tmp_path):
    """gs:// band files (listed by glob through Beam's GCS filesystem) to a gs:// store, equal to a local run."""
    from tests.gcs_emulator import gcs_emulator

    with rasterio.open(S1_ASC) as dataset:
        bounds = ",".join(str(v) for v in dataset.bounds)
    flags = [
        "--aoi",
        bounds,
        "--aoi_crs",
        "EPSG:32631",
        "--resolution",
        "20",
        "--archive_modality",
        "sar_descending",
        "--divisor",
        "1",
        "--time_pattern",
        "*_%Y%m%dT%H%M%S_*",
        "--no_progress",
    ]
    archive, local = tmp_path / "archive", str(tmp_path / "local")
    archive.mkdir()
    for path in (S1_DSC, S1_OTHER):
        shutil.copy(path, archive)
    execute(CONVERT, ["--store", local, "--band_files", f"{archive}/*_D_*.tif", *flags])
    with gcs_emulator(str(tmp_path / "gcs")) as gcs:
        gcs.upload_tree(str(archive), gcs.url("archive"))
        store = gcs.url("store")
        execute(CONVERT, ["--store", store, "--band_files", gcs.url("archive") + "/*_D_*.tif", *flags])
        files = gcs.download_tree(store)
    assert sorted(files) == [
        "bands.json",
        "grid.json",
        "metadata.json",
        "rejected/sar_descending_20171210T054359.json",
        "rsdt_run.json",
        "sar_descending/20170309T054356.tif",
    ]
    described = json.loads(files["bands.json"])["sar_descending"]  # the store's model card, for Stage 2
    assert described["preprocessing"]["divisor"] == 1.0 and described["names"] == [
        "S1A__IW___D_20170309T054356_VV_grd_mli_geo_norm_db.tif:1"
    ]  # no band description: file:band
    with rasterio.MemoryFile(files["sar_descending/20170309T054356.tif"]) as memory, memory.open() as remote:
        with rasterio.open(os.path.join(local, "sar_descending", "20170309T054356.tif")) as here:
            np.testing.assert_array_equal(remote.read(), here.read())
            np.testing.assert_array_equal(remote.dataset_mask(), here.dataset_mask())
            assert remote.tags()[FINGERPRINT_TAG] != here.tags()[FINGERPRINT_TAG]  # other source URIs


@pytest.mark.e2e
def test_clip_to_aoi_polygon_in_the_pipeline(tmp_path):
    _, grid = landsat_grid()
    left, bottom, right, top = grid.bounds
    triangle = AreaOfInterest(shapely.Polygon([(left, bottom), (right, bottom), (left, top)]), "EPSG:32613")
    store = str(tmp_path / "store")
    sources = landsat_listing().sources[:2]
    plan = ConvertPlan.create(
        store,
        grid,
        Listing(sources, []),
        ConvertParams.create(divisor=10000, mask_rule="fmask", clip_to_aoi=True),
        triangle,
    )
    with BeamTestPipeline() as pipeline:
        plan.expand(pipeline)
    area = mask_for_grid(triangle, grid)
    for source in sources:
        path = os.path.join(store, "optical", time_name(source.time) + ".tif")
        _, valid = GeoTiffObservationReader().read(path, full(grid))
        _, unclipped = read_source_window(source, grid, full(grid), ConvertParams.create(mask_rule="fmask"))
        np.testing.assert_array_equal(valid, unclipped & area)


@pytest.mark.e2e
def test_output_dtype_int16_keeps_raw_landsat_values(tmp_path):
    """`--output_dtype int16 --divisor 1`: the archive's integers stored as they are, read back as float32."""
    store = str(tmp_path / "store")
    aoi, grid = landsat_grid()
    listing = landsat_listing()
    listing = Listing(listing.sources[:2], [])
    plan = ConvertPlan.create(
        store, grid, listing, ConvertParams.create(divisor=1, mask_rule="fmask", dtype="int16"), aoi
    )
    with BeamTestPipeline() as pipeline:
        plan.expand(pipeline)
    for ref in list_store(store)[0]:
        source = next(s for s in plan.sources if s.time == ref.time)
        with rasterio.open(ref.uri) as out:
            assert out.dtypes[0] == "int16"
        data, valid = GeoTiffObservationReader().read(ref.uri, full(grid))
        with rasterio.open(source.bands[0]) as b3:
            red = b3.read(1)
        np.testing.assert_array_equal(data[..., 0][valid], red[valid].astype(np.float32))
    with pytest.raises(ValueError, match="do not fit uint8"):
        write_observation(
            str(tmp_path / "other"),
            grid,
            np.full((grid.height, grid.width, 1), 300.0),
            np.ones((grid.height, grid.width), bool),
            "optical",
            0.0,
            dtype="uint8",
        )
    assert os.listdir(tmp_path / "other" / "optical") == []  # neither the file nor its temporary
