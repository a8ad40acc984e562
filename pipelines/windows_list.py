"""The windows of one tile as rsdtlib's `windows_list()` gives them (any tile, not only 0_0).

    python -m pipelines.windows_list --stack_dir tf_stack --tile 0_0 --Delta 30d --omega 10 --Omega 16 \
        [--window_stride 1] [--triple] [--csv windows_0_0.csv]

Prints `id, start, end, frames` per kept window (start/end of the current part, UTC) and
optionally writes them as CSV. Reads only the time stamps of one tile's Stage 2 file; no Beam, no TensorFlow.
"""

import argparse
import csv
import sys

from rsdt_beam.acquire.observation import iso_time
from rsdt_beam.errors import UserError
from rsdt_beam.options import window_params
from rsdt_beam.stack.files import list_tiles, tile_timestamps
from rsdt_beam.window.listing import window_ranges
from rsdt_beam.window.rules import WindowParams
from rsdt_beam.window.selection import parse_tile


def windows_list(stack_dir: str, tile: tuple[int, int], params: WindowParams) -> list[tuple]:
    """(id, first time, last time, frames) of each kept window's current part; times as UTC epoch seconds."""
    tiles = list_tiles(stack_dir)
    if tuple(tile) not in tiles:
        span = f", {tiles[0][0]}_{tiles[0][1]} to {tiles[-1][0]}_{tiles[-1][1]}" if tiles else ""
        raise UserError(f"--tile {tile[0]}_{tile[1]}: {stack_dir} has no such tile ({len(tiles)} tiles{span})")
    return [(r.window_id, r.start, r.end, r.frames)
            for r in window_ranges(tile_timestamps(stack_dir, tile), params, tile)]


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack_dir", required=True)
    parser.add_argument("--tile", default="0_0", help="j_i")
    parser.add_argument("--Delta", default="30d")
    parser.add_argument("--window_stride", type=int, default=1)
    parser.add_argument("--omega", type=int, default=10)
    parser.add_argument("--Omega", type=int, default=16)
    parser.add_argument("--triple", action="store_true")
    parser.add_argument("--csv", help="also write the list to this CSV file")
    args = parser.parse_args(argv)
    params = window_params(args)
    try:
        rows = windows_list(args.stack_dir, parse_tile(args.tile), params)
    except (UserError, FileNotFoundError) as error:
        print(f"rsdt_beam windows_list: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print("List of window ranges (current):")
    for window_id, start, end, frames in rows:
        print(f"{window_id:5d}  {iso_time(start)}  {iso_time(end)}  {frames:3d}")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(("window_id", "start", "end", "frames", "start_epoch", "end_epoch"))
            writer.writerows((w, iso_time(s), iso_time(e), n, int(s), int(e)) for w, s, e, n in rows)


if __name__ == "__main__":
    main(sys.argv[1:])
