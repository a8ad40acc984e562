"""What a run is asked to do, as frozen typed specs: the CLI layer makes them once, the library reads them.

One spec per concern, each validated when made (`rsdt_beam.cli.specs` turns flags into specs and
reports a bad value as a one-line `UserError`):

    AreaSpec       Stage 1: the area of interest, its grid and the observation store
    ConvertSpec    Stage 1 convert: the GeoTIFF archive and how its values are read
    FetchSpec      Stage 1 fetch: Sentinel Hub collections, limits, where credentials come from
    StacSpec       Stage 1 STAC: the API, collections, bands, cloud filter, values and asset access
    InputsSpec     Stage 2 inputs: the observation store and/or rsdtlib EOPatch folders
    StackSpec      Stage 2: time range and step, tiling, read chunk, where stacks go
    WindowSpec     Stage 3: window rules, record mode, tiles, layout, where windows go
    OutputSpec     how files are written (GZIP level) and how a run reports
    InferenceSpec  model, batching, padding and where maps go
    ScheduleSpec   scheduled incremental runs: output root, end, lookback, bin origin

Pure: imports neither Beam nor TensorFlow.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rsdt_beam.errors import UserError
from rsdt_beam.stack.rules import StackParams
from rsdt_beam.window.rules import WindowParams
from rsdt_beam.window.sampling import Sample

if TYPE_CHECKING:
    from rsdt_beam.normalization import Normalization

TRAINING = "training"
INFERENCE = "inference"
PER_TILE = "per_tile"
SHARDED = "sharded"


@dataclasses.dataclass(frozen=True)
class AreaSpec:
    store: str | None = None
    aoi: str | None = None
    aoi_crs: str | None = None
    aoi_union: bool = False
    resolution: float | None = None
    crs: str | None = None


@dataclasses.dataclass(frozen=True)
class ConvertSpec:
    """The archive (a manifest, or band/mask globs with a time pattern) and the value rules."""

    manifest: str | None
    band_files: tuple[str, ...]
    mask_files: str | None
    archive_modality: str
    time_pattern: str
    band_selection: tuple[int, ...] | None
    align_to: str | None
    params: Any  # acquire.geotiff.ConvertParams (rasterio stays out of this module)
    block_size: int


@dataclasses.dataclass(frozen=True)
class FetchSpec:
    collections: tuple[str, ...]
    maxcc: float | None
    time_difference: float
    chunk_size: int
    max_requests_in_flight: int
    base_url: str
    token_url: str | None
    profile: str | None
    credentials_file: str | None = None  # where the credentials are read (never the values: see sentinelhub)
    secret: str | None = None  # a Secret Manager version name
    max_attempts: int = 4
    retry_sleep: float = 5.0
    timeout: float = 120.0
    max_throttle_retries: int = 100
    plan_only: bool = False


@dataclasses.dataclass(frozen=True)
class StacSpec:
    api: str
    collections: tuple[str, ...]
    bands: tuple[tuple[str, tuple[str, ...]], ...]  # asset keys per collection (absent: the table's)
    maxcc: float | None
    time_tolerance: float
    params: Any  # acquire.stac.StacParams
    access: Any  # acquire.stac.StacAccess (where headers are read, never their values)
    block_size: int = 2048


@dataclasses.dataclass(frozen=True)
class InputsSpec:
    """Stage 2 inputs: the project's observation store and/or rsdtlib EOPatch folders per modality."""

    observations: str | None = None
    sar_ascending: str | None = None
    sar_descending: str | None = None
    optical: str | None = None
    sar_bands_feature: str = "L1_GND"
    sar_mask_feature: str = "dataMask"
    opt_bands_feature: str = "L1C_data"
    opt_mask_feature: str = "dataMask"

    @property
    def given(self) -> bool:
        return any((self.observations, self.sar_ascending, self.sar_descending, self.optical))

    def sources(self) -> dict[str, str]:
        """The input folders given, by flag name."""
        names = ("observations", "sar_ascending", "sar_descending", "optical")
        return {name: getattr(self, name) for name in names if getattr(self, name)}


@dataclasses.dataclass(frozen=True)
class StackSpec:
    """Stage 2. `starttime`/`endtime` may be left open for scheduled runs, which derive them."""

    starttime: float | None
    endtime: float | None
    delta_step: float
    tile_size: tuple[int, int]
    deadzone: tuple[int, int]
    chunk_size: int | None  # None: `rsdt_beam.grid.DEFAULT_CHUNK_SIZE`
    output: str | None = None

    def __post_init__(self):
        if self.chunk_size is not None and self.chunk_size < 1:
            raise UserError(f"--chunk_size must be positive, got {self.chunk_size}")
        if self.delta_step <= 0:
            raise UserError(f"--delta_step must be positive, got {self.delta_step} s")

    @property
    def params(self) -> StackParams:
        if self.starttime is None or self.endtime is None:
            missing = [f"--{n}" for n in ("starttime", "endtime") if getattr(self, n) is None]
            raise UserError(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required")
        if self.endtime <= self.starttime:
            raise UserError("--endtime must be after --starttime")
        return StackParams(self.starttime, self.endtime, self.delta_step)

    def between(self, starttime: float, endtime: float) -> StackSpec:
        return dataclasses.replace(self, starttime=starttime, endtime=endtime)


@dataclasses.dataclass(frozen=True)
class WindowSpec:
    """Stage 3. `gen_label(window, label_args)` makes training records; `window_filter(*window)` drops
    windows; `tiles(j, i)` selects the tiles; `sample` keeps a subset of the windows (the callables are
    loaded when the spec is made)."""

    params: WindowParams
    mode: str = INFERENCE
    label_fn: str | None = None
    gen_label: Callable | None = None
    label_args: Any = None
    window_filter: Callable | None = None
    tiles: Callable[[int, int], bool] | None = None
    sample: Sample | None = None  # None: every window
    layout: str = PER_TILE
    records_per_shard: int | None = None
    bytes_per_shard: int | None = None
    stack_dir: str | None = None
    output: str | None = None
    # The user functions and tile selection as given (`--tiles`, `--label_fn`, ...): part of the
    # output folder's identity, which the callables cannot be.
    identity: tuple[tuple[str, Any], ...] = ()
    delta_text: str | None = None  # --Delta as the user wrote it, for messages

    def __post_init__(self):
        if self.mode not in (TRAINING, INFERENCE):
            raise UserError(f"--mode must be {TRAINING!r} or {INFERENCE!r}, got {self.mode!r}")
        if self.mode == TRAINING and self.gen_label is None:
            raise UserError("training windows need a label function (--label_fn)")
        if self.layout not in (PER_TILE, SHARDED):
            raise UserError(f"--layout must be {PER_TILE!r} or {SHARDED!r}, got {self.layout!r}")

    def selects(self, j: int, i: int) -> bool:
        """Whether tile `(j, i)` is windowed (a TileSelector)."""
        return self.tiles is None or bool(self.tiles(j, i))


@dataclasses.dataclass(frozen=True)
class OutputSpec:
    """How files are written; `overwrite` lets a run replace an output folder made with other parameters."""

    gzip_level: int
    progress: bool = True
    record_observed: bool = False  # stack and window records carry the Observed mask
    overwrite: bool = False

    def __post_init__(self):
        if not 0 <= self.gzip_level <= 9:
            raise UserError(f"--gzip_level must be 0-9, got {self.gzip_level}")


@dataclasses.dataclass(frozen=True)
class InferenceSpec:
    model: str | None
    model_fn: Callable | None
    map_output: str
    windows: str | None = None
    batch_size: int = 16
    frames: int | None = None  # None: the windows' Omega; 0: no padding
    pad_value: float = -1.0
    trim_map_edges: bool = False
    map_grid: str | None = None
    model_fn_name: str | None = None  # --model_fn as given (the maps folder's identity)
    # Recorded beside --model (`rsdt_beam.normalization`): the model is called on `normalization.apply(features)`.
    normalization: Normalization | None = None


@dataclasses.dataclass(frozen=True)
class ScheduleSpec:
    output_root: str
    end: str = "today"
    lookback: float = 30 * 86400.0
    bin_origin: float = 0.0
    write_stacks: bool = False
