"""Scheduled runs: carrying per-tile state versus recomputing the tail versus recomputing everything.

    python -m benchmarks.schedule_state_vs_tail [--scale 8] [--repeat 3] [--work_dir out/bench_schedule]

Input: the bundled real Sentinel-2 NDVI series (68 dates, 2015-07 .. 2017-12) tiled `scale` x `scale`
times in space (8: 808 x 800 px, 784 tiles of 32 px with deadzone 2) as an observation store. A first
scheduled run covers the history up to `--previous_end`; then the next run to `--end` is timed three ways:

* state: the scheduled run as built, reading the new observations and each tile's carried frames;
* tail: what recomputing the changed tail without state reads: the observations from the first frame
  a pending window still needs (a store holding only those); it still lacks the forward-fill seed, so
  this is a lower bound of that design's cost;
* everything: one launch over the whole history to `--end` (what a stateless recompute-and-diff reads).

Wall time is per run (windows written, no Stage 2 output), in this process, DirectRunner, median of
`--repeat`. The share of wrong values compares the tail's Stage 2 frames with one launch's.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import sys
import time

import numpy as np

from rsdt_beam.acquire.store import write_grid, write_observation
from rsdt_beam.cli.commands import RUN, STACK, scheduled_command
from rsdt_beam.cli.run import execute
from rsdt_beam.common.times import parse_time, time_name
from rsdt_beam.grid import Grid
from rsdt_beam.sample import SAMPLE
from rsdt_beam.schedule.manifest import list_runs
from rsdt_beam.stack.files import list_tiles, read_stack_metadata, read_tile_stack

FLAGS = [
    "--opt_bands_feature",
    "NDVI",
    "--opt_mask_feature",
    "IS_VALID",
    "--delta_step",
    "10d",
    "--tile_size",
    "32",
    "--deadzone",
    "2",
    "--Delta",
    "60d",
    "--omega",
    "3",
    "--Omega",
    "6",
    "--mode",
    "inference",
    "--no_progress",
]


def build_store(root: str, scale: int) -> list[float]:
    """The sample tiled `scale` x `scale` times as an observation store; returns the observation times."""
    with open(os.path.join(SAMPLE, "timestamps.json")) as f:
        stamps = json.load(f)
    ndvi = np.load(os.path.join(SAMPLE, "data", "NDVI.npy"))
    valid = np.load(os.path.join(SAMPLE, "mask", "IS_VALID.npy"))[..., 0].astype(bool)
    times = [parse_time(s) for s in stamps]
    height, width = ndvi.shape[1] * scale, ndvi.shape[2] * scale
    grid = Grid("EPSG:32633", (10.0, 0.0, 465180.0, 0.0, -10.0, 5080250.0), height, width)
    if not os.path.exists(os.path.join(root, "grid.json")):
        write_grid(root, grid)
        for k, t in enumerate(times):
            if not os.path.exists(os.path.join(root, "optical", time_name(t) + ".tif")):
                write_observation(
                    root,
                    grid,
                    np.tile(ndvi[k], (scale, scale, 1)),
                    np.tile(valid[k], (scale, scale)),
                    "optical",
                    t,
                    ["NDVI"],
                )
    return sorted(set(times))


def tail_values_wrong(tail_stack: str, whole_stack: str) -> float:
    """Share of the tail's frame values that differ from one launch over everything (same times)."""
    metadata = read_stack_metadata(whole_stack)
    differ = total = 0
    for tile in list_tiles(whole_stack):
        whole, tail = (read_tile_stack(folder, tile, metadata) for folder in (whole_stack, tail_stack))
        common = np.isin(whole.times, tail.times)
        differ += int(np.sum(whole.frames[common] != tail.frames))
        total += tail.frames.size
    return differ / total


def timed(function, repeat: int) -> float:
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()):
            function()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work_dir", default="out/bench_schedule")
    parser.add_argument("--scale", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--previous_end", default="2017-05-01")
    parser.add_argument("--end", default="2017-06-01")
    args = parser.parse_args(argv)
    store = os.path.join(args.work_dir, f"store_x{args.scale}")
    times = build_store(store, args.scale)
    root = os.path.join(args.work_dir, "scheduled")
    shutil.rmtree(root, ignore_errors=True)
    common = ["--observations", store, "--output_root", root, *FLAGS]
    with contextlib.redirect_stderr(io.StringIO()):
        first = execute(scheduled_command(0), common + ["--end", args.previous_end, "--lookback", "120d"]).record
    carry = first.carry
    end = parse_time(args.end)
    state = timed(lambda: execute(scheduled_command(0), common + ["--end", args.end]), args.repeat)
    measured = list_runs(root)[-1]

    tail_start = carry["times"][0] if carry["times"] else carry["end"]
    tail_store = os.path.join(args.work_dir, "tail_store")
    shutil.rmtree(tail_store, ignore_errors=True)
    os.makedirs(os.path.join(tail_store, "optical"))
    shutil.copy(os.path.join(store, "grid.json"), tail_store)
    tail_times = [t for t in times if tail_start <= t < end]
    for t in tail_times:
        os.link(
            os.path.join(store, "optical", time_name(t) + ".tif"),
            os.path.join(tail_store, "optical", time_name(t) + ".tif"),
        )
    tail_flags = ["--observations", tail_store, "--starttime", time_name(tail_start), "--endtime", args.end, *FLAGS]
    whole_flags = ["--observations", store, "--starttime", first.start, "--endtime", args.end, *FLAGS]
    out = {name: os.path.join(args.work_dir, f"{name}_out") for name in ("tail", "whole")}
    tail = timed(lambda: execute(RUN, tail_flags + ["--window_output", f"{out['tail']}/windows"]), args.repeat)
    whole = timed(lambda: execute(RUN, whole_flags + ["--window_output", f"{out['whole']}/windows"]), args.repeat)
    timed(lambda: execute(STACK, tail_flags + ["--stack_output", f"{out['tail']}/stack"]), 1)
    timed(lambda: execute(STACK, whole_flags + ["--stack_output", f"{out['whole']}/stack"]), 1)
    wrong = tail_values_wrong(f"{out['tail']}/stack", f"{out['whole']}/stack")
    history = [t for t in times if t < end]
    print(
        f"store: {len(times)} observations of {args.scale * 101} x {args.scale * 100} px (NDVI, the bundled "
        f"sample tiled {args.scale} x {args.scale}); run [{measured.start}, {measured.end}); "
        f"{len(carry['times'])} frames carried per tile; median of {args.repeat}"
    )
    print("| approach | observations read | wall s |")
    print("|---|---|---|")
    print(f"| carry state (as built) | {measured.inputs['observations']} + carried frames | {state:.2f} |")
    print(
        f"| recompute the tail (no fill seed: lower bound; {100 * wrong:.1f} % of its frame values wrong) "
        f"| {len(tail_times)} | {tail:.2f} |"
    )
    print(f"| recompute everything since {first.start[:10]} | {len(history)} | {whole:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
