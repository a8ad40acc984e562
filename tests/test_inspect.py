"""The inspect command and pictures on the real sample (no TensorFlow needed)."""

import csv
import os

import numpy as np

from rsdt_beam.common.modalities import BandCounts
from rsdt_beam.grid import Grid
from rsdt_beam.inspect import (
    describe_map,
    describe_stack,
    duration_text,
    empty_window_reason,
    render_map,
    render_tile_stack,
    render_window_timeline,
    stack_picture_rows,
    window_ranges,
)
from rsdt_beam.maps import write_geotiff
from rsdt_beam.stack.rules import TileStack
from rsdt_beam.window.rules import WindowParams, window_spans

DAY = 86400
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data.startswith(PNG_MAGIC), path
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def csv_rows(path):
    with open(path) as f:
        return list(csv.reader(f))


def test_inspect_stack_prints_times_and_window_ranges_and_renders(sample_run, tmp_path, capsys):
    from rsdt_beam.pipelines.inspect import main

    stack = os.path.join(sample_run, "stack")
    lines, per_tile = describe_stack(stack, WindowParams(60 * DAY, 1, 3, 6), (1, 1))
    assert "tiles: 9 files of 9 (3 x 3)" in lines
    assert any(line.startswith("time stamps written (all tiles): 34, 2016-01-07T10:12:43Z") for line in lines)
    assert "windows of tile 1_1: 30" in lines and len(per_tile) == 9

    main(
        [
            stack,
            "--tile",
            "1_1",
            "--Delta",
            "60d",
            "--omega",
            "3",
            "--Omega",
            "6",
            "--all_timestamps",
            "--csv",
            str(tmp_path / "ranges.csv"),
            "--png",
            str(tmp_path / "png"),
        ]
    )
    printed = capsys.readouterr().out
    assert "window   29: 2017-05-31T10:05:36Z .. 2017-06-20T10:04:53Z    3 frames" in printed
    assert "    33  2017-06-20T10:04:53Z  (1497953093)" in printed
    # The ranges equal what Stage 3 wrote for the same parameters (rsdt_beam.pipelines.sample's windows.csv).
    assert csv_rows(tmp_path / "ranges.csv") == csv_rows(os.path.join(sample_run, "windows", "windows.csv"))
    width, height = png_size(tmp_path / "png" / "stack_1_1.png")
    assert width > 4 * height  # 12 frames in one row (one optical band)
    assert png_size(tmp_path / "png" / "timeline_1_1.png")[1] > 200


def test_inspect_windows_folder(sample_run, tmp_path, capsys):
    from rsdt_beam.pipelines.inspect import main

    windows_dir = os.path.join(sample_run, "windows")
    main([windows_dir, "--tile", "2_0", "--csv", str(tmp_path / "w.csv"), "--png", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "tiles: 9, windows: 270" in printed and "windows of tile 2_0: 30" in printed
    assert csv_rows(tmp_path / "w.csv") == csv_rows(os.path.join(windows_dir, "windows.csv"))
    png_size(tmp_path / "timeline_2_0.png")


def test_map_description_and_picture(tmp_path, capsys):
    from rsdt_beam.pipelines.inspect import main

    grid = Grid("EPSG:32633", (10.0, 0.0, 465180.0, 0.0, -10.0, 5080250.0), 40, 50)
    array = np.linspace(0, 1, 2000, dtype=np.float32).reshape(40, 50)
    array[30:] = np.nan
    path = write_geotiff(
        str(tmp_path / "20160107T101243_20160206T100203.tif"),
        array,
        grid,
        tags={"RSDT_WINDOW_START": "2016-01-07T10:12:43Z"},
    )
    text = "\n".join(describe_map(path))
    assert "EPSG:32633" in text and "valid pixels 1500 of 2000" in text
    assert "(465180.0, 5079850.0, 465680.0, 5080250.0)" in text
    png_size(render_map(path, str(tmp_path / "map.png")))
    main([path, "--png", str(tmp_path / "pics")])
    assert "picture:" in capsys.readouterr().out
    png_size(tmp_path / "pics" / "map_20160107T101243_20160206T100203.png")


def test_pictures_of_real_sar_and_13_band_stacks_and_triple_windows(tmp_path):
    import rasterio
    from conftest import SAMPLE_DIR

    scenes = np.load(os.path.join(SAMPLE_DIR, "REFERENCE_SCENES.npy"))[:, :32, :32]  # 5 dates of S2 L1C
    vv = []
    for name in (
        "S1A__IW___A_20150309T173017_VV_grd_mli_geo_norm_db.tif",
        "S1A__IW___D_20170309T054356_VV_grd_mli_geo_norm_db.tif",
    ):
        with rasterio.open(os.path.join(os.path.dirname(__file__), "data", "s1_vv_db", name)) as dataset:
            vv.append(dataset.read(1)[100:132, 100:132])
    sar = np.broadcast_to(np.stack(vv, -1), (5, 32, 32, 2))
    times = np.arange(5, dtype=np.float64) * 10 * DAY + 1.44e9
    stack = TileStack((0, 0), times, np.concatenate([sar, scenes], -1).astype(np.float32), BandCounts(1, 13))
    rows = stack_picture_rows(stack)
    assert [row.label for row in rows] == ["SAR asc band 1", "SAR dsc band 1", "true colour B04/B03/B02"]
    true_colour = rows[-1].values
    assert true_colour.shape == (5, 32, 32, 3) and true_colour.min() >= 0 and true_colour.max() <= 1
    red = scenes[..., 3]  # B04
    for k in range(5):
        assert np.corrcoef(true_colour[k, ..., 0].ravel(), red[k].ravel())[0, 1] > 0.9
        # Per channel: each spans the range (L1C's blue haze does not tint the picture blue).
        for c in range(3):
            assert np.percentile(true_colour[k, ..., c], 2) < 0.05 and np.percentile(true_colour[k, ..., c], 98) > 0.95
    assert true_colour[2, ..., 2].mean() - true_colour[2, ..., 0].mean() < 0.15
    sar_row = rows[0]
    assert (sar_row.low, sar_row.high) == tuple(np.percentile(sar[..., 0], (2, 98)))  # its colour bar
    png_size(render_tile_stack(stack, str(tmp_path / "stack.png"), max_frames=6))
    # Band names and units from metadata.json's `bands`; red/green/blue found by name.
    names = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
    bands = {"sar_ascending": {"names": ["VV"], "units": "dB"}, "optical": {"names": names, "units": "reflectance"}}
    rows = stack_picture_rows(stack, bands)
    assert [(row.label, row.units) for row in rows] == [
        ("SAR asc VV", "dB"),
        ("SAR dsc band 1", ""),
        ("true colour B04/B03/B02", "reflectance"),
    ]
    reordered = {"optical": {"names": names[::-1], "units": "reflectance"}}
    flipped = TileStack((0, 0), times, np.concatenate([sar, scenes[..., ::-1]], -1).astype(np.float32), stack.bands)
    np.testing.assert_array_equal(stack_picture_rows(flipped, reordered)[-1].values, true_colour)
    ndvi = TileStack((0, 0), times, scenes[..., :2], BandCounts(0, 2))
    assert [row.label for row in stack_picture_rows(ndvi, {"optical": {"names": ["NDVI", "NDWI"]}})] == [
        "optical NDVI",
        "optical NDWI",
    ]
    empty = TileStack((0, 0), times[:0], np.zeros((0, 8, 8, 15), np.float32), stack.bands)
    png_size(render_tile_stack(empty, str(tmp_path / "empty.png")))  # says why instead of failing

    times = np.arange(20, dtype=np.float64) * 5 * DAY + 1.5e9
    triple = WindowParams(20 * DAY, 2, 2, 4, triple=True)
    spans = list(window_spans(times, triple))
    assert spans and all(s.previous is not None for s in spans)
    png_size(render_window_timeline(times, spans, str(tmp_path / "triple.png")))
    ranges = window_ranges(times, triple, (0, 0))
    assert [(r.window_id, r.frames) for r in ranges] == [(s.window_id, s.current[1] - s.current[0]) for s in spans]


def test_durations_in_days_and_empty_panels_say_why(tmp_path):
    assert [duration_text(d) for d in (60 * DAY, 1.5 * DAY, 3600, 90, 5184000.0)] == [
        "60 d",
        "36 h",
        "1 h",
        "90 s",
        "60 d",
    ]
    times = np.array([0, 5, 10, 50, 55], dtype=np.float64) * DAY + 1.5e9
    assert empty_window_reason(times, WindowParams(30 * DAY, 1, 10, 16)) == (
        "0 windows: at most 3 frames fall within Delta 30 d on this tile, omega=10 are needed."
    )
    assert empty_window_reason(times[:0], WindowParams(30 * DAY, 1, 10, 16)) == "No window: the tile has no frames."
    assert not list(window_spans(times, WindowParams(30 * DAY, 1, 10, 16)))
    png_size(render_window_timeline(times, [], str(tmp_path / "empty.png"), empty="No window."))
    png_size(render_window_timeline(times[:0], [], str(tmp_path / "nothing.png")))
