"""The fused reference case (issue 7's, as benchmarks/bench.py) on Beam's DaskRunner with 2 dask workers against
the DirectRunner (2 workers, multi_processing, bench.py's default), alternately in one run:

    python -m benchmarks.dask_vs_direct [--preset reference] [--repeat 3] [--dask_npartitions N]

Prints per run the wall times, and for Dask the tasks each worker ran and the bytes the workers sent each other
(what crossed process boundaries: the shuffle and results fetched between tasks), then the medians and the
wall-time ratio, and whether both runners wrote the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
from pathlib import Path

from benchmarks.bench import PRESETS, Case, Inputs, acquisition_times, generate, run_stage
from benchmarks.dask_cluster import dask_cluster
from rsdt_beam.tfrecord import DEFAULT_GZIP_LEVEL


def tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="reference")
    parser.add_argument("--kind", default="noisy", choices=("noisy", "smooth"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dask_npartitions", type=int, help="Beam's DaskRunner: partitions of each Create")
    parser.add_argument("--work_dir", default="/tmp/rsdt_beam_bench")
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    inputs = Inputs(args.kind, preset["area"], preset["area"], preset["months"], preset["seed"], "store")
    case = Case(inputs, 32, "2d", "30d", 1, 10, 16, "training", 2, "multi_processing", DEFAULT_GZIP_LEVEL)
    work_dir = Path(args.work_dir)
    inputs_dir = generate(inputs, work_dir)
    pipeline_args = case.stack_args(inputs_dir) + case.window_args()
    observations = len(acquisition_times(inputs.days, inputs.seed))
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f} at start; {case.describe(observations)}")
    walls: dict[str, list[float]] = {"direct": [], "dask": []}
    shuffled, digests = [], {}
    with dask_cluster(str(work_dir / "dask"), workers=2) as cluster:
        dask_args = (
            cluster.flags
            + ["--gzip_level", str(case.gzip_level)]
            + (["--dask_npartitions", str(args.dask_npartitions)] if args.dask_npartitions else [])
        )
        for n in range(args.repeat):
            for name in ("direct", "dask") if n % 2 == 0 else ("dask", "direct"):
                out = work_dir / "out" / f"dask-vs-direct-{name}"
                subprocess.run(["rm", "-rf", str(out)], check=True)
                runner = case.runner_args() if name == "direct" else dask_args
                before = cluster.stats()
                run = run_stage(
                    "fused",
                    runner
                    + pipeline_args
                    + ["--stack_output", str(out / "stack"), "--window_output", str(out / "windows")],
                    [out / "stack", out / "windows"],
                )
                walls[name].append(run.wall)
                line = f"  run {n + 1} {name}: {run.wall:.1f} s, {run.compressed / 1e6:.0f} MB written"
                if name == "dask":
                    after = cluster.stats()
                    tasks = [after[w][0] - before[w][0] for w in sorted(after)]
                    sent = sum(after[w][1] - before[w][1] for w in after)
                    shuffled.append(sent)
                    line += f", tasks per worker {tasks}, {sent / 1e6:.1f} MB sent between workers"
                print(line, flush=True)
                digests[name] = tree_digest(out)
    direct, dask = statistics.median(walls["direct"]), statistics.median(walls["dask"])
    print(
        f"fused {args.preset} ({args.kind}), medians of {args.repeat}: DirectRunner 2 workers {direct:.1f} s, "
        f"DaskRunner 2 workers {dask:.1f} s, wall-time ratio Dask/Direct {dask / direct:.2f}; "
        f"bytes shuffled between Dask workers {statistics.median(shuffled) / 1e6:.1f} MB; "
        f"outputs identical: {'yes' if digests['direct'] == digests['dask'] else 'NO'}; "
        f"load at end {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
