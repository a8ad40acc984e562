"""Stage 1 fetch: Sentinel-1 IW GRD (ascending, descending) and Sentinel-2 L1C from Sentinel Hub.

rsdtlib's `Retrieve` ("download" example) as a Beam pipeline, into the observation store:

    export SH_CLIENT_ID=... SH_CLIENT_SECRET=...   # or --sh_credentials_file F, --sh_secret NAME, --sh_profile P
    python -m pipelines.fetch --aoi ostrava.shp --resolution 10 --store obs \
        --starttime 2017-01-01 --endtime 2017-07-01 --maxcc 0.8 --tile_size 32 [--dry_run]

`--dry_run` lists the requests that would be sent and their estimated
processing units, and stops. Given `--window_output`, the fetched
observations go straight on to Stages 2 and 3 (stacks with `--stack_output`):

    python -m pipelines.fetch ... --delta_step 2d --Delta 30d --omega 10 --Omega 16 \
        --mode training --window_output tf_window/train

A re-run fetches only what the store does not hold yet. Copernicus Data Space:
`--sh_base_url https://sh.dataspace.copernicus.eu` (token URL follows).
"""

from __future__ import annotations

import argparse
import logging
import sys

from apache_beam.options.pipeline_options import PipelineOptions

from rsdt_beam.acquire.fetch import REJECTED, FetchObservations, FetchPlan
from rsdt_beam.acquire.sentinelhub import CredentialsError
from rsdt_beam.options import AreaOptions, WindowOptions
from rsdt_beam.pipeline import StackPlan, add_stages_2_and_3, print_help, run, write_rejected


def build_fetch(pipeline, options: PipelineOptions, plan: FetchPlan):
    """Fetch into the store; with --window_output also Stages 2 and 3 on the fetched observations."""
    fetched = pipeline | "Fetch" >> FetchObservations(plan)
    window_opts = options.view_as(WindowOptions)
    if not window_opts.window_output:
        write_rejected([fetched[REJECTED]], [], options.view_as(AreaOptions).store, pipeline)
        return plan
    stack_plan = StackPlan.from_options(options, grid=plan.grid, bands=plan.bands)
    return add_stages_2_and_3(pipeline, options, stack_plan, refs=fetched["observations"],
                              source_rejected=[fetched[REJECTED]])


def main(argv: list[str]) -> int:
    if "-h" in argv or "--help" in argv:
        print_help()
        print("\nfetch only:\n  --dry_run             list the requests and estimated PU, fetch nothing")
        return 0
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--dry_run", action="store_true", help="list the requests and estimated PU, fetch nothing")
    args, rest = parser.parse_known_args(argv)
    options = PipelineOptions(rest)
    try:
        plan = FetchPlan.from_options(options)
    except (CredentialsError, ValueError, FileNotFoundError) as error:
        print(f"rsdt_beam fetch: {error}", file=sys.stderr)
        return 2
    print(f"rsdt_beam fetch: {plan.describe()}", file=sys.stderr)
    if args.dry_run:
        for line in plan.item_lines():
            print(line)
        return 0
    run(lambda pipeline, opts: build_fetch(pipeline, opts, plan), options=options)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main(sys.argv[1:]))
