"""Performance regressions in memory and size, as ratios measured in the same run (never times: those are
benchmarks/bench.py's figures, e.g. the writer against its deflate floor).

* Worker memory does not grow with the area: peak RSS on a 16x larger area stays within 1.2x.
* The default GZIP level stays within 8 % of zlib level 6 (rsdtlib's and TensorFlow's size) on both
  kinds of benchmark data, measured on the raw bytes the pipeline wrote.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest

from benchmarks.bench import Case, Inputs, generate, run_stage
from rsdt_beam.tfrecord import DEFAULT_GZIP_LEVEL

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
