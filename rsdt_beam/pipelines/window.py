r"""Stage 3: deep-temporal windows from Stage 2 stacks (rsdt_beam's or rsdtlib's).

rsdtlib's `example_window_training.py` (training/validation split by tiles):

    python -m rsdt_beam.pipelines.window --stack_dir tf_stack --window_output tf_window/train \
        --mode training --Delta 30d --window_stride 1 --omega 10 --Omega 16 --tiles rsdtlib-train
    python -m rsdt_beam.pipelines.window --stack_dir tf_stack --window_output tf_window/val \
        --mode training --Delta 30d --window_stride 1 --omega 10 --Omega 16 --tiles rsdtlib-val

and `example_window_inference.py`:

    python -m rsdt_beam.pipelines.window --stack_dir tf_stack --window_output tf_window/infer --mode inference
"""

from rsdt_beam.cli.commands import WINDOW
from rsdt_beam.cli.run import main as run_main


def main(argv: list[str] | None = None) -> int:
    return run_main(WINDOW, argv, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
