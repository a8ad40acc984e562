"""Issue 14's dry run of a Liège-sized case: the work items a city over four years splits into.

Writes an observation store on a 2,300 x 2,300 px grid at 10 m (UTM 31N, around Liège) with four years
of time stamps (Sentinel-1 ascending and descending every 6 days, Sentinel-2 every 5 days: about 800
observations; every file holds the same tiny all-zero raster, as only names and one header per modality
are read by a plan), then runs the fused command as a user would, with `--plan_only`, and prints its
plan line, how long the command took (mostly Python start-up and imports), and how long listing the
inputs takes in-process (`discover_observations`, median of 3).

    python -m benchmarks.liege_plan                 # [--work_dir DIR] [--chunk_size 256] [--tile_size 32]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from rsdt_beam.acquire.listing import discover_observations
from rsdt_beam.acquire.store import observation_path, write_grid, write_observation
from rsdt_beam.common.modalities import OPTICAL, SAR_ASCENDING, SAR_DESCENDING
from rsdt_beam.common.times import parse_time
from rsdt_beam.grid import Grid
from rsdt_beam.specs import InputsSpec

SIDE = 2300
GRID = Grid("EPSG:32631", (10.0, 0.0, 670000.0, 0.0, -10.0, 5625000.0), SIDE, SIDE)
START, END = "2019-01-01", "2023-01-01"
REVISITS = {SAR_ASCENDING: (6, 2), SAR_DESCENDING: (6, 2), OPTICAL: (5, 13)}  # days between, bands


def make_store(root: str) -> int:
    """The store's files: one real GeoTIFF per modality, hard-linked under every time stamp."""
    write_grid(root, GRID)
    start, end = parse_time(START), parse_time(END)
    count = 0
    for modality, (days, bands) in REVISITS.items():
        first = write_observation(
            root, GRID, np.zeros((SIDE, SIDE, bands), np.float32), np.ones((SIDE, SIDE), bool), modality, start
        )
        count += 1
        for time_stamp in np.arange(start + days * 86400, end, days * 86400):
            os.link(first, observation_path(root, modality, float(time_stamp)))
            count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work_dir", default="")
    parser.add_argument("--chunk_size", type=int, default=256)
    parser.add_argument("--tile_size", type=int, default=32)
    args = parser.parse_args()
    work = args.work_dir or tempfile.mkdtemp(prefix="rsdt_liege_")
    store = os.path.join(work, "store")
    try:
        if not os.path.isdir(store):
            print(f"writing the store: {make_store(store)} observations on a {SIDE} x {SIDE} px grid", flush=True)
        command = [
            sys.executable,
            "-m",
            "rsdt_beam.pipelines.run",
            "--observations",
            store,
            "--window_output",
            os.path.join(work, "windows"),
            "--starttime",
            START,
            "--endtime",
            END,
            "--delta_step",
            "2d",
            "--tile_size",
            str(args.tile_size),
            "--chunk_size",
            str(args.chunk_size),
            "--Delta",
            "30d",
            "--omega",
            "10",
            "--Omega",
            "16",
            "--plan_only",
        ]
        print("$ " + " ".join(command[1:]).replace(store, "<store>").replace(work, "<work>"), flush=True)
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - started
        print(result.stdout.strip())
        print(f"the command took {wall:.1f} s (Python start-up and imports included)")
        listings = []
        for _ in range(3):
            started = time.perf_counter()
            listed = discover_observations(InputsSpec(observations=store), parse_time(END))
            listings.append(time.perf_counter() - started)
        print(f"listing {len(listed.refs)} observations: {statistics.median(listings) * 1000:.0f} ms (median of 3)")
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
