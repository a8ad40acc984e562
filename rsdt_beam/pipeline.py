"""The runnable shapes: Stage 2 alone, Stage 3 alone, and both fused.

What happens at construction time (on the launcher) is only listing: the
observation files, the grid (the store's `grid.json` or the first readable
observation) and the band count of each modality (its first readable
observation). Every other header and all pixels are read by the workers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from rsdt_beam import fs
from rsdt_beam.acquire.eopatch import EOPatchReader, list_eopatches
from rsdt_beam.acquire.observation import ObservationError, ObservationRef, Rejection, iso_time
from rsdt_beam.acquire.store import list_store, read_grid
from rsdt_beam.graph import join_ends
from rsdt_beam.grid import Grid, TileLayout
from rsdt_beam.options import (OutputOptions, StackOptions, WindowOptions, parse_duration, parse_size_pair,
                               parse_time, window_params)
from rsdt_beam.progress import NAMESPACE, enable_progress_line
from rsdt_beam.stack.files import RSDTLIB_METADATA_KEYS
from rsdt_beam.stack.rules import MODALITIES, OPTICAL, SAR_ASCENDING, SAR_DESCENDING, BandCounts, StackParams
from rsdt_beam.stack.transforms import (REJECTED, InspectObservations, StackChunks,
                                        WriteStacks, WrittenTimes)
from rsdt_beam.window.selection import load_callable, tile_selector
from rsdt_beam.window.transforms import ReadTileStacks, WindowOutput, WriteWindows

_LOG = logging.getLogger(__name__)
REJECTED_FILE = "rejected.json"


@dataclasses.dataclass
class Observations:
    """The observations of a run as listed on the launcher, with the grid and band counts they fix."""

    refs: list[ObservationRef]
    rejected: list[Rejection]
    grid: Grid
    bands: BandCounts
    after_end: int = 0

    def summary(self) -> str:
        per = {m: sum(r.modality == m for r in self.refs) for m in MODALITIES}
        return (f"{len(self.refs)} observations ({', '.join(f'{m} {n}' for m, n in per.items())}), "
                f"bands sar {self.bands.sar} opt {self.bands.opt}, grid {self.grid.describe()}")


def discover_observations(options: StackOptions, endtime: float) -> Observations:
    """Lists the observations named by the options (store or EOPatch folders)."""
    refs: list[ObservationRef] = []
    rejected: list[Rejection] = []
    sources = []
    grid = None
    if options.observations:
        sources.append(options.observations)
        found, skipped = list_store(options.observations)
        refs += found
        rejected += skipped
        grid = read_grid(options.observations)
    for modality, folder, reader in (
            (SAR_ASCENDING, options.sar_ascending, EOPatchReader(options.sar_bands_feature, options.sar_mask_feature)),
            (SAR_DESCENDING, options.sar_descending, EOPatchReader(options.sar_bands_feature, options.sar_mask_feature)),
            (OPTICAL, options.optical, EOPatchReader(options.opt_bands_feature, options.opt_mask_feature))):
        if folder:
            if not fs.folder_exists(folder):
                raise FileNotFoundError(f"--{modality} folder {folder} does not exist")
            sources.append(folder)
            found, skipped = list_eopatches(folder, modality, reader)
            refs += found
            rejected += skipped
    if not sources:
        raise ValueError("no input: give --observations and/or --sar_ascending/--sar_descending/--optical")
    for item in rejected:
        _LOG.warning("set aside %s: %s", item.observation, item.reason)
    # Observations at or after endtime can never be written: not loaded at all (rsdtlib loads them).
    after_end = sum(ref.time >= endtime for ref in refs)
    refs = sorted((ref for ref in refs if ref.time < endtime), key=lambda r: (r.time, r.modality))
    unique: list[ObservationRef] = []
    for ref in refs:
        if unique and (unique[-1].modality, unique[-1].time) == (ref.modality, ref.time):
            rejected.append(Rejection.of(ref, f"same modality and time stamp as {unique[-1].uri}"))
            continue
        unique.append(ref)
    if not unique:
        raise ValueError(f"no observations before endtime {iso_time(endtime)} in {', '.join(sources)}"
                         + (f" ({len(rejected)} entries set aside: {rejected[0].observation}: "
                            f"{rejected[0].reason} ...)" if rejected else ""))
    headers = {}
    for ref in unique:
        if ref.modality in headers:
            continue
        try:
            headers[ref.modality] = ref.reader.header(ref.uri)
        except ObservationError as error:
            _LOG.warning("cannot take band count from %s, trying the next one", error)
    if not headers:
        raise ValueError(f"none of the {len(unique)} observations in {', '.join(sources)} is readable")
    if grid is None:
        grid = next(iter(headers.values())).grid
    sar = {headers[m].bands for m in (SAR_ASCENDING, SAR_DESCENDING) if m in headers}
    if len(sar) > 1:
        raise ValueError(f"SAR ascending has {headers[SAR_ASCENDING].bands} bands but SAR descending has "
                         f"{headers[SAR_DESCENDING].bands}; rsdtlib's record schema needs one bands_sar")
    bands = BandCounts(sar.pop() if sar else 0, headers[OPTICAL].bands if OPTICAL in headers else 0)
    return Observations(unique, rejected, grid, bands, after_end)


def stack_metadata(layout: TileLayout, bands: BandCounts, grid: Grid, params: StackParams) -> dict:
    """rsdtlib's metadata.json keys first, in its order, then rsdt_beam's additions."""
    metadata = {"tile_size_y": layout.tile_size_y, "tile_size_x": layout.tile_size_x,
                "bands_sar": bands.sar, "bands_opt": bands.opt,
                "deadzone_y": layout.deadzone_y, "deadzone_x": layout.deadzone_x}
    assert tuple(metadata) == RSDTLIB_METADATA_KEYS
    metadata.update(num_tiles_y=layout.num_tiles_y, num_tiles_x=layout.num_tiles_x, grid=grid.to_json(),
                    starttime=iso_time(params.starttime), endtime=iso_time(params.endtime),
                    delta_step=params.delta_step)
    return metadata


def write_rejected(rejected_pcolls, listed: list[Rejection], output_dir: str, pipeline):
    listed_pcoll = pipeline | "Listed rejections" >> beam.Create([r.to_json() for r in listed])
    as_json = [pc | f"Rejection as JSON {n}" >> beam.Map(lambda r: r.to_json())
               for n, pc in enumerate(rejected_pcolls)]

    def write(items):
        items = sorted(items, key=lambda item: json.dumps(item, sort_keys=True))
        fs.write_json(fs.join(output_dir, REJECTED_FILE), items)
        return len(items)

    return ((listed_pcoll, *as_json)
            | "All rejections" >> beam.Flatten()
            | "Collect rejections" >> beam.combiners.ToList()
            | "Write rejected.json" >> beam.Map(write))


@dataclasses.dataclass
class StackPlan:
    """Everything Stage 2 needs, resolved and validated before the pipeline runs.

    `observations` is the launcher's listing; sources that produce
    observations inside the pipeline (convert, fetch) pass their
    `ObservationRef` PCollection to `expand` instead, with the grid and band
    counts they fix up front.
    """

    grid: Grid
    bands: BandCounts
    params: StackParams
    layout: TileLayout
    chunk_size: int
    metadata: dict
    observations: Observations | None = None

    @classmethod
    def create(cls, grid: Grid, bands: BandCounts, params: StackParams, tile_size: tuple[int, int],
               deadzone: tuple[int, int], chunk_size: int,
               observations: Observations | None = None) -> "StackPlan":
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        layout = TileLayout(grid.height, grid.width, *tile_size, *deadzone)
        metadata = stack_metadata(layout, bands, grid, params)
        if observations is not None:
            metadata["modalities"] = sorted({ref.modality for ref in observations.refs})
        return cls(grid, bands, params, layout, chunk_size, metadata, observations)

    @classmethod
    def from_options(cls, options: PipelineOptions, grid: Grid | None = None,
                     bands: BandCounts | None = None) -> "StackPlan":
        """From StackOptions; lists the observations unless `grid` and `bands` are given."""
        opts = options.view_as(StackOptions)
        if not opts.starttime or not opts.endtime:
            raise ValueError("--starttime and --endtime are required")
        params = StackParams(parse_time(opts.starttime), parse_time(opts.endtime), parse_duration(opts.delta_step))
        observations = None
        if grid is None or bands is None:
            observations = discover_observations(opts, params.endtime)
            grid, bands = observations.grid, observations.bands
        return cls.create(grid, bands, params, parse_size_pair(opts.tile_size), parse_size_pair(opts.deadzone),
                          opts.chunk_size, observations)

    def describe(self) -> str:
        what = self.observations.summary() if self.observations else f"grid {self.grid.describe()}"
        return f"{what}; {self.layout.num_tiles} tiles ({self.layout.num_tiles_y} x {self.layout.num_tiles_x})"

    def expand(self, pipeline, refs=None, selector=None):
        """Adds Stage 2: returns (TileStack PCollection, written times singleton, rejected PCollections).

        `refs` defaults to the listed observations; `selector(j, i)` limits
        the stacked tiles.
        """
        if refs is None:
            refs = pipeline | "Observations" >> beam.Create(self.observations.refs)
        inspected = refs | "Inspect observations" >> InspectObservations(self.grid, self.bands)
        written = inspected["valid"] | "Written time stamps" >> WrittenTimes(self.params)
        stacked = inspected["valid"] | "Stack tiles" >> StackChunks(self.layout, self.chunk_size, self.bands,
                                                                     written, selector)
        return stacked["stacks"], written, [inspected[REJECTED], stacked[REJECTED]]

    def listed_rejections(self) -> list[Rejection]:
        return self.observations.rejected if self.observations else []


def window_output_from_options(options: PipelineOptions) -> WindowOutput:
    opts = options.view_as(WindowOptions)
    out = options.view_as(OutputOptions)
    if not opts.window_output:
        raise ValueError("--window_output is required")
    return WindowOutput(
        output_dir=opts.window_output, params=window_params(opts), mode=opts.mode,
        gen_label=load_callable(opts.label_fn) if opts.mode == "training" else None,
        label_args=json.loads(opts.label_args) if opts.label_args else None,
        window_filter=load_callable(opts.window_filter) if opts.window_filter else None,
        layout=opts.layout, gzip_level=out.gzip_level, records_per_shard=opts.records_per_shard,
        bytes_per_shard=opts.bytes_per_shard)


def build_stack(pipeline, options: PipelineOptions) -> StackPlan:
    """Stage 2 alone: observations -> `--stack_output`."""
    opts = options.view_as(StackOptions)
    if not opts.stack_output:
        raise ValueError("--stack_output is required")
    plan = StackPlan.from_options(options)
    stacks, written, rejected = plan.expand(pipeline)
    stacks | "Write stacks" >> WriteStacks(opts.stack_output, plan.metadata,
                                           options.view_as(OutputOptions).gzip_level, written)
    write_rejected(rejected, plan.listed_rejections(), opts.stack_output, pipeline)
    return plan


def build_window(pipeline, options: PipelineOptions) -> WindowOutput:
    """Stage 3 alone: `--stack_dir` (rsdt_beam's or rsdtlib's) -> `--window_output`."""
    opts = options.view_as(WindowOptions)
    if not opts.stack_dir:
        raise ValueError("--stack_dir is required")
    output = window_output_from_options(options)
    read = ReadTileStacks(opts.stack_dir, tile_selector(opts.tiles))
    pipeline | "Read stacks" >> read | "Write windows" >> WriteWindows(output, read.metadata)
    return output


def add_stages_2_and_3(pipeline, options: PipelineOptions, plan: StackPlan, refs=None,
                       source_rejected=()) -> StackPlan:
    """Stages 2 and 3 after any source: windows to `--window_output`, stacks only with `--stack_output`.

    `refs` (default: the plan's listed observations) and `source_rejected` come from
    sources that produce observations inside the pipeline (convert, fetch).
    """
    opts = options.view_as(StackOptions)
    output = window_output_from_options(options)
    selector = tile_selector(options.view_as(WindowOptions).tiles)
    stacks, written, rejected = plan.expand(pipeline, refs=refs, selector=None if opts.stack_output else selector)
    if opts.stack_output:
        stacks | "Write stacks" >> WriteStacks(opts.stack_output, plan.metadata,
                                               options.view_as(OutputOptions).gzip_level, written)
        stacks = stacks | "Selected tiles" >> beam.Filter(lambda stack: selector(*stack.tile))
    stacks | "Write windows" >> WriteWindows(output, plan.metadata)
    write_rejected([*source_rejected, *rejected], plan.listed_rejections(), output.output_dir, pipeline)
    return plan


def build_fused(pipeline, options: PipelineOptions) -> StackPlan:
    """Stages 2 and 3 in one pipeline; Stage 2 records are written only with `--stack_output`."""
    window_output_from_options(options)  # window flags are checked before any listing
    return add_stages_2_and_3(pipeline, options, StackPlan.from_options(options))


def print_help() -> None:
    """`--help` of the pipeline commands: the command's docstring and every rsdt_beam flag.

    Beam's own parsing knows no `--help`, so the rsdt_beam option classes are put into one parser here.
    """
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    parser = argparse.ArgumentParser(prog=f"python -m {spec.name}" if spec else None,
                                     description=(main.__doc__ if main else None),
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Beam's flags (--runner, --direct_num_workers, --project, "
                                            "--temp_location, ...) are passed through to Beam.")
    for options_class in PipelineOptions.__subclasses__():
        if options_class.__module__ == "rsdt_beam.options":
            options_class._add_argparse_args(parser)
    parser.print_help()


def run(build, argv: list[str] | None = None, *, options: PipelineOptions | None = None):
    """Builds with `build(pipeline, options)`, runs to completion, prints a summary; returns the result."""
    if options is None and argv is not None and ("-h" in argv or "--help" in argv):
        print_help()
        raise SystemExit(0)
    options = options or PipelineOptions(argv)
    show_progress = not options.view_as(OutputOptions).no_progress and sys.stderr.isatty()
    enable_progress_line(show_progress)
    started = time.monotonic()
    pipeline = beam.Pipeline(options=options)
    plan = build(pipeline, options)
    if isinstance(plan, StackPlan):
        print(f"rsdt_beam: {plan.describe()}", file=sys.stderr)
    join_ends(pipeline)
    result = pipeline.run()
    result.wait_until_finish()
    print(summary(result, time.monotonic() - started), file=sys.stderr)
    return result


def counters(result) -> dict[str, int]:
    """rsdt_beam's counters of a finished run; none from a runner that collects no metrics (DaskRunner)."""
    totals: dict[str, int] = {}
    try:
        metrics = result.metrics()
    except NotImplementedError:
        return totals
    for counter in metrics.query(beam.metrics.MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + counter.committed
    return totals


def summary(result, seconds: float) -> str:
    values = counters(result)
    parts = [f"{name.replace('_', ' ')} {value / 1e6:.1f} MB" if name.endswith("bytes")
             else f"{name.replace('_', ' ')} {value}" for name, value in sorted(values.items())]
    return f"rsdt_beam: done in {seconds:.1f} s: " + ", ".join(parts)
