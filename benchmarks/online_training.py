"""Training throughput: windows built online from Stage 2 stacks against written window files.

    python -m benchmarks.online_training --preset reference            # issue 12's figures, 3 rounds
    python -m benchmarks.online_training --preset small --rounds 1     # a quick look

The inputs are `benchmarks.bench`'s (kept in `--work_dir`); Stage 2 (`rsdt_beam.pipelines.stack`) and Stage 3
(`rsdt_beam.pipelines.window --mode training`, rsdtlib's example label) run once per parameter set and their
outputs are kept. Then, in one process and in alternating order per round, one epoch of each reader
is fed batch by batch to a model step (a compiled `tf.function` reducing the batch, so the figure is
the input pipeline's):

* `written`: `rsdt_beam.datasets.training_dataset` over the window files (GZIP TFRecords);
* `online`: `rsdt_beam.training.training_dataset_from_stacks` over the stacks;
* `online torch`: `rsdt_beam.torch_data.StackWindowsDataset` in a `DataLoader` (when torch is installed),

each with 1 and 2 reader workers (tf.data: files read in parallel, `cycle_length`, or stack readers,
`readers`, on tf.data's own thread pool unless `--threads N`; PyTorch: `num_workers`), at the same
batch size and shuffling. The report gives windows per
second (median of the rounds), online / written per worker count, and the bytes of the stack and
window files.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench import PRESETS, Case, Inputs, generate  # noqa: E402
from rsdt_beam.common.times import parse_duration  # noqa: E402
from rsdt_beam.window.rules import WindowParams  # noqa: E402


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.glob("*.tfrecords"))


def prepare(case: Case, work_dir: Path) -> tuple[Path, Path]:
    """Stacks and training windows of the case, written once and kept (keyed by the case's parameters)."""
    inputs_dir = generate(case.inputs, work_dir)
    key = (
        f"{inputs_dir.name}-t{case.tile_size}-d{case.delta_step}-D{case.delta}-s{case.window_stride}"
        f"-o{case.omega}-O{case.big_omega}"
    )
    stack_dir, window_dir = work_dir / "online" / key / "stack", work_dir / "online" / key / "windows"
    runner = ["--runner", "DirectRunner", "--no_progress"]
    if not (stack_dir / "metadata.json").exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "rsdt_beam.pipelines.stack",
                *runner,
                *case.stack_args(inputs_dir),
                "--stack_output",
                str(stack_dir),
            ],
            check=True,
            cwd=REPO,
        )
    if not (window_dir / "metadata.json").exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "rsdt_beam.pipelines.window",
                *runner,
                "--stack_dir",
                str(stack_dir),
                "--window_output",
                str(window_dir),
                *case.window_args(),
            ],
            check=True,
            cwd=REPO,
        )
    return stack_dir, window_dir


def tf_epoch(dataset, threads: int) -> tuple[int, float]:
    """(windows, seconds) of one pass of a tf.data dataset through a model step (`threads`: tf.data's
    private thread pool, 0 for its default)."""
    import tensorflow as tf

    if threads:
        options = tf.data.Options()
        options.threading.private_threadpool_size = threads
        dataset = dataset.with_options(options)

    @tf.function
    def model_step(feature, label):
        return tf.reduce_mean(feature) + tf.reduce_mean(label)

    count = 0
    started = time.perf_counter()
    for feature, label in dataset:
        model_step(feature, label).numpy()
        count += int(feature.shape[0])
    return count, time.perf_counter() - started


def torch_epoch(stack_dir: Path, params: WindowParams, batch_size: int, workers: int, seed: int) -> tuple[int, float]:
    import torch

    from rsdt_beam.torch_data import StackWindowsDataset

    loader = torch.utils.data.DataLoader(
        StackWindowsDataset(str(stack_dir), params, seed=seed),
        batch_size=batch_size,
        num_workers=workers,
        persistent_workers=False,
    )
    count = 0
    started = time.perf_counter()
    for feature, label in loader:
        float(feature.mean() + label.mean())
        count += int(feature.shape[0])
    return count, time.perf_counter() - started


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="reference")
    parser.add_argument("--kind", default="noisy", choices=("noisy", "smooth"))
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--workers", default="1,2", help="reader workers to compare, e.g. 1,2")
    parser.add_argument("--rounds", type=int, default=3, help="epochs per reader; the report gives medians")
    parser.add_argument("--seed", type=int, default=1, help="shuffling seed of every reader")
    parser.add_argument("--no_torch", action="store_true", help="skip the PyTorch DataLoader rows")
    parser.add_argument("--threads", type=int, default=0, help="tf.data private thread pool size (0: its default)")
    parser.add_argument("--work_dir", default="/tmp/rsdt_beam_bench")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    preset = PRESETS[args.preset]
    case = Case(
        Inputs(args.kind, preset["area"], preset["area"], preset["months"], preset["seed"], "store"),
        32,
        "2d",
        "30d",
        1,
        10,
        16,
        "training",
        1,
        "in_memory",
        2,
    )
    stack_dir, window_dir = prepare(case, Path(args.work_dir))
    params = WindowParams(parse_duration(case.delta), case.window_stride, case.omega, case.big_omega)

    from rsdt_beam.datasets import training_dataset
    from rsdt_beam.training import training_dataset_from_stacks

    readers = {
        "written": lambda w: tf_epoch(
            training_dataset(str(window_dir), batch_size=args.batch_size, seed=args.seed, cycle_length=w),
            args.threads,
        ),
        "online": lambda w: tf_epoch(
            training_dataset_from_stacks(str(stack_dir), params, batch_size=args.batch_size, seed=args.seed, readers=w),
            args.threads,
        ),
    }
    if not args.no_torch:
        try:
            import torch  # noqa: F401

            readers["online torch"] = lambda w: torch_epoch(stack_dir, params, args.batch_size, w, args.seed)
        except ImportError:
            pass
    workers = [int(w) for w in args.workers.split(",")]
    rates: dict[tuple[str, int], list[float]] = {(name, w): [] for name in readers for w in workers}
    windows = {}
    print(
        f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f} at start; {args.preset} ({args.kind}): "
        f"{case.inputs.height} x {case.inputs.width} px, {case.inputs.months} months, tiles 32 px, Delta "
        f"{case.delta}, omega {case.omega}, Omega {case.big_omega}, batch {args.batch_size}",
        file=sys.stderr,
    )
    for round_index in range(args.rounds):
        order = list(rates) if round_index % 2 == 0 else list(reversed(rates))
        for name, w in order:
            count, seconds = readers[name](w)
            windows[name] = count
            rates[(name, w)].append(count / seconds)
            print(
                f"  round {round_index + 1}: {name}, {w} worker(s): {count} windows in {seconds:.2f} s "
                f"({count / seconds:.0f}/s)",
                file=sys.stderr,
            )
    stack_bytes, window_bytes = folder_bytes(stack_dir), folder_bytes(window_dir)
    print(f"\n| reader | workers | windows per epoch | windows/s (median of {args.rounds}) | runs | vs written |")
    print("|---|---|---|---|---|---|")
    for (name, w), values in rates.items():
        median = statistics.median(values)
        ratio = median / statistics.median(rates[("written", w)])
        print(
            f"| {name} | {w} | {windows[name]} | {median:.0f} | {', '.join(f'{v:.0f}' for v in values)} "
            f"| {ratio:.2f}x |"
        )
    print(
        f"\nstorage: stacks {stack_bytes / 1e6:.0f} MB, window files {window_bytes / 1e6:.0f} MB "
        f"({stack_bytes / window_bytes:.3f}x); load at end {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
