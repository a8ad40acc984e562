r"""Stage 1 from a STAC API of cloud-optimized GeoTIFFs -> observation store, or on to windows in one pipeline.

Earth Search (public; untested here, it needs the internet):

    python -m rsdt_beam.pipelines.stac --store obs \
        --stac_api https://earth-search.aws.element84.com/v1 \
        --stac_collections sentinel-2-l2a --stac_bands red,nir --maxcc 0.8 \
        --aoi ostrava.shp --resolution 10 --starttime 2023-05-01 --endtime 2023-07-01

Planetary Computer (asset URLs signed on the workers; untested here):

    python -m rsdt_beam.pipelines.stac --store obs \
        --stac_api https://planetarycomputer.microsoft.com/api/stac/v1 --stac_sign planetary_computer \
        --stac_collections sentinel-1-rtc,sentinel-2-l2a --stac_bands 'sentinel-2-l2a=B04,B08' ...

`--plan_only` lists the items, acquisitions and estimated bytes, and stops. Given
`--window_output` (and the Stage 2 and 3 flags), the observations go straight on
to stacks and windows. A re-run reads only observations the store lacks.
"""

from rsdt_beam.cli.commands import STAC
from rsdt_beam.cli.run import main as run_main


def main(argv: list[str] | None = None) -> int:
    return run_main(STAC, argv, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
