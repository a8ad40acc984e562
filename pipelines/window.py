"""Stage 3: deep-temporal windows from Stage 2 stacks (rsdt_beam's or rsdtlib's).

rsdtlib's `example_window_training.py` (training/validation split by tiles):

    python -m pipelines.window --stack_dir tf_stack --window_output tf_window/train \
        --mode training --Delta 30d --window_stride 1 --omega 10 --Omega 16 --tiles rsdtlib-train
    python -m pipelines.window --stack_dir tf_stack --window_output tf_window/val \
        --mode training --Delta 30d --window_stride 1 --omega 10 --Omega 16 --tiles rsdtlib-val

and `example_window_inference.py`:

    python -m pipelines.window --stack_dir tf_stack --window_output tf_window/infer --mode inference
"""

import logging
import sys

from rsdt_beam.pipeline import build_window, run

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    run(build_window, sys.argv[1:])
