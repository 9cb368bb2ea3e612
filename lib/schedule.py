"""Daily schedule times, written HH:MM in UTC."""

from __future__ import annotations

from datetime import time

from lib.errors import ConfigError


def parse_daily_time(key: str, value: str) -> tuple[int, int]:
    """Parse "HH:MM" (24-hour, UTC) into (hour, minute)."""
    try:
        parsed = time.fromisoformat(value)
    except ValueError:
        parsed = None
    if parsed is None or len(value) != 5 or parsed.second or parsed.tzinfo:
        raise ConfigError(key, f"{value!r} is not a time of day; write it as HH:MM in UTC, e.g. 18:00")
    return parsed.hour, parsed.minute
