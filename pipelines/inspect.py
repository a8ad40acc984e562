r"""Inspect outputs: a Stage 2 stack, Stage 3 windows, or prediction maps (text, CSV, PNG).

    python -m pipelines.inspect tf_stack --tile 0_0 --Delta 30d --omega 10 --Omega 16 \
        --csv windows_0_0.csv --png pictures
    python -m pipelines.inspect tf_window/train --tile 1_2 --png pictures
    python -m pipelines.inspect maps --png pictures          # a map folder (maps.csv) or one .tif

A stack prints its metadata, tile count, the time stamps written per tile and,
given window parameters (--Delta ...), the window ranges of --tile as
rsdtlib's `windows_list` (all tiles' ranges go to --csv); --png renders the
tile's stack over time and the window timeline. A window folder prints the
same from its windows.csv. Maps print their georeference and values; --png
renders them (a folder: the last --maps maps).
"""

import argparse
import sys

from rsdt_beam import fs
from rsdt_beam.inspect import (
    describe_map,
    describe_maps,
    describe_stack,
    describe_windows,
    render_map,
    render_tile_stack,
    render_window_timeline,
    spans_of_ranges,
    window_frame_times,
    write_ranges_csv,
)
from rsdt_beam.options import window_params
from rsdt_beam.stack.files import read_stack_metadata, read_tile_stack
from rsdt_beam.window.listing import window_ranges
from rsdt_beam.window.rules import window_spans


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", help="stack folder, window folder, map folder or map .tif (local or gs://)")
    parser.add_argument("--tile", default="0_0", help="tile j_i to detail and render (default 0_0)")
    parser.add_argument("--all_timestamps", action="store_true", help="list every written time stamp")
    parser.add_argument("--csv", help="write the window ranges here (CSV, the columns of windows.csv)")
    parser.add_argument("--png", help="folder for the PNG pictures")
    parser.add_argument("--max_frames", type=int, default=12, help="frames shown in the stack picture")
    parser.add_argument("--maps", type=int, default=1, help="map folder: render this many of the last maps")
    group = parser.add_argument_group("window parameters (stack folders: list the windows they give)")
    group.add_argument("--Delta", help="window length in time, e.g. 30d")
    group.add_argument("--window_stride", type=int, default=1)
    group.add_argument("--omega", type=int, default=10)
    group.add_argument("--Omega", type=int, default=16)
    group.add_argument("--triple", action="store_true")
    return parser


def _kind(path: str) -> str:
    if path.lower().endswith((".tif", ".tiff")):
        return "map"
    if fs.exists(fs.join(path, "maps.csv")):
        return "maps"
    metadata_path = fs.join(path, "metadata.json")
    if not fs.exists(metadata_path):
        raise SystemExit(f"{path}: no metadata.json or maps.csv: not a stack, window or map folder")
    return "windows" if "mode" in fs.read_json(metadata_path) else "stack"


def _tile(text: str) -> tuple[int, int]:
    parts = text.replace(",", "_").split("_")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise SystemExit(f"--tile must be j_i, got {text!r}")
    return int(parts[0]), int(parts[1])


def main(argv: list[str]) -> None:
    args = _parser().parse_args(argv)
    tile = _tile(args.tile)
    kind = _kind(args.path)
    pictures = []
    if kind == "stack":
        params = (window_params(args)
                  if args.Delta else None)
        lines, per_tile = describe_stack(args.path, params, tile, args.all_timestamps)
        print("\n".join(lines))
        if tile not in per_tile:
            raise SystemExit(f"{args.path}: no tile {tile[0]}_{tile[1]}")
        if args.csv:
            if params is None:
                raise SystemExit("--csv of a stack needs the window parameters (--Delta ...)")
            write_ranges_csv(args.csv, [r for t, times in per_tile.items() for r in window_ranges(times, params, t)])
            print(f"window ranges of {len(per_tile)} tiles -> {args.csv}")
        if args.png:
            fs.makedirs(args.png)
            stack = read_tile_stack(args.path, tile, read_stack_metadata(args.path))
            pictures.append(render_tile_stack(stack, fs.join(args.png, f"stack_{tile[0]}_{tile[1]}.png"),
                                              args.max_frames))
            if params is not None:
                pictures.append(render_window_timeline(
                    stack.times, list(window_spans(stack.times, params)),
                    fs.join(args.png, f"timeline_{tile[0]}_{tile[1]}.png"),
                    f"tile {tile[0]}_{tile[1]}: Delta {args.Delta}, stride {args.window_stride}, "
                    f"omega {args.omega}, Omega {args.Omega}{', triple' if args.triple else ''}"))
    elif kind == "windows":
        lines, ranges = describe_windows(args.path, tile)
        print("\n".join(lines))
        if args.csv:
            write_ranges_csv(args.csv, ranges)
            print(f"window ranges of {len({r.tile for r in ranges})} tiles -> {args.csv}")
        if args.png:
            fs.makedirs(args.png)
            times = window_frame_times(args.path, tile)
            own = [r for r in ranges if r.tile == tile]
            pictures.append(render_window_timeline(times, spans_of_ranges(times, own),
                                                   fs.join(args.png, f"timeline_{tile[0]}_{tile[1]}.png"),
                                                   f"{args.path}, tile {tile[0]}_{tile[1]}: {len(own)} windows"))
    else:
        if kind == "maps":
            lines, paths = describe_maps(args.path)
            print("\n".join(lines))
            paths = paths[-args.maps:] if args.maps > 0 else []
        else:
            paths = [args.path]
        for path in paths:
            print("\n".join(describe_map(path)))
        if args.png:
            fs.makedirs(args.png)
            for path in paths:
                name = path.rstrip("/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
                pictures.append(render_map(path, fs.join(args.png, f"map_{name}.png")))
    for picture in pictures:
        print(f"picture: {picture}")


if __name__ == "__main__":
    main(sys.argv[1:])
