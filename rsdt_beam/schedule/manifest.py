"""Scheduled runs' records: `runs/<start>-<end>/manifest.json`, listed, written and deleted, and
`runs/index.json` (rsdt_beam.run_index), so a launch reads one manifest, not the history."""

from __future__ import annotations

import dataclasses

from rsdt_beam import fs
from rsdt_beam.common.names import MANIFEST_FILE, RUNS_DIR
from rsdt_beam.common.times import parse_time
from rsdt_beam.run_index import RunEntry, read_index, update_index

RUNNING, SUCCEEDED, FAILED = "running", "succeeded", "failed"


@dataclasses.dataclass
class RunManifest:
    """`manifest.json` of a run: what it covered, read, wrote and hands on, and whether it finished."""

    run_id: str
    status: str
    start: str
    end: str
    parameters: dict
    inputs: dict
    outputs: dict
    previous_run: str | None = None
    counts: dict = dataclasses.field(default_factory=dict)
    carry: dict | None = None
    replaced_runs: list = dataclasses.field(default_factory=list)
    late_observations: int = 0
    error: str | None = None
    launched_at: str | None = None
    finished_at: str | None = None

    @property
    def end_time(self) -> float:
        return parse_time(self.end)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> RunManifest:
        return cls(**data)


def run_dir(output_root: str, run_id: str) -> str:
    return fs.join(output_root, RUNS_DIR, run_id)


def read_manifest(output_root: str, run_id: str) -> RunManifest:
    return RunManifest.from_json(fs.read_json(fs.join(run_dir(output_root, run_id), MANIFEST_FILE)))


def _entry(manifest: RunManifest) -> RunEntry:
    return RunEntry(manifest.run_id, manifest.status, manifest.start, manifest.end, manifest.end_time)


def _entries_from_manifests(output_root: str):
    """For an output root from before runs/index.json: every manifest, read once."""
    return lambda: [
        _entry(RunManifest.from_json(fs.read_json(path)))
        for path in fs.glob(fs.join(output_root, RUNS_DIR, "*", MANIFEST_FILE))
    ]


def run_entries(output_root: str) -> list[RunEntry]:
    """Every run under `output_root` by end time, from runs/index.json (no manifest is read)."""
    return read_index(fs.join(output_root, RUNS_DIR), _entries_from_manifests(output_root))


def list_runs(output_root: str) -> list[RunManifest]:
    """Every run's manifest, by end time (for tools and tests; a launch reads only the one it needs)."""
    return [read_manifest(output_root, entry.run_id) for entry in run_entries(output_root)]


def write_manifest(output_root: str, manifest: RunManifest) -> None:
    fs.write_json(fs.join(run_dir(output_root, manifest.run_id), MANIFEST_FILE), manifest.to_json())
    update_index(fs.join(output_root, RUNS_DIR), _entry(manifest), rebuild=_entries_from_manifests(output_root))


def delete_runs(output_root: str, run_ids: list[str]) -> None:
    """Removes runs' folders and their index entries."""
    for run_id in run_ids:
        fs.delete_tree(run_dir(output_root, run_id))
    update_index(fs.join(output_root, RUNS_DIR), removed=run_ids, rebuild=_entries_from_manifests(output_root))
