"""Map writes of two code trees side by side: `WriteMaps` driven with synthetic (WindowKey, prediction)
elements (no model), one process per run, alternating; wall time and peak RSS of the runner process and of
its SDK worker (the process the map steps run in).

    git -C /work/main archive 8525fc7 | tar -x -C /tmp/base_m        # the whole-map writer
    python -m benchmarks.map_writes --repeat 2 /tmp/base_m:1024 .:1024 .:1024:group /tmp/base_m:2048 .:2048
    python -m benchmarks.map_writes --repeat 2 /tmp/base_m:1024:steps .:1024:steps /tmp/base_m:8192:steps .:8192:steps

Each variant is `TREE:AREA[:MODE]`, AREA px a side, 32 px tiles without deadzone, `--windows` window
times, each tile's prediction a cheap `[32, 32]` ramp of `--dtype` (default uint8, a class map: the maps
are float32, so a map is 4x its predictions and the runner's own copies of the predictions do not hide
what a map writer holds). Without MODE the pipeline runs on the DirectRunner in `multi_processing` mode
with one worker, so the runner (which holds the shuffled predictions, like a distributed runner's shuffle
service) and the worker (which groups, stitches and writes) are measured apart. MODE `window` or `group`
writes no map: the predictions are only grouped as the whole-map writer (per window time) or the
tile-group writer (per window time and 256 px of tiles) groups them, and counted: the floor of that
runner. MODE `steps` runs the tree's map steps alone, without Beam, in one process (`steps`). A tree is
imported through PYTHONPATH (the child is this file run as a script, from the tree's root, so the tree's
`rsdt_beam` comes first; the child prints which it ran).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
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


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":")) / 1024


def steps(area: int, windows: int, out: str, dtype: str) -> None:
    """The map steps of whatever rsdt_beam is first on sys.path, without Beam, fed as a worker is fed; prints
    the tree's rsdt_beam and the peak RSS (MiB) above the RSS before the first step.

    The step bodies are the trees' `WriteMaps` closures, restated: the whole-map tree (no `write_map`) gets
    a window time's tile predictions as its GroupByKey hands them, stitches the map and encodes the GeoTIFF
    in memory; the tile-group tree stitches and stages each group's part, then runs `write_map`."""
    import io

    import numpy as np

    import rsdt_beam
    from rsdt_beam import fs, inference, maps
    from rsdt_beam.grid import Grid, TileLayout

    layout = TileLayout(area, area, TILE, TILE)
    grid = Grid("EPSG:32633", (10.0, 0.0, 465180.0, 0.0, -10.0, 5080250.0), area, area)
    output = inference.MapOutput(out, grid, layout)
    folder = output.folder()
    ramp = np.add.outer(np.arange(TILE), np.arange(TILE))

    def prediction(tile, window_id):
        return ((ramp + 7 * tile[0] + 3 * tile[1] + window_id) % 251).astype(dtype)

    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # VmHWM starts again from the current RSS
    start = _status_mib("VmRSS")
    for window_id in range(windows):
        key = maps.MapKey(window_id, 86400 * (10 + window_id), 86400 * (40 + window_id))
        if not hasattr(inference, "write_map"):
            tiles = {tile: prediction(tile, window_id) for tile in layout.tiles()}
            array = maps.stitch(layout, tiles, output.trim_edges, output.nodata)
            tags = dict(key.tags(), RSDT_TILES=str(len(tiles)))
            folder.write_bytes(key.file_name, maps.encode_geotiff(array, grid, output.nodata, tags))
            del tiles, array
            continue
        parts = []
        for group in layout.chunks(inference.MAP_GROUP_PX):
            tiles = {tile: prediction(tile, window_id) for tile, _ in group.tiles()}
            window = maps.group_window(group, output.trim_edges)
            part = maps.stitch(layout, tiles, output.trim_edges, output.nodata, window=window)
            data = io.BytesIO()
            np.save(data, part)
            path = fs.join(inference.staging_folder(folder, key), f"{group.j_start}_{group.i_start}.npy")
            fs.write_bytes(path, data.getvalue(), folder.run_id)
            parts.append(inference.StagedPart(window, path, len(tiles), part.shape[2:]))
        inference.write_map(output, folder, key, parts)
    print(rsdt_beam.__file__)
    print(f"{_status_mib('VmHWM') - start:.1f}")


def _run(tree: Path, area: int, windows: int, out: Path, mode: str, dtype: str) -> tuple[float, float, float, float]:
    """(wall s, runner peak RSS, worker peak RSS, steps' peak above their start) in MiB of one child run from
    `tree`."""
    from benchmarks.bench import run_monitored

    subprocess.run(["rm", "-rf", str(out)], check=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(area), str(windows), str(out), mode, dtype]
    run = run_monitored(command, tree, f"{tree}:{area}")
    wall, printed, peaks = run.wall, run.stdout, run.processes
    lines = printed.split()
    if not lines or not lines[0].startswith(str(tree)):
        raise RuntimeError(f"{tree}:{area} ran {printed.strip()}, not the tree's rsdt_beam")
    tifs = sorted(out.glob("*.tif"))
    parts_left = mode == "" and (out / ".parts").exists()  # the steps alone leave the emptied staging folders
    if mode in ("", "steps") and len(tifs) != windows or parts_left:
        raise RuntimeError(f"{tree}:{area}: {len(tifs)} maps, .parts left: {parts_left}")
    if mode == "steps":  # one process, no Beam: its own figure
        return wall, 0.0, 0.0, float(lines[1])
    runner = max((p.peak_rss for p in peaks if p.role == "launcher"), default=0) / 2**20
    worker = max((p.peak_rss for p in peaks if p.role == "worker"), default=0) / 2**20
    return wall, runner, worker, 0.0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="+", help="TREE:AREA[:window|:group|:steps]")
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
            run = _run(Path(tree).resolve(), int(area), args.windows, out, "".join(mode), args.dtype)
            results[text].append(run)
            print(
                f"{text} run {n}: wall {run[0]:.1f} s, runner peak RSS {run[1]:.0f} MiB, worker peak RSS "
                f"{run[2]:.0f} MiB, steps' peak above their start {run[3]:.0f} MiB",
                flush=True,
            )
    subprocess.run(["rm", "-rf", str(out)], check=True)
    print(
        f"\n{args.windows} map(s) per run, {TILE} px tiles, {args.dtype} predictions; median wall, max peak RSS "
        f"over {args.repeat} run(s)\n\n"
        "| variant | px | tiles | map MiB | wall s | runner peak RSS MiB | worker peak RSS MiB "
        "| steps' peak above start MiB |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    for text, _, area, *mode in variants:
        area, runs = int(area), results[text]
        steps_only = mode == ["steps"]
        figures = [f"{max(r[k] for r in runs):.0f}" for k in (1, 2, 3)]
        figures = ["-", "-", figures[2]] if steps_only else [*figures[:2], "-"]
        print(
            f"| {text} | {area} x {area} | {(area // TILE) ** 2} | {area * area * 4 / 2**20:.0f} "
            f"| {statistics.median(r[0] for r in runs):.1f} | {' | '.join(figures)} |"
        )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"] and sys.argv[5] == "steps":
        steps(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[6])
    elif sys.argv[1:2] == ["--child"]:
        child(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6])
    else:
        main()
