"""The runnable pipelines, each composed as Source -> Stage 2 -> Stage 3 -> sinks from typed specs.

    source                      Stage 2 (Stack)              Stage 3 / sinks
    listed observations  --\\
    convert (GeoTIFFs)   ---+
    stac (STAC COGs)     ---+-> ObservationRef --Stack--> StackFile --+--> FinishStacks  (--stack_output)
    fetch (Sentinel Hub) --/                                          +--> WriteWindows  (--window_output)
    written stacks (ReadTileStacks) ----------------------------------+--> InferMaps     (--map_output)

Stage 2 streams each read chunk through time into tile stack files (in `--stack_output`, or in a
temporary folder inside the window or map output); Stage 3 then runs one work item per tile, reading
its file frame by frame. No worker holds a chunk's observations or a tile's series.
    written windows (ReadInferenceWindows) ----------------------------------> PredictWindows -> WriteMaps

Every builder adds to a Beam pipeline and returns the lines that describe what it will do; the
command-line layer (`rsdt_beam.cli`) makes the specs and runs the pipeline. Scheduled runs compose
the same `Stack` with hooks (`rsdt_beam.schedule.transforms`).
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np

from rsdt_beam import fs
from rsdt_beam.acquire.convert import ConvertPlan
from rsdt_beam.acquire.fetch import REJECTED as FETCH_REJECTED
from rsdt_beam.acquire.fetch import FetchObservations, FetchPlan
from rsdt_beam.acquire.listing import discover_observations
from rsdt_beam.common.names import RECORD_OBSERVED_KEY
from rsdt_beam.common.observations import Rejection
from rsdt_beam.common.times import format_duration, iso_time, parse_time
from rsdt_beam.errors import NothingToWrite, UserError
from rsdt_beam.graph import Spread
from rsdt_beam.grid import Grid
from rsdt_beam.inference import (
    ITEMS_PREDICTED,
    InferMaps,
    KerasWindowModelHandler,
    MapOutput,
    PredictWindows,
    ReadInferenceWindows,
    WriteMaps,
)
from rsdt_beam.numpy_reader import window_metadata
from rsdt_beam.outputs import FinishFolder
from rsdt_beam.progress import set_total
from rsdt_beam.rejections import WriteRejections
from rsdt_beam.specs import AreaSpec, ConvertSpec, InferenceSpec, InputsSpec, OutputSpec, StackSpec, WindowSpec
from rsdt_beam.stack.files import temporary_stack_dir, tile_timestamps
from rsdt_beam.stack.plan import StackPlan
from rsdt_beam.stack.rules import written_times
from rsdt_beam.stack.transforms import FinishStacks, Stack, stack_folder
from rsdt_beam.tfrecord import DEFAULT_GZIP_LEVEL
from rsdt_beam.window.rules import densest_window, window_spans
from rsdt_beam.window.sampling import parse_sample
from rsdt_beam.window.transforms import ReadTileStacks, WindowOutput, WriteWindows


def listed_stack_plan(inputs: InputsSpec, stack: StackSpec) -> tuple[StackPlan, list, list[Rejection], str]:
    """Lists the Stage 2 inputs: (plan, observation refs, rejections at listing, a summary line)."""
    observations = discover_observations(inputs, stack.params.endtime)
    plan = StackPlan.create(
        stack,
        observations.grid,
        observations.bands,
        modalities=observations.modalities,
        band_description=observations.band_description,
    )
    return plan, observations.refs, observations.rejected, f"{observations.summary()}; {plan.describe()}"


def written_or_refused(observed: list[float], plan: StackPlan) -> np.ndarray:
    """The time stamps Stage 2 will write from the observation times listed on the launcher (at most:
    workers may still set some aside); NothingToWrite when there is none, before anything is written."""
    params = plan.params
    times = written_times(observed, params)
    if times.size == 0:
        listed = sorted(observed)
        seen = (
            f"the {len(listed)} observations listed span {iso_time(listed[0])} to {iso_time(listed[-1])}"
            if listed
            else "no observation was listed"
        )
        raise NothingToWrite(
            f"0 observations in the time range [{iso_time(params.starttime)}, {iso_time(params.endtime)}): {seen}"
        )
    return times


def written_stack_times(stack_dir: str, metadata: dict, tiles: list[tuple[int, int]]) -> np.ndarray:
    """The time stamps written in a stack folder: its metadata's (rsdt_beam's), else a tile's (rsdtlib's,
    whose tiles all share the written time stamps)."""
    if "timestamps" in metadata:
        return np.asarray([parse_time(text) for text in metadata["timestamps"]], np.float64)
    return tile_timestamps(stack_dir, tiles[0])


def require_windows(times: np.ndarray, selected: int, total: int, window: WindowSpec) -> None:
    """NothingToWrite, before anything is written, when no tile is selected or no window fits `times`
    (every tile's written time stamps)."""
    if selected == 0:
        tiles = dict(window.identity).get("tiles", "")
        raise NothingToWrite(f"0 tiles selected: --tiles {tiles} selects none of the {total} tiles")
    params = window.params
    if next(window_spans(times, params), None) is not None:
        return
    delta = window.delta_text or format_duration(params.delta_size)
    delta += " s" if delta.replace(".", "", 1).isdigit() else ""
    frames = f"{times.size} frames, {iso_time(times[0])} to {iso_time(times[-1])}" if times.size else "0 frames"
    parts = "; triple windows need omega in each of 3 parts" if params.triple else ""
    raise NothingToWrite(
        f"0 windows: at most {densest_window(times, params)} frames fall within Delta={delta} on any tile, "
        f"omega={params.omega} ({frames}{parts})"
    )


def add_stages_2_and_3(
    pipeline,
    plan: StackPlan,
    refs,
    stack: StackSpec,
    window: WindowSpec | None,
    output: OutputSpec,
    listed_rejections=(),
    source_rejected=(),
) -> None:
    """Stage 2 over `refs` (a PCollection of ObservationRef) and its sinks: stacks to `stack.output`,
    windows of the selected tiles to `window.output`, the rejected list beside the last output (whose
    metadata.json waits for it)."""
    selector = window.selects if window is not None and not stack.output else None
    set_total("tiles_stacked", plan.tile_count(selector))
    stack_metadata = dict(plan.metadata, **({RECORD_OBSERVED_KEY: True} if output.record_observed else {}))
    # Without --stack_output the frames still go through files, inside the window folder, removed at the end.
    folder = (
        stack_folder(stack.output, stack_metadata, output.gzip_level)
        if stack.output
        else stack_folder(
            temporary_stack_dir(window.output), stack_metadata, output.gzip_level, "--window_output's temporary stacks"
        )
    )
    stacked = refs | "Stage 2" >> Stack(plan, folder, output.gzip_level, output.record_observed, selector=selector)
    stacks = stacked.stacks
    rejected_dir = window.output if window is not None else stack.output
    rejected = (*source_rejected, *stacked.rejected) | "Rejected observations" >> WriteRejections(
        rejected_dir, listed_rejections
    )
    if stack.output:
        (
            stacks
            | "Stacked tiles" >> beam.Map(lambda stack_file: stack_file.tile)
            | "Finish stacks"
            >> FinishStacks(
                folder,
                stack_metadata,
                stacked.written,
                stacked.stats,
                wait_for=() if window is not None else (rejected,),
            )
        )
        if window is not None:
            stacks = stacks | "Selected tiles" >> beam.Filter(lambda tile_stack: window.selects(*tile_stack.tile))
    if window is not None:
        set_total("tiles_windowed", plan.tile_count(window.selects))
        (
            stacks
            | "One work item per tile" >> Spread(lambda stack_file: stack_file.tile)
            | "Write windows"
            >> WriteWindows(
                WindowOutput(window, output.gzip_level, record_observed=output.record_observed),
                plan.metadata,
                wait_for=(rejected,),
                stats=stacked.stats,
                temporary_stacks=None if stack.output else folder.path,
            )
        )


def build_stack(pipeline, inputs: InputsSpec, stack: StackSpec, output: OutputSpec) -> list[str]:
    """Stage 2 alone: observations -> `stack.output`."""
    plan, refs, rejected, summary = listed_stack_plan(inputs, stack)
    written_or_refused([ref.time for ref in refs], plan)
    refs = pipeline | "Observations" >> beam.Create(refs)
    add_stages_2_and_3(pipeline, plan, refs, stack, None, output, rejected)
    return [summary]


def build_window(pipeline, window: WindowSpec, output: OutputSpec) -> list[str]:
    """Stage 3 alone: `window.stack_dir` (rsdt_beam's or rsdtlib's stacks) -> `window.output`."""
    read = ReadTileStacks(window.stack_dir, window.selects)
    if output.record_observed and not read.metadata.get(RECORD_OBSERVED_KEY):
        raise UserError(
            f"--record_observed: the stacks in {window.stack_dir} carry no observed mask; write them "
            f"with --record_observed (Stage 2)"
        )
    require_windows(
        written_stack_times(window.stack_dir, read.metadata, read.tiles) if read.tiles else np.zeros(0),
        len(read.tiles),
        len(read.all_tiles),
        window,
    )
    set_total("tiles_windowed", len(read.tiles))
    (
        pipeline
        | "Read stacks" >> read
        | "Write windows"
        >> WriteWindows(WindowOutput(window, output.gzip_level, record_observed=output.record_observed), read.metadata)
    )
    return [f"{len(read.tiles)} tiles of {window.stack_dir} -> {window.output}"]


def build_fused(pipeline, inputs: InputsSpec, stack: StackSpec, window: WindowSpec, output: OutputSpec) -> list[str]:
    """Stages 2 and 3 in one pipeline; Stage 2 records are written only with `stack.output`."""
    plan, refs, rejected, summary = listed_stack_plan(inputs, stack)
    observed = [ref.time for ref in refs]
    require_windows(written_or_refused(observed, plan), plan.tile_count(window.selects), plan.layout.num_tiles, window)
    refs = pipeline | "Observations" >> beam.Create(refs)
    add_stages_2_and_3(pipeline, plan, refs, stack, window, output, rejected)
    return [summary]


def build_convert(
    pipeline,
    area: AreaSpec,
    convert: ConvertSpec,
    stack: StackSpec | None,
    window: WindowSpec | None,
    output: OutputSpec,
) -> list[str]:
    """Convert into the store; with `window` fused on through Stages 2 and 3 (`build_source`)."""
    return build_source(pipeline, ConvertPlan.from_spec(area, convert, output.overwrite), stack, window, output)


def build_source(
    pipeline, plan: ConvertPlan, stack: StackSpec | None, window: WindowSpec | None, output: OutputSpec
) -> list[str]:
    """A convert-shaped source (convert's ConvertPlan, STAC's StacPlan) into the store; with `window` fused
    on through Stages 2 and 3.

    Fused, Stage 2 stacks the refs of the store's observations for this run (new and already
    converted) on the source's grid; `stack.output` also writes the stacks; rejected.json of the window
    output lists every observation set aside by the source and by Stage 2.
    """
    refs, rejected = plan.expand(pipeline)
    lines = [plan.describe()]
    if window is None:
        return lines
    stack_plan = StackPlan.create(stack, plan.job.grid, plan.band_counts, band_description=plan.band_description())
    observed = [source.time for source in plan.sources]  # new and already converted: what Stage 2 gets
    require_windows(
        written_or_refused(observed, stack_plan),
        stack_plan.tile_count(window.selects),
        stack_plan.layout.num_tiles,
        window,
    )
    add_stages_2_and_3(pipeline, stack_plan, refs, stack, window, output, source_rejected=[rejected])
    return [*lines, stack_plan.describe()]


def build_fetch(
    pipeline, plan: FetchPlan, stack: StackSpec, window: WindowSpec | None, output: OutputSpec
) -> list[str]:
    """Fetch into the store; with `window` also Stages 2 and 3 on the fetched observations."""
    fetched = pipeline | "Fetch" >> FetchObservations(plan)
    store_writes = (fetched["grid"], fetched["bands"], fetched["observations"], fetched[FETCH_REJECTED])
    if window is None:
        listed = (fetched[FETCH_REJECTED],) | "Rejected observations" >> WriteRejections(plan.store)
        (*store_writes, listed) | "Finish store" >> FinishFolder(plan.folder)
        return [plan.describe()]
    store_writes | "Finish store" >> FinishFolder(plan.folder)
    stack_plan = StackPlan.create(stack, plan.grid, plan.bands, band_description=plan.band_description())
    observed = [time for times in plan.acquisitions.values() for time in times] + [ref.time for ref in plan.stored]
    require_windows(
        written_or_refused(observed, stack_plan),
        stack_plan.tile_count(window.selects),
        stack_plan.layout.num_tiles,
        window,
    )
    add_stages_2_and_3(
        pipeline, stack_plan, fetched["observations"], stack, window, output, source_rejected=[fetched[FETCH_REJECTED]]
    )
    return [plan.describe(), stack_plan.describe()]


def build_infer(
    pipeline, inference: InferenceSpec, window: WindowSpec, inputs: InputsSpec | None, stack: StackSpec | None
) -> list[str]:
    """Model -> maps: offline over `inference.windows`, online from `window.stack_dir`, or online from
    Stage 2 inputs (stacks built in the pipeline, not written)."""
    grid = Grid.from_json(fs.read_json(inference.map_grid)) if inference.map_grid else None
    identity = dict(window.identity)
    choices = (
        ("model", inference.model),
        ("model_fn", inference.model_fn_name),
        ("frames", inference.frames),
        ("pad_value", inference.pad_value),
        ("tiles", identity.get("tiles")),
        ("sample", parse_sample(window.sample).spec),
        ("normalization", inference.normalization and inference.normalization.to_json()),
    )
    if inference.windows:
        metadata = window_metadata(inference.windows)
        maps = MapOutput.from_metadata(inference.map_output, metadata, grid, inference.trim_map_edges, choices)
        handler = KerasWindowModelHandler.from_spec(inference, maps.layout, metadata.get("Omega"))
        read = ReadInferenceWindows(inference.windows, window.selects, window.sample)
        set_total(ITEMS_PREDICTED, len(read.files))
        (
            pipeline
            | "Read windows" >> read
            | "Predict" >> PredictWindows(handler, read.records)
            | "Maps" >> WriteMaps(maps)
        )
        return [f"windows of {inference.windows} -> {inference.map_output}"]
    params = window.params
    choices += (
        ("Delta", params.delta_size),
        ("window_stride", params.window_stride),
        ("omega", params.omega),
        ("Omega", params.Omega),
        ("triple", params.triple),
        ("window_filter", identity.get("window_filter")),
    )
    if window.stack_dir:
        read = ReadTileStacks(window.stack_dir, window.selects)
        times = written_stack_times(window.stack_dir, read.metadata, read.tiles) if read.tiles else np.zeros(0)
        require_windows(times, len(read.tiles), len(read.all_tiles), window)
        maps = MapOutput.from_metadata(inference.map_output, read.metadata, grid, inference.trim_map_edges, choices)
        handler = KerasWindowModelHandler.from_spec(inference, maps.layout, window.params.Omega)
        set_total(ITEMS_PREDICTED, len(read.tiles))
        (
            pipeline
            | "Read stacks" >> read
            | "Infer maps" >> InferMaps(window.params, handler, maps, window.window_filter, window.sample)
        )
        return [f"{len(read.tiles)} tiles of {window.stack_dir} -> {inference.map_output}"]
    plan, refs, rejected, summary = listed_stack_plan(inputs, stack)
    if inference.normalization is not None:  # refused at launch when the inputs' bands are not the model's
        inference.normalization.scale(plan.bands.total, "the inputs")
    observed = [ref.time for ref in refs]
    require_windows(written_or_refused(observed, plan), plan.tile_count(window.selects), plan.layout.num_tiles, window)
    stack_times = tuple((key, plan.metadata[key]) for key in ("starttime", "endtime", "delta_step"))
    maps = MapOutput(
        inference.map_output, plan.grid, plan.layout, inference.trim_map_edges, choices=choices + stack_times
    )
    handler = KerasWindowModelHandler.from_spec(inference, maps.layout, window.params.Omega)
    folder = stack_folder(
        temporary_stack_dir(inference.map_output), plan.metadata, DEFAULT_GZIP_LEVEL, "--map_output's temporary stacks"
    )
    set_total("tiles_stacked", plan.tile_count(window.selects))
    set_total(ITEMS_PREDICTED, plan.tile_count(window.selects))
    stacked = (
        pipeline
        | "Observations" >> beam.Create(refs)
        | "Stage 2" >> Stack(plan, folder, DEFAULT_GZIP_LEVEL, selector=window.selects)
    )
    listed = stacked.rejected | "Rejected observations" >> WriteRejections(inference.map_output, rejected)
    stacked.stacks | "Infer maps" >> InferMaps(
        window.params, handler, maps, window.window_filter, window.sample, [listed], temporary_stacks=folder.path
    )
    return [summary]
