"""STAC reads over HTTP: bytes, requests and observations per second, with and without the GDAL options.

One observation = the real Sentinel-2 L1C scene of tests/data (T33UUU, B02 at 10 m and B11 at 20 m,
uint16) written as two COGs (256 px tiles, DEFLATE, overviews) behind the local Range file server of
tests/fake_stac.py with a simulated latency per request. The area is a part of the scene, read as a
Stage 1 STAC worker reads it (`acquire.stac.read_stac_window`, one block), on the file's own 10 m grid
and warped onto a 15 m grid off its pixel edges. For each case it reports:

    bytes sent        the body bytes the server sent for the observation
    tile floor        the COG tiles (full resolution) that intersect the area + the file headers:
                      what a read cannot avoid (from GDAL's BLOCK_OFFSET/BLOCK_SIZE of the TIFF)
    requests          HTTP requests per observation (HEAD and GET)
    obs/s             observations read per second by one worker thread (median of --repeat runs)

`with options` = `acquire.stac.GDAL_HTTP_OPTIONS`; `GDAL defaults` = none of them. Each run uses a new
server URL, so nothing comes from GDAL's process-wide cache.

    python -m benchmarks.stac_reads                  # --latency 0.05 --repeat 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import rasterio
from rasterio.warp import transform_bounds

from rsdt_beam.acquire.stac import GDAL_HTTP_OPTIONS, StacAccess, StacParams, StacPart, StacSource, read_stac_window
from rsdt_beam.grid import Grid, PixelWindow
from tests.stac_catalog import S2, write_cog

BANDS = (("B02", "blue"), ("B11", "swir16"))
GRIDS = {
    "aligned 10 m, 3 x 2 km": Grid("EPSG:32633", (10.0, 0.0, 333000.0, 0.0, -10.0, 5821000.0), 200, 300),
    "warped 15 m, 4.5 x 3 km": Grid("EPSG:32633", (15.0, 0.0, 335003.0, 0.0, -15.0, 5821503.0), 200, 300),
}


def make_cogs(root: str) -> dict[str, str]:
    paths = {}
    for band, key in BANDS:
        with rasterio.open(os.path.join(S2, f"T33UUU_20170216T102101_{band}.jp2")) as src:
            data, profile = src.read(), dict(src.profile, nodata=0)
        paths[key] = os.path.join(root, f"{band}.tif")
        write_cog(paths[key], data, profile, 256)
    return paths


def tile_floor(path: str, grid: Grid) -> int:
    """Bytes of the file's full-resolution tiles under the grid (one source pixel of margin for the
    resampling kernel) plus its header (everything before the first tile of any level)."""
    with rasterio.open(path) as src:
        left, bottom, right, top = transform_bounds(grid.crs, src.crs, *grid.bounds)
        inverse = ~src.transform
        c0, r0 = inverse * (left, top)
        c1, r1 = inverse * (right, bottom)
        bh, bw = src.block_shapes[0]
        rows = range(max(0, math.floor(r0 - 1)) // bh, min(src.height - 1, math.ceil(r1 + 1)) // bh + 1)
        cols = range(max(0, math.floor(c0 - 1)) // bw, min(src.width - 1, math.ceil(c1 + 1)) // bw + 1)
        tiles = sum(int(src.get_tag_item(f"BLOCK_SIZE_{c}_{r}", "TIFF", bidx=1)) for r in rows for c in cols)
        levels = len(src.overviews(1))
    first = min(_first_offset(path, level) for level in [None, *range(levels)])
    return tiles + first


def _first_offset(path: str, level: int | None) -> int:
    """Where the first tile of a level (None: full resolution) starts: the header is what lies before all."""
    with rasterio.open(path, **({} if level is None else {"overview_level": level})) as src:
        bh, bw = src.block_shapes[0]
        return min(
            int(src.get_tag_item(f"BLOCK_OFFSET_{c}_{r}", "TIFF", bidx=1))
            for r in range(math.ceil(src.height / bh))
            for c in range(math.ceil(src.width / bw))
        )


@contextlib.contextmanager
def file_server(root: str, latency: float):
    """tests/fake_stac.py's file server in its own process (as a real server is: GDAL calls that hold the
    GIL must not stall it), on a new port; yields its URL."""
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_stac", root, "--latency", str(latency)], stdout=subprocess.PIPE, text=True
    )
    try:
        yield server.stdout.readline().strip()
    finally:
        server.terminate()
        server.wait()


def one_run(root: str, grid: Grid, options: tuple, latency: float) -> tuple[int, int, float]:
    """(bytes sent, requests, seconds) of one observation read through a new server."""
    with file_server(root, latency) as url:
        source = StacSource(
            "optical",
            0.0,
            "sentinel-2-l1c",
            tuple(key for _, key in BANDS),
            (
                StacPart(
                    "T33UUU",
                    tuple(f"{url}/{band}.tif" for band, _ in BANDS),
                    ((1e-4, 0.0),) * len(BANDS),
                    (-180.0, -90.0, 180.0, 90.0),
                ),
            ),
        )
        began = time.perf_counter()
        _, valid = read_stac_window(
            source, grid, PixelWindow(0, grid.height, 0, grid.width), StacParams(), StacAccess(gdal_options=options)
        )
        seconds = time.perf_counter() - began
        assert valid.mean() > 0.99
        with urllib.request.urlopen(url + "/__log") as answer:
            log = json.load(answer)
        return sum(e["sent"] for e in log), len(log), seconds


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per request at the server")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as root:
        paths = make_cogs(root)
        size = sum(os.path.getsize(p) for p in paths.values())
        print(
            f"files: {', '.join(os.path.basename(p) for p in paths.values())}, {size / 1e3:.0f} kB in all; "
            f"latency {args.latency * 1e3:.0f} ms per request; median of {args.repeat} runs"
        )
        print("| area | GDAL options | bytes sent (kB) | tile floor (kB) | sent / floor | requests | obs/s |")
        print("|---|---|---|---|---|---|---|")
        for name, grid in GRIDS.items():
            floor = sum(tile_floor(p, grid) for p in paths.values())
            for label, options in (("with options", tuple(GDAL_HTTP_OPTIONS.items())), ("GDAL defaults", ())):
                runs = [one_run(root, grid, options, args.latency) for _ in range(args.repeat)]
                sent = statistics.median(r[0] for r in runs)
                requests = statistics.median(r[1] for r in runs)
                seconds = statistics.median(r[2] for r in runs)
                print(
                    f"| {name} | {label} | {sent / 1e3:.0f} | {floor / 1e3:.0f} | {sent / floor:.2f} | "
                    f"{requests:.0f} | {1 / seconds:.2f} |"
                )


if __name__ == "__main__":
    main()
