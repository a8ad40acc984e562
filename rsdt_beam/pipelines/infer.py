r"""Inference: a Keras model over deep-temporal windows -> georeferenced maps per window time.

rsdtlib's `example_window_interactive_inference.py` (windows built online from the stack, never written):

    python -m rsdt_beam.pipelines.infer --stack_dir tf_stack --model model.keras --map_output maps \
        --Delta 30d --window_stride 1 --omega 10 --Omega 16 [--frames 16 --pad_value -1]

Straight from Stage 2 inputs (stacks are built in the same pipeline, not written):

    python -m rsdt_beam.pipelines.infer --optical obs/S2/eopatches --starttime 2017-01-01 --endtime 2017-07-01 \
        --delta_step 2d --tile_size 32 --deadzone 2 --Delta 30d --omega 10 --Omega 16 \
        --model_fn mypackage.models:build --model weights.weights.h5 --map_output gs://bucket/maps

Offline, over written inference windows (`rsdt_beam.pipelines.window --mode inference`):

    python -m rsdt_beam.pipelines.infer --windows tf_window/infer --model model.keras --map_output maps

Each map is `<map_output>/<start>_<end>.tif` (float32, NaN where no tile
predicts), listed in `maps.csv`. On Dataflow add the usual `--runner
DataflowRunner ... --setup_file ./setup.py`.
"""

from rsdt_beam.cli.commands import INFER
from rsdt_beam.cli.run import main as run_main


def main(argv: list[str] | None = None) -> int:
    return run_main(INFER, argv, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
