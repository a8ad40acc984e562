r"""Stages 2 and 3 fused: observations -> windows, without writing stacks first.

    python -m rsdt_beam.pipelines.run --optical obs/S2/eopatches --opt_bands_feature L1C_data \
        --starttime 2017-01-01 --endtime 2017-07-01 --delta_step 2d --tile_size 32 \
        --Delta 30d --omega 10 --Omega 16 --mode training --window_output tf_window/train

Add `--stack_output DIR` to also write the Stage 2 records.
"""

from rsdt_beam.cli.commands import RUN
from rsdt_beam.cli.run import main as run_main


def main(argv: list[str] | None = None) -> int:
    return run_main(RUN, argv, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
