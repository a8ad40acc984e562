r"""Stage 2: stack, assemble and tile observations into `{j}_{i}.tfrecords` + `metadata.json`.

rsdtlib's `example_stack.py` as a Beam pipeline:

    python -m rsdt_beam.pipelines.stack --runner DirectRunner \
        --sar_ascending obs/S1_asc/eopatches --sar_descending obs/S1_dsc/eopatches \
        --optical obs/S2/eopatches --starttime 2017-01-01 --endtime 2017-07-01 \
        --delta_step 2d --tile_size 32 --stack_output tf_stack

On Dataflow add `--runner DataflowRunner --project P --region R
--temp_location gs://B/tmp --setup_file ./setup.py` and use gs:// paths.
"""

from rsdt_beam.cli.commands import STACK
from rsdt_beam.cli.run import main as run_main


def main(argv: list[str] | None = None) -> int:
    return run_main(STACK, argv, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
