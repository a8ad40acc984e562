"""Stages 2 and 3 fused: observations -> windows, without writing stacks first.

    python -m pipelines.run --optical obs/S2/eopatches --opt_bands_feature L1C_data \
        --starttime 2017-01-01 --endtime 2017-07-01 --delta_step 2d --tile_size 32 \
        --Delta 30d --omega 10 --Omega 16 --mode training --window_output tf_window/train

Add `--stack_output DIR` to also write the Stage 2 records.
"""

import logging
import sys

from rsdt_beam.pipeline import build_fused, run

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    run(build_fused, sys.argv[1:])
