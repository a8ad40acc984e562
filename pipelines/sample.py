"""The main job on the bundled sample: real Sentinel-2 NDVI (eo-learn's TestEOPatch) -> stacks -> windows.

    python -m pipelines.sample --output out/sample [--runner DirectRunner ...]

Splits `sample_data/eolearn_TestEOPatch` into one EOPatch folder per date (rsdtlib's Stage 1
layout) under `<output>/obs/optical`, then runs Stages 2 and 3 fused on the DirectRunner:
stacks in `<output>/stack`, training windows in `<output>/windows`. Any further flag
(e.g. `--direct_num_workers 2 --direct_running_mode multi_processing`) goes to Beam.
"""

import argparse
import json
import logging
import os
import sys

import numpy as np

from rsdt_beam.acquire.eopatch import write_eopatch
from rsdt_beam.acquire.observation import parse_time_name
from rsdt_beam.pipeline import build_fused, run
from rsdt_beam.sample_data import EOLEARN_TEST_EOPATCH as SAMPLE



def split_sample(out_root: str, mask_name: str = "IS_VALID") -> int:
    """One EOPatch folder per date (data/NDVI.npy, mask/<mask_name>.npy); returns how many."""
    with open(os.path.join(SAMPLE, "timestamps.json")) as f:
        stamps = json.load(f)
    with open(os.path.join(SAMPLE, "bbox.geojson")) as f:
        bbox = json.load(f)
    ndvi = np.load(os.path.join(SAMPLE, "data", "NDVI.npy"))
    mask = np.load(os.path.join(SAMPLE, "mask", f"{mask_name}.npy"))
    if mask_name == "CLM":
        mask = mask == 0  # CLM marks clouds; valid = not cloud
    for k, stamp in enumerate(stamps):
        name = stamp.replace("-", "").replace(":", "")
        write_eopatch(os.path.join(out_root, name), ndvi[k], mask[k].astype(bool), bbox,
                      parse_time_name(name), "NDVI", mask_name)
    return len(stamps)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="out/sample")
    args, beam_args = parser.parse_known_args(argv)
    obs = os.path.join(args.output, "obs", "optical")
    count = split_sample(obs)
    print(f"rsdt_beam sample: {count} EOPatch folders in {obs}", file=sys.stderr)
    flags = ["--optical", obs, "--opt_bands_feature", "NDVI", "--opt_mask_feature", "IS_VALID",
             "--starttime", "2016-01-01", "--endtime", "2017-07-01", "--delta_step", "10d",
             "--tile_size", "32", "--deadzone", "2",
             "--stack_output", os.path.join(args.output, "stack"),
             "--Delta", "60d", "--omega", "3", "--Omega", "6", "--mode", "training",
             "--window_output", os.path.join(args.output, "windows")]
    run(build_fused, flags + beam_args)
    with open(os.path.join(args.output, "windows", "metadata.json")) as f:
        meta = json.load(f)
    print(f"rsdt_beam sample: {meta['tiles_written']} tiles, {meta['windows_written']} training windows "
          f"in {args.output}/windows; stacks in {args.output}/stack", file=sys.stderr)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main(sys.argv[1:])
