"""The fused reference case (issue 7's, as benchmarks/bench.py) on Beam's DaskRunner with 1 and with 2 dask workers
against the DirectRunner as the command line runs it by default, in turn within one run:

    python -m benchmarks.dask_vs_direct [--preset reference] [--repeat 3] [--dask_npartitions N]

Prints per run the wall time and the CPU time of every process of the run (the DirectRunner: the launcher and its
worker processes; Dask: the launcher, the scheduler and every worker process, nannies included), and for Dask the
tasks each worker ran and the bytes the workers sent each other; then the medians, the wall and CPU ratios against
the DirectRunner, each worker's share of the tasks, and whether every runner wrote the same bytes.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import resource
import statistics
import subprocess
from pathlib import Path

import psutil

from benchmarks.bench import PRESETS, Case, Inputs, acquisition_times, generate, run_stage
from benchmarks.dask_cluster import dask_cluster
from rsdt_beam.tfrecord import DEFAULT_GZIP_LEVEL


def tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "rsdt_run.json"):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def children_cpu() -> float:
    """CPU seconds of this process's waited-for children (and theirs) so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def tree_cpu(pids: list[int]) -> float:
    """CPU seconds of running processes and their live descendants (a dask worker runs under its nanny)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            process = psutil.Process(pid)
            for member in (process, *process.children(recursive=True)):
                with contextlib.suppress(psutil.NoSuchProcess):
                    times = member.cpu_times()
                    total += times.user + times.system
    return total


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="reference")
    parser.add_argument("--kind", default="noisy", choices=("noisy", "smooth"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dask_npartitions", type=int, help="Beam's DaskRunner: partitions (default: rsdt_beam's)")
    parser.add_argument("--work_dir", default="/tmp/rsdt_beam_bench")
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    inputs = Inputs(args.kind, preset["area"], preset["area"], preset["months"], preset["seed"], "store")
    case = Case(inputs, 32, "2d", "30d", 1, 10, 16, "training", 1, "in_memory", DEFAULT_GZIP_LEVEL)
    work_dir = Path(args.work_dir)
    inputs_dir = generate(inputs, work_dir)
    pipeline_args = case.stack_args(inputs_dir) + case.window_args() + ["--gzip_level", str(case.gzip_level)]
    observations = len(acquisition_times(inputs.days, inputs.seed))
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f} at start; {case.describe(observations)}")
    names = ("direct", "dask 1 worker", "dask 2 workers")
    walls: dict[str, list[float]] = {name: [] for name in names}
    cpus: dict[str, list[float]] = {name: [] for name in names}
    shares: list[list[float]] = []
    digests: dict[str, str] = {}
    with (
        dask_cluster(str(work_dir / "dask1"), workers=1) as one,
        dask_cluster(str(work_dir / "dask2"), workers=2) as two,
    ):
        clusters = {"dask 1 worker": one, "dask 2 workers": two}
        for n in range(args.repeat):
            for name in names if n % 2 == 0 else tuple(reversed(names)):
                out = work_dir / "out" / f"dask-vs-direct-{name.replace(' ', '-')}"
                subprocess.run(["rm", "-rf", str(out)], check=True)
                cluster = clusters.get(name)
                runner = []
                if cluster is not None:
                    runner = cluster.flags + (
                        ["--dask_npartitions", str(args.dask_npartitions)] if args.dask_npartitions else []
                    )
                    before, cpu_before = cluster.stats(), tree_cpu(cluster.pids)
                launcher_before = children_cpu()
                outputs = ["--stack_output", str(out / "stack"), "--window_output", str(out / "windows")]
                run = run_stage("fused", runner + pipeline_args + outputs, [out / "stack", out / "windows"])
                cpu = children_cpu() - launcher_before
                line = f"  run {n + 1} {name}: {run.wall:.1f} s"
                if cluster is not None:
                    cpu += tree_cpu(cluster.pids) - cpu_before
                    after = cluster.stats()
                    tasks = [after[w][0] - before[w][0] for w in sorted(after)]
                    sent = sum(after[w][1] - before[w][1] for w in after)
                    if len(tasks) == 2:
                        shares.append([t / sum(tasks) for t in tasks])
                    line += f", tasks per worker {tasks}, {sent / 1e6:.1f} MB sent between workers"
                walls[name].append(run.wall)
                cpus[name].append(cpu)
                print(f"{line}, CPU {cpu:.1f} s, {run.compressed / 1e6:.0f} MB written", flush=True)
                digests[name] = tree_digest(out)
    wall = {name: statistics.median(values) for name, values in walls.items()}
    cpu = {name: statistics.median(values) for name, values in cpus.items()}
    print(f"fused {args.preset} ({args.kind}), medians of {args.repeat} (wall s / CPU s; ratio to the DirectRunner):")
    for name in names:
        print(
            f"  {name}: {wall[name]:.1f} s / {cpu[name]:.1f} s; wall ratio {wall[name] / wall['direct']:.2f}, "
            f"CPU ratio {cpu[name] / cpu['direct']:.2f}"
        )
    lowest = min(min(share) for share in shares) if shares else float("nan")
    print(
        f"  tasks of the busier/lighter Dask worker (2 workers): lowest share {100 * lowest:.0f} %; outputs identical: "
        f"{'yes' if len(set(digests.values())) == 1 else 'NO'}; load at end {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
