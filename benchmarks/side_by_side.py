"""Fused runs of several variants (code tree, months, area), alternating, in one process: wall time, CPU
seconds of the process tree, peak RSS of the largest process, output bytes.

    git archive 73b8ecc | tar -x -C /tmp/base          # a code tree to compare with
    python -m benchmarks.side_by_side --repeat 3 /tmp/base:6 .:6              # the reference case
    python -m benchmarks.side_by_side --window_stride 4 .:6 .:48 /tmp/base:48  # 6 months vs 4 years
    python -m benchmarks.side_by_side --window_stride 4 .:6:256 .:6:512       # 1x vs 4x area

Each variant is `TREE:MONTHS[:AREA]` (AREA px a side, default 256); inputs are benchmarks.bench's noisy
store, fused with `--stack_output`, training windows (`Delta` 30 days, `omega` 10, `Omega` 16), in_memory.
On a shared machine walls are noisy: compare CPU seconds and medians of alternating runs.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
from pathlib import Path

from benchmarks import bench


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="+", help="TREE:MONTHS[:AREA]")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--window_stride", type=int, default=1)
    parser.add_argument("--work_dir", default="/tmp/rsdt_beam_bench")
    args = parser.parse_args(argv)
    work = Path(args.work_dir)
    cases = {}
    for text in args.variants:
        tree, months, area = (text.split(":") + ["256"])[:3]
        inputs = bench.Inputs("noisy", int(area), int(area), int(months), 338, "store")
        case = bench.Case(inputs, 32, "2d", "30d", args.window_stride, 10, 16, "training", 1, "in_memory", 2)
        cases[text] = (Path(tree).resolve(), case, bench.generate(inputs, work))
        print(f"{text}: {case.describe(len(bench.acquisition_times(inputs.days, 338)))}", flush=True)
    results = {text: [] for text in cases}
    out = work / "out"
    for n in range(args.repeat):
        for text, (tree, case, folder) in cases.items():
            bench.REPO = tree  # run_stage runs `python -m pipelines.run` from this tree
            subprocess.run(["rm", "-rf", str(out)], check=True)
            stack_dir, window_dir = out / "stack", out / "windows"
            before = _cpu_seconds()
            # Trees from before the rsdt_beam.pipelines entry points have pipelines/run.py.
            module = None if (tree / "rsdt_beam" / "pipelines").is_dir() else "pipelines.run"
            run = bench.run_stage(
                "fused",
                case.runner_args()
                + case.stack_args(folder)
                + case.window_args()
                + ["--stack_output", str(stack_dir), "--window_output", str(window_dir)],
                [stack_dir, window_dir],
                module,
            )
            cpu = _cpu_seconds() - before
            peak = max(run.launcher_rss, run.worker_rss)
            results[text].append((run.wall, cpu, peak, run.compressed))
            print(
                f"{text} run {n}: wall {run.wall:.1f} s, CPU {cpu:.1f} s, peak RSS {peak / 2**20:.0f} MiB, "
                f"{run.compressed / 1e9:.2f} GB",
                flush=True,
            )
    subprocess.run(["rm", "-rf", str(out)], check=True)
    print(
        "\n| variant | wall s (median) | CPU s | peak RSS MiB (max) | GB | wall s/GB | CPU s/GB |\n"
        "|---|---|---|---|---|---|---|"
    )
    for text, runs in results.items():
        wall, cpu = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        gigabytes = runs[0][3] / 1e9
        print(
            f"| {text} | {wall:.1f} | {cpu:.1f} | {max(r[2] for r in runs) / 2**20:.0f} | {gigabytes:.2f} "
            f"| {wall / gigabytes:.2f} | {cpu / gigabytes:.2f} |"
        )


if __name__ == "__main__":
    main()
