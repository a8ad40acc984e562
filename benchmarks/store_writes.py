"""Convert and fetch writing one observation into the store, old and new code side by side: peak RSS and wall.

    git -C /work/main archive 8525fc7 | tar -x -C /tmp/base_c         # the code before staged blocks
    python -m benchmarks.store_writes --old /tmp/base_c --sizes 1024,2048 --repeat 2

For each size N (px a side) and each code tree, alternating: `rsdt_beam.pipelines.convert` of one synthetic
13-band source (uint16, on the grid, written once at the largest size; a smaller N takes its top-left N x N
through `--aoi`), then `rsdt_beam.pipelines.fetch` of one Sentinel-2 acquisition from the fake Sentinel Hub
(tests/fake_sentinelhub.py, in this process) on an N x N grid over its scene. Both read in blocks of
`--block` px (`--convert_block_size`, `--fetch_chunk_size`), so a 4x area is 4x the blocks of the same
size. Each run is its own process tree on the DirectRunner (1 worker, in-process); its peak RSS is that
of the largest process of the tree (VmHWM, sampled as benchmarks.bench does). The stored observations
of the two trees are compared (pixels, mask, tags) after each size.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

from benchmarks import bench

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
BANDS = 13
RUNNER = ["--runner", "DirectRunner", "--direct_num_workers", "1", "--no_progress"]


def make_source(path: Path, size: int) -> None:
    """A 13-band uint16 GeoTIFF (EPSG:32633, 10 m), smooth fields plus noise, a few invalid stripes."""
    rng = np.random.default_rng(7)
    profile = dict(
        driver="GTiff",
        height=size,
        width=size,
        count=BANDS,
        dtype="uint16",
        crs="EPSG:32633",
        transform=from_origin(500000, 5000000, 10, 10),
        nodata=0,
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
    )
    partial = path.with_suffix(".part.tif")  # a killed run leaves no source to take as complete
    with rasterio.open(partial, "w", **profile) as out:
        for _, window in out.block_windows(1):
            h, w = window.height, window.width
            rows = np.arange(window.row_off, window.row_off + h)[:, None]
            block = np.empty((BANDS, h, w), np.uint16)
            for b in range(BANDS):
                field = 2000 + 1000 * np.sin(rows / (50 + b)) + rng.integers(0, 300, (h, w))
                field[(rows[:, 0] % 97) < 3] = 0  # nodata stripes
                block[b] = field
            out.write(block, window=window)
    partial.rename(path)


def run(tree: Path, module: str, args: list[str], env: dict) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes of the largest process of the tree) of `python -m module args` from `tree`.

    The peak is VmHWM sampled over the tree (bench.PeakRssMonitor), not ru_maxrss: a child's ru_maxrss
    starts from this process's RSS when it forked (the fake server's threads make that several hundred MB).
    """
    result = bench.run_monitored([sys.executable, "-m", module, *args, *RUNNER], tree, f"{tree}: {module}", env)
    return result.wall, result.peak_rss


def same_store(first: Path, second: Path) -> bool:
    """The stores' observation files hold the same pixels, masks, tags and band descriptions."""
    names = sorted(p.relative_to(first) for p in first.glob("*/*.tif"))
    if not names or names != sorted(p.relative_to(second) for p in second.glob("*/*.tif")):
        return False
    for name in names:
        with rasterio.open(first / name) as a, rasterio.open(second / name) as b:
            if a.tags() != b.tags() or a.descriptions != b.descriptions or a.profile != b.profile:
                return False
            for _, window in a.block_windows(1):
                if not (
                    np.array_equal(a.read(window=window), b.read(window=window))
                    and np.array_equal(a.dataset_mask(window=window), b.dataset_mask(window=window))
                ):
                    return False
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True, help="the old code tree (git archive 8525fc7, extracted)")
    parser.add_argument("--sizes", default="1024,2048", help="observation sizes, px a side")
    parser.add_argument("--block", type=int, default=512, help="--convert_block_size and --fetch_chunk_size")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--work_dir", default="/tmp/rsdt_beam_store_writes")
    args = parser.parse_args(argv)
    import fake_sentinelhub as fake

    from rsdt_beam.acquire.store import write_grid
    from rsdt_beam.grid import Grid

    sizes = [int(s) for s in args.sizes.split(",")]
    trees = {"old": Path(args.old).resolve(), "new": REPO}
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    source = work / f"source_{max(sizes)}" / "s2_20200101.tif"
    if not source.exists():
        source.parent.mkdir(exist_ok=True)
        make_source(source, max(sizes))
    hub = fake.FakeSentinelHub().start()
    env = dict(os.environ, SH_CLIENT_ID=fake.CLIENT_ID, SH_CLIENT_SECRET=fake.CLIENT_SECRET)
    scene = min(fake.s2_scenes(), key=lambda s: s.cloud_cover)  # a clear one
    results: dict[tuple[str, str, int], list[tuple[float, int]]] = {}
    identical = {}
    try:
        for size in sizes:
            a, b, c, d, e, f = scene.transform
            scale = max(scene.shape) / size
            fetch_grid = Grid(scene.crs, (a * scale, b, c, d, e * scale, f), size, size)
            aoi = f"500000,{5000000 - 10 * size},{500000 + 10 * size},5000000"
            for n in range(args.repeat):
                for code, tree in trees.items():
                    out = work / code
                    shutil.rmtree(out, ignore_errors=True)
                    convert = [
                        "--store",
                        str(out / "converted"),
                        "--band_files",
                        str(source),
                        "--time_pattern",
                        "s2_%Y%m%d",
                        "--aoi",
                        aoi,
                        "--aoi_crs",
                        "EPSG:32633",
                        "--resolution",
                        "10",
                        "--divisor",
                        "10000",
                        "--convert_block_size",
                        str(args.block),
                    ]
                    results.setdefault(("convert", code, size), []).append(
                        run(tree, "rsdt_beam.pipelines.convert", convert, env)
                    )
                    write_grid(str(out / "fetched"), fetch_grid)
                    fetch = [
                        "--store",
                        str(out / "fetched"),
                        "--collections",
                        "optical",
                        "--sh_base_url",
                        hub.url,
                        "--sh_token_url",
                        hub.token_url,
                        "--starttime",
                        scene.time.strftime("%Y-%m-%d"),
                        "--endtime",
                        (scene.time.replace(hour=23, minute=59)).strftime("%Y-%m-%dT%H:%M:%S"),
                        "--fetch_chunk_size",
                        str(args.block),
                    ]
                    results.setdefault(("fetch", code, size), []).append(
                        run(tree, "rsdt_beam.pipelines.fetch", fetch, env)
                    )
                    for op in ("convert", "fetch"):
                        wall, peak = results[(op, code, size)][-1]
                        print(f"{op} {code} {size} px run {n}: wall {wall:.1f} s, peak RSS {peak / 2**20:.0f} MiB")
                for op, folder in (("convert", "converted"), ("fetch", "fetched")):
                    identical[(op, size)] = same_store(work / "old" / folder, work / "new" / folder)
    finally:
        hub.stop()
    print(
        f"\n| step | code | observation px | float32 MB | wall s (median) | peak RSS MiB (max) | vs {sizes[0]} px |"
        "\n|---|---|---|---|---|---|---|"
    )
    for op in ("convert", "fetch"):
        for code in trees:
            first = max(r[1] for r in results[(op, code, sizes[0])])
            for size in sizes:
                runs = results[(op, code, size)]
                peak = max(r[1] for r in runs)
                print(
                    f"| {op} | {code} | {size} x {size} x {BANDS} | {size * size * BANDS * 4 / 1e6:.0f} "
                    f"| {statistics.median(r[0] for r in runs):.1f} | {peak / 2**20:.0f} | {peak / first:.2f}x |"
                )
    same = ", ".join(f"{op} {size} px: {equal}" for (op, size), equal in identical.items())
    print(f"\nsame pixels, masks and tags (old vs new): {same}")


if __name__ == "__main__":
    main()
