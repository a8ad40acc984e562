"""Times and durations: UTC epoch seconds in, ISO 8601 and rsdtlib's folder names out.

Flags take ISO 8601 times (`2017-01-01`, `2017-01-01T00:00:00`; UTC unless an offset is given) and
durations as seconds or a number with a unit (`2d`, `30d`, `12h`, `90m`, `1w`).
"""

from __future__ import annotations

import datetime
import re

TIME_FORMAT = "%Y%m%dT%H%M%S"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str | float) -> float:
    """Seconds of `3600`, `90m`, `12h`, `2d` or `1w`."""
    if isinstance(text, (int, float)):
        return float(text)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smhdw]?)\s*", str(text))
    if not match:
        raise ValueError(f"not a duration: {text!r} (use seconds or e.g. 2d, 12h, 30m)")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def format_duration(seconds: float) -> str:
    """`2592000` -> `30d`: in the largest of d, h, m that divides it, else in seconds (`60s`)."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def parse_time(text: str | datetime.datetime | float) -> float:
    """UTC epoch seconds of an ISO 8601 time (naive times are UTC, as rsdtlib's)."""
    if isinstance(text, (int, float)):
        return float(text)
    if isinstance(text, datetime.datetime):
        moment = text
    else:
        try:
            moment = datetime.datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"not an ISO 8601 time: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def parse_time_name(name: str) -> float:
    """UTC epoch seconds of a `%Y%m%dT%H%M%S` name (rsdtlib's folder names); ValueError otherwise."""
    parsed = datetime.datetime.strptime(name, TIME_FORMAT)
    if parsed.strftime(TIME_FORMAT) != name:
        raise ValueError(f"{name!r} does not round-trip through {TIME_FORMAT}")
    return parsed.replace(tzinfo=datetime.timezone.utc).timestamp()


def time_name(time: float) -> str:
    return datetime.datetime.fromtimestamp(time, datetime.timezone.utc).strftime(TIME_FORMAT)


def iso_time(time: float) -> str:
    return datetime.datetime.fromtimestamp(time, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
