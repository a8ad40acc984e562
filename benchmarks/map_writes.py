"""Map writes of two code trees side by side: `WriteMaps` driven with synthetic (WindowKey, prediction)
elements (no model), one process per run, alternating; wall time and peak RSS of the runner process and of
its SDK worker (the process the map steps run in).

    git -C /work/main archive 8525fc7 | tar -x -C /tmp/base_m        # the whole-map writer
    python -m benchmarks.map_writes --repeat 3 /tmp/base_m:1024 .:1024 /tmp/base_m:2048 .:2048

Each variant is `TREE:AREA` (AREA px a side; `TREE:AREA:window` and `TREE:AREA:group` write no map: the
predictions are only grouped as the whole-map writer or the tile-group writer groups them and counted, the
floor of what the runner and the worker hold for that grouping): 32 px tiles without
deadzone, `--windows` window times, each tile's prediction a cheap `[32, 32]` ramp of `--dtype` (default
uint8, a class map: the maps are float32, so a map is 4x its predictions and the runner's own copies of
the predictions do not hide what a map writer holds). The pipeline
runs on the DirectRunner in `multi_processing` mode with one worker, so the runner (which holds the
shuffled predictions, like a distributed runner's shuffle service) and the worker (which groups, stitches
and writes) are measured apart. A tree is imported through PYTHONPATH (the child is this file run as a
script, from the tree's root, so the tree's `rsdt_beam` comes first; the child prints which it ran).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

TILE = 32


def child(area: int, windows: int, out: str, floor: str, dtype: str) -> None:
    """One run of WriteMaps with whatever rsdt_beam is first on sys.path; with `floor` "window" or "group" no
    map is written: the predictions are only grouped as the whole-map writer ("window": per window time) or
    the tile-group writer ("group": per window time and 256 px of tiles) groups them, and counted."""
    import apache_beam as beam
    import numpy as np
    from apache_beam.options.pipeline_options import PipelineOptions

    import rsdt_beam
    from rsdt_beam.grid import Grid, TileLayout
    from rsdt_beam.inference import MapOutput, WindowKey, WriteMaps

    layout = TileLayout(area, area, TILE, TILE)
    grid = Grid("EPSG:32633", (10.0, 0.0, 465180.0, 0.0, -10.0, 5080250.0), area, area)
    day = 86400

    def predictions(tile):  # made on the worker: the launcher's Create holds tile indices only
        ramp = np.add.outer(np.arange(TILE), np.arange(TILE))
        for window_id in range(windows):
            key = WindowKey(tile, window_id, day * (10 + window_id), day * (40 + window_id))
            yield key, ((ramp + 7 * tile[0] + 3 * tile[1] + window_id) % 251).astype(dtype)

    options = PipelineOptions(
        ["--runner", "DirectRunner", "--direct_running_mode", "multi_processing", "--direct_num_workers", "1"]
    )
    with beam.Pipeline(options=options) as pipeline:
        made = pipeline | beam.Create(list(layout.tiles())) | beam.FlatMap(predictions)
        if floor:
            per = 256 // TILE if floor == "group" else area

            def key(item):
                (j, i), window_id = item[0].tile, item[0].window_id
                return (window_id, j // per, i // per), item[1]

            grouped = made | beam.Map(key) | beam.GroupByKey()
            grouped | beam.Map(lambda kv: sum(1 for _ in kv[1])) | beam.combiners.Count.Globally()
        else:
            made | WriteMaps(MapOutput(out, grid, layout))
    print(rsdt_beam.__file__)


def _run(tree: Path, area: int, windows: int, out: Path, floor: str, dtype: str) -> tuple[float, int, int]:
    """(wall s, runner peak RSS, worker peak RSS) of one child run from `tree`."""
    from benchmarks.bench import PeakRssMonitor

    subprocess.run(["rm", "-rf", str(out)], check=True)
    started = time.monotonic()
    process = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            str(area),
            str(windows),
            str(out),
            floor,
            dtype,
        ],
        cwd=tree,
        env=dict(os.environ, PYTHONPATH=str(tree)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    monitor = PeakRssMonitor(process.pid)
    monitor.start()
    printed, err = process.communicate()
    wall = time.monotonic() - started
    peaks = monitor.stop()
    if process.returncode != 0:
        raise RuntimeError(f"{tree}:{area} failed ({process.returncode}):\n{err[-4000:]}")
    if not printed.strip().startswith(str(tree)):
        raise RuntimeError(f"{tree}:{area} ran {printed.strip()}, not the tree's rsdt_beam")
    tifs = sorted(out.glob("*.tif"))
    if not floor and len(tifs) != windows or (out / ".parts").exists():
        raise RuntimeError(f"{tree}:{area}: {len(tifs)} maps, .parts left: {(out / '.parts').exists()}")
    runner = max((p.peak_rss for p in peaks if p.role == "launcher"), default=0)
    worker = max((p.peak_rss for p in peaks if p.role == "worker"), default=0)
    return wall, runner, worker


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="+", help="TREE:AREA[:window|:group]")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--windows", type=int, default=1, help="window times, one map each")
    parser.add_argument("--dtype", default="uint8", help="of the predictions (the maps are float32)")
    parser.add_argument("--work_dir", default="/tmp/rsdt_beam_map_bench")
    args = parser.parse_args(argv)
    out = Path(args.work_dir) / "maps"
    variants = [(text, *text.split(":")) for text in args.variants]
    results: dict[str, list] = {text: [] for text, *_ in variants}
    for n in range(args.repeat):
        for text, tree, area, *mode in variants:
            wall, runner, worker = _run(Path(tree).resolve(), int(area), args.windows, out, "".join(mode), args.dtype)
            results[text].append((wall, runner, worker))
            print(
                f"{text} run {n}: wall {wall:.1f} s, runner peak RSS {runner / 2**20:.0f} MiB, "
                f"worker peak RSS {worker / 2**20:.0f} MiB",
                flush=True,
            )
    subprocess.run(["rm", "-rf", str(out)], check=True)
    print(
        f"\n{args.windows} maps per run, {TILE} px tiles, {args.dtype} predictions; median wall, max peak RSS over "
        f"{args.repeat} run(s)\n\n"
        "| variant | px | tiles | map MiB | wall s | runner peak RSS MiB | worker peak RSS MiB |\n"
        "|---|---|---|---|---|---|---|"
    )
    for text, _, area, *_ in variants:
        area, runs = int(area), results[text]
        print(
            f"| {text} | {area} x {area} | {(area // TILE) ** 2} | {area * area * 4 / 2**20:.0f} "
            f"| {statistics.median(r[0] for r in runs):.1f} | {max(r[1] for r in runs) / 2**20:.0f} "
            f"| {max(r[2] for r in runs) / 2**20:.0f} |"
        )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6])
    else:
        main()
