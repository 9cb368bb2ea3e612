"""Container image references: parsing, and the rule that production images are pinned.

A reference is `[registry/]repository[:tag][@sha256:digest]`, following the grammar of the
distribution reference (lowercase path components separated by `/`, `.`, `_` or `-`; a tag of up to
128 word characters, dots and dashes). Pinned means a digest, or a tag that is not a floating one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lib.errors import ConfigError

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?/)"
_REFERENCE = re.compile(
    rf"^(?P<name>{_DOMAIN}?{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)
#: Tags that name a moving target rather than a release.
FLOATING_TAGS = frozenset({"latest", "stable", "canary", "main", "master", "edge", "nightly", "dev"})


@dataclass(frozen=True)
class ImageRef:
    name: str
    tag: str | None
    digest: str | None

    @property
    def pinned(self) -> bool:
        return self.digest is not None or (self.tag is not None and self.tag not in FLOATING_TAGS)

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_image(key: str, value: str, *, require_pinned: bool) -> ImageRef:
    """Parse an image reference from config key `key`; in production it must be pinned."""
    match = _REFERENCE.match(value.strip())
    if not match or value != value.strip():
        raise ConfigError(
            key,
            f"{value!r} is not an image reference; write it as repository:tag, "
            "e.g. pgvector/pgvector:0.8.6-pg18-trixie",
        )
    ref = ImageRef(name=match["name"], tag=match["tag"], digest=match["digest"])
    if require_pinned and not ref.pinned:
        what = f"the floating tag {ref.tag!r}" if ref.tag else "no tag (which means 'latest')"
        raise ConfigError(
            key,
            f"{value!r} has {what}; production needs a release tag or a digest so that an "
            "unrelated `pulumi up` never changes the image, e.g. hrygo/memos:0.51.0",
        )
    return ref


_PGVECTOR_TAG = re.compile(r"^(?P<version>\d+\.\d+\.\d+)-pg\d+")
#: What an extension without a pinned version is expected at.
ANY_VERSION = "any version"


def expected_extensions(postgres_image: ImageRef) -> dict[str, str]:
    """Extensions the database is expected to have: pgvector at the version the image's tag names, or
    ANY_VERSION when the tag names none (btree_gist ships with PostgreSQL itself)."""
    match = _PGVECTOR_TAG.match(postgres_image.tag or "")
    return {"vector": match["version"] if match else ANY_VERSION, "btree_gist": ANY_VERSION}
