"""Areas of interest from rsdtlib's real AOI shapefiles, GeoJSON and bboxes, and the grids made for them."""

import json
import os
import shutil

import numpy as np
import pytest
import shapely
from pyproj import CRS

from rsdt_beam.aoi import AreaOfInterest, anchor_of, grid_for_aoi, load_aoi, mask_for_grid, utm_crs

AOI_DIR = os.path.join(os.path.dirname(__file__), "data", "convert", "aoi")
OSTRAVA = os.path.join(AOI_DIR, "ostrava.shp")
LIEGE_3035 = os.path.join(AOI_DIR, "Liege_3035.shp")


def test_ostrava_shapefile_without_dbf():
    assert not os.path.exists(os.path.join(AOI_DIR, "ostrava.dbf"))
    aoi = load_aoi(OSTRAVA)
    assert aoi.crs == "EPSG:4326"
    assert aoi.geometry.geom_type == "Polygon"
    np.testing.assert_allclose(aoi.bounds, (18.14081078, 49.83455151, 18.17269592, 49.85132019))


def test_geographic_aoi_gets_local_utm_grid_with_snapped_origin():
    aoi = load_aoi(OSTRAVA)
    grid = grid_for_aoi(aoi, 10.0)
    assert grid.crs == "EPSG:32634"  # 18.15 E lies in zone 34 (18-24 E)
    a, b, c, d, e, f = grid.transform
    assert (a, b, d, e) == (10.0, 0.0, 0.0, -10.0)
    assert c % 10 == 0 and f % 10 == 0
    minx, miny, maxx, maxy = aoi.to_crs(grid.crs).bounds
    left, bottom, right, top = grid.bounds
    assert left <= minx < left + 10 and top - 10 < maxy <= top
    assert right - 10 < maxx <= right and bottom <= miny < bottom + 10


def test_projected_aoi_keeps_its_crs_unless_told():
    aoi = load_aoi(LIEGE_3035)
    assert aoi.crs == "EPSG:3035"
    assert grid_for_aoi(aoi, 30.0).crs == "EPSG:3035"
    assert grid_for_aoi(aoi, 30.0, "utm").crs == "EPSG:32631"  # Liege 5.5 E: zone 31
    assert grid_for_aoi(aoi, 20.0, "EPSG:32632").crs == "EPSG:32632"


def test_bbox_needs_crs_and_anchor_aligns_to_raster_edges():
    with pytest.raises(ValueError, match="needs its CRS"):
        load_aoi("336375,4460595,338205,4462425")
    aoi = load_aoi("336375,4460595,338205,4462425", bbox_crs="EPSG:32613")
    assert isinstance(aoi, AreaOfInterest) and aoi.geometry.area == pytest.approx(1830 * 1830)
    snapped = grid_for_aoi(aoi, 30.0)  # Landsat's edges are odd multiples of 15 m: one extra row/column
    assert (snapped.height, snapped.width) == (62, 62)
    anchored = grid_for_aoi(aoi, 30.0, anchor=anchor_of((30.0, 0.0, 336375.0, 0.0, -30.0, 4462425.0), 30.0))
    assert (anchored.height, anchored.width) == (61, 61)
    assert anchored.transform == (30.0, 0.0, 336375.0, 0.0, -30.0, 4462425.0)


def test_geojson_first_polygon_or_union(tmp_path):
    first = shapely.box(18.10, 49.80, 18.12, 49.82)
    second = shapely.box(18.20, 49.80, 18.22, 49.82)
    path = tmp_path / "two.geojson"
    path.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(g)}
                    for g in (first, second)
                ],
            }
        )
    )
    assert load_aoi(str(path)).geometry.equals(first)
    union = load_aoi(str(path), union=True)
    assert union.geometry.equals(shapely.union(first, second))
    assert union.crs == "EPSG:4326"


def test_shapefile_without_prj_is_a_clear_error(tmp_path):
    for ext in ("shp", "shx"):
        shutil.copy(os.path.join(AOI_DIR, f"ostrava.{ext}"), tmp_path / f"ostrava.{ext}")
    with pytest.raises(ValueError, match="no CRS"):
        load_aoi(str(tmp_path / "ostrava.shp"))


def test_not_a_file_nor_bbox():
    with pytest.raises(FileNotFoundError, match="neither a file nor a bbox"):
        load_aoi("/nonexistent/area.shp")


def test_mask_for_grid_marks_pixels_inside_the_polygon():
    aoi = load_aoi(OSTRAVA)
    grid = grid_for_aoi(aoi, 10.0)
    mask = mask_for_grid(aoi, grid)
    assert mask.shape == (grid.height, grid.width) and mask.dtype == bool
    polygon_area = aoi.to_crs(grid.crs).geometry.area
    assert mask.sum() * 100 == pytest.approx(polygon_area, rel=0.02)
    assert not mask.all()  # the polygon is no rectangle


def test_utm_zones():
    assert utm_crs(18.15, 49.8) == "EPSG:32634"
    assert utm_crs(-105.0, 40.0) == "EPSG:32613"
    assert utm_crs(151.2, -33.9) == "EPSG:32756"
    assert CRS.from_user_input(utm_crs(179.99, 0.0)).to_epsg() == 32660


@pytest.mark.e2e
def test_shapefile_and_geojson_on_gcs(tmp_path):
    """An AOI given as a gs:// URI (a shapefile with its side-car files, or GeoJSON) reads like a local one."""
    from tests.gcs_emulator import gcs_emulator

    folder = tmp_path / "aoi"
    folder.mkdir()
    for name in os.listdir(AOI_DIR):
        if name.startswith(("ostrava.", "Liege_3035.")):
            shutil.copy(os.path.join(AOI_DIR, name), folder)
    with open(folder / "area.geojson", "w") as f:
        json.dump(
            {
                "type": "FeatureCollection",
                "crs": {"type": "name", "properties": {"name": "EPSG:32633"}},
                "features": [
                    {
                        "type": "Feature",
                        "properties": {},
                        "geometry": shapely.geometry.mapping(shapely.box(0, 0, 100, 50)),
                    }
                ],
            },
            f,
        )
    with gcs_emulator(str(tmp_path / "gcs")) as gcs:
        gcs.upload_tree(str(folder), gcs.url("aoi"))
        remote = load_aoi(gcs.url("aoi") + "/Liege_3035.shp")
        local = load_aoi(LIEGE_3035)
        assert remote.crs == local.crs and remote.geometry.equals(local.geometry)
        assert load_aoi(gcs.url("aoi") + "/ostrava.shp").bounds == load_aoi(OSTRAVA).bounds
        assert load_aoi(gcs.url("aoi") + "/area.geojson").bounds == (0, 0, 100, 50)
        with pytest.raises(FileNotFoundError, match="does not exist"):
            load_aoi(gcs.url("aoi") + "/missing.geojson")
