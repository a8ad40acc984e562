"""`runs/index.json` of scheduled launches: one entry per run (id, status, start, end), in end order.

A launch reads this file and the manifest of the run it continues from, never every run's manifest, so
its cost does not grow with the history. The launcher and the job's last step keep it up to date each
time they write a manifest (launches do not overlap, see rsdt_beam.schedule). An output root written
before the index existed gets one, once, from its manifests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

from rsdt_beam import fs

INDEX_FILE = "index.json"


@dataclasses.dataclass(frozen=True)
class RunEntry:
    run_id: str
    status: str
    start: str
    end: str
    end_time: float  # epoch seconds of `end`, the sort key

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def index_path(runs_dir: str) -> str:
    return fs.join(runs_dir, INDEX_FILE)


def read_index(runs_dir: str, rebuild: Callable[[], Iterable[RunEntry]]) -> list[RunEntry]:
    """The index's entries; without an index, `rebuild()`'s (written as the index, if there are any)."""
    path = index_path(runs_dir)
    if fs.exists(path):
        return [RunEntry(**entry) for entry in fs.read_json(path)["runs"]]
    entries = _sorted(rebuild())
    if entries:
        _write(runs_dir, entries)
    return entries


def update_index(
    runs_dir: str,
    entry: RunEntry | None = None,
    removed: Iterable[str] = (),
    rebuild: Callable[[], Iterable[RunEntry]] = tuple,
) -> list[RunEntry]:
    """Puts `entry` in (replacing its run's), drops the `removed` run ids; returns the new entries."""
    gone = set(removed) | ({entry.run_id} if entry else set())
    entries = [e for e in read_index(runs_dir, rebuild) if e.run_id not in gone] + ([entry] if entry else [])
    entries = _sorted(entries)
    _write(runs_dir, entries)
    return entries


def _sorted(entries: Iterable[RunEntry]) -> list[RunEntry]:
    return sorted(entries, key=lambda e: (e.end_time, e.run_id))


def _write(runs_dir: str, entries: list[RunEntry]) -> None:
    fs.makedirs(runs_dir)
    fs.write_json(index_path(runs_dir), {"runs": [e.to_json() for e in entries]})
