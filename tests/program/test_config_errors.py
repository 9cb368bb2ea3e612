"""Every invalid stack config fails the program with one line that names the key and the fix.

Each case runs the whole program (__main__.py) on the mock engine, as `pulumi preview` would, and
checks that it stops with pulumi.RunError (which the CLI prints without a traceback) whose message
is a single line starting with the config key at fault.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi
import pytest

from harness.mock_engine import run_program
from tests.conftest import PROD_SECRETS, SECRET_MARKERS


@dataclass(frozen=True)
class Case:
    id: str
    stack: str
    overrides: dict[str, Any]
    key: str
    fragments: tuple[str, ...]
    secrets: dict[str, str] = field(default_factory=lambda: dict(PROD_SECRETS))
    plain_secrets: dict[str, str] = field(default_factory=lambda: {})


CASES = [
    Case(
        "unknown embedding provider",
        "prod",
        {"aiEmbeddingProvider": "cohere"},
        "memos:aiEmbeddingProvider",
        ("unknown provider 'cohere'", "siliconflow, openai"),
    ),
    Case(
        "unknown chat provider",
        "prod",
        {"aiLlmProvider": "anthropic"},
        "memos:aiLlmProvider",
        ("unknown provider 'anthropic'", "deepseek, openai, ollama"),
    ),
    Case(
        "siliconflow as chat provider",
        "prod",
        {"aiLlmProvider": "siliconflow"},
        "memos:aiLlmProvider",
        ("upstream leaves the chat key unset", "all AI features are disabled", "use deepseek, openai or ollama"),
    ),
    Case(
        "ollama embeddings",
        "prod",
        {"aiEmbeddingProvider": "ollama"},
        "memos:aiEmbeddingProvider",
        ("fail at runtime", "use siliconflow or openai"),
    ),
    Case(
        "768-dim embedding model",
        "prod",
        {"aiEmbeddingModel": "nomic-embed-text"},
        "memos:aiEmbeddingModel",
        ("768-dimensional", "vector(1024)", "BAAI/bge-m3"),
    ),
    Case(
        "ollama chat on the container's own localhost",
        "prod",
        {"aiLlmProvider": "ollama", "aiOllamaBaseUrl": "http://localhost:11434"},
        "memos:aiOllamaBaseUrl",
        ("the app container itself", "host.docker.internal"),
    ),
    Case(
        "AI on without the chat key",
        "prod",
        {},
        "memos:deepseekApiKey",
        ("not set", "pulumi config set --secret memos:deepseekApiKey <your-deepseek-key> --stack prod"),
        secrets={"siliconflowApiKey": SECRET_MARKERS["siliconflowApiKey"]},
    ),
    Case(
        "AI on without the embedding key",
        "dev",
        {"aiEnabled": True},
        "memos:siliconflowApiKey",
        ("not set", "pulumi config set --secret memos:siliconflowApiKey <your-siliconflow-key> --stack dev"),
        secrets={"deepseekApiKey": SECRET_MARKERS["deepseekApiKey"]},
    ),
    Case(
        "openai embeddings without the openai key",
        "prod",
        {"aiEmbeddingProvider": "openai"},
        "memos:openaiApiKey",
        ("pulumi config set --secret memos:openaiApiKey",),
    ),
    Case(
        "API key stored in plain text",
        "prod",
        {},
        "memos:deepseekApiKey",
        ("plain text in Pulumi.prod.yaml", "revoke it", "pulumi config set --secret memos:deepseekApiKey"),
        secrets={"siliconflowApiKey": SECRET_MARKERS["siliconflowApiKey"]},
        plain_secrets={"deepseekApiKey": SECRET_MARKERS["deepseekApiKey"]},
    ),
    Case(
        "app memory that is not a number",
        "dev",
        {"appMemoryMb": "lots"},
        "memos:appMemoryMb",
        ("'lots' is not a whole number",),
    ),
    Case(
        "app memory below the minimum",
        "dev",
        {"appMemoryMb": 64},
        "memos:appMemoryMb",
        ("out of range", "between 128 and"),
    ),
    Case("negative reserve", "dev", {"osReserveMb": -1}, "memos:osReserveMb", ("out of range",)),
    Case(
        "host too small for the containers",
        "dev",
        {"hostMemoryMb": 1024},
        "memos:hostMemoryMb",
        ("leaves 0 MiB for PostgreSQL", "lower memos:appMemoryMb or choose a larger instance"),
    ),
    Case(
        "malformed app image",
        "dev",
        {"appImage": "hrygo/Memos::0.25"},
        "memos:appImage",
        ("is not an image reference", "repository:tag"),
    ),
    Case(
        "latest app image in prod",
        "prod",
        {"appImage": "hrygo/memos:latest"},
        "memos:appImage",
        ("floating tag 'latest'", "release tag or a digest"),
    ),
    Case(
        "untagged database image in prod",
        "prod",
        {"postgresImage": "pgvector/pgvector"},
        "memos:postgresImage",
        ("no tag", "release tag or a digest"),
    ),
    Case(
        "stable tag in prod", "prod", {"appImage": "hrygo/memos:stable"}, "memos:appImage", ("floating tag 'stable'",)
    ),
    Case(
        "database image that is not PostgreSQL 18",
        "dev",
        {"postgresImage": "pgvector/pgvector:0.8.0-pg16"},
        "memos:postgresImage",
        ("not a PostgreSQL 18 image",),
    ),
    Case(
        "database port published in prod",
        "prod",
        {"dbHostPort": 5432},
        "memos:dbHostPort",
        ("never publishes the database", "ssh -L"),
    ),
    Case(
        "unprotected data in prod",
        "prod",
        {"protectData": False},
        "memos:protectData",
        ("not allowed when memos:stage is prod",),
    ),
    Case("unknown stage", "dev", {"stage": "staging"}, "memos:stage", ("not one of dev, prod",)),
    Case(
        "domain without ACME email",
        "dev",
        {"domain": "notes.example.com"},
        "memos:acmeEmail",
        ("must be an email address", "pulumi config set memos:acmeEmail"),
    ),
    Case("domain that is not a DNS name", "dev", {"domain": "not a domain"}, "memos:domain", ("not a DNS name",)),
    Case("time zone that is not IANA", "dev", {"timezone": "GMT+8 Beijing"}, "memos:timezone", ("IANA",)),
    Case("backup time that is not HH:MM", "dev", {"backupTimeUtc": "2am"}, "memos:backupTimeUtc", ("HH:MM",)),
    Case("OSS backups outside prod", "dev", {"backupToOss": True}, "memos:backupToOss", ("only prod has",)),
    Case(
        "database and app on the same port",
        "dev",
        {"dbHostPort": 5230},
        "memos:dbHostPort",
        ("also memos:appHostPort",),
    ),
    Case("boolean that is not a boolean", "dev", {"aiEnabled": "yes"}, "memos:aiEnabled", ("not a boolean",)),
    Case(
        "time zone that the IANA database does not know",
        "dev",
        {"timezone": "Mars/Olympus"},
        "memos:timezone",
        ("'Mars/Olympus' is not in the IANA time zone database", "Asia/Shanghai"),
    ),
    Case(
        "a release without the AI features while AI is on",
        "prod",
        {"appImage": "hrygo/memos:0.25.3"},
        "memos:appImage",
        ("before the AI fork", "no MEMOS_AI_* settings", "memos:aiEnabled is true", "use hrygo/memos:0.51.0"),
    ),
    Case(
        "a release without the AI features from a private mirror",
        "dev",
        {"appImage": "registry.cn-hangzhou.aliyuncs.com/team/memos:0.24.0", "aiEnabled": True},
        "memos:appImage",
        ("before the AI fork", "use hrygo/memos:0.51.0"),
        secrets={k: SECRET_MARKERS[k] for k in ("siliconflowApiKey", "deepseekApiKey")},
    ),
    Case(
        "a release whose schema aborts the first start, on a new stack",
        "prod",
        {"appImage": "hrygo/memos:0.53.0"},
        "memos:appImage",
        (
            "ADD CONSTRAINT IF NOT EXISTS",
            "first start on an empty database aborts",
            "use hrygo/memos:0.51.0",
            "set memos:appSchemaExists true",
        ),
    ),
    Case(
        "the major.minor tag of a release line whose schema aborts the first start",
        "dev",
        {"appImage": "ghcr.io/hrygo/memos:0.52"},
        "memos:appImage",
        ("ADD CONSTRAINT IF NOT EXISTS",),
    ),
    Case(
        "a DivineSense image",
        "prod",
        {"appImage": "ghcr.io/hrygo/divinesense:0.60.1"},
        "memos:appImage",
        ("DivineSense", "DIVINESENSE_*", "does not render", "use hrygo/memos:0.51.0"),
    ),
    Case(
        "a DivineSense release under the old name",
        "dev",
        {"appImage": "hrygo/memos:0.6.1"},
        "memos:appImage",
        ("DivineSense", "different environment contract"),
    ),
    Case(
        "a DivineSense release is refused even with the schema acknowledgement",
        "prod",
        {"appImage": "hrygo/memos:0.60.0", "appSchemaExists": True},
        "memos:appImage",
        ("DivineSense",),
    ),
    Case(
        "the retired embedding storage key",
        "prod",
        {"embeddingStorage": "halfvec"},
        "memos:embeddingStorage",
        ("no longer a setting", "vector(1024)", "under-size", "pulumi config rm memos:embeddingStorage"),
    ),
    Case(
        "the container database's volume choice on the container database",
        "prod",
        {"containerDatabaseVolumes": "keep"},
        "memos:containerDatabaseVolumes",
        ("'keep' applies only with memos:database rds", "pulumi config rm memos:containerDatabaseVolumes"),
    ),
    Case(
        "the container database's volume choice in dev",
        "dev",
        {"containerDatabaseVolumes": "remove"},
        "memos:containerDatabaseVolumes",
        ("'remove' applies only with memos:database rds", "pulumi config rm memos:containerDatabaseVolumes"),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_invalid_config_fails_with_one_line_naming_the_key(case: Case) -> None:
    with pytest.raises(pulumi.RunError) as raised:
        run_program(case.stack, case.overrides, secrets=case.secrets, plain_secrets=case.plain_secrets)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"{case.key}: "), message
    for fragment in case.fragments:
        assert fragment in message, message


def test_an_error_message_never_echoes_a_secret_value() -> None:
    with pytest.raises(pulumi.RunError) as raised:
        run_program(
            "prod",
            secrets={"siliconflowApiKey": SECRET_MARKERS["siliconflowApiKey"]},
            plain_secrets={"deepseekApiKey": SECRET_MARKERS["deepseekApiKey"]},
        )
    assert SECRET_MARKERS["deepseekApiKey"] not in str(raised.value)


def test_a_value_missing_from_the_cli_defaults_is_reported_not_defaulted() -> None:
    with pytest.raises(pulumi.RunError) as raised:
        run_program("dev", {"appMemoryMb": None})
    assert str(raised.value).startswith("memos:appMemoryMb: is not set; its default is declared in Pulumi.yaml")


def test_a_no_ai_release_is_accepted_while_ai_is_off() -> None:
    run = run_program("dev", {"appImage": "hrygo/memos:0.25.3"})
    assert run.by_name("app-image").inputs["name"] == "hrygo/memos:0.25.3"
    assert run.warnings == []


def test_an_existing_stack_may_move_to_0_53_with_the_schema_acknowledgement() -> None:
    run = run_program("prod", {"appImage": "hrygo/memos:0.53.0", "appSchemaExists": True}, secrets=PROD_SECRETS)
    assert run.by_name("app-image").inputs["name"] == "hrygo/memos:0.53.0"
    assert run.warnings == []


def test_the_same_release_from_ghcr_or_a_mirror_is_accepted_without_a_warning() -> None:
    for image in ("ghcr.io/hrygo/memos:0.51.0", "registry.cn-hangzhou.aliyuncs.com/team/memos:0.51.0"):
        run = run_program("prod", {"appImage": image}, secrets=PROD_SECRETS)
        assert run.by_name("app-image").inputs["name"] == image
        assert run.warnings == [], image


DIGEST = "sha256:" + "ab" * 32


def test_a_digest_only_image_is_accepted_with_a_warning_naming_the_skipped_check() -> None:
    run = run_program("prod", {"appImage": f"hrygo/memos@{DIGEST}"}, secrets=PROD_SECRETS)
    assert run.by_name("app-image").inputs["name"] == f"hrygo/memos@{DIGEST}"
    assert run.warnings == [
        f"memos:appImage: hrygo/memos@{DIGEST} names no release tag, so the release check (AI features, the "
        "0.52.0-0.54.0 schema bug, DivineSense) was skipped; put the release's tag before the digest "
        "(e.g. hrygo/memos:0.51.0@sha256:...) to have it checked"
    ]


def test_a_tag_with_a_digest_is_checked_by_its_tag() -> None:
    with pytest.raises(pulumi.RunError) as raised:
        run_program("prod", {"appImage": f"hrygo/memos:0.54.0@{DIGEST}"}, secrets=PROD_SECRETS)
    assert str(raised.value).startswith("memos:appImage: ")
    assert "ADD CONSTRAINT IF NOT EXISTS" in str(raised.value)


def test_an_unknown_release_is_accepted_with_a_warning() -> None:
    run = run_program("prod", {"appImage": "hrygo/memos:0.55.0"}, secrets=PROD_SECRETS)
    assert len(run.warnings) == 1
    assert run.warnings[0].startswith("memos:appImage: hrygo/memos:0.55.0 is not a release this program knows")
    assert "release check was skipped" in run.warnings[0]
