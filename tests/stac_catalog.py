"""A local STAC catalog of COGs built from the real files in tests/data (see tests/data/SOURCES.md).

    build_catalog(root, root_url) -> list of item dicts, COGs written under root/<collection>/<item>/<asset>
    python -m tests.stac_catalog ROOT [--port N]   # builds and serves it (STAC API + files), prints the API URL

    landsat-c2-l2    the Landsat 7/5 series of tests/data/convert/landsat7: red (b3), nir08 (b4),
                     swir16 (b5) as they are (int16 SR x 10^4, nodata -9999; raster:bands scale 1e-4),
                     qa_pixel (uint16) derived from the scene's Fmask: 255 fill -> bit 0, 4 cloud -> bits
                     1 and 3 (dilated cloud, cloud), 2 shadow -> bit 4, 3 snow -> bit 5, 1 water -> bit 7,
                     0 clear -> bit 6 (the Collection 2 bit meanings); eo:cloud_cover from the Fmask
    sentinel-2-l1c   the T33UUU scene (B02 as `blue` at 10 m, B11 as `swir16` at 20 m, uint16 DN, no
                     raster:bands scale: the table's 1e-4) cut into two overlapping items of one pass,
                     `..._W` and `..._E` (adjacent tiles of one acquisition), 3 s apart
    sentinel-2-l2a   the same cut, with an `scl` asset **derived** from B02 (no real L2A is here):
                     9 (cloud high) where B02 DN > 1500, 3 (shadow) where < 1250, else 4 (vegetation),
                     0 outside the scene; raster:bands scale 1e-4, offset -0.1 (Earth Search's)
    sentinel-1-rtc   the three Sentinel-1 VV scenes (dB -> linear power, nodata -99 -> -32768, as
                     Planetary Computer's RTC): `vv` only; sat:orbit_state from the file name; the
                     descending scenes get a nodata wedge at their west edge (derived: a swath edge)

Every item has realistic JSON: stac_extensions, geometry, bbox, datetime, platform, proj:epsg,
proj:shape, proj:transform, raster:bands, sat:* and eo:cloud_cover where the collection has them.
"""

from __future__ import annotations

import datetime
import glob
import os

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.io import MemoryFile
from rasterio.warp import transform_bounds

HERE = os.path.dirname(os.path.abspath(__file__))
LANDSAT = os.path.join(HERE, "data", "convert", "landsat7")
S2 = os.path.join(HERE, "data", "convert", "s2l1c")
S1_FILES = sorted(glob.glob(os.path.join(HERE, "data", "s1_vv_db", "*.tif"))) + sorted(
    glob.glob(os.path.join(HERE, "data", "convert", "s1_other_grid", "*.tif"))
)
EXTENSIONS = [
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/sat/v1.0.0/schema.json",
]
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
S2_CUT = (0, 800, 700, 1536)  # west item cols 0:800, east item cols 700:1536 (100 px overlap) of B02
S2_TIME = datetime.datetime(2017, 2, 16, 10, 21, 1, tzinfo=datetime.timezone.utc)
FMASK_TO_QA = {255: 1 << 0, 4: (1 << 1) | (1 << 3), 2: 1 << 4, 3: 1 << 5, 1: 1 << 7, 0: 1 << 6}


def write_cog(path: str, data: np.ndarray, profile: dict, blocksize: int = 128) -> None:
    """`data` [bands, h, w] as a tiled, DEFLATE-compressed COG with overviews."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    base = dict(profile, driver="GTiff", count=data.shape[0], height=data.shape[1], width=data.shape[2])
    base.pop("blockxsize", None), base.pop("blockysize", None), base.pop("tiled", None)
    base.pop("compress", None), base.pop("interleave", None)
    with MemoryFile() as memory:
        with memory.open(**base) as dataset:
            dataset.write(data)
        with memory.open() as dataset:
            rasterio.shutil.copy(dataset, path, driver="COG", BLOCKSIZE=blocksize, COMPRESS="DEFLATE")


def _item(collection, item_id, when, crs, transform, shape, properties, assets, root_url):
    left, top = transform.c, transform.f
    right, bottom = left + transform.a * shape[1], top + transform.e * shape[0]
    w, s, e, n = transform_bounds(crs, "EPSG:4326", left, bottom, right, top)
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": EXTENSIONS,
        "id": item_id,
        "collection": collection,
        "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
        "bbox": [w, s, e, n],
        "properties": {
            "datetime": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "proj:epsg": int(str(crs).split(":")[-1]),
            "proj:shape": list(shape),
            "proj:transform": list(transform)[:6],
            **properties,
        },
        "assets": {
            key: dict(
                {"href": f"{root_url}/{path}", "type": COG_TYPE, "roles": [role]},
                **({"raster:bands": [bands]} if bands else {}),
            )
            for key, (path, role, bands) in assets.items()
        },
        "links": [{"rel": "collection", "href": f"{root_url}/collections/{collection}"}],
    }


def _landsat(root: str, root_url: str) -> list[dict]:
    items = []
    for folder in sorted(glob.glob(os.path.join(LANDSAT, "*"))):
        scene = os.path.basename(folder)
        when = datetime.datetime.strptime(scene[9:16], "%Y%j").replace(hour=17, minute=20, tzinfo=datetime.timezone.utc)
        item_id = f"L{scene[1]}0{scene[2]}_L2SP_035032_{when:%Y%m%d}_02_T1"  # Collection 2 style
        assets = {}
        for key, band in (("red", "b3"), ("nir08", "b4"), ("swir16", "b5")):
            with rasterio.open(os.path.join(folder, f"{scene}_{band}.tif")) as src:
                data, profile, crs, transform, shape = src.read(), src.profile, src.crs, src.transform, src.shape
            relative = f"landsat-c2-l2/{item_id}/{item_id}_SR_{band.upper()}.TIF"
            write_cog(os.path.join(root, relative), data, profile)
            assets[key] = (relative, "data", {"nodata": -9999, "data_type": "int16", "scale": 0.0001, "offset": 0.0})
        with rasterio.open(os.path.join(folder, f"{scene}_fmask.tif")) as src:
            fmask, profile = src.read(1), src.profile
        qa = np.zeros(fmask.shape, np.uint16)
        for value, bits in FMASK_TO_QA.items():
            qa[fmask == value] = bits
        relative = f"landsat-c2-l2/{item_id}/{item_id}_QA_PIXEL.TIF"
        write_cog(os.path.join(root, relative), qa[None], dict(profile, dtype="uint16", nodata=None))
        assets["qa_pixel"] = (relative, "cloud", {"data_type": "uint16", "unit": "bit index"})
        cloud = float(np.isin(fmask, (2, 4)).sum() / max(1, (fmask != 255).sum()) * 100.0)
        properties = {
            "platform": "landsat-7" if scene[2] == "7" else "landsat-5",
            "eo:cloud_cover": round(cloud, 2),
            "landsat:wrs_path": "035",
            "landsat:wrs_row": "032",
        }
        items.append(_item("landsat-c2-l2", item_id, when, crs, transform, shape, properties, assets, root_url))
    return items


def _s2(root: str, root_url: str, collection: str) -> list[dict]:
    with rasterio.open(os.path.join(S2, "T33UUU_20170216T102101_B02.jp2")) as src:
        b02, crs, transform = src.read(1), src.crs, src.transform
    with rasterio.open(os.path.join(S2, "T33UUU_20170216T102101_B11.jp2")) as src:
        b11, t20 = src.read(1), src.transform
    items = []
    for k, (name, c0, c1) in enumerate((("W", S2_CUT[0], S2_CUT[1]), ("E", S2_CUT[2], S2_CUT[3]))):
        item_id = f"S2A_33UUU_20170216_0_{'L1C' if collection.endswith('l1c') else 'L2A'}_{name}"
        when = S2_TIME + datetime.timedelta(seconds=3 * k)
        t10 = transform @ rasterio.Affine.translation(c0, 0)
        base = {"driver": "GTiff", "dtype": "uint16", "crs": crs, "nodata": 0}
        assets = {}
        part = b02[:, c0:c1]
        rel = f"{collection}/{item_id}/B02.tif"
        write_cog(os.path.join(root, rel), part[None], dict(base, transform=t10), 128)
        scale = {"scale": 0.0001, "offset": -0.1} if collection.endswith("l2a") else {}
        assets["blue"] = (rel, "data", {"nodata": 0, "data_type": "uint16", **scale})
        part20 = b11[:, c0 // 2 : c1 // 2]
        rel = f"{collection}/{item_id}/B11.tif"
        write_cog(
            os.path.join(root, rel), part20[None], dict(base, transform=t20 @ rasterio.Affine.translation(c0 // 2, 0))
        )
        assets["swir16"] = (rel, "data", {"nodata": 0, "data_type": "uint16", **scale})
        if collection.endswith("l2a"):
            scl = np.full(part.shape, 4, np.uint8)
            scl[part > 1500] = 9
            scl[(part < 1250) & (part > 0)] = 3
            scl[part == 0] = 0
            rel = f"{collection}/{item_id}/SCL.tif"
            write_cog(os.path.join(root, rel), scl[None], dict(base, dtype="uint8", nodata=None, transform=t10))
            assets["scl"] = (rel, "data", {"data_type": "uint8"})
        properties = {
            "platform": "sentinel-2a",
            "constellation": "sentinel-2",
            "eo:cloud_cover": 20.0 + k,
            "sat:relative_orbit": 65,
            "mgrs:utm_zone": 33,
        }
        items.append(_item(collection, item_id, when, crs, t10, part.shape, properties, assets, root_url))
    return items


def _s1(root: str, root_url: str) -> list[dict]:
    items = []
    for path in S1_FILES:
        name = os.path.basename(path)
        state = "ascending" if "_A_" in name else "descending"
        when = datetime.datetime.strptime(name.split("_")[6], "%Y%m%dT%H%M%S").replace(tzinfo=datetime.timezone.utc)
        with rasterio.open(path) as src:
            db, profile, crs, transform, shape = src.read(1), src.profile, src.crs, src.transform, src.shape
        linear = np.where(db == -99, -32768, np.power(10.0, db / 10.0)).astype(np.float32)
        if state == "descending":  # a swath edge, as real RTC scenes have (derived: these files have no nodata)
            rows, cols = np.indices(linear.shape)
            linear[cols < 40 - rows // 4] = -32768
        item_id = f"S1A_IW_GRDH_1SDV_{when:%Y%m%dT%H%M%S}_rtc"
        rel = f"sentinel-1-rtc/{item_id}/measurement/iw-vv.tif"
        write_cog(os.path.join(root, rel), linear[None], dict(profile, nodata=-32768), 128)
        properties = {
            "platform": "SENTINEL-1A",
            "constellation": "Sentinel-1",
            "sat:orbit_state": state,
            "sat:relative_orbit": 117 if state == "ascending" else 8,
            "sar:instrument_mode": "IW",
            "sar:polarizations": ["VV", "VH"],
        }
        assets = {"vv": (rel, "data", {"nodata": -32768, "data_type": "float32"})}
        items.append(_item("sentinel-1-rtc", item_id, when, crs, transform, shape, properties, assets, root_url))
    return items


def build_catalog(root: str, root_url: str) -> list[dict]:
    """Writes the COGs under `root` (served at `root_url`) and returns every item."""
    return [
        *_landsat(root, root_url),
        *_s2(root, root_url, "sentinel-2-l1c"),
        *_s2(root, root_url, "sentinel-2-l2a"),
        *_s1(root, root_url),
    ]


def main(argv=None) -> None:
    """Builds the catalog in ROOT, serves its files and a STAC API over them, prints the API's URL."""
    import argparse

    from tests.fake_stac import FileServer, StacApi, serve_until_interrupted

    parser = argparse.ArgumentParser(description="the tests' local STAC catalog, served on 127.0.0.1")
    parser.add_argument("root")
    parser.add_argument("--conformance", default="query", choices=("query", "filter", "none"))
    parser.add_argument("--port", type=int, default=0, help="the STAC API's port (default: a free one)")
    args = parser.parse_args(argv)
    with FileServer(args.root) as files:
        items = build_catalog(args.root, files.url)
        conformance = None if args.conformance == "none" else args.conformance
        with StacApi(items, conformance, port=args.port) as api:
            print(f"STAC API {api.url} ({len(items)} items), files {files.url}; Ctrl-C stops", flush=True)
            serve_until_interrupted()


if __name__ == "__main__":
    main()
