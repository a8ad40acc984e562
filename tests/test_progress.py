"""The progress line: done/total, percentage and ETA from the totals the launcher knows, fitted to the
terminal; as log lines when stderr is no terminal; its first line as the job starts."""

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time

import fake_sentinelhub as fake
import pytest
from test_convert import LANDSAT_FLAGS, STACK_WINDOW_FLAGS

from rsdt_beam.acquire.store import write_grid
from rsdt_beam.cli.commands import FETCH, WINDOW
from rsdt_beam.cli.run import _counted_here, execute
from rsdt_beam.grid import Grid
from rsdt_beam.progress import Total, progress_line

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A window run's counters a quarter of the way through (the sample's kinds of counters).
COUNTS = {
    "tiles_stacked": 9,
    "tiles_windowed": 16,
    "tiles_read": 64,
    "chunks_read": 45,
    "observations_inspected": 45,
    "observations_rejected": 2,
    "stack_file_bytes": 700_000,
    "stack_records_written": 306,
    "window_file_bytes": 2_500_000,
    "windows_written": 992,
}
TOTALS = {"tiles_stacked": Total(9), "tiles_windowed": Total(64), "tiles_read": Total(64)}


def test_the_whole_line_shows_the_mean_percentage_done_of_each_total_the_other_counters_and_eta():
    line = progress_line(
        {"tiles_windowed": 16, "windows_written": 992, "window_file_bytes": 2_500_000},
        {"tiles_windowed": Total(64), "tiles_stacked": Total(64)},
        elapsed=4.0,
    )
    # Stages that follow each other count alike: a quarter of one of two is 12 %.
    assert line == (
        "[rsdt_beam] 12%  tiles windowed 16/64  tiles stacked 0/64  window file bytes 2.5 MB"
        "  windows written 992 (~3968)  elapsed 0:04 ETA 0:28"
    )
    assert progress_line({"windows_built": 5}, {}, 3725.0) == "[rsdt_beam]  windows built 5  elapsed 1:02:05"
    first = progress_line({}, {"tiles_windowed": Total(64), "tiles_empty": Total(0)}, 0.0)
    assert first == "[rsdt_beam] 0%  tiles windowed 0/64  elapsed 0:00 ETA --:--"  # a total of 0 is left out


def test_a_total_counted_by_the_outcomes_of_a_step_shows_their_sum_and_only_the_failures():
    outcomes = ("observations_converted", "observations_fully_masked", "sources_set_aside")
    line = progress_line(
        {"observations_converted": 6, "observations_fully_masked": 1, "sources_set_aside": 1},
        {"observations": Total(16, outcomes)},
        elapsed=10.0,
    )
    assert line == (
        "[rsdt_beam] 50%  observations 8/16  observations fully masked 1  sources set aside 1  elapsed 0:10 ETA 0:10"
    )


@pytest.mark.parametrize("width", [200, 120, 100, 80, 60, 45, 30, 25])
def test_the_line_fits_the_width_keeping_percentage_done_of_the_running_total_and_eta(width):
    line = progress_line(COUNTS, TOTALS, 4.0, width)
    assert len(line) <= width
    assert line.split("  ")[0].endswith("75%") and line.endswith("0:04 ETA 0:01")
    assert "16/64" in line  # tiles windowed: the total still running


def test_shortening_drops_byte_counters_first_then_other_counters_then_abbreviates_failures_stay_longest():
    whole = progress_line(COUNTS, TOTALS, 4.0)
    assert len(whole) > 200 and "window file bytes 2.5 MB" in whole
    lines = {width: progress_line(COUNTS, TOTALS, 4.0, width) for width in (200, 120, 100, 80, 50)}
    assert "MB" not in lines[200] and "stack records wr 306" in lines[200]
    assert "stack records" not in lines[120] and "obs rejected 2" in lines[120] and "win wr 992 (~3968)" in lines[120]
    assert lines[100] == (
        "[rsdt_beam] 75%  tiles stk 9/9  tiles wnd 16/64  tiles read 64/64  obs rejected 2  0:04 ETA 0:01"
    )
    assert lines[80] == "[rsdt_beam] 75%  tiles stk 9/9  tiles wnd 16/64  tiles read 64/64  0:04 ETA 0:01"
    assert lines[50] == "[rsdt_beam] 75%  tiles wnd 16/64  0:04 ETA 0:01"  # the finished totals go last


@pytest.mark.parametrize(
    "argv, here",
    [
        ([], True),
        (["--runner", "direct", "--direct_running_mode", "multi_threading"], True),
        (["--direct_running_mode", "multi_processing"], False),  # each worker process prints its own line
        (["--runner", "DaskRunner"], False),
        (["--runner", "PortableRunner"], False),
    ],
)
def test_the_launcher_prints_the_line_only_when_the_job_counts_in_its_process(argv, here):
    from apache_beam.options.pipeline_options import PipelineOptions

    assert _counted_here(PipelineOptions(argv)) is here


@pytest.mark.e2e
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
    assert len(logged) >= 3, "stderr is no TTY: progress goes out as log lines (start, first count, end)"
    assert logged[0] == "[rsdt_beam] 0%  tiles windowed 0/3  tiles read 0/3  elapsed 0:00 ETA --:--"
    assert logged[-1].startswith("[rsdt_beam] 100%  tiles windowed 3/3  tiles read 3/3  ")
    assert "windows written 90" in logged[-1] and logged[-1].endswith("ETA 0:00")


def _terminal_output(argv: list[str], columns: int) -> list[tuple[float, str]]:
    """Runs a command with stderr on a pseudo-terminal `columns` wide: (seconds since start, text) of
    each read of the terminal."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["PYTHONPATH"] = ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")
    started = time.monotonic()
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower)
    os.close(follower)
    reads = []
    try:
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the command ended and closed the terminal (EIO)
                break
            if not chunk:
                break
            reads.append((time.monotonic() - started, chunk.decode(errors="replace")))
    finally:
        os.close(leader)
        assert process.wait(timeout=120) == 0, "".join(text for _, text in reads)[-3000:]
    return reads


@pytest.mark.e2e
def test_convert_on_a_terminal_shows_totals_as_it_starts_then_percentage_and_eta_fitted_to_the_width(tmp_path):
    store, windows = str(tmp_path / "store"), str(tmp_path / "windows")
    flags = [flag for flag in LANDSAT_FLAGS if flag != "--no_progress"]
    argv = [sys.executable, "-m", "rsdt_beam.pipelines.convert", "--store", store, *flags, *STACK_WINDOW_FLAGS]
    reads = _terminal_output([*argv, "--window_output", windows, "--convert_block_size", "16"], columns=80)
    text = "".join(chunk for _, chunk in reads)
    # The launcher's last line before the job starts, then the progress line, overwritten in place.
    launched = next(at for at, chunk in reads if "rsdt_beam convert: 4 tiles" in chunk)
    first = next(at for at, chunk in reads if "\r[rsdt_beam]" in chunk)
    assert first - launched < 2.0
    shown = [re.sub(r"\x1b\[K", "", piece) for piece in re.split(r"[\r\n]+", text) if piece.startswith("[rsdt_beam]")]
    # 11 sources of 4 x 4 blocks; the totals of the later stages go where 80 columns do not hold them all.
    assert shown[0] == "[rsdt_beam] 0%  blocks 0/176  obs 0/11  tiles stk 0/4  0:00 ETA --:--"
    assert all(len(line) < 80 for line in shown), shown
    assert re.fullmatch(r"\[rsdt_beam\] 100%  tiles wnd 4/4  \d:\d\d ETA 0:00", shown[-1])
    # The warning about the cloudy scene starts on a cleared line, not after the progress line's end.
    assert "\r\x1b[KWARNING:" in text


@pytest.mark.e2e
def test_fetch_logs_the_totals_of_chunks_and_observations_from_the_start_to_100_percent(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("SH_CLIENT_ID", fake.CLIENT_ID)
    monkeypatch.setenv("SH_CLIENT_SECRET", fake.CLIENT_SECRET)
    scene = fake.s2_scenes()[0]
    store = str(tmp_path / "obs")
    write_grid(store, Grid(scene.crs, scene.transform, *scene.shape))  # the run's grid, as the fetch tests give it
    hub = fake.FakeSentinelHub().start()
    try:
        execute(
            FETCH,
            [
                *("--store", store, "--collections", "optical", "--fetch_chunk_size", "64"),
                *("--sh_base_url", hub.url, "--sh_token_url", hub.token_url, "--sh_retry_sleep", "0.02"),
                *("--starttime", "2015-07-01", "--endtime", "2015-10-01"),
            ],
        )
    finally:
        hub.stop()
    logged = [line for line in capfd.readouterr().err.splitlines() if line.startswith("[rsdt_beam]")]
    # 5 dates of 4 chunks each; the 2 cloudy dates end as empty observations.
    assert logged[0] == "[rsdt_beam] 0%  fetch chunks 0/20  observations 0/5  elapsed 0:00 ETA --:--"
    assert logged[-1].startswith("[rsdt_beam] 100%  fetch chunks 20/20  observations 5/5  ")
    assert "observations empty 2" in logged[-1] and logged[-1].endswith("ETA 0:00")
