r"""The windows of one tile as rsdtlib's `windows_list()` gives them (any tile, not only 0_0).

    python -m rsdt_beam.pipelines.windows_list --stack_dir tf_stack --tile 0_0 --Delta 30d --omega 10 --Omega 16 \
        [--window_stride 1] [--triple] [--csv windows_0_0.csv]

Prints `id, start, end, frames` per kept window (start/end of the current part, UTC) and
optionally writes them as CSV. Reads only the time stamps of one tile's Stage 2 file; no Beam, no TensorFlow.
"""

from rsdt_beam.cli.commands import WINDOWS_LIST
from rsdt_beam.cli.run import main as run_main


def main(argv: list[str] | None = None) -> int:
    return run_main(WINDOWS_LIST, argv, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
