r"""Stage 1 fetch: Sentinel-1 IW GRD (ascending, descending) and Sentinel-2 L1C from Sentinel Hub.

rsdtlib's `Retrieve` ("download" example) as a Beam pipeline, into the observation store:

    export SH_CLIENT_ID=... SH_CLIENT_SECRET=...          # or --sh_profile NAME
    python -m rsdt_beam.pipelines.fetch --aoi ostrava.shp --resolution 10 --store obs \
        --starttime 2017-01-01 --endtime 2017-07-01 --maxcc 0.8 --tile_size 32 [--plan_only]

`--plan_only` lists the requests that would be sent and their estimated
processing units, and stops. Given `--window_output`, the fetched
observations go straight on to Stages 2 and 3 (stacks with `--stack_output`):

    python -m rsdt_beam.pipelines.fetch ... --delta_step 2d --Delta 30d --omega 10 --Omega 16 \
        --mode training --window_output tf_window/train

A re-run fetches only what the store does not hold yet. Copernicus Data Space:
`--sh_base_url https://sh.dataspace.copernicus.eu` (token URL follows).
"""

from rsdt_beam.cli.commands import FETCH
from rsdt_beam.cli.run import main as run_main


def main(argv: list[str] | None = None) -> int:
    return run_main(FETCH, argv, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
