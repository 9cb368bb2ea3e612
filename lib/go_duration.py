"""Durations in Go's notation, which is how the Docker provider reads healthcheck timings back.

The provider parses each healthcheck duration with Go's `time.ParseDuration` when it creates a
container, and stores what it reads back from the Engine as `time.Duration.String()`: `120s` comes
back as `2m0s`. Any input not already in that canonical form is a diff on every `pulumi up`, so the
program writes every duration with `go_duration`.
"""

from __future__ import annotations

import re
from decimal import Decimal

_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> int:
    """Nanoseconds in a Go duration string (`1h2m3.5s`, `500ms`, `0`), as `time.ParseDuration` reads it."""
    body = text[1:] if text[:1] in "+-" else text
    if body == "0":
        return 0
    if not body:
        raise ValueError(f"invalid duration {text!r}")
    total = Decimal(0)
    position = 0
    while position < len(body):
        match = _PART.match(body, position)
        if not match:
            raise ValueError(f"invalid duration {text!r}")
        total += Decimal(match[1]) * _UNITS_NS[match[2]]
        position = match.end()
    nanoseconds = int(total)
    return -nanoseconds if text.startswith("-") else nanoseconds


def format_go_duration(nanoseconds: int) -> str:
    """`time.Duration.String()`: `2m0s`, `1h0m0s`, `1.5s`, `500ms`, `0s`."""
    if nanoseconds == 0:
        return "0s"
    sign = "-" if nanoseconds < 0 else ""
    ns = abs(nanoseconds)
    if ns < 10**9:
        for unit, size in (("ms", 10**6), ("µs", 10**3), ("ns", 1)):
            if ns >= size:
                return sign + _decimal(ns, size) + unit
    hours, rest = divmod(ns, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    text = _decimal(rest, 10**9) + "s"
    if hours or minutes:
        text = f"{minutes}m" + text
    if hours:
        text = f"{hours}h" + text
    return sign + text


def _decimal(value: int, unit: int) -> str:
    whole, fraction = divmod(value, unit)
    if not fraction:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}.{fraction:0{digits}d}".rstrip("0")


def go_duration(seconds: int) -> str:
    """A whole number of seconds in the canonical form the provider reads back (`120` -> `2m0s`)."""
    return format_go_duration(seconds * 10**9)
