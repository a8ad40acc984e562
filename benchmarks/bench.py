"""The benchmark suite: generated inputs, end-to-end runs on the DirectRunner, and the compression floor.

    python -m benchmarks.bench --preset reference                 # issue 7's case, fused, 3 runs
    python -m benchmarks.bench --preset reference --stages stack,window,fused --kind smooth
    python -m benchmarks.bench --preset small --repeat 1          # a quick look while iterating
    python -m benchmarks.bench --preset small --linearity         # 1x vs 4x area, 1x vs 2x months
    python -m benchmarks.bench --preset reference --long_series 48   # 6 months vs 4 years, same area
    python -m benchmarks.bench --preset small --levels 1,2,3,6    # GZIP level: speed against size

Inputs are generated into `--work_dir` (kept between runs, keyed by their parameters), as the
project's observation store (`--observations`) or as rsdtlib EOPatch folders (`--format eopatch`):

* `noisy`: random values, every pixel valid (issue 7's reference data: SAR uniform float32 in [0, 1),
  optical random 16-bit digital numbers; zlib level 6 runs at a fraction of level 1's speed on them
  for the same size, as on the data of issue 7's rsdtlib figures);
* `smooth`: reflectance-like optical fields (13 bands, quantized to 1e-4, seasonal drift, cloud blobs
  masked out) and backscatter-like SAR fields (smooth sigma0 times gamma speckle), irregular
  revisits with missed passes, partial swath masks.

Each stage runs as its own `python -m rsdt_beam.pipelines.<stage>` process, so wall time includes start-up and
peak RSS is read per process (VmHWM of the launcher and of every DirectRunner worker, sampled from
/proc). After each run the written TFRecords are decompressed and the same raw bytes are compressed
again with zlib at the level used, spread over the same number of cores: that time is the floor, and
`wall / floor` says what the pipeline costs on top of compression.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np

try:
    from isal import isal_zlib as _isal_zlib  # only to decompress outputs quickly
except ImportError:
    _isal_zlib = None

from rsdt_beam.acquire.eopatch import write_eopatch
from rsdt_beam.acquire.store import write_grid, write_observation
from rsdt_beam.cli.flags import GROUPS
from rsdt_beam.common.modalities import OPTICAL, SAR_ASCENDING, SAR_DESCENDING
from rsdt_beam.common.times import parse_duration, time_name
from rsdt_beam.grid import Grid, TileLayout, work_items
from rsdt_beam.stack.rules import StackParams, written_times
from rsdt_beam.tfrecord import deflate_module
from rsdt_beam.window.rules import WindowParams, window_spans

REPO = Path(__file__).resolve().parents[1]
DAY = 86400.0
START = datetime.datetime(2017, 1, 1, tzinfo=datetime.timezone.utc)
SAR_BANDS, OPT_BANDS = 2, 13
PIXEL_METERS = 10.0

# rsdtlib on issue 7's reference case (2 cores; rsdtlib uses one): seconds, peak RSS MiB, raw and GZIP bytes.
RSDTLIB_REFERENCE = {
    "stack": dict(wall=27.0, rss_mib=769, raw=317e6, gzip=236e6),
    "window": dict(wall=271.0, rss_mib=731, raw=3.30e9, gzip=2.52e9),
}


# --- inputs -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Inputs:
    kind: str  # noisy | smooth
    height: int
    width: int
    months: int
    seed: int
    fmt: str  # store | eopatch

    @property
    def days(self) -> int:
        end = _add_months(START, self.months)
        return (end - START).days

    @property
    def starttime(self) -> str:
        return START.date().isoformat()

    @property
    def endtime(self) -> str:
        return _add_months(START, self.months).date().isoformat()

    def folder(self, work_dir: Path) -> Path:
        return work_dir / f"inputs-{self.kind}-{self.height}x{self.width}-{self.months}m-s{self.seed}-{self.fmt}"


def _add_months(moment: datetime.datetime, months: int) -> datetime.datetime:
    year, month = divmod(moment.month - 1 + months, 12)
    return moment.replace(year=moment.year + year, month=month + 1)


# (modality, first-pass window in days, revisit days, hour of day): S1 A+B asc/desc every 6 days,
# S2 A+B every 5 days plus an overlapping neighbour orbit every 10 days.
_TRACKS = ((SAR_ASCENDING, 6, 6, 17.5), (SAR_DESCENDING, 6, 6, 5.8), (OPTICAL, 5, 5, 10.5), (OPTICAL, 10, 10, 10.6))
_MISSED_PASS = 0.12


def acquisition_times(days: int, seed: int) -> list[tuple[str, float]]:
    """Irregular revisits: (modality, epoch seconds), sorted, one per modality and time.

    Each track draws from its own generator, so a longer run starts with the shorter run's times.
    """
    start = START.timestamp()
    out = set()
    for track, (modality, first_window, revisit, hour) in enumerate(_TRACKS):
        rng = np.random.default_rng([seed, track])
        day = rng.uniform(0, first_window)
        while day < days:
            moment = start + (np.floor(day) + hour / 24 + rng.uniform(-0.02, 0.02)) * DAY
            out.add((modality, float(round(moment))))
            day += revisit * (2 if rng.random() < _MISSED_PASS else 1)
    return sorted(out, key=lambda item: (item[1], item[0]))


def _smooth_field(rng, height: int, width: int, scale: float, terms: int = 6) -> np.ndarray:
    """A smooth random field in about [-1, 1]: a few low-frequency cosines."""
    rows = np.arange(height, dtype=np.float32)[:, None]
    cols = np.arange(width, dtype=np.float32)[None, :]
    field = np.zeros((height, width), np.float32)
    for _ in range(terms):
        angle = rng.uniform(0, np.pi)
        frequency = rng.uniform(0.3, 1.0) / scale
        phase = rng.uniform(0, 2 * np.pi)
        field += np.cos(2 * np.pi * frequency * (np.cos(angle) * cols + np.sin(angle) * rows) + phase)
    return field / np.sqrt(terms / 2)


class _SmoothScene:
    """Land-cover-like base fields; per acquisition a seasonal drift, speckle, clouds, swath edges."""

    def __init__(self, height: int, width: int, seed: int):
        rng = np.random.default_rng(seed + 1)
        self.height, self.width = height, width
        classes = _smooth_field(rng, height, width, 40.0) + 0.3 * _smooth_field(rng, height, width, 8.0)
        self.land = np.clip(classes * 0.5 + 0.5, 0, 1)
        # Reflectance per band: darker visible bands, brighter NIR where vegetated.
        base = np.linspace(0.05, 0.3, OPT_BANDS, dtype=np.float32)
        vegetation = np.where(np.arange(OPT_BANDS) >= 6, 0.25, -0.05).astype(np.float32)
        self.reflectance = base + vegetation * self.land[..., None]
        self.texture = 0.02 * np.stack([_smooth_field(rng, height, width, 3.0, 4) for _ in range(3)], -1)
        self.sigma0 = np.stack([0.02 + 0.15 * self.land, 0.005 + 0.04 * self.land], -1).astype(np.float32)

    def observation(self, modality: str, moment: float, rng) -> tuple[np.ndarray, np.ndarray]:
        season = np.float32(np.sin(2 * np.pi * (moment / DAY) / 365.25))
        h, w = self.height, self.width
        valid = np.ones((h, w), bool)
        if rng.random() < 0.2:  # swath edge: only one side of a slanted line was imaged
            rows, cols = np.mgrid[0:h, 0:w]
            slope, offset = rng.uniform(-0.5, 0.5), rng.uniform(0.2, 0.8) * w
            valid &= (cols - slope * rows < offset) if rng.random() < 0.5 else (cols - slope * rows >= offset)
        if modality == OPTICAL:
            data = self.reflectance * (1 + 0.15 * season * self.land[..., None])
            data += self.texture[..., rng.integers(0, 3), None]
            data += rng.normal(0, 0.003, (h, w, OPT_BANDS)).astype(np.float32)
            data = np.round(np.clip(data, 0, 1) * 10000) / np.float32(10000)  # L1C digital numbers / 1e4
            cover = rng.uniform(-0.2, 0.9)
            if cover > 0:
                cloud_field = _smooth_field(rng, h, w, 12.0) + 0.5 * _smooth_field(rng, h, w, 3.0)
                clouds = cloud_field > np.quantile(cloud_field, 1 - cover)
                data[clouds] = np.float32(0.6) + 0.1 * data[clouds]
                valid &= ~clouds
        else:
            looks = 4.4  # speckle of S1 GRD IW
            speckle = rng.gamma(looks, 1 / looks, (h, w, SAR_BANDS)).astype(np.float32)
            data = self.sigma0 * (1 + 0.3 * season * self.land[..., None]) * speckle
        data[~valid] = 0
        return data.astype(np.float32), valid


def generate(inputs: Inputs, work_dir: Path) -> Path:
    """Writes the inputs unless already there; returns their folder."""
    folder = inputs.folder(work_dir)
    done = folder / "DONE.json"
    if done.exists():
        return folder
    grid = Grid.from_bounds(
        "EPSG:32633",
        500000.0,
        5000000.0,
        500000.0 + inputs.width * PIXEL_METERS,
        5000000.0 + inputs.height * PIXEL_METERS,
        inputs.height,
        inputs.width,
    )
    rng = np.random.default_rng(inputs.seed)
    scene = _SmoothScene(inputs.height, inputs.width, inputs.seed) if inputs.kind == "smooth" else None
    acquisitions = acquisition_times(inputs.days, inputs.seed)
    bbox = {
        "type": "Polygon",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}},
        "coordinates": [
            [
                [grid.bounds[0], grid.bounds[1]],
                [grid.bounds[2], grid.bounds[1]],
                [grid.bounds[2], grid.bounds[3]],
                [grid.bounds[0], grid.bounds[3]],
                [grid.bounds[0], grid.bounds[1]],
            ]
        ],
    }
    if inputs.fmt == "store":
        write_grid(str(folder), grid)
    for modality, moment in acquisitions:
        bands = OPT_BANDS if modality == OPTICAL else SAR_BANDS
        if scene is None:  # SAR: uniform floats; optical: random 16-bit digital numbers
            shape = (inputs.height, inputs.width, bands)
            data = (
                rng.integers(0, 1 << 16, shape).astype(np.float32)
                if modality == OPTICAL
                else rng.random(shape, np.float32)
            )
            valid = np.ones((inputs.height, inputs.width), bool)
        else:
            data, valid = scene.observation(modality, moment, rng)
        if inputs.fmt == "store":
            write_observation(str(folder), grid, data, valid, modality, moment)
        else:
            feature = "L1C_data" if modality == OPTICAL else "L1_GND"
            write_eopatch(str(folder / modality / time_name(moment)), data, valid, bbox, moment, feature, "dataMask")
    done.write_text(json.dumps({"observations": len(acquisitions)}))
    return folder


# --- running and measuring ----------------------------------------------------------------------


@dataclasses.dataclass
class ProcessPeak:
    pid: int
    role: str
    peak_rss: int  # bytes (VmHWM)


def _children(pid: int) -> list[int]:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                out += [int(p) for p in handle.read().split()]
    except OSError:
        pass
    return out


def _hwm(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class PeakRssMonitor(threading.Thread):
    """Samples the peak RSS (VmHWM) of a process and all its descendants until stopped."""

    def __init__(self, root: int, interval: float = 0.05):
        super().__init__(daemon=True)
        self._root, self._interval = root, interval
        self._stop_event = threading.Event()
        self.peaks: dict[int, int] = {}

    def run(self):
        while not self._stop_event.is_set():
            pending, seen = [self._root], []
            while pending:
                pid = pending.pop()
                seen.append(pid)
                pending.extend(_children(pid))
            for pid in seen:
                self.peaks[pid] = max(self.peaks.get(pid, 0), _hwm(pid))
            self._stop_event.wait(self._interval)

    def stop(self) -> list[ProcessPeak]:
        self._stop_event.set()
        self.join()
        return [
            ProcessPeak(pid, "launcher" if pid == self._root else "worker", peak)
            for pid, peak in self.peaks.items()
            if peak
        ]


@dataclasses.dataclass
class StageRun:
    stage: str
    wall: float
    processes: list[ProcessPeak]
    files: list[Path]
    compressed: int
    raw: int = 0
    floor: float = 0.0  # zlib at the level used (issue 7's floor)
    deflate_floor: float = 0.0  # the writer's own deflate (ISA-L for levels 1-3 when installed)
    size_vs_level6: float = 0.0  # output bytes / zlib level 6 on the same raw bytes (first run only)

    @property
    def launcher_rss(self) -> int:
        return max((p.peak_rss for p in self.processes if p.role == "launcher"), default=0)

    @property
    def worker_rss(self) -> int:
        return max((p.peak_rss for p in self.processes if p.role == "worker"), default=0)


@dataclasses.dataclass
class MonitoredRun:
    wall: float
    stdout: str
    processes: list[ProcessPeak]  # the peak RSS of every process of the tree

    @property
    def peak_rss(self) -> int:
        return max((p.peak_rss for p in self.processes), default=0)


def run_monitored(command: list[str], tree: Path, what: str, env: dict | None = None) -> MonitoredRun:
    """Runs `command` from `tree` (environment `env`, default this one's) with `tree` on PYTHONPATH (that tree's
    rsdt_beam), sampling the peak RSS of its process tree; a failure raises with `what` and its stderr's end."""
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        cwd=tree,
        env=dict(env if env is not None else os.environ, PYTHONPATH=str(tree)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    monitor = PeakRssMonitor(process.pid)
    monitor.start()
    out, err = process.communicate()
    wall = time.monotonic() - started
    processes = monitor.stop()
    if process.returncode != 0:
        raise RuntimeError(f"{what} failed ({process.returncode}):\n{err[-4000:]}")
    if not processes:  # ended before the first sample
        children_max = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        processes = [ProcessPeak(process.pid, "launcher", children_max)]
    return MonitoredRun(wall, out, processes)


def run_stage(stage: str, args: list[str], output_dirs: list[Path], module: str | None = None) -> StageRun:
    """Runs one stage's entry point (`module`, default this tree's) from REPO as its own process."""
    module = module or f"rsdt_beam.pipelines.{ {'fused': 'run'}.get(stage, stage) }"
    run = run_monitored([sys.executable, "-m", module, *args, "--no_progress"], REPO, module)
    files = sorted(f for d in output_dirs for f in d.glob("*.tfrecords"))
    return StageRun(stage, run.wall, run.processes, files, sum(f.stat().st_size for f in files))


def _decompress(path: str) -> bytes:
    with open(path, "rb") as handle:
        return (_isal_zlib or zlib).decompress(handle.read(), 31)


def _compress_seconds(job: tuple[str, int, bool]) -> tuple[int, float, float]:
    """Decompresses one output file (not timed); times zlib and the writer's deflate on its raw bytes."""
    path, level, sampled = job
    raw = _decompress(path)
    if not sampled:
        return len(raw), 0.0, 0.0
    seconds = []
    for module in (zlib, deflate_module(level)):
        started = time.perf_counter()
        compressor = module.compressobj(level, module.DEFLATED, 31)
        for offset in range(0, len(raw), 1 << 20):
            compressor.compress(raw[offset : offset + (1 << 20)])
        compressor.flush()
        seconds.append(time.perf_counter() - started)
    return len(raw), seconds[0], seconds[1]


def measure_floor(run: StageRun, level: int, cores: int, sample_bytes: float) -> None:
    """Raw bytes of the run's files, and the seconds zlib (and the writer's deflate) at `level` need
    for them on `cores` cores: per-file seconds measured in `cores` processes at once, summed, over
    `cores`. Above `sample_bytes` of output, every k-th file is timed and the rest scaled by raw bytes."""
    files = sorted(run.files)
    step = max(1, int(np.ceil(run.compressed / sample_bytes))) if sample_bytes else 1
    jobs = [(str(f), level, n % step == 0) for n, f in enumerate(files)]
    with multiprocessing.get_context("spawn").Pool(cores) as pool:
        results = pool.map(_compress_seconds, jobs, chunksize=1)
    run.raw = sum(size for size, _, _ in results)
    timed = sum(size for (size, _, _), job in zip(results, jobs) if job[2])
    scale = run.raw / timed / cores
    run.floor = sum(seconds for _, seconds, _ in results) * scale
    run.deflate_floor = sum(seconds for _, _, seconds in results) * scale


def _level6_size(path: str) -> tuple[int, int]:
    """(this file's size, the size of its raw bytes at zlib level 6: what rsdtlib/TensorFlow write)."""
    return Path(path).stat().st_size, len(zlib.compress(_decompress(path), 6))


def measure_level6(run: StageRun, cores: int, sample_bytes: float = 100e6) -> None:
    """Output size relative to zlib level 6 on the same raw bytes, from evenly spread files."""
    files = sorted(run.files)
    count = max(1, min(len(files), int(sample_bytes * len(files) / max(run.compressed, 1))))
    picked = [str(files[int(k * len(files) / count)]) for k in range(count)]
    with multiprocessing.get_context("spawn").Pool(cores) as pool:
        sizes = pool.map(_level6_size, picked, chunksize=1)
    run.size_vs_level6 = sum(ours for ours, _ in sizes) / sum(level6 for _, level6 in sizes)


# --- the benchmark ------------------------------------------------------------------------------


@dataclasses.dataclass
class Case:
    inputs: Inputs
    tile_size: int
    delta_step: str
    delta: str
    window_stride: int
    omega: int
    big_omega: int
    mode: str
    workers: int
    running_mode: str
    gzip_level: int

    def runner_args(self) -> list[str]:
        """The DirectRunner as chosen, or as the command line runs it by default (`running_mode` "default")."""
        args = ["--runner", "DirectRunner"]
        if self.running_mode != "default":
            args += ["--direct_num_workers", str(self.workers)]
            if self.workers > 1:
                args += ["--direct_running_mode", self.running_mode]
        return args + ["--gzip_level", str(self.gzip_level)]

    def runner_description(self) -> str:
        if self.running_mode == "default":
            return "the command line's default runner options"
        return f"{self.workers} worker(s) {self.running_mode if self.workers > 1 else 'in_memory'}"

    def stack_args(self, inputs_dir: Path) -> list[str]:
        if self.inputs.fmt == "store":
            source = ["--observations", str(inputs_dir)]
        else:
            source = [x for m in (SAR_ASCENDING, SAR_DESCENDING, OPTICAL) for x in (f"--{m}", str(inputs_dir / m))]
        return source + [
            "--starttime",
            self.inputs.starttime,
            "--endtime",
            self.inputs.endtime,
            "--delta_step",
            self.delta_step,
            "--tile_size",
            str(self.tile_size),
        ]

    def window_args(self) -> list[str]:
        return [
            "--Delta",
            self.delta,
            "--window_stride",
            str(self.window_stride),
            "--omega",
            str(self.omega),
            "--Omega",
            str(self.big_omega),
            "--mode",
            self.mode,
        ]

    def describe(self, observations: int) -> str:
        params = StackParams(
            START.timestamp(), _add_months(START, self.inputs.months).timestamp(), _duration(self.delta_step)
        )
        times = [t for _, t in acquisition_times(self.inputs.days, self.inputs.seed)]
        frames = written_times(times, params)
        spans = sum(
            1
            for _ in window_spans(
                frames, WindowParams(_duration(self.delta), self.window_stride, self.omega, self.big_omega)
            )
        )
        tiles = (self.inputs.height // self.tile_size) * (self.inputs.width // self.tile_size)
        return (
            f"{self.inputs.kind} {self.inputs.height} x {self.inputs.width} px, {self.inputs.months} months, "
            f"{observations} observations -> {len(frames)} frames (delta_step {self.delta_step}), "
            f"{tiles} tiles of {self.tile_size} px, {spans} windows per tile (Delta {self.delta}, "
            f"stride {self.window_stride}, omega {self.omega}, Omega {self.big_omega}, {self.mode}); "
            f"{self.runner_description()}, "
            f"gzip level {self.gzip_level}"
        )


def _duration(text: str) -> float:
    return parse_duration(text)


def run_case(
    case: Case, stages: list[str], repeat: int, work_dir: Path, cores: int, keep: bool, sample_bytes: float = 0
) -> dict[str, list[StageRun]]:
    inputs_dir = generate(case.inputs, work_dir)
    runs: dict[str, list[StageRun]] = {stage: [] for stage in stages}
    out = work_dir / "out"
    for _ in range(repeat):
        for stage in stages:
            stack_dir, window_dir = out / f"{stage}-stack", out / f"{stage}-windows"
            for folder in (stack_dir, window_dir):
                subprocess.run(["rm", "-rf", str(folder)], check=True)
            if stage == "stack":
                run = run_stage(
                    stage,
                    case.runner_args() + case.stack_args(inputs_dir) + ["--stack_output", str(stack_dir)],
                    [stack_dir],
                )
            elif stage == "window":
                source = out / "stack-stack"
                if not (source / "metadata.json").exists():
                    subprocess.run(["rm", "-rf", str(source)], check=True)
                    run_stage(
                        "stack",
                        case.runner_args() + case.stack_args(inputs_dir) + ["--stack_output", str(source)],
                        [source],
                    )
                run = run_stage(
                    stage,
                    case.runner_args()
                    + ["--stack_dir", str(source), "--window_output", str(window_dir)]
                    + case.window_args(),
                    [window_dir],
                )
            else:
                run = run_stage(
                    stage,
                    case.runner_args()
                    + case.stack_args(inputs_dir)
                    + case.window_args()
                    + ["--stack_output", str(stack_dir), "--window_output", str(window_dir)],
                    [stack_dir, window_dir],
                )
            print(
                f"  {stage}: {run.wall:.1f} s, {run.compressed / 1e6:.0f} MB, launcher RSS "
                f"{run.launcher_rss / 2**20:.0f} MiB, worker RSS {run.worker_rss / 2**20:.0f} MiB",
                file=sys.stderr,
            )
            measure_floor(run, case.gzip_level, cores, sample_bytes)
            if not runs[stage]:
                measure_level6(run, cores)
            runs[stage].append(run)
            print(f"    zlib floor {run.floor:.1f} s, deflate floor {run.deflate_floor:.1f} s", file=sys.stderr)
            if not keep and stage != "stack":
                subprocess.run(["rm", "-rf", str(stack_dir), str(window_dir)], check=True)
    return runs


def _median(values):
    return statistics.median(values) if values else 0.0


def report(case: Case, runs: dict[str, list[StageRun]], observations: int, reference: bool) -> list[str]:
    pixels = case.inputs.height * case.inputs.width * observations
    lines = [
        "| stage | wall s | obs/s | Mpx/s | raw MB | GZIP MB | ratio | raw MB/s | GZIP MB/s "
        "| size / zlib 6 | zlib floor s | wall/zlib floor | deflate floor s | wall/deflate floor "
        "| launcher RSS MiB | worker RSS MiB (max) |",
        "|---|" + "---|" * 15,
    ]
    for stage, stage_runs in runs.items():
        wall = _median([r.wall for r in stage_runs])
        floor = _median([r.floor for r in stage_runs])
        last = stage_runs[-1]
        reads = observations if stage != "window" else 0
        lines.append(
            f"| {stage} | {wall:.1f} | {reads / wall:.1f} | {pixels / wall / 1e6 if reads else 0:.1f} "
            f"| {last.raw / 1e6:.0f} | {last.compressed / 1e6:.0f} | {last.compressed / max(last.raw, 1):.3f} "
            f"| {last.raw / wall / 1e6:.1f} | {last.compressed / wall / 1e6:.1f} "
            f"| {stage_runs[0].size_vs_level6:.3f} | {floor:.1f} "
            f"| {_median([r.wall / r.floor for r in stage_runs]):.2f} "
            f"| {_median([r.deflate_floor for r in stage_runs]):.1f} "
            f"| {_median([r.wall / r.deflate_floor for r in stage_runs]):.2f} "
            f"| {max(r.launcher_rss for r in stage_runs) / 2**20:.0f} "
            f"| {max(r.worker_rss for r in stage_runs) / 2**20:.0f} |"
        )
    if len(next(iter(runs.values()))) > 1:
        lines.append("")
        lines.append(
            "walls per run: "
            + "; ".join(
                f"{stage} " + ", ".join(f"{r.wall:.1f}" for r in stage_runs) for stage, stage_runs in runs.items()
            )
        )
    if reference and "fused" in runs:
        fused = runs["fused"]
        rsdtlib_wall = RSDTLIB_REFERENCE["stack"]["wall"] + RSDTLIB_REFERENCE["window"]["wall"]
        rsdtlib_bytes = RSDTLIB_REFERENCE["stack"]["gzip"] + RSDTLIB_REFERENCE["window"]["gzip"]
        wall = _median([r.wall for r in fused])
        lines += [
            "",
            f"against rsdtlib's figures (issue 7): wall {wall:.1f} s vs {rsdtlib_wall:.0f} s "
            f"= 1/{rsdtlib_wall / wall:.1f}; bytes {fused[-1].compressed / 1e9:.3f} GB vs "
            f"{rsdtlib_bytes / 1e9:.3f} GB = {fused[-1].compressed / rsdtlib_bytes:.3f}x (other data; on "
            f"the same raw bytes: {fused[0].size_vs_level6:.3f}x zlib level 6, rsdtlib's level)",
        ]
    return lines


PRESETS = {
    # Issue 7's reference case: 107 observations, 71 frames, 64 tiles, 62 windows per tile (rsdtlib: 61).
    "reference": dict(area=256, months=6, seed=338),
    "small": dict(area=128, months=3, seed=338),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="reference")
    parser.add_argument("--kind", default="noisy", help="noisy, smooth or noisy,smooth")
    parser.add_argument("--area", type=int, help="pixels per side (default: the preset's)")
    parser.add_argument("--months", type=int, help="months from 2017-01-01 (default: the preset's)")
    parser.add_argument("--seed", type=int, help="acquisition times and values (default: the preset's)")
    parser.add_argument("--format", choices=("store", "eopatch"), default="store")
    parser.add_argument("--tile_size", type=int, default=32)
    parser.add_argument("--delta_step", default="2d")
    for flag in GROUPS["window_parameters"].flags:  # the pipelines' own window flags and defaults
        flag.add_to(parser)
    parser.add_argument("--mode", choices=("training", "inference"), default="training")
    parser.add_argument("--workers", type=int, default=2, help="--direct_num_workers")
    parser.add_argument(
        "--running_mode",
        default="multi_processing",
        choices=("default", "in_memory", "multi_threading", "multi_processing"),
        help="default: the command line's own choice (rsdt_beam.cli.runners), --workers ignored",
    )
    GROUPS["output"].flags[0].add_to(parser)  # --gzip_level
    parser.add_argument("--stages", default="fused", help="comma-separated: stack, window, fused")
    parser.add_argument("--repeat", type=int, default=3, help="runs per stage; the report gives medians")
    parser.add_argument("--cores", type=int, default=os.cpu_count(), help="cores of the floor measurement")
    parser.add_argument(
        "--floor_sample_mb",
        type=float,
        default=1500,
        help="time the floor on every k-th output file, about this many MB (0: all files)",
    )
    parser.add_argument("--work_dir", default="/tmp/rsdt_beam_bench")
    parser.add_argument("--keep", action="store_true", help="keep the outputs of the last run")
    parser.add_argument(
        "--linearity",
        action="store_true",
        help="also run 2x area per side (4x pixels) and 2x months; compare time per output byte",
    )
    parser.add_argument(
        "--long_series",
        type=int,
        metavar="MONTHS",
        help="also run the same area over MONTHS (e.g. 48: 4 years, ~850 observations); compare "
        "peak RSS and time per output byte with the preset's months in the same run",
    )
    parser.add_argument("--levels", help="only measure zlib levels (e.g. 1,2,6) on the raw output of one run")
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    area = args.area or preset["area"]
    months = args.months or preset["months"]
    seed = args.seed if args.seed is not None else preset["seed"]
    work_dir = Path(args.work_dir)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    print(
        f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
        f"{os.getloadavg()[2]:.2f} at start, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"
    )
    for kind in args.kind.split(","):
        variants = [(area, months)]
        if args.linearity:
            variants += [(2 * area, months), (area, 2 * months)]
        if args.long_series:
            variants.append((area, args.long_series))
        per_byte, peak_rss, walls = [], [], []
        for var_area, var_months in variants:
            inputs = Inputs(kind, var_area, var_area, var_months, seed, args.format)
            case = Case(
                inputs,
                args.tile_size,
                args.delta_step,
                args.Delta,
                args.window_stride,
                args.omega,
                args.Omega,
                args.mode,
                args.workers,
                args.running_mode,
                args.gzip_level,
            )
            observations = len(acquisition_times(inputs.days, seed))
            print(f"\n## {case.describe(observations)}")
            if args.levels:
                level_table(case, work_dir, [int(v) for v in args.levels.split(",")], args.cores)
                continue
            runs = run_case(case, stages, args.repeat, work_dir, args.cores, args.keep, args.floor_sample_mb * 1e6)
            print(
                "\n".join(
                    report(
                        case,
                        runs,
                        observations,
                        args.preset == "reference" and (var_area, var_months) == (area, months) and kind == "noisy",
                    )
                )
            )
            per_byte.append(_median([r.wall / r.compressed for r in runs[stages[-1]]]))
            peak_rss.append(max(max(r.launcher_rss, r.worker_rss) for r in runs[stages[-1]]))
            walls.append(_median([r.wall for r in runs[stages[-1]]]))
            layout = TileLayout(var_area, var_area, args.tile_size, args.tile_size)
            print(f"work items: {work_items(layout, 256).describe()}")
        print(f"load at end: {os.getloadavg()[0]:.2f}")
        if args.long_series:
            print(
                f"\nlong series ({stages[-1]}, {months} vs {args.long_series} months, {area} x {area} px): "
                f"wall {walls[0]:.1f} s vs {walls[-1]:.1f} s; peak RSS of the largest process "
                f"{peak_rss[0] / 2**20:.0f} vs {peak_rss[-1] / 2**20:.0f} MiB = {peak_rss[-1] / peak_rss[0]:.2f}x; "
                f"seconds per output byte {per_byte[-1] / per_byte[0]:.3f}x"
            )
        if args.linearity:
            print(
                f"\nlinearity ({stages[-1]}, seconds per output byte relative to 1x): "
                f"4x area {per_byte[1] / per_byte[0]:.3f}, 2x months {per_byte[2] / per_byte[0]:.3f}"
            )


def _level_seconds(job: tuple[str, int]) -> list[tuple[int, int, float]]:
    """(raw bytes, compressed bytes, seconds) of zlib and of the writer's deflate at one level."""
    path, level = job
    with open(path, "rb") as handle:
        raw = zlib.decompress(handle.read(), 31)
    out = []
    for module in (zlib, deflate_module(level)):
        started = time.perf_counter()
        size = len(module.compress(raw, level))
        out.append((len(raw), size, time.perf_counter() - started))
    return out


def level_table(case: Case, work_dir: Path, levels: list[int], cores: int) -> None:
    """GZIP levels on the raw bytes of one fused run's outputs: speed per core and size, zlib and ISA-L."""
    runs = run_case(dataclasses.replace(case, gzip_level=1), ["fused"], 1, work_dir, cores, keep=True)
    files = runs["fused"][0].files
    print(
        "| level | zlib MB/s per core | zlib size / raw | writer's deflate | MB/s per core | size / raw |\n"
        "|---|---|---|---|---|---|"
    )
    for level in levels:
        with multiprocessing.get_context("spawn").Pool(cores) as pool:
            results = pool.map(_level_seconds, [(str(f), level) for f in files], chunksize=1)
        cells = []
        for k in (0, 1):
            raw = sum(r[k][0] for r in results)
            cells.append(f"{raw / sum(r[k][2] for r in results) / 1e6:.1f} | {sum(r[k][1] for r in results) / raw:.4f}")
        name = "ISA-L" if deflate_module(level) is not zlib else "zlib"
        print(f"| {level} | {cells[0]} | {name} | {cells[1]} |")


if __name__ == "__main__":
    main()
