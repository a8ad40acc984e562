"""Scheduled runs' records: `runs/<start>-<end>/manifest.json`, listed, written and deleted."""

from __future__ import annotations

import dataclasses

from apache_beam.io.filesystems import FileSystems

from rsdt_beam import fs
from rsdt_beam.common.names import MANIFEST_FILE, RUNS_DIR
from rsdt_beam.common.times import parse_time

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


def list_runs(output_root: str) -> list[RunManifest]:
    """Every run under `output_root` with a manifest, by end time."""
    manifests = [RunManifest.from_json(fs.read_json(path))
                 for path in fs.glob(fs.join(output_root, RUNS_DIR, "*", MANIFEST_FILE))]
    return sorted(manifests, key=lambda m: (m.end_time, m.run_id))


def write_manifest(output_root: str, manifest: RunManifest) -> None:
    fs.write_json(fs.join(run_dir(output_root, manifest.run_id), MANIFEST_FILE), manifest.to_json())


def delete_tree(path: str) -> None:
    # A trailing "/" makes Beam's GCS filesystem delete the whole prefix; local folders go recursively.
    FileSystems.delete([path.rstrip("/") + "/" if fs.is_remote(path) else path])
