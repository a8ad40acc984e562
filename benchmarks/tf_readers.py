"""The tf.data window readers with their file checks against TensorFlow's reader alone (issue 18, point 3).

    python -m benchmarks.tf_readers                     # 5 rounds, 4 files of 100 windows
    python -m benchmarks.tf_readers --rounds 3 --files 2

`rsdt_beam.datasets.training_dataset` reads each file through `_file_records` (TensorFlow's reader, a
byte count per record, the gzip trailer compared at each file's end) and checks each record's keys
so that a bad file is named. The baseline is the same pipeline without them: TensorFlow's reader
interleaved over the files and the same parsing and padding. Both read the same synthetic training
windows (`[n, 32, 32, 15]` float32 features in steps of 0.01, written by rsdt_beam's
writer), one pass each per round, in alternating order; the report gives windows per second (median
of the rounds), wall and CPU seconds per pass (CPU: the process's, less sensitive to other load on a
shared machine), and the ratios checked / baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from rsdt_beam.records import window_record  # noqa: E402
from rsdt_beam.tfrecord import TFRecordWriter  # noqa: E402


def write_windows(folder: str, files: int, windows: int, omega: int = 16) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for j in range(files):
        path = os.path.join(folder, f"0_{j}.tfrecords")
        with open(path, "wb") as raw:
            writer = TFRecordWriter(raw)
            for k in range(windows):
                n = int(rng.integers(omega // 2, omega + 1))
                feature = rng.integers(0, 100, (n, 32, 32, 15)).astype(np.float32) / 100
                label = np.ones((32, 32), np.float32)
                writer.write(window_record(feature, label, (0, j), k, np.arange(n, dtype=np.float64)))
            writer.close()
        paths.append(path)
    metadata = {"tile_size_y": 32, "tile_size_x": 32, "bands_sar": 0, "bands_opt": 15, "Omega": omega}
    with open(os.path.join(folder, "metadata.json"), "w") as f:
        json.dump(metadata, f)
    return paths


def baseline(files: list[str], omega: int):
    """TensorFlow's reader alone, with the same parsing and padding as training_dataset."""
    import tensorflow as tf

    schema = {"Feature": tf.io.FixedLenFeature([], tf.string), "Label": tf.io.FixedLenFeature([], tf.string)}

    def parse(serialized):
        parsed = tf.io.parse_single_example(serialized, schema)
        feature = tf.io.parse_tensor(parsed["Feature"], tf.float32)
        padding = [[0, omega - tf.shape(feature)[0]], [0, 0], [0, 0], [0, 0]]
        feature = tf.ensure_shape(tf.pad(feature, padding, constant_values=-1.0), (omega, 32, 32, 15))
        return feature, tf.ensure_shape(tf.io.parse_tensor(parsed["Label"], tf.float32), (32, 32))

    return (
        tf.data.Dataset.from_tensor_slices(files)
        .interleave(
            lambda path: tf.data.TFRecordDataset(path, compression_type="GZIP"),
            cycle_length=4,
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        .map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .batch(32)
        .prefetch(tf.data.AUTOTUNE)
    )


def one_pass(dataset) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of the process, windows) of one pass."""
    started, cpu, count = time.perf_counter(), time.process_time(), 0
    for feature, _label in dataset:
        count += int(feature.shape[0])
    return time.perf_counter() - started, time.process_time() - cpu, count


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--windows", type=int, default=100, help="windows per file")
    args = parser.parse_args(argv)
    from rsdt_beam.datasets import training_dataset

    with tempfile.TemporaryDirectory() as folder:
        files = write_windows(folder, args.files, args.windows)
        raw = sum(os.path.getsize(path) for path in files)
        readers = {
            "checked (training_dataset)": lambda: training_dataset(
                files, batch_size=32, shuffle_buffer=0, frames=16, cycle_length=4
            ),
            "TensorFlow's reader alone": lambda: baseline(files, 16),
        }
        one_pass(readers["checked (training_dataset)"]())  # warm: tracing, page cache
        walls: dict[str, list[float]] = {name: [] for name in readers}
        cpus: dict[str, list[float]] = {name: [] for name in readers}
        for round_ in range(args.rounds):
            for name in readers if round_ % 2 == 0 else reversed(list(readers)):
                wall, cpu, count = one_pass(readers[name]())
                assert count == args.files * args.windows, (name, count)
                walls[name].append(wall)
                cpus[name].append(cpu)
    windows = args.files * args.windows
    print(f"{windows} windows in {args.files} files, {raw / 1e6:.1f} MB GZIP; {args.rounds} rounds, medians")
    wall = {name: statistics.median(values) for name, values in walls.items()}
    cpu = {name: statistics.median(values) for name, values in cpus.items()}
    for name in readers:
        print(f"  {name:28s} {windows / wall[name]:6.0f} windows/s, {wall[name]:.2f} s wall, {cpu[name]:.2f} s CPU")
    (checked, alone) = readers
    print(f"  checked / alone: wall {wall[checked] / wall[alone]:.3f}x, CPU {cpu[checked] / cpu[alone]:.3f}x")


if __name__ == "__main__":
    main()
