r"""Stage 1 convert: GeoTIFF archives -> observation store, or on to windows in one pipeline.

rsdtlib's `Convert` example (Landsat bands + QA mask, one timestamp each) as a
Beam pipeline; here the real eo-box Landsat 7 series (bands b3/b4/b5, Fmask):

    python -m rsdt_beam.pipelines.convert --store obs_store \
        --aoi 336375,4460595,338205,4462425 --aoi_crs EPSG:32613 --resolution 30 \
        --align_to DATA/LE70350322008118EDC00/LE70350322008118EDC00_b3.tif \
        --band_files 'DATA/*/*_b3.tif,DATA/*/*_b4.tif,DATA/*/*_b5.tif' \
        --mask_files 'DATA/*/*_fmask.tif' --mask_rule fmask --time_pattern '?????????%Y%j*' \
        --archive_modality optical --divisor 10000

then `python -m rsdt_beam.pipelines.stack --observations obs_store ...`. Fused (convert,
stack and window in one pipeline): add the Stage 2 and 3 flags and
`--window_output DIR` (and `--stack_output DIR` to keep the stacks too).
"""

from rsdt_beam.cli.commands import CONVERT
from rsdt_beam.cli.run import main as run_main


def main(argv: list[str] | None = None) -> int:
    return run_main(CONVERT, argv, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
