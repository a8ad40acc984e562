"""Scheduled incremental launches: relative time ranges, windows across runs, manifests, failure and repair.

The rules are checked alone (random timelines split into runs give exactly one launch's windows),
then the pipeline on the bundled real sample with growing inputs: the union of consecutive launches
equals one fused launch over everything, record for record.
"""

import dataclasses
import io
import json
import os
import shlex
import shutil

import numpy as np
import pytest

from rsdt_beam.cli.commands import RUN, SCHEDULED, scheduled_command
from rsdt_beam.cli.run import execute
from rsdt_beam.common.modalities import BandCounts
from rsdt_beam.common.times import parse_time, parse_time_name
from rsdt_beam.errors import UserError
from rsdt_beam.records import parse_example
from rsdt_beam.schedule.manifest import FAILED, SUCCEEDED, list_runs
from rsdt_beam.schedule.rules import (
    Carry,
    align_down,
    fill_time,
    resolve_end,
    run_times,
    seed_pieces,
    select_windows,
)
from rsdt_beam.stack.rules import Piece, stack_tile
from rsdt_beam.tfrecord import read_records
from rsdt_beam.window.rules import WindowParams, window_spans

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAY = 86400.0
# The bundled sample's features and a window length its 10-day revisit fills.
SAMPLE_FLAGS = [
    "--opt_bands_feature",
    "NDVI",
    "--opt_mask_feature",
    "IS_VALID",
    "--delta_step",
    "10d",
    "--tile_size",
    "32",
    "--deadzone",
    "2",
    "--lookback",
    "120d",
    "--Delta",
    "60d",
    "--omega",
    "3",
    "--Omega",
    "6",
    "--mode",
    "training",
    "--no_progress",
]
DAYS = ["2016-01-01T06:15", "2016-04-01T06:15", "2016-06-20T06:15"]


def test_relative_end_and_bins():
    now = parse_time("2016-03-05T06:15:00")
    assert resolve_end("today", now) == parse_time("2016-03-05")
    assert resolve_end("yesterday", now) == parse_time("2016-03-04")
    assert resolve_end("now", now) == now
    assert resolve_end("2016-02-01T12:00", now) == parse_time("2016-02-01T12:00")
    origin = parse_time("1970-01-01")
    assert align_down(parse_time("2016-03-04"), origin, 2 * DAY) == parse_time("2016-03-04")  # day 16864
    assert align_down(parse_time("2016-03-05T23:00"), origin, 2 * DAY) == parse_time("2016-03-04")
    assert fill_time(now) < now and fill_time(now) > now - 1e-3


def windows_in_runs(times: np.ndarray, cuts: list[float], params: WindowParams) -> list:
    carry, found = Carry(cuts[0]), []
    for end in [*cuts[1:], float("inf")]:
        new = times[(times >= carry.end) & (times < end)]
        selection = select_windows(np.concatenate([carry.times, new]), carry, end, params)
        offset = carry.first_frame
        found += [(s.window_id, tuple((a + offset, b + offset) for a, b in s.parts)) for s in selection.spans]
        # Carried: a pending window's frames (mono: fewer than Omega; triple: those of the last 2 Delta),
        # a triple's previous part (Omega) and the stride's alignment.
        recent = np.sum(times[times < end] >= end - 2 * params.delta_size) if params.triple else 0
        assert len(selection.carry.times) <= params.Omega + recent + params.window_stride
        carry = selection.carry
    return found


def test_runs_write_each_window_of_one_launch_exactly_once():
    """Random timelines cut into random runs: the windows written, with their ids, are one launch's."""
    rng = np.random.default_rng(7)
    for _ in range(400):
        times = np.sort(rng.choice(200, size=rng.integers(0, 60), replace=False)).astype(float)
        omega = int(rng.integers(1, 4))
        params = WindowParams(
            float(rng.integers(1, 30)),
            int(rng.integers(1, 4)),
            omega,
            int(rng.integers(omega, 8)),
            bool(rng.integers(0, 2)),
        )
        cuts = sorted({-1.0, *rng.integers(0, 200, size=rng.integers(1, 8)).astype(float)})
        expected = [(s.window_id, s.parts) for s in window_spans(times, params)]
        assert windows_in_runs(times, cuts, params) == expected, (params, cuts)


def test_carried_frames_continue_the_forward_fill():
    rng = np.random.default_rng(3)
    bands = BandCounts(sar=2, opt=3)
    pieces = [
        Piece(
            float(t),
            m,
            rng.random((4, 5, bands.bands_of(m)), dtype=np.float32),
            rng.random((4, 5)) > 0.5 if rng.random() > 0.3 else None,
        )
        for t, m in zip(range(0, 100, 4), ["optical", "sar_ascending", "sar_descending"] * 10)
    ]
    written = np.arange(2.0, 100.0, 8.0)
    whole = stack_tile((0, 0), pieces, written, (4, 5), bands)
    end, carry = 50.0, Carry(-1.0)
    first = stack_tile(
        (0, 0), [p for p in pieces if p.time < end], run_times(carry, written[written < end], end), (4, 5), bands
    )
    carry = Carry(end, first_frame=len(first) - 3, times=tuple(first.times[-3:-1]))  # two frames + fill state
    carried = dataclasses.replace(first, times=first.times[-3:], frames=first.frames[-3:])
    second = stack_tile(
        (0, 0),
        seed_pieces(carried) + [p for p in pieces if p.time >= end],
        run_times(carry, written[written >= end], 200.0),
        (4, 5),
        bands,
    )
    np.testing.assert_array_equal(second.frames[:2], first.frames[-3:-1])  # carried frames reproduced
    np.testing.assert_array_equal(np.concatenate([first.frames[:-1], second.frames[2:-1]]), whole.frames)


# ---------------------------------------------------------------- the pipeline on the sample


def crontab_flags() -> list[str]:
    """The flags of the example crontab line (schedules/crontab), minus its cloud locations and runner."""
    with open(os.path.join(REPO, "schedules", "crontab")) as f:
        line = next(line for line in f if line.strip() and not line.startswith(("#", "CRON_TZ")))
    words = shlex.split(line.split("-m rsdt_beam.pipelines.scheduled", 1)[1].split(">>")[0])
    SCHEDULED.parser().parse_known_args(words)  # every rsdt_beam flag is one of the scheduled command's
    assert words[words.index("--end") + 1] == "today" and "--lookback" in words
    dropped = {
        "--observations",
        "--output_root",
        "--runner",
        "--project",
        "--region",
        "--temp_location",
        "--sdk_container_image",
    }
    kept, skip = [], False
    for word in words:
        if skip:
            skip = False
        elif word in dropped:
            skip = True
        else:
            kept.append(word)
    return kept


class Inputs:
    """A folder of EOPatches that grows: observations appear as their day comes."""

    def __init__(self, every: str, folder: str):
        self.every, self.folder = every, folder
        os.makedirs(folder, exist_ok=True)

    def until(self, day: str) -> "Inputs":
        for name in sorted(os.listdir(self.every)):
            target = os.path.join(self.folder, name)
            if parse_time_name(name) < parse_time(day) and not os.path.exists(target):
                shutil.copytree(os.path.join(self.every, name), target)
        return self


def launch_on(day: str, inputs: Inputs, output_root: str, *extra: str, grow: bool = True):
    if grow:
        inputs.until(day)
    flags = crontab_flags() + ["--optical", inputs.folder, "--output_root", output_root, *SAMPLE_FLAGS, *extra]
    return execute(scheduled_command(parse_time(day)), flags).record


def tree(root: str) -> dict[str, bytes]:
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(folder, name), "rb") as f:
                files[os.path.relpath(os.path.join(folder, name), root)] = f.read()
    return files


def records(path: str) -> list[bytes]:
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        return list(read_records(io.BytesIO(f.read()), gzip=True, name=path))


def csv_rows(path: str) -> list[str]:
    with open(path) as f:
        return f.read().splitlines()[1:]


def assert_union_is_one_launch(output_root: str, manifests, inputs: Inputs, tmp_path):
    """The runs' records, concatenated per tile, are the fused pipeline's over [first start, last end).

    Stacks completely; windows up to those later observations can still change (the one launch
    keeps them short), which the last run carries on: the next run writes them.
    """
    reference = str(tmp_path / "one_launch")
    lookback = SAMPLE_FLAGS.index("--lookback")
    execute(
        RUN,
        [
            "--optical",
            inputs.folder,
            "--starttime",
            manifests[0].start,
            "--endtime",
            manifests[-1].end,
            "--stack_output",
            f"{reference}/stack",
            "--window_output",
            f"{reference}/windows",
            *SAMPLE_FLAGS[:lookback],
            *SAMPLE_FLAGS[lookback + 2 :],
        ],
    )
    pending_from = manifests[-1].carry["windows_written"]
    runs = [os.path.join(output_root, "runs", m.run_id) for m in manifests]
    tiles = [name for name in sorted(os.listdir(f"{reference}/windows")) if name.endswith(".tfrecords")]
    assert len(tiles) == 9
    for tile in tiles:
        stacked = [r for folder in runs for r in records(f"{folder}/stack/{tile}")]
        assert stacked == records(f"{reference}/stack/{tile}") != [], tile
        windows = [r for folder in runs for r in records(f"{folder}/windows/{tile}")]
        complete = [
            r for r in records(f"{reference}/windows/{tile}") if parse_example(r)["window_id"][0] < pending_from
        ]
        assert windows == complete != [], tile
        assert [parse_example(r)["window_id"][0] for r in windows] == list(range(pending_from))
    assert all(m.counts["windows_written"] > 0 for m in manifests)
    assert sorted(row for folder in runs for row in csv_rows(f"{folder}/windows/windows.csv")) == sorted(
        row for row in csv_rows(f"{reference}/windows/windows.csv") if int(row.split(",")[2]) < pending_from
    )


@pytest.mark.e2e
def test_consecutive_launches_equal_one_launch_and_reruns_change_nothing(sample_eopatches, tmp_path):
    inputs = Inputs(sample_eopatches, str(tmp_path / "optical"))
    root = str(tmp_path / "scheduled")
    first = launch_on(DAYS[0], inputs, root)
    second = launch_on(DAYS[1], inputs, root)
    assert (first.status, second.status) == (SUCCEEDED, SUCCEEDED)
    assert (first.start, first.end, second.start, second.end) == (
        "2015-09-02T00:00:00Z",
        "2015-12-31T00:00:00Z",
        "2015-12-31T00:00:00Z",
        "2016-03-30T00:00:00Z",
    )
    assert second.previous_run == first.run_id
    assert first.inputs["observations"] == first.inputs["listed"]  # the whole history seeds the fill
    assert first.inputs["listed_from"] is None
    # The second launch lists from the first run's start on, not the history before it.
    assert second.inputs["listed_from"] == first.start
    assert second.inputs["listed"] == first.inputs["listed_in_range"] + second.inputs["observations"]
    assert 0 < first.inputs["listed_in_range"] < first.inputs["listed"]
    assert second.inputs["listed_in_range"] == second.inputs["observations"]
    assert_union_is_one_launch(root, [first, second], inputs, tmp_path)

    before = tree(root)
    again = launch_on(DAYS[1], inputs, root)  # the scheduler retries a launch that had succeeded
    assert again.run_id == second.run_id and again.previous_run == first.run_id
    after = tree(root)
    assert sorted(after) == sorted(before)
    timing = ("launched_at", "finished_at")
    for name in before:
        if name.endswith("manifest.json"):
            strip = lambda data: {k: v for k, v in json.loads(data).items() if k not in timing}
            assert strip(after[name]) == strip(before[name])
        else:
            assert after[name] == before[name], name


def explode(*window):
    raise RuntimeError("worker lost")


@pytest.mark.e2e
def test_a_failed_run_looks_incomplete_and_the_next_run_repairs_it(sample_eopatches, tmp_path):
    inputs = Inputs(sample_eopatches, str(tmp_path / "optical"))
    root = str(tmp_path / "scheduled")
    first = launch_on(DAYS[0], inputs, root)
    with pytest.raises(Exception, match="worker lost"):
        launch_on(DAYS[1], inputs, root, "--window_filter", "tests.test_schedule:explode")
    runs = {m.run_id: m for m in list_runs(root)}
    failed = next(m for m in runs.values() if m.status != SUCCEEDED)
    assert failed.status == FAILED and "worker lost" in failed.error and failed.carry is None
    failed_dir = os.path.join(root, "runs", failed.run_id)
    assert not os.path.exists(os.path.join(failed_dir, "windows", "metadata.json"))

    third = launch_on(DAYS[2], inputs, root)  # the next day's launch covers the failed run's time too
    assert third.status == SUCCEEDED and third.start == first.end and third.replaced_runs == [failed.run_id]
    assert not os.path.exists(failed_dir)
    assert [m.run_id for m in list_runs(root)] == [first.run_id, third.run_id]
    assert_union_is_one_launch(root, [first, third], inputs, tmp_path)


@pytest.mark.e2e
def test_late_observations_are_counted_and_changes_refused(sample_eopatches, tmp_path):
    inputs = Inputs(sample_eopatches, str(tmp_path / "optical")).until(DAYS[1])
    late = os.path.join(inputs.folder, "20160206T100203")
    shutil.move(late, str(tmp_path / "delayed"))  # this acquisition reaches the archive late
    root = str(tmp_path / "scheduled")
    launch_on(DAYS[1], inputs, root, grow=False)
    shutil.move(str(tmp_path / "delayed"), late)
    assert launch_on(DAYS[2], inputs, root).late_observations == 1
    with pytest.raises(UserError, match="--output_root .* parameters differ from run .*Delta 60d there, 30d now"):
        launch_on(DAYS[2], inputs, root, "--Delta", "30d")
    with pytest.raises(UserError, match="--end .* already covers"):
        launch_on(DAYS[0], inputs, root)
    with pytest.raises(UserError, match="empty time range"):
        launch_on(DAYS[0], inputs, str(tmp_path / "other"), "--lookback", "0d")


@pytest.mark.e2e
def test_a_launch_reads_the_index_and_one_manifest_not_the_history(sample_eopatches, tmp_path):
    inputs = Inputs(sample_eopatches, str(tmp_path / "optical"))
    root = str(tmp_path / "scheduled")
    first = launch_on(DAYS[0], inputs, root)
    second = launch_on(DAYS[1], inputs, root)
    index = os.path.join(root, "runs", "index.json")
    assert [(e["run_id"], e["status"]) for e in json.load(open(index))["runs"]] == [
        (first.run_id, SUCCEEDED),
        (second.run_id, SUCCEEDED),
    ]
    old_manifest = os.path.join(root, "runs", first.run_id, "manifest.json")
    kept = open(old_manifest).read()
    with open(old_manifest, "w") as f:
        f.write("an old manifest no launch should read")
    third = launch_on(DAYS[2], inputs, root)  # reads index.json and the second run's manifest only
    assert third.status == SUCCEEDED and third.previous_run == second.run_id
    with open(old_manifest, "w") as f:
        f.write(kept)
    os.remove(index)  # an output root from before the index: rebuilt once from the manifests
    assert [m.run_id for m in list_runs(root)] == [first.run_id, second.run_id, third.run_id]
    assert len(json.load(open(index))["runs"]) == 3


@pytest.mark.e2e
def test_a_launch_after_a_manifest_of_the_earlier_version_lists_the_history_once(sample_eopatches, tmp_path):
    """Manifests written before launches listed from the previous run's start counted the whole history
    (`listed_before_end`): the next launch lists it all once, and counts late arrivals against that."""
    inputs = Inputs(sample_eopatches, str(tmp_path / "optical"))
    root = str(tmp_path / "scheduled")
    first = launch_on(DAYS[0], inputs, root)
    path = os.path.join(root, "runs", first.run_id, "manifest.json")
    with open(path) as f:
        manifest = json.load(f)
    listed = manifest["inputs"].pop("listed")
    for key in ("listed_from", "listed_in_range", "modalities"):
        del manifest["inputs"][key]
    manifest["inputs"]["listed_before_end"] = listed - 1  # one observation reached the archive after it
    with open(path, "w") as f:
        json.dump(manifest, f)
    second = launch_on(DAYS[1], inputs, root)
    assert second.inputs["listed_from"] is None and second.inputs["listed"] > listed
    assert second.late_observations == 1
    third = launch_on(DAYS[2], inputs, root)
    assert third.inputs["listed_from"] == second.start
