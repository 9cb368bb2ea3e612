"""The app image's release lines, and which of them this program can deploy.

Read from the app repository's tags (hrygo/memos on Docker Hub and ghcr.io/hrygo/memos); each
release's own PostgreSQL schema file was run on PostgreSQL 18 + pgvector behind this program's
init script and role job:

- 0.25.x and older: upstream Memos, no MEMOS_AI_* settings and no vector columns; refused while AI
  is on.
- 0.26.1-ai.1 to 0.26.1-ai.3, 0.30.0, 0.31.0, 0.32.0, 0.50.0, 0.51.0: the AI fork with the MEMOS_*
  contract this program renders; known good.
- 0.52.0, 0.53.0, 0.54.0: the same contract, but the schema file contains `ALTER TABLE ... ADD
  CONSTRAINT IF NOT EXISTS`, a syntax error in PostgreSQL, so the first start on an empty database
  aborts; refused on a new stack.
- 0.6.0, 0.6.1, 0.60.x and any `divinesense` image: the renamed DivineSense app, with DIVINESENSE_*
  variables; refused.

The release is read from the tag whatever the registry (Docker Hub, ghcr.io, a private mirror), so
a mirrored `registry.example.com/team/memos:0.51.0` is checked like `hrygo/memos:0.51.0`. A tag
that names no release the table knows, or a digest without a tag, cannot be checked: it is accepted
with a warning that says which check was skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from lib.errors import ConfigError
from lib.images import ImageRef

#: The newest release with the AI features whose schema installs on an empty PostgreSQL database.
RECOMMENDED_RELEASE = "0.51.0"
RECOMMENDED_IMAGE = f"hrygo/memos:{RECOMMENDED_RELEASE}"
#: Releases of the AI fork that install cleanly on PostgreSQL 18 + pgvector.
KNOWN_GOOD = ("0.26.1-ai.1", "0.26.1-ai.2", "0.26.1-ai.3", "0.30.0", "0.31.0", "0.32.0", "0.50.0", "0.51.0")
#: Releases whose schema file aborts the app's first start on PostgreSQL (upstream bug).
BROKEN_FIRST_START = ("0.52.0", "0.53.0", "0.54.0")
#: The config key an operator sets to say the database already holds the app's schema.
SCHEMA_EXISTS_KEY = "appSchemaExists"

Line = Literal["no-ai", "ai", "broken-first-start", "divinesense", "unknown"]
_VERSION = re.compile(r"^v?(?P<major>\d+)\.(?P<minor>\d+)(?:\.(?P<patch>\d+))?(?:-(?P<suffix>[\w.-]+))?$")


@dataclass(frozen=True)
class Release:
    """What the image's reference says about the app release it holds."""

    line: Line
    #: The release as the tag names it (without a leading "v"), or None when there is no tag.
    version: str | None


def classify(image: ImageRef) -> Release:
    """The release line of an app image, from its repository name and tag.

    A `major.minor` tag (the app publishes them next to each release) is judged by its line: `0.51`
    is the 0.51.x line, `0.53` the broken one.
    """
    if "divinesense" in image.name.lower():
        return Release("divinesense", image.tag)
    match = _VERSION.match(image.tag or "")
    if image.tag is None or match is None:
        return Release("unknown", image.tag)
    version = image.tag.removeprefix("v")
    major, minor = int(match["major"]), int(match["minor"])
    # A major.minor tag stands for its line's release.
    release = version if match["patch"] or match["suffix"] else f"{version}.0"
    line: Line = "unknown"
    if major == 0 and minor in {6, 60}:
        line = "divinesense"
    elif (major, minor) < (0, 26):
        line = "no-ai"
    elif release in KNOWN_GOOD:
        line = "ai"
    elif release in BROKEN_FIRST_START:
        line = "broken-first-start"
    return Release(line, version)


def check_app_release(image: ImageRef, *, ai_enabled: bool, schema_exists: bool) -> str | None:
    """Refuse an app image this program cannot deploy; return a warning when it cannot tell.

    Raises ConfigError (key memos:appImage) for: a release without the AI features while AI is on;
    0.52.0-0.54.0 unless `schema_exists` (memos:appSchemaExists) says the database is past the app's
    first start, because the app runs its schema file only on an empty database; any DivineSense
    image. Returns a warning text for a digest-only reference or an unknown tag, else None.
    """
    release = classify(image)
    if release.line == "divinesense":
        raise ConfigError(
            "appImage",
            f"{image} is a DivineSense release (the renamed app): it reads DIVINESENSE_* variables and "
            "MEMOS_* only through broken fallbacks, a different environment contract that this program "
            f"does not render; use {RECOMMENDED_IMAGE}",
        )
    if release.line == "no-ai" and ai_enabled:
        raise ConfigError(
            "appImage",
            f"{image} is an upstream Memos release from before the AI fork: it has no MEMOS_AI_* settings "
            "and no vector columns, so semantic search, chat and rerank would be missing although "
            f"memos:aiEnabled is true; use {RECOMMENDED_IMAGE} (or set memos:aiEnabled false)",
        )
    if release.line == "broken-first-start" and not schema_exists:
        raise ConfigError(
            "appImage",
            f"{image}: the schema file of 0.52.0-0.54.0 contains `ADD CONSTRAINT IF NOT EXISTS`, a syntax "
            f"error in PostgreSQL, so the app's first start on an empty database aborts; use {RECOMMENDED_IMAGE}, "
            f"or, only if this stack's database already holds the app's schema, set memos:{SCHEMA_EXISTS_KEY} true",
        )
    if release.line == "unknown":
        if release.version is None:
            return (
                f"memos:appImage: {image} names no release tag, so the release check (AI features, the "
                "0.52.0-0.54.0 schema bug, DivineSense) was skipped; put the release's tag before the digest "
                f"(e.g. {image.name}:{RECOMMENDED_RELEASE}@sha256:...) to have it checked"
            )
        return (
            f"memos:appImage: {image} is not a release this program knows ({', '.join(KNOWN_GOOD)} are known "
            f"good), so the release check was skipped; {RECOMMENDED_IMAGE} is the recommended release"
        )
    return None
