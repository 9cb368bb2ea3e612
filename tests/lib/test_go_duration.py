"""Go's duration notation: how the Docker provider reads healthcheck timings back."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lib.go_duration import format_go_duration, go_duration, parse_go_duration

SECOND = 10**9


@pytest.mark.parametrize(
    ("seconds", "canonical"),
    [(0, "0s"), (5, "5s"), (59, "59s"), (60, "1m0s"), (120, "2m0s"), (300, "5m0s"), (1800, "30m0s"),
     (1200, "20m0s"), (3600, "1h0m0s"), (5400, "1h30m0s"), (90061, "25h1m1s")],
)  # fmt: skip
def test_whole_seconds_render_as_time_duration_string(seconds: int, canonical: str) -> None:
    assert go_duration(seconds) == canonical


@pytest.mark.parametrize(
    ("nanoseconds", "canonical"),
    [(1_500_000_000, "1.5s"), (500_000_000, "500ms"), (1_500, "1.5µs"), (7, "7ns"), (-2 * SECOND, "-2s")],
)
def test_fractions_render_as_go_does(nanoseconds: int, canonical: str) -> None:
    assert format_go_duration(nanoseconds) == canonical


@pytest.mark.parametrize(
    ("text", "nanoseconds"),
    [("120s", 120 * SECOND), ("2m0s", 120 * SECOND), ("5m", 300 * SECOND), ("1h2m3.5s", 3723_500_000_000),
     ("500ms", 500_000_000), ("0", 0), ("1.5h", 5400 * SECOND), ("+3s", 3 * SECOND)],
)  # fmt: skip
def test_parse_reads_what_time_parse_duration_reads(text: str, nanoseconds: int) -> None:
    assert parse_go_duration(text) == nanoseconds


@pytest.mark.parametrize("text", ["", "5", "s", "5x", "1m 2s", "--1s"])
def test_parse_refuses_what_time_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_go_duration(text)


@given(st.integers(min_value=0, max_value=10**7))
def test_a_canonical_duration_reads_back_unchanged(seconds: int) -> None:
    text = go_duration(seconds)
    assert parse_go_duration(text) == seconds * SECOND
    assert format_go_duration(parse_go_duration(text)) == text
