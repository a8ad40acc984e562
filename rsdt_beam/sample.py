"""The bundled sample: real Sentinel-2 NDVI (eo-learn's TestEOPatch, 68 dates over Slovenia) as
rsdtlib's Stage 1 would have written it, one EOPatch folder per date, and the specs the sample job runs."""

from __future__ import annotations

import json
import os

import numpy as np

from rsdt_beam.acquire.eopatch import write_eopatch
from rsdt_beam.common.names import METADATA_FILE
from rsdt_beam.common.times import parse_duration, parse_time, parse_time_name
from rsdt_beam.sample_data import EOLEARN_TEST_EOPATCH as SAMPLE
from rsdt_beam.specs import TRAINING, InputsSpec, StackSpec, WindowSpec
from rsdt_beam.window.rules import WindowParams
from rsdt_beam.window.selection import rsdtlib_example_label


def split_sample(folder: str, mask_name: str = "IS_VALID") -> int:
    """One EOPatch folder per date in `folder` (data/NDVI.npy, mask/<mask_name>.npy); returns how many."""
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
        write_eopatch(
            os.path.join(folder, name), ndvi[k], mask[k].astype(bool), bbox, parse_time_name(name), "NDVI", mask_name
        )
    return len(stamps)


def sample_specs(out_root: str) -> tuple[InputsSpec, StackSpec, WindowSpec]:
    """The sample job: Stages 2 and 3 fused, stacks to `<out_root>/stack`, training windows to `<out_root>/windows`."""
    inputs = InputsSpec(
        optical=os.path.join(out_root, "obs", "optical"), opt_bands_feature="NDVI", opt_mask_feature="IS_VALID"
    )
    stack = StackSpec(
        parse_time("2016-01-01"),
        parse_time("2017-07-01"),
        parse_duration("10d"),
        (32, 32),
        (2, 2),
        256,
        output=os.path.join(out_root, "stack"),
    )
    window = WindowSpec(
        WindowParams(parse_duration("60d"), 1, 3, 6, False),
        mode=TRAINING,
        label_fn="rsdt_beam.window.selection:rsdtlib_example_label",
        gen_label=rsdtlib_example_label,
        output=os.path.join(out_root, "windows"),
    )
    return inputs, stack, window


def sample_summary(out_root: str) -> str:
    with open(os.path.join(out_root, "windows", METADATA_FILE)) as f:
        meta = json.load(f)
    return (
        f"rsdt_beam sample: {meta['tiles_written']} tiles, {meta['windows_written']} training windows "
        f"in {out_root}/windows; stacks in {out_root}/stack"
    )
