"""Performance regressions, as ratios measured in the same run (never absolute times).

* Worker memory does not grow with the area: peak RSS on a 16x larger area stays within 1.2x.
* The default GZIP level stays within 8 % of zlib level 6 (rsdtlib's and TensorFlow's size) on both
  kinds of benchmark data, measured on the raw bytes the pipeline wrote.
* The TFRecord writer costs at most 1.75x the bare deflate of the same bytes on the same threads.
"""

from __future__ import annotations

import concurrent.futures
import io
import os
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from benchmarks.bench import Case, Inputs, generate, run_stage
from rsdt_beam.records import window_record
from rsdt_beam.tfrecord import DEFAULT_GZIP_LEVEL, TFRecordWriter, deflate_module

pytestmark = pytest.mark.e2e


def _case(kind: str, area: int) -> Case:
    return Case(
        Inputs(kind, area, area, 1, 338, "store"),
        tile_size=32,
        delta_step="2d",
        delta="6d",
        window_stride=1,
        omega=2,
        big_omega=4,
        mode="inference",
        workers=1,
        running_mode="in_memory",
        gzip_level=DEFAULT_GZIP_LEVEL,
    )


def _fused(case: Case, work_dir: Path, name: str):
    inputs = generate(case.inputs, work_dir)
    stack_dir, window_dir = work_dir / f"{name}-stack", work_dir / f"{name}-windows"
    return run_stage(
        "fused",
        case.runner_args()
        + case.stack_args(inputs)
        + case.window_args()
        + ["--chunk_size", "128", "--stack_output", str(stack_dir), "--window_output", str(window_dir)],
        [stack_dir, window_dir],
    )


def test_peak_rss_does_not_grow_with_the_area(tmp_path):
    small = _fused(_case("noisy", 128), tmp_path, "small")
    large = _fused(_case("noisy", 512), tmp_path, "large")
    assert large.compressed > 12 * small.compressed  # the larger run did 16x the work
    assert large.launcher_rss <= 1.2 * small.launcher_rss, (large.launcher_rss, small.launcher_rss)


@pytest.mark.parametrize("kind", ["noisy", "smooth"])
def test_default_level_size_is_close_to_zlib_level_6(tmp_path, kind):
    run = _fused(_case(kind, 128), tmp_path, kind)
    raw = b"".join(zlib.decompress(f.read_bytes(), 31) for f in run.files)
    assert run.compressed <= 1.08 * len(zlib.compress(raw, 6))


def test_writer_costs_little_more_than_deflate_itself():
    rng = np.random.default_rng(0)
    frames = np.concatenate(
        [rng.random((40, 32, 32, 4), np.float32), (rng.integers(0, 10000, (40, 32, 32, 13)) / 1e4).astype(np.float32)],
        -1,
    )
    records = [window_record(frames[k % 28 : k % 28 + 12], None, (0, 0), k, np.arange(12.0)) for k in range(300)]
    cores = os.cpu_count() or 1
    module = deflate_module(DEFAULT_GZIP_LEVEL)
    payload = b"".join(b"".join(record) for record in records)
    blocks = [payload[n : n + (1 << 20)] for n in range(0, len(payload), 1 << 20)]
    best_ratio = np.inf
    for _ in range(3):  # the best of three against the machine's other load
        with concurrent.futures.ThreadPoolExecutor(cores) as pool:  # deflate releases the GIL
            started = time.perf_counter()
            list(pool.map(lambda block: module.compress(block, DEFAULT_GZIP_LEVEL), blocks))
            floor = time.perf_counter() - started
        started = time.perf_counter()
        writer = TFRecordWriter(io.BytesIO(), DEFAULT_GZIP_LEVEL)
        for record in records:
            writer.write(record)
        writer.close()
        best_ratio = min(best_ratio, (time.perf_counter() - started) / floor)
    assert best_ratio <= 1.75, best_ratio  # ~1.35 here; deflate back on one thread gives >= 2 on 2 cores
