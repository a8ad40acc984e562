"""rsdt_beam.rasters: GeoTIFFs written window by window equal the one-shot write, appear only when complete."""

import os

import numpy as np
import pytest
import rasterio

from rsdt_beam import fs
from rsdt_beam.grid import Grid, PixelWindow
from rsdt_beam.rasters import StreamedGeoTiff, geotiff_profile, row_major

GRID = Grid("EPSG:32631", (10.0, 0.0, 600000.0, 0.0, -10.0, 5600000.0), 600, 520)


def windows_of(grid: Grid, size: int) -> list[PixelWindow]:
    return [
        PixelWindow(r, min(r + size, grid.height), c, min(c + size, grid.width))
        for r in range(0, grid.height, size)
        for c in range(0, grid.width, size)
    ]


def raster(seed=0):
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(GRID.height, GRID.width, 3)).astype(np.float32)
    valid = rng.random((GRID.height, GRID.width)) > 0.3
    return data, valid


@pytest.mark.parametrize("size", [256, 100, 600])  # tile-aligned, cutting tiles, whole raster at once
def test_windows_make_the_raster_and_its_mask(tmp_path, size):
    data, valid = raster()
    path = str(tmp_path / "out.tif")
    profile = geotiff_profile(GRID, 3, "float32", predictor=3)
    with StreamedGeoTiff(path, profile, mask=True, tags={"RSDT_X": "1"}, band_names=("a", "b", "c")) as writer:
        for w in row_major(windows_of(GRID, size)[::-1]):
            writer.write(
                w,
                data[w.row_start : w.row_stop, w.col_start : w.col_stop],
                valid[w.row_start : w.row_stop, w.col_start : w.col_stop],
            )
    assert writer.pixels_written == GRID.height * GRID.width
    assert os.listdir(tmp_path) == ["out.tif"]  # no temporary left beside it
    with rasterio.open(path) as dataset:
        np.testing.assert_array_equal(np.moveaxis(dataset.read(), 0, -1), data)
        np.testing.assert_array_equal(dataset.dataset_mask() > 0, valid)
        assert dataset.tags()["RSDT_X"] == "1"
        assert dataset.descriptions == ("a", "b", "c")
        assert dataset.block_shapes[0] == (256, 256)
        assert tuple(dataset.transform)[:6] == GRID.transform


def test_an_error_publishes_nothing_and_keeps_the_old_file(tmp_path):
    path = str(tmp_path / "out.tif")
    fs.write_bytes(path, b"earlier")
    data, _ = raster()
    with pytest.raises(ValueError, match="out.tif: data of"):
        with StreamedGeoTiff(path, geotiff_profile(GRID, 3, "float32")) as writer:
            writer.write(PixelWindow(0, 256, 0, 256), data[:256, :256])
            writer.write(PixelWindow(0, 256, 256, 512), data[:10, :10])
    assert os.listdir(tmp_path) == ["out.tif"]
    assert fs.read_bytes(path) == b"earlier"


@pytest.mark.e2e
def test_published_on_gs(tmp_path):
    from tests.gcs_emulator import gcs_emulator

    data, _ = raster(1)
    with gcs_emulator(tmp_path / "gcs") as gcs:
        url = gcs.url("maps", "out.tif")
        with StreamedGeoTiff(url, geotiff_profile(GRID, 3, "float32")) as writer:
            for w in windows_of(GRID, 256):
                writer.write(w, data[w.row_start : w.row_stop, w.col_start : w.col_stop])
        local = tmp_path / "copy.tif"
        local.write_bytes(fs.read_bytes(url))
        with rasterio.open(local) as dataset:
            np.testing.assert_array_equal(np.moveaxis(dataset.read(), 0, -1), data)
        assert fs.list_children(gcs.url("maps")) == ["out.tif"]
