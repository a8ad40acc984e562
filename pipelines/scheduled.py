"""Scheduled incremental launches: a fixed command line for cron, Cloud Scheduler or Airflow.

    python -m pipelines.scheduled --observations gs://B/store --output_root gs://B/rsdt \
        --end today --lookback 30d --delta_step 2d --tile_size 32 \
        --Delta 30d --omega 10 --Omega 16 --mode inference

Each launch processes what is new since the last successful run under `--output_root` and writes
`runs/<start>-<end>/` (manifest.json, windows/, state/, rejected.json; stack/ with --write_stacks).
See `rsdt_beam.schedule` and `schedules/` for a crontab line and a Cloud Scheduler job.
"""

import logging
import sys

from rsdt_beam.errors import UserError
from rsdt_beam.pipeline import print_help
from rsdt_beam.schedule import launch

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    if "-h" in sys.argv or "--help" in sys.argv:
        print_help()
        raise SystemExit(0)
    try:
        manifest = launch(sys.argv[1:])
    except UserError as error:
        print(f"rsdt_beam scheduled: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    counts = ", ".join(f"{name.replace('_', ' ')} {value}" for name, value in manifest.counts.items())
    print(f"rsdt_beam scheduled: run {manifest.run_id} {manifest.status}" + (f": {counts}" if counts else ""),
          file=sys.stderr)
