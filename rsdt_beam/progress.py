"""Progress: Beam metrics counters everywhere, plus a progress line on local runs.

The launcher declares the totals it knows up front (`set_total("tiles_windowed", 64)`, or the sum of
a step's outcome counters: `set_total("observations", 45, counted=(...))`); the line then shows the
run's percentage (the mean of the totals' fractions: stages that follow each other count alike),
done/total of each, the other counters, elapsed time and an ETA:

    [rsdt_beam] 25%  tiles windowed 16/64  window file bytes 2.5 MB  windows written 992 (~3968)  elapsed 0:04 ETA 0:12

On a terminal it is one line, overwritten every 2 s and fitted to the terminal's width: the byte
counters go first, then the other counters without a total, then labels are abbreviated, then
finished totals; the percentage, done/total of a running total and the ETA stay. Its first line (the
totals, 0 done) is printed when the job starts, the next at the first count. In a log (stderr not a
TTY) the whole line is printed at the start, at the first count and every 30 s. The counts are the
process's: the default DirectRunner's worker threads share one line; in `multi_processing` mode each
worker process prints its own share.

Runners that collect no metrics (Beam's DaskRunner) can still be counted: with `RSDT_BEAM_COUNTER_LOG` set
to a folder that every worker can write (a shared file system), each process appends every increment
to `<folder>/counters-<host>-<pid>.log` as `name n` lines; `read_counter_log` adds them up. The tests
compare these counts between runners to show that each step runs once.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import shutil
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
_CLEAR_TO_END = "\x1b[K"  # after a shorter line, what is left of the longer one before it goes

_lock = threading.Lock()
_counts: dict[str, int] = collections.defaultdict(int)
# `shown`: a count was printed; until then the next count prints at once.
_state = {"started": None, "last_print": 0.0, "shown": False}


class _AboveTheLine:
    """The stream of a log handler that writes to the terminal, while the line is overwritten there: a
    record replaces the line (else it would follow the line's last character), which is printed again
    below it."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        with _lock:
            self.stream.write(f"\r{_CLEAR_TO_END}{text}")
            if text.endswith("\n") and _state["started"] is not None:
                _print(TTY, time.monotonic() - _state["started"])

    def flush(self) -> None:
        self.stream.flush()


def _terminal_handlers() -> list[logging.StreamHandler]:
    return [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler) and h.stream is sys.stderr]


@dataclasses.dataclass(frozen=True)
class Total:
    """What a progress item will reach: `total`, counted by the counters `counted` added up (by the
    counter of the item's own name when empty)."""

    total: int
    counted: tuple[str, ...] = ()

    def done(self, name: str, counts: dict[str, int]) -> int:
        return sum(counts.get(counter, 0) for counter in self.counted or (name,))


def clear_totals() -> None:
    """Forgets the totals of an earlier run (before a new one is built)."""
    os.environ.pop(_ENV_TOTALS, None)


def set_total(name: str, total: int, counted: tuple[str, ...] = ()) -> None:
    """The total a counter will reach, known on the launcher (e.g. the selected tiles); with `counted`,
    the total the sum of those counters reaches (the outcomes of one step: written, empty, failed)."""
    totals = json.loads(os.environ.get(_ENV_TOTALS, "{}"))
    totals[name] = [int(total), list(counted)]
    os.environ[_ENV_TOTALS] = json.dumps(totals)


def _totals() -> dict[str, Total]:
    declared = json.loads(os.environ.get(_ENV_TOTALS, "{}"))
    return {name: Total(total, tuple(counted)) for name, (total, counted) in declared.items()}


def enable_progress_line(mode: str | None = TTY, counted_here: bool = True) -> None:
    """Turns the stderr progress line on (`tty`: overwritten; `log`: periodic lines) or off (None),
    for this process and the worker processes it starts. `counted_here`: the job counts in this
    process (the DirectRunner's threads), so its first line (the totals declared so far, nothing
    done) is printed now: call it when the job starts."""
    if not mode:
        os.environ.pop(_ENV_FLAG, None)
        return
    os.environ[_ENV_FLAG] = mode
    if not counted_here:  # worker processes print their own lines from their first count
        return
    with _lock:
        now = time.monotonic()
        _counts.clear()
        _state.update(started=now, last_print=now, shown=False)
        _print(mode, 0.0)
    if mode == TTY:
        for handler in _terminal_handlers():
            handler.setStream(_AboveTheLine(handler.stream))


def finish_progress_line() -> None:
    """Prints the final state of this process's progress (ending an overwritten line) and resets it."""
    mode = os.environ.get(_ENV_FLAG)
    with _lock:
        if mode in _INTERVAL and _state["started"] is not None:
            _print(mode, time.monotonic() - _state["started"], end="\n")
        _counts.clear()
        _state.update(started=None, last_print=0.0, shown=False)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and isinstance(handler.stream, _AboveTheLine):
            handler.setStream(handler.stream.stream)


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
            if _state["started"] is None:  # a worker process: its line starts at its first count
                _state["started"] = now
            _counts[self.name] += n
            if _state["shown"] and now - _state["last_print"] < _INTERVAL[mode]:
                return
            _state.update(last_print=now, shown=True)
            _print(mode, now - _state["started"])


def _print(mode: str, elapsed: float, end: str | None = None) -> None:
    """This process's line to stderr (called holding the lock): fitted and overwritten on a terminal."""
    totals = _totals()
    if mode == TTY:
        line = progress_line(dict(_counts), totals, elapsed, width=_terminal_width() - 1)  # no wrap
        text, end = f"\r{line}{_CLEAR_TO_END}", end or ""
    else:
        text, end = progress_line(dict(_counts), totals, elapsed), "\n"
    print(text, end=end, file=sys.stderr, flush=True)


def _terminal_width() -> int:
    """The width of the terminal stderr writes to (`COLUMNS` first, as `shutil.get_terminal_size`)."""
    if not os.environ.get("COLUMNS"):
        try:
            columns = os.get_terminal_size(sys.stderr.fileno()).columns
        except (OSError, ValueError, AttributeError):  # not a terminal, or a replaced stderr
            columns = 0
        if columns:  # 0: a terminal that does not tell (a fresh pseudo-terminal)
            return columns
    return shutil.get_terminal_size().columns


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


# Words shortened when the line does not fit.
_ABBREVIATIONS = {
    "observations": "obs",
    "windows": "win",
    "windowed": "wnd",
    "written": "wr",
    "inspected": "insp",
    "converted": "conv",
    "stacked": "stk",
    "inferred": "inf",
    "requests": "req",
    "processing": "proc",
    "chunks": "chk",
    "failed": "fail",
}
# A counter without a total estimated from a total's fraction: the windows from the tiles windowed.
_ESTIMATED = {"windows_written": "tiles_windowed"}
# The counters without a total are dropped in this order when the line does not fit (failures last).
_BYTES, _OTHER, _WINDOWS, _TROUBLE = 3, 2, 1, 0
_FULL, _SHORT_TIMING, _SHORT_LABELS = 0, 1, 2  # "elapsed 0:04 ETA 0:12" -> "0:04 ETA 0:12", then abbreviations
_TROUBLE_WORDS = ("failed", "rejected", "errors", "throttled", "set_aside", "empty", "fully_masked")


def _label(name: str, short: bool) -> str:
    words = name.split("_")
    return " ".join(_ABBREVIATIONS.get(word, word) for word in words) if short else " ".join(words)


def _rank(name: str) -> int:
    if any(word in name for word in _TROUBLE_WORDS):
        return _TROUBLE
    if name.endswith("bytes"):
        return _BYTES
    return _WINDOWS if name.startswith(("windows", "maps")) else _OTHER


def progress_line(counts: dict[str, int], totals: dict[str, Total], elapsed: float, width: int | None = None) -> str:
    """`[rsdt_beam] p%  name done/total ...  other counters  elapsed ETA`, at most `width` characters
    (None: the whole line). Totals of 0 are left out; the percentage and ETA need a total."""
    totals = {name: total for name, total in totals.items() if total.total > 0}
    fractions = {name: min(1.0, total.done(name, counts) / total.total) for name, total in totals.items()}
    fraction = sum(fractions.values()) / len(fractions) if fractions else None
    counted = {counter for total in totals.values() for counter in total.counted}
    # Counters that make up a total are shown by it, but for their failures.
    others = sorted(name for name in counts if name not in totals and (name not in counted or _rank(name) == _TROUBLE))
    head = f"{100 * fraction:.0f}%" if fraction is not None else ""
    timing = f"{_clock(elapsed)}"
    if fraction is not None:
        timing += f" ETA {_clock(elapsed * (1 - fraction) / fraction) if fraction else '--:--'}"

    def other(name: str, short: bool) -> str:
        value = counts[name]
        if name.endswith("bytes"):
            return f"{_label(name, short)} {value / 1e6:.1f} MB"
        estimated_by = _ESTIMATED.get(name)
        if fractions.get(estimated_by):
            return f"{_label(name, short)} {value} (~{round(value / fractions[estimated_by])})"
        return f"{_label(name, short)} {value}"

    def line(shown_totals, shown_others, style: int = _SHORT_LABELS, prefix: bool = True) -> str:
        short = style >= _SHORT_LABELS
        parts = [
            *(f"{_label(name, short)} {totals[name].done(name, counts)}/{totals[name].total}" for name in shown_totals),
            *(other(name, short) for name in shown_others),
            timing if style >= _SHORT_TIMING else f"elapsed {timing}",
        ]
        start = " ".join([*([f"[{NAMESPACE}]"] if prefix else []), *([head] if head else [])])
        return "  ".join([start, *parts] if start else parts)

    # From the whole line to the shortest: fewer counters without a total, each tried in the three styles;
    # then the running totals only, fewer of them (the later stages go), no prefix, no label; then cut.
    every = list(totals)
    candidates = []
    for rank in (_BYTES + 1, _BYTES, _OTHER, _WINDOWS, _TROUBLE):  # keep the counters ranked below `rank`
        kept = [name for name in others if _rank(name) < rank]
        candidates += [line(every, kept, style) for style in (_FULL, _SHORT_TIMING, _SHORT_LABELS)]
    running = [name for name in every if fractions[name] < 1.0] or every[-1:]
    candidates += [line(running[:keep], []) for keep in range(len(running), 0, -1)]
    candidates.append(line(running[:1], [], prefix=False))
    if running:
        candidates.append(f"{head}  {totals[running[0]].done(running[0], counts)}/{totals[running[0]].total}  {timing}")
    for candidate in candidates:
        if width is None or len(candidate) <= width:
            return candidate
    return candidates[-1][: max(width, 1)]


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
