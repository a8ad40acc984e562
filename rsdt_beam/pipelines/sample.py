"""The main job on the bundled sample: real Sentinel-2 NDVI (eo-learn's TestEOPatch) -> stacks -> windows.

    python -m rsdt_beam.pipelines.sample --output out/sample [--runner DirectRunner ...]

Splits the bundled `rsdt_beam/sample_data/eolearn_TestEOPatch` into one EOPatch folder per date (rsdtlib's Stage 1
layout) under `<output>/obs/optical`, then runs Stages 2 and 3 fused on the DirectRunner:
stacks in `<output>/stack`, training windows in `<output>/windows`. Any further flag
(e.g. `--direct_num_workers 2 --direct_running_mode multi_processing`) goes to Beam.
"""

from rsdt_beam.cli.commands import SAMPLE
from rsdt_beam.cli.run import main as run_main


def main(argv: list[str] | None = None) -> int:
    return run_main(SAMPLE, argv, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
