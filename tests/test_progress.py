"""The progress line: done/total, percentage and ETA from the totals the launcher knows, as log lines."""

import os

from rsdt_beam.cli.commands import WINDOW
from rsdt_beam.cli.run import execute
from rsdt_beam.progress import progress_line


def test_progress_line_totals_percentage_estimate_and_eta():
    line = progress_line(
        {"tiles_windowed": 16, "windows_written": 992, "window_file_bytes": 2_500_000},
        {"tiles_windowed": 64, "tiles_read": 64},
        elapsed=4.0,
    )
    assert line == (
        "[rsdt_beam] tiles windowed 16/64 (25%)  window file bytes 2.5 MB  windows written 992 (~3968)"
        "  elapsed 0:04 ETA 0:12"
    )
    assert progress_line({"windows_built": 5}, {}, 3725.0) == "[rsdt_beam] windows built 5  elapsed 1:02:05"


def test_a_run_logs_progress_with_totals(sample_run, tmp_path, capfd):
    execute(
        WINDOW,
        [
            "--stack_dir",
            os.path.join(sample_run, "stack"),
            "--window_output",
            str(tmp_path / "w"),
            "--Delta",
            "60d",
            "--omega",
            "3",
            "--Omega",
            "6",
            "--tiles",
            "expr:j == 1",
        ],
    )
    logged = [line for line in capfd.readouterr().err.splitlines() if line.startswith("[rsdt_beam]")]
    assert logged, "stderr is no TTY: progress goes out as log lines"
    assert "tiles windowed 3/3 (100%)" in logged[-1] and "tiles read 3/3 (100%)" in logged[-1]
    assert "windows written 90" in logged[-1] and "ETA 0:00" in logged[-1]
