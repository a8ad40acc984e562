"""Stage 2 inputs: the project's GeoTIFF observation store and rsdtlib's EOPatch folders (.npy and .npy.gz)."""

import os

import numpy as np
import pytest
import rasterio
from conftest import BBOX, write_synthetic_eopatches

from rsdt_beam.acquire import store
from rsdt_beam.acquire.eopatch import EOPatchReader, list_eopatches, write_eopatch
from rsdt_beam.cli.commands import STACK
from rsdt_beam.cli.run import execute
from rsdt_beam.common.observations import ObservationError
from rsdt_beam.common.times import parse_time, time_name
from rsdt_beam.errors import UserError
from rsdt_beam.grid import Grid, PixelWindow
from rsdt_beam.window.listing import tile_windows_list
from rsdt_beam.window.rules import WindowParams

DAY = 86400.0
GRID = Grid.from_bounds("EPSG:32633", 500000, 5000000, 500400, 5000400, 40, 40)


def test_store_files_are_georeferenced_geotiffs_with_an_internal_mask(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.random((300, 280, 3), dtype=np.float32)
    valid = rng.random((300, 280)) < 0.6
    grid = Grid.from_bounds("EPSG:32631", 620000, 4825000, 622800, 4828000, 300, 280)
    time = parse_time("2017-03-09T05:43:56")
    path = store.write_observation(
        str(tmp_path), grid, data, valid, "sar_descending", time, band_names=["VV", "VH", "ratio"]
    )
    assert path.endswith(os.path.join("sar_descending", "20170309T054356.tif"))
    with rasterio.open(path) as dataset:  # what QGIS/rasterio users see
        assert dataset.crs.to_string() == "EPSG:32631"
        assert tuple(dataset.transform)[:6] == pytest.approx(grid.transform)
        assert dataset.descriptions == ("VV", "VH", "ratio")
        assert dataset.tags()["RSDT_TIME"] == "2017-03-09T05:43:56Z"
        assert dataset.block_shapes[0] == (256, 256)
        np.testing.assert_array_equal(dataset.dataset_mask() > 0, valid)
    reader = store.GeoTiffObservationReader()
    header = reader.header(path)
    assert header.bands == 3 and header.grid.matches(grid)
    window = PixelWindow(250, 300, 10, 270)
    part, part_valid = reader.read(path, window)
    np.testing.assert_array_equal(part, data[250:300, 10:270])
    small = Grid.from_bounds("EPSG:32631", 620000, 4825000, 621000, 4826000, 100, 100)
    small_path = store.write_observation(
        str(tmp_path / "small"), small, data[:100, :100], valid[:100, :100], "optical", time
    )
    with rasterio.open(small_path) as dataset:  # as the README says: grids under 256 px are striped
        assert not dataset.profile.get("tiled") and dataset.block_shapes[0][1] == 100
    np.testing.assert_array_equal(part_valid, valid[250:300, 10:270])
    refs, rejected = store.list_store(str(tmp_path))
    assert [(r.modality, r.time) for r in refs] == [("sar_descending", time)] and not rejected
    with open(tmp_path / "sar_descending" / "20170310T000000.tif", "wb") as f:
        f.write(b"truncated")
    with pytest.raises(ObservationError, match="20170310T000000.tif: unreadable GeoTIFF"):
        reader.header(str(tmp_path / "sar_descending" / "20170310T000000.tif"))


def test_compressed_eopatches_read_like_plain_ones(tmp_path):
    rng = np.random.default_rng(1)
    data, valid = rng.random((20, 30, 2), dtype=np.float32), rng.random((20, 30)) < 0.5
    time = parse_time("2019-05-01T10:00:00")
    for compress in (False, True):
        folder = str(tmp_path / str(compress) / time_name(time))
        write_eopatch(folder, data, valid, BBOX, time, "L1_GND", "dataMask", compress=compress)
        refs, _ = list_eopatches(str(tmp_path / str(compress)), "sar_ascending", EOPatchReader("L1_GND", "dataMask"))
        (ref,) = refs
        assert ref.time == time
        header = ref.reader.header(ref.uri)
        assert header.bands == 2 and header.grid.crs == "EPSG:32633" and header.grid.height == 20
        part, part_valid = ref.reader.read(ref.uri, PixelWindow(5, 15, 3, 30))
        np.testing.assert_array_equal(part, data[5:15, 3:30])
        np.testing.assert_array_equal(part_valid, valid[5:15, 3:30])


@pytest.mark.e2e
def test_store_and_eopatch_inputs_stack_identically(tmp_path):
    start = parse_time("2020-01-01")
    times = {"sar_ascending": [start + d * DAY for d in (0, 4, 9)], "optical": [start + d * DAY for d in (1, 2, 6, 11)]}
    source = write_synthetic_eopatches(str(tmp_path / "eop"), {"sar_ascending": 2, "optical": 4}, times)
    root = str(tmp_path / "store")
    store.write_grid(root, GRID)
    for modality, (ts, data, valid) in source.items():
        for k, time in enumerate(ts):
            store.write_observation(root, GRID, data[k], valid[k], modality, time)
    common = [
        "--starttime",
        "2020-01-01",
        "--endtime",
        "2020-01-15",
        "--delta_step",
        "2d",
        "--tile_size",
        "20",
        "--no_progress",
    ]
    execute(STACK, ["--observations", root, "--stack_output", str(tmp_path / "a"), *common])
    execute(
        STACK,
        [
            "--sar_ascending",
            str(tmp_path / "eop/sar_ascending"),
            "--optical",
            str(tmp_path / "eop/optical"),
            "--stack_output",
            str(tmp_path / "b"),
            *common,
        ],
    )
    for name in ("0_0.tfrecords", "1_1.tfrecords"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    first = tile_windows_list(str(tmp_path / "a"), (1, 1), WindowParams(4 * DAY, 1, 2, 3))[0]
    # written days 1, 2, 4 within 4 days of day 1
    assert (first.window_id, first.start, first.end, first.frames) == (0, start + 1 * DAY, start + 4 * DAY, 3)
    with pytest.raises(UserError, match=r"--tile 5_5: .* has no such tile \(4 tiles, 0_0 to 1_1\)"):
        tile_windows_list(str(tmp_path / "a"), (5, 5), WindowParams(4 * DAY, 1, 2, 3))
