r"""Scheduled incremental launches: a fixed command line for cron, Cloud Scheduler or Airflow.

    python -m rsdt_beam.pipelines.scheduled --observations gs://B/store --output_root gs://B/rsdt \
        --end today --lookback 30d --delta_step 2d --tile_size 32 \
        --Delta 30d --omega 10 --Omega 16 --mode inference

Each launch processes what is new since the last successful run under `--output_root` and writes
`runs/<start>-<end>/` (manifest.json, windows/, state/, rejected.json; stack/ with --write_stacks).
With `--stac_api` (and the STAC flags, `--store` in place of `--observations`) each launch first reads
the acquisitions its store lacks from a STAC catalog, in the same job:

    python -m rsdt_beam.pipelines.scheduled --stac_api https://earth-search.aws.element84.com/v1 \
        --stac_collections sentinel-2-l2a --stac_bands red,nir --maxcc 0.8 --aoi gs://B/aoi.geojson \
        --resolution 10 --store gs://B/store --output_root gs://B/rsdt --end today --lookback 30d ...

See `rsdt_beam.schedule` and `schedules/` for a crontab line and a Cloud Scheduler job.
"""

from rsdt_beam.cli.commands import SCHEDULED
from rsdt_beam.cli.run import main as run_main


def main(argv: list[str] | None = None) -> int:
    return run_main(SCHEDULED, argv, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
