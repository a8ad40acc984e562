"""A scheduled run as a Beam graph: Stage 2 continued from the carried state, Stage 3's newly complete
windows, the state handed on, and the manifest marked `succeeded` as the job's last step."""

from __future__ import annotations

import dataclasses

import apache_beam as beam
import numpy as np

from rsdt_beam import fs
from rsdt_beam.common.names import METADATA_FILE
from rsdt_beam.common.times import utc_now_iso
from rsdt_beam.graph import Gather
from rsdt_beam.progress import set_total
from rsdt_beam.rejections import WriteRejections
from rsdt_beam.schedule.manifest import SUCCEEDED, RunManifest, delete_runs, run_entries, write_manifest
from rsdt_beam.schedule.rules import (
    Carry,
    CompleteWindows,
    fill_time,
    frames_between,
    run_times,
    seed_pieces,
    select_windows,
)
from rsdt_beam.specs import OutputSpec, WindowSpec
from rsdt_beam.stack.files import read_tile_stack, temporary_stack_dir
from rsdt_beam.stack.rules import Piece
from rsdt_beam.stack.transforms import Stack, WriteStacks, stack_folder
from rsdt_beam.window.transforms import WindowOutput, WriteWindows


@dataclasses.dataclass(frozen=True)
class CarriedFrames:
    """`seeds(tile)` of Stack: a tile's frames from the previous run's state folder, as pieces."""

    state_dir: str
    metadata: dict
    carry: Carry

    def __call__(self, tile: tuple[int, int]) -> list[Piece]:
        carried = read_tile_stack(self.state_dir, tile, self.metadata)
        expected = (*self.carry.times, fill_time(self.carry.end))
        if tuple(carried.times) != expected:
            raise ValueError(
                f"{self.state_dir} tile {tile}: carried frame times {list(carried.times)} differ "
                f"from its run's manifest {list(expected)}"
            )
        return seed_pieces(carried)


def finish_run(output_root: str, manifest: RunManifest, frames_before: int, carry: Carry, rejected: int) -> str:
    """The pipeline's last step: manifest `succeeded`, then the superseded incomplete runs go."""
    windows = fs.read_json(fs.join(manifest.outputs["windows"], METADATA_FILE))
    replaced = [e.run_id for e in run_entries(output_root) if e.status != SUCCEEDED and e.run_id != manifest.run_id]
    done = dataclasses.replace(
        manifest,
        status=SUCCEEDED,
        carry=carry.to_json(),
        replaced_runs=replaced,
        finished_at=utc_now_iso(),
        counts=dict(
            frames_written=carry.frames_total - frames_before,
            windows_written=windows["windows_written"],
            tiles_windowed=windows["tiles_written"],
            observations_rejected=rejected,
        ),
    )
    write_manifest(output_root, done)
    delete_runs(output_root, replaced)  # their time is covered by this run now
    return done.run_id


def build_scheduled(pipeline, run, manifest: RunManifest, window: WindowSpec, output: OutputSpec) -> None:
    """Stage 2 (continued from the carry) and Stage 3 for one run (a `launch.RunPlan`), into
    `runs/<id>/`; its manifest last. A run with a Stage 1 source reads its acquisitions into the store
    first: their refs join the store's before Stage 2, its rejections the run's rejected.json.

    The pipeline itself marks the run `succeeded`, so a launcher that does not wait for the job
    (a Flex Template, an Airflow operator) still leaves a complete record.
    """
    plan, carry, end, params = run.stack, run.carry, run.end, window.params
    set_total("tiles_stacked", plan.tile_count())
    set_total("tiles_windowed", plan.tile_count(window.selects))
    seeds = CarriedFrames(run.previous_state_dir, plan.metadata, carry) if run.previous else None
    # The extended stacks (carried frames, new frames, fill state at the run's end) stream to files first;
    # they span the run and the carry, not the history.
    extended_dir = temporary_stack_dir(run.directory)
    extended_folder = stack_folder(extended_dir, plan.metadata, output.gzip_level, "the run's temporary stacks")
    refs = pipeline | "Observations" >> beam.Create(run.refs)
    source_rejected = ()
    if run.source is not None:
        acquired, rejected_by_source = run.source.expand(pipeline)
        refs = (refs, acquired) | "Stored and acquired observations" >> beam.Flatten()
        source_rejected = (rejected_by_source,)
    stacked = refs | "Stage 2" >> Stack(
        plan,
        extended_folder,
        output.gzip_level,
        stack_times=lambda times: run_times(carry, times, end),
        seeds=seeds,
    )
    extended = stacked.stacks | "Load extended stacks" >> beam.Map(lambda stack: stack.load())
    written = stacked.written
    next_carry = written | "Select windows" >> beam.Map(
        lambda times: select_windows(np.concatenate([carry.times, times]), carry, end, params).carry
    )
    state_times = next_carry | "State times" >> beam.Map(lambda c: np.asarray([*c.times, fill_time(end)]))
    # The carry joins each tile's stack file (a reference, not its frames) as a main input: no side input.
    tiles = list(plan.layout.tiles())
    carry_to_tiles = next_carry | "Carry to every tile" >> beam.FlatMap(
        lambda c: [(tile, (_CARRY, c)) for tile in tiles]
    )
    stack_files = stacked.stacks | "Key stack files" >> beam.Map(lambda stack: (stack.tile, (_STACK, stack)))
    done = [
        (stack_files, carry_to_tiles)
        | "Stack files and carry" >> beam.Flatten()
        | "Join per tile" >> beam.GroupByKey()
        | "Frames still needed" >> beam.MapTuple(lambda _, joined: _frames_still_needed(joined, carry))
        | "Write state" >> WriteStacks(run.state_dir, plan.metadata, output.gzip_level, state_times)
    ]
    if "stack" in manifest.outputs:
        done.append(
            extended
            | "New frames" >> beam.Map(lambda stack: frames_between(stack, len(carry.times), -1))
            | "Write stacks" >> WriteStacks(manifest.outputs["stack"], plan.metadata, output.gzip_level, written)
        )
    windows = WindowOutput(window, output.gzip_level, CompleteWindows(carry, end))
    done.append(
        extended
        | "Selected tiles" >> beam.Filter(lambda stack: window.selects(*stack.tile))
        | "Write windows" >> WriteWindows(windows, plan.metadata)
    )
    rejected = (*source_rejected, *stacked.rejected) | "Rejected observations" >> WriteRejections(
        run.directory, run.listed_rejections
    )
    output_root, frames_before = run.output_root, carry.frames_total

    def finish(gathered: dict) -> str:
        (next_,), (rejected_count,) = gathered["carry"], gathered["rejected"]
        fs.delete_tree(extended_dir)
        return finish_run(output_root, manifest, frames_before, next_, rejected_count)

    summaries = {"carry": next_carry, "rejected": rejected}
    summaries.update({f"written {n}": pcoll for n, pcoll in enumerate(done)})
    summaries | "Run done" >> Gather() | "Write manifest.json" >> beam.Map(finish)


_CARRY, _STACK = "carry", "stack"


def _frames_still_needed(joined, carry: Carry):
    """A tile's extended stack cut to the frames the next run needs (from the next carry's first frame)."""
    next_carry = next(value for kind, value in joined if kind == _CARRY)
    stack = next(value for kind, value in joined if kind == _STACK).load()
    return frames_between(stack, next_carry.first_frame - carry.first_frame, None)
