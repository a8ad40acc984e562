"""Start-up cost of the commands: CPU of `python -c "import apache_beam"` against `--help` of every command
in `rsdt_beam/pipelines/`, side by side in one run (issue 20: each `--help` at most 1.5x Beam's import).

    python -m benchmarks.startup                     # this tree, 5 rounds
    python -m benchmarks.startup --repeat 5 /work/main .   # two code trees side by side

Each measurement is one fresh child process; its CPU (user + system) is the delta of
`resource.getrusage(RUSAGE_CHILDREN)` around it, so only that child is counted. The rounds alternate
over all variants (so a busy neighbour slows all of them alike) and the medians are printed with each
command's ratio to `import apache_beam` in the same run. A tree is imported through PYTHONPATH (the
child runs from the tree's root, so its `rsdt_beam` comes first).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

BASELINE = "import apache_beam"
TARGET = 1.5


def commands(tree: Path) -> list[str]:
    folder = tree / "rsdt_beam" / "pipelines"
    return sorted(p.stem for p in folder.glob("*.py") if p.stem != "__init__")


def measure(argv: list[str], tree: Path) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one child process running `argv` from `tree`."""
    env = dict(os.environ, PYTHONPATH=str(tree), TF_CPP_MIN_LOG_LEVEL="3")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} in {tree} failed:\n{done.stderr[-2000:]}")
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="*", default=["."], help="code trees to compare (default: this one)")
    parser.add_argument("--repeat", type=int, default=5, help="rounds; the medians are printed")
    args = parser.parse_args()
    trees = [Path(t).resolve() for t in args.trees]
    variants = [(trees[0], "import apache_beam", [sys.executable, "-c", BASELINE])]
    for tree in trees:
        variants += [
            (tree, f"{name} --help", [sys.executable, "-m", f"rsdt_beam.pipelines.{name}", "--help"])
            for name in commands(tree)
        ]
    cpu: dict[int, list[float]] = {i: [] for i in range(len(variants))}
    wall: dict[int, list[float]] = {i: [] for i in range(len(variants))}
    for _ in range(args.repeat):
        for i, (tree, _, argv) in enumerate(variants):
            c, w = measure(argv, tree)
            cpu[i].append(c)
            wall[i].append(w)
    base = statistics.median(cpu[0])
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, median of {args.repeat}, target <= {TARGET}x")
    print(f"{'tree':<20} {'what':<24} {'CPU s':>7} {'wall s':>7} {'CPU ratio':>9}")
    for i, (tree, what, _) in enumerate(variants):
        ratio = statistics.median(cpu[i]) / base
        flag = "" if i == 0 or ratio <= TARGET else "  above target"
        print(
            f"{str(tree)[-20:]:<20} {what:<24} {statistics.median(cpu[i]):7.2f} {statistics.median(wall[i]):7.2f}"
            f" {ratio:8.2f}x{flag}"
        )


if __name__ == "__main__":
    main()
