"""Progress: Beam metrics counters everywhere, plus a throttled progress line on local runs."""

from __future__ import annotations

import collections
import os
import sys
import threading
import time

from apache_beam.metrics import Metrics

NAMESPACE = "rsdt_beam"
_ENV_FLAG = "RSDT_BEAM_PROGRESS"

_lock = threading.Lock()
_totals: dict[str, int] = collections.defaultdict(int)
_last_print = [0.0]


def enable_progress_line(enabled: bool = True) -> None:
    """Turns the stderr progress line on for this process and the worker processes it starts."""
    if enabled:
        os.environ[_ENV_FLAG] = "1"
    else:
        os.environ.pop(_ENV_FLAG, None)


class Counter:
    """A Beam counter that also feeds this process's progress line."""

    def __init__(self, name: str):
        self.name = name
        self._counter = Metrics.counter(NAMESPACE, name)

    def inc(self, n: int = 1) -> None:
        self._counter.inc(n)
        if os.environ.get(_ENV_FLAG) != "1":
            return
        with _lock:
            _totals[self.name] += n
            now = time.monotonic()
            if now - _last_print[0] < 2.0:
                return
            _last_print[0] = now
            line = "  ".join(f"{key.replace('_', ' ')} {_format(key, value)}"
                             for key, value in sorted(_totals.items()))
        print(f"\r[rsdt_beam pid {os.getpid()}] {line}", file=sys.stderr, flush=True)


def _format(name: str, value: int) -> str:
    return f"{value / 1e6:.1f} MB" if name.endswith("bytes") else str(value)
