"""Progress: Beam metrics counters everywhere, plus a progress line on local runs.

The launcher declares the totals it knows up front (`set_total("tiles_windowed", 64)`); the line then
shows done/total, a percentage and an ETA for them, and for counters without a total (windows) an
estimate from the tiles' progress:

    [rsdt_beam] tiles windowed 16/64 (25%)  windows written 992 (~3968)  elapsed 0:04 ETA 0:12

On a terminal it is one line, overwritten every 2 s; in a log (stderr not a TTY) a line every 30 s.
Counts are this process's: with several DirectRunner worker processes each prints its own share.

Runners that collect no metrics (Beam's DaskRunner) can still be counted: with `RSDT_BEAM_COUNTER_LOG` set
to a folder that every worker can write (a shared file system), each process appends every increment
to `<folder>/counters-<host>-<pid>.log` as `name n` lines; `read_counter_log` adds them up. The tests
compare these counts between runners to show that each step runs once.
"""

from __future__ import annotations

import collections
import json
import os
import socket
import sys
import threading
import time

from apache_beam.metrics import Metrics

NAMESPACE = "rsdt_beam"
_ENV_FLAG = "RSDT_BEAM_PROGRESS"
_ENV_TOTALS = "RSDT_BEAM_PROGRESS_TOTALS"
COUNTER_LOG = "RSDT_BEAM_COUNTER_LOG"
TTY = "tty"
LOG = "log"
_INTERVAL = {TTY: 2.0, LOG: 30.0}

_lock = threading.Lock()
_counts: dict[str, int] = collections.defaultdict(int)
_state = {"started": None, "last_print": 0.0}


def clear_totals() -> None:
    """Forgets the totals of an earlier run (before a new one is built)."""
    os.environ.pop(_ENV_TOTALS, None)


def enable_progress_line(mode: str | None = TTY) -> None:
    """Turns the stderr progress line on (`tty`: overwritten; `log`: periodic lines) or off (None),
    for this process and the worker processes it starts."""
    if mode:
        os.environ[_ENV_FLAG] = mode
    else:
        os.environ.pop(_ENV_FLAG, None)


def set_total(name: str, total: int) -> None:
    """The total a counter will reach, known on the launcher (e.g. the selected tiles)."""
    totals = json.loads(os.environ.get(_ENV_TOTALS, "{}"))
    totals[name] = int(total)
    os.environ[_ENV_TOTALS] = json.dumps(totals)


def finish_progress_line() -> None:
    """Prints the final state of this process's progress (ending an overwritten line) and resets it."""
    mode = os.environ.get(_ENV_FLAG)
    with _lock:
        if mode in _INTERVAL and _counts:
            line = progress_line(
                dict(_counts), json.loads(os.environ.get(_ENV_TOTALS, "{}")), time.monotonic() - _state["started"]
            )
            print(f"\r{line}" if mode == TTY else line, file=sys.stderr, flush=True)
        _counts.clear()
        _state.update(started=None, last_print=0.0)


class Counter:
    """A Beam counter that also feeds this process's progress line."""

    def __init__(self, name: str):
        self.name = name
        self._counter = Metrics.counter(NAMESPACE, name)

    def inc(self, n: int = 1) -> None:
        self._counter.inc(n)
        log_dir = os.environ.get(COUNTER_LOG)
        if log_dir:
            _log_increment(log_dir, self.name, n)
        mode = os.environ.get(_ENV_FLAG)
        if mode not in _INTERVAL:
            return
        with _lock:
            now = time.monotonic()
            if _state["started"] is None:
                _state["started"] = now
            _counts[self.name] += n
            if now - _state["last_print"] < _INTERVAL[mode]:
                return
            _state["last_print"] = now
            line = progress_line(dict(_counts), json.loads(os.environ.get(_ENV_TOTALS, "{}")), now - _state["started"])
        print(f"\r{line}" if mode == TTY else line, end="" if mode == TTY else "\n", file=sys.stderr, flush=True)


def _log_increment(log_dir: str, name: str, n: int) -> None:
    path = os.path.join(log_dir, f"counters-{socket.gethostname()}-{os.getpid()}.log")
    with open(path, "a") as log:  # one short append: whole lines, also from several threads
        log.write(f"{name} {n}\n")


def read_counter_log(log_dir: str) -> dict[str, int]:
    """The counters of every process that logged into `log_dir` (`RSDT_BEAM_COUNTER_LOG`), added up."""
    totals: dict[str, int] = collections.defaultdict(int)
    for name in sorted(os.listdir(log_dir)):
        if name.startswith("counters-") and name.endswith(".log"):
            with open(os.path.join(log_dir, name)) as log:
                for line in log:
                    counter, n = line.split()
                    totals[counter] += int(n)
    return dict(totals)


def progress_line(counts: dict[str, int], totals: dict[str, int], elapsed: float) -> str:
    """`name done/total (p%)` for counters with a total, an estimate for the others, elapsed and ETA."""
    fractions = [min(1.0, counts[name] / totals[name]) for name in counts if totals.get(name)]
    fraction = min(fractions) if fractions else None
    parts = []
    for name, value in sorted(counts.items()):
        label = name.replace("_", " ")
        if totals.get(name):
            parts.append(f"{label} {value}/{totals[name]} ({100 * value / totals[name]:.0f}%)")
        elif name.endswith("bytes"):
            parts.append(f"{label} {value / 1e6:.1f} MB")
        elif fraction and name.startswith("windows"):
            parts.append(f"{label} {value} (~{round(value / fraction)})")
        else:
            parts.append(f"{label} {value}")
    timing = f"elapsed {_clock(elapsed)}"
    if fraction:
        timing += f" ETA {_clock(elapsed * (1 - fraction) / fraction)}"
    return f"[rsdt_beam] {'  '.join(parts)}  {timing}"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
