"""The release lines of the app image, as lib/releases.py classifies them (the table in its docstring)."""

from __future__ import annotations

import pytest

from lib.images import parse_image
from lib.releases import BROKEN_FIRST_START, KNOWN_GOOD, RECOMMENDED_IMAGE, classify


def line(reference: str) -> str:
    return classify(parse_image("appImage", reference, require_pinned=False)).line


@pytest.mark.parametrize("release", KNOWN_GOOD)
def test_every_known_good_release_is_the_ai_line(release: str) -> None:
    assert line(f"hrygo/memos:{release}") == "ai"


@pytest.mark.parametrize("release", BROKEN_FIRST_START)
def test_0_52_to_0_54_are_the_broken_first_start_line(release: str) -> None:
    assert line(f"hrygo/memos:{release}") == "broken-first-start"


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("hrygo/memos:0.25.3", "no-ai"),
        ("hrygo/memos:0.22.0", "no-ai"),
        ("hrygo/memos:v0.25.1", "no-ai"),
        ("hrygo/memos:0.51", "ai"),
        ("ghcr.io/hrygo/memos:0.51.0", "ai"),
        ("hrygo/memos:0.53", "broken-first-start"),
        ("hrygo/memos:0.6.0", "divinesense"),
        ("hrygo/memos:0.60.2", "divinesense"),
        ("ghcr.io/hrygo/divinesense:0.51.0", "divinesense"),
        ("hrygo/memos:0.26.1", "unknown"),
        ("hrygo/memos:0.33.0", "unknown"),
        ("hrygo/memos:prod-2026", "unknown"),
        ("hrygo/memos@sha256:" + "0" * 64, "unknown"),
    ],
)
def test_release_lines(reference: str, expected: str) -> None:
    assert line(reference) == expected


def test_the_recommended_image_is_the_newest_known_good_release() -> None:
    assert f"hrygo/memos:{KNOWN_GOOD[-1]}" == RECOMMENDED_IMAGE
    assert line(RECOMMENDED_IMAGE) == "ai"
