r"""Inspect outputs: a Stage 2 stack, Stage 3 windows, or prediction maps (text, CSV, PNG).

    python -m rsdt_beam.pipelines.inspect tf_stack --tile 0_0 --Delta 30d --omega 10 --Omega 16 \
        --csv windows_0_0.csv --png pictures
    python -m rsdt_beam.pipelines.inspect tf_window/train --tile 1_2 --png pictures
    python -m rsdt_beam.pipelines.inspect maps --png pictures          # a map folder (maps.csv) or one .tif

A stack prints its metadata, tile count, the time stamps written per tile and,
given window parameters (--Delta ...), the window ranges of --tile as
rsdtlib's `windows_list` (all tiles' ranges go to --csv); --png renders the
tile's stack over time and the window timeline. A window folder prints the
same from its windows.csv. Maps print their georeference and values; --png
renders them (a folder: the last --maps maps).
"""

from rsdt_beam.cli.commands import INSPECT
from rsdt_beam.cli.run import main as run_main


def main(argv: list[str] | None = None) -> int:
    return run_main(INSPECT, argv, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
