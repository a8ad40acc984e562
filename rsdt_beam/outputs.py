"""Output folders that know what they hold: recorded parameters, swept temporaries, `metadata.json` last.

Every writer (observation store, stacks, windows, maps) describes its folder as an `OutputFolder`: the
path, what it holds, and the parameters that shape its contents. The lifecycle of a folder in a run:

1. At launch, before the pipeline runs, `claim_outputs` checks every output folder of the pipeline
   against the run marker `rsdt_run.json` an earlier run left there (or the `parameters` of its
   `metadata.json`). A folder made with other parameters is refused with a `UserError` naming each
   differing parameter, unless `overwrite`, which deletes the folder's contents. Only when every folder
   passes is any touched: the earlier run's `metadata.json` (the completion marker) is removed, the run
   marker written first, and temporaries of earlier runs swept.
2. The pipeline writes files atomically; temporary names carry the run's id (`rsdt_beam.fs`).
3. `finish` runs once every other file of the folder is written (writers make it wait on all their
   writes, `rejected.json` included): it sweeps the temporaries left by retried or killed work, removes
   empty folders, and writes `metadata.json`, with the parameters, last.

A re-run with the same parameters resumes or redoes the work into the same names; since file names are
deterministic and the marker holds no run id, its result is byte-identical.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid

import apache_beam as beam

from rsdt_beam import fs
from rsdt_beam.common.names import FILES_KEY, METADATA_FILE, RUN_FILE
from rsdt_beam.errors import UserError
from rsdt_beam.graph import Gather
from rsdt_beam.progress import Counter


def new_run_id() -> str:
    """A short id, unique per launch, in the names of the run's temporaries."""
    return f"{int(time.time()):x}{uuid.uuid4().hex[:6]}"


def _canonical(value):
    """Parameters as they read back from JSON (tuples become lists), so recorded and new ones compare."""
    return json.loads(json.dumps(value, sort_keys=True))


@dataclasses.dataclass(frozen=True)
class OutputFolder:
    """A folder one writer fills: `flag` names it in messages; `kind` is what it holds.

    `parameters` (JSON values) are what shaped the contents; a folder is only ever continued with the
    same ones. `seed_files` may already be there before any run marker (the store's `grid.json`).
    """

    path: str
    kind: str
    flag: str
    parameters: dict
    run_id: str = dataclasses.field(default_factory=new_run_id)
    seed_files: tuple[str, ...] = ()

    def file(self, name: str) -> str:
        return fs.join(self.path, name)

    def write_bytes(self, name: str, data: bytes) -> str:
        """Writes `name` (relative to the folder) atomically, its temporary named after the run."""
        path = self.file(name)
        fs.write_bytes(path, data, self.run_id)
        return path

    def write_json(self, name: str, obj) -> str:
        path = self.file(name)
        fs.write_json(path, obj, self.run_id)
        return path

    def marker(self) -> dict:
        return {"kind": self.kind, "parameters": _canonical(self.parameters)}

    def refusal(self) -> str | None:
        """Why this run may not write into the folder as it is (None: it may)."""
        files = (
            [name for name in fs.list_files(self.path) if fs.temporary_run(name) is None]
            if fs.folder_exists(self.path)
            else []
        )
        if not files:
            return None
        recorded = _recorded(self.path)
        if recorded is None:
            if set(files) <= set(self.seed_files):
                return None
            return (
                f"{self.flag} {self.path} holds files but no {RUN_FILE}, so the parameters they were made "
                f"with are unknown (another tool, or an rsdt_beam before parameters were recorded)"
            )
        if recorded.get("kind") != self.kind:
            return f"{self.flag} {self.path} holds {recorded.get('kind')}, not {self.kind}"
        changed = differences(recorded.get("parameters", {}), self.marker()["parameters"])
        if changed:
            return f"{self.flag} {self.path} was written with other parameters: {'; '.join(changed)}"
        return None

    def claim(self, overwrite: bool) -> None:
        """Readies the folder for this run (after every folder passed `refusal`)."""
        if overwrite and fs.folder_exists(self.path):
            fs.delete_tree_contents(self.path)
        fs.delete_if_exists(self.file(METADATA_FILE))  # the earlier run's completion marker
        begin(self)
        sweep(self.path, keep_run=self.run_id)

    def finish(self, metadata: dict) -> str:
        """After every other write of the folder: sweeps temporaries, writes `metadata.json` last."""
        sweep(self.path)
        written = self.write_json(METADATA_FILE, dict(metadata, parameters=self.marker()["parameters"]))
        Counter("folders_finished").inc()
        return written


def differences(recorded: dict, wanted: dict) -> list[str]:
    """`name: recorded there, wanted now` for each parameter that differs (missing ones included)."""

    def shown(values: dict, key: str) -> str:
        return json.dumps(values[key]) if key in values else "(not set)"

    return [
        f"{key} {shown(recorded, key)} there, {shown(wanted, key)} now"
        for key in sorted(set(recorded) | set(wanted))
        if key not in recorded or key not in wanted or recorded[key] != wanted[key]
    ]


def _recorded(path: str) -> dict | None:
    """The run marker of a folder, or what its `metadata.json` recorded; None if neither holds parameters."""
    for name in (RUN_FILE, METADATA_FILE):
        location = fs.join(path, name)
        if fs.exists(location):
            content = fs.read_json(location)
            if isinstance(content, dict) and "parameters" in content:
                return content
    return None


def begin(folder: OutputFolder) -> None:
    """The folder exists and the run marker is there (idempotent: also run inside the pipeline, for
    pipelines built without `claim_outputs`).

    The earlier completion marker (`metadata.json`) is removed by `OutputFolder.claim` on the launcher,
    before anything runs, not here: a runner may run this step again after the folder was finished (Beam's
    DaskRunner computes a side input's whole upstream again where it is read, tests/test_dask.py), and
    that must not take the finished folder's marker away."""
    fs.makedirs(folder.path)
    marker = folder.file(RUN_FILE)
    if not fs.exists(marker) or fs.read_json(marker) != folder.marker():
        folder.write_json(RUN_FILE, folder.marker())


_begun: set[tuple[str, str]] = set()


def ensure_begun(folder: OutputFolder) -> None:
    """`begin`, once per process and run: what a writer calls before its first write into the folder (the
    launcher claimed it already when the pipeline came from the command line)."""
    key = (folder.path, folder.run_id)
    if key not in _begun:
        begin(folder)
        _begun.add(key)


def found_files(folder: OutputFolder, names: list[str]) -> list[str]:
    """`names` (relative to the folder), checked against the files the folder holds: what `metadata.json`
    lists is what was written. A missing one (a runner that dropped work) fails the run, naming it."""
    held = set(fs.list_files(folder.path)) if names else set()
    missing = [name for name in names if name not in held]
    if missing:
        raise OSError(
            f"{folder.flag} {folder.path}: {len(missing)} of {len(names)} files the run wrote are missing "
            f"(e.g. {missing[0]}); metadata.json is not written"
        )
    return list(names)


def sweep(path: str, keep_run: str | None = None) -> int:
    """Deletes the temporaries under `path` (but those of run `keep_run`) and empty sub-folders; how many."""
    if not fs.folder_exists(path):
        return 0
    leftovers = [
        name
        for name in fs.list_files(path)
        if (run := fs.temporary_run(name)) is not None and (keep_run is None or run != keep_run)
    ]
    fs.delete_files(path, leftovers)
    fs.remove_empty_folders(path)
    return len(leftovers)


def claim_outputs(folders: list[OutputFolder], overwrite: bool) -> None:
    """Checks every folder, then claims them all: a refused run touches nothing."""
    by_path: dict[str, OutputFolder] = {}
    for folder in folders:
        other = by_path.setdefault(folder.path.rstrip("/"), folder)
        if other is not folder and other.marker() != folder.marker():
            raise UserError(f"{other.flag} and {folder.flag} are the same folder {folder.path}; give each its own")
    if not overwrite:
        refusals = [why for folder in by_path.values() if (why := folder.refusal())]
        if refusals:
            raise UserError(". ".join(refusals) + ". Give --overwrite to replace the contents, or another folder")
    for folder in by_path.values():
        folder.claim(overwrite)


def pipeline_outputs(pipeline) -> list[OutputFolder]:
    """The `output_folder` of every transform in the pipeline that declares one."""
    found: list[OutputFolder] = []

    class _Visitor(beam.pipeline.PipelineVisitor):
        def enter_composite_transform(self, node):
            self.visit_transform(node)

        def visit_transform(self, node):
            folder = getattr(node.transform, "output_folder", None)
            if isinstance(folder, OutputFolder) and folder not in found:
                found.append(folder)

    pipeline.visit(_Visitor())
    return found


def listed_files(folder: str, metadata: dict) -> list[str] | None:
    """The data files a complete folder's `metadata.json` lists (full paths), or None if it lists none
    (rsdtlib's folders: the caller lists the folder instead)."""
    names = metadata.get(FILES_KEY)
    return None if names is None else [fs.join(folder, name) for name in names]


class AllDone(beam.PTransform):
    """[PCollection, ...] -> a one-element PCollection (each input's element count, in order) that exists once
    every input is complete: as the main input of a step, it holds that step back until all the writes it
    summarizes are done (`rsdt_beam.graph.Gather`; no side input, which Beam's DaskRunner would compute again)."""

    def expand(self, pcolls):
        return (
            {str(n): pcoll for n, pcoll in enumerate(pcolls)}
            | "Gather" >> Gather()
            | "Counts" >> beam.Map(lambda gathered: [len(values) for values in gathered.values()])
        )


class FinishFolder(beam.PTransform):
    """[PCollection, ...] -> PCollection[str]: `metadata.json` of `folder` (with `metadata`), written
    after every element of every input, i.e. after every other write of the folder."""

    def __init__(self, folder: OutputFolder, metadata: dict | None = None):
        super().__init__()
        self.output_folder = folder
        self._metadata = dict(metadata or {})

    def expand(self, pcolls):
        folder, metadata = self.output_folder, self._metadata
        done = pcolls | "Writes done" >> AllDone()
        return done | "Write metadata.json" >> beam.Map(lambda _: folder.finish(metadata))
