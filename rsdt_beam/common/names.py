"""File names and metadata keys of every output folder, each defined once."""

from __future__ import annotations

import re

METADATA_FILE = "metadata.json"  # the completion marker of a folder: written last
RUN_FILE = "rsdt_run.json"  # the run marker of an output folder, with its parameters: written first
FILES_KEY = "files"  # metadata.json: the data files the folder holds, for readers (no listing)
REJECTED_FILE = "rejected.json"  # observations set aside, with the reason
GRID_FILE = "grid.json"  # the observation store's grid
BANDS_FILE = "bands.json"  # the observation store's band names, units and preprocessing per modality
WINDOWS_CSV = "windows.csv"  # the windows list of a window folder
MAPS_CSV = "maps.csv"  # the maps list of a map folder
RUNS_DIR = "runs"  # scheduled runs under the output root
MANIFEST_FILE = "manifest.json"  # a scheduled run's record

# rsdtlib's metadata.json keys, in its order; rsdt_beam adds its own after them.
RSDTLIB_METADATA_KEYS = ("tile_size_y", "tile_size_x", "bands_sar", "bands_opt", "deadzone_y", "deadzone_x")

# Model-card keys rsdt_beam adds to Stage 2's metadata.json and Stage 3 carries over: band names and units
# per modality, the preprocessing of the values, per-band statistics of the written frames.
BANDS_KEY = "bands"
PREPROCESSING_KEY = "preprocessing"
BAND_STATS_KEY = "band_stats"
MODEL_CARD_KEYS = (BANDS_KEY, PREPROCESSING_KEY, BAND_STATS_KEY)
RECORD_OBSERVED_KEY = "observed_recorded"  # true when records carry the `Observed` mask (--record_observed)

TILE_FILE = re.compile(r"^(\d+)_(\d+)\.tfrecords$")


def tile_file_name(tile: tuple[int, int]) -> str:
    return f"{tile[0]}_{tile[1]}.tfrecords"


def tile_name(tile: tuple[int, int]) -> str:
    return f"{tile[0]}_{tile[1]}"


def parse_tile(text: str) -> tuple[int, int]:
    """`3_5` (or `3,5`) -> (3, 5); ValueError otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*[_,]\s*(\d+)\s*", text)
    if not match:
        raise ValueError(f"not a tile index 'j_i': {text!r}")
    return int(match.group(1)), int(match.group(2))
