"""`tools.verify` against a real PostgreSQL set up as the program renders it, and a stand-in app.

The stack outputs are the dev stack's own (from the mock engine), pointed at the test's server and
app; `pulumi` and `docker` are stand-in executables on PATH that answer as the real ones would.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from harness.mock_engine import StackRun, run_program
from harness.pg_server import PostgresServer
from tests.conftest import PROD_SECRETS
from tests.support import HealthEndpoint, rendered_database, stand_ins, start_rendered
from tools import verify

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def server(dev_run: StackRun) -> Iterator[PostgresServer]:
    pg = start_rendered(rendered_database(dev_run))
    yield pg
    pg.cleanup()


@pytest.fixture
def app_endpoint() -> Iterator[HealthEndpoint]:
    endpoint = HealthEndpoint()
    yield endpoint
    endpoint.close()


@pytest.fixture
def app(app_endpoint: HealthEndpoint) -> str:
    return app_endpoint.url


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Stand-in `docker` (the backup container's health) and `pulumi` (the stack's outputs)."""
    bin_dir = stand_ins(
        tmp_path / "bin", {"docker": 'echo "last dump: 1764007200 scheduled memos-20251124T180000Z-scheduled.dump"'}
    )
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return bin_dir


def outputs(dev_run: StackRun, server: PostgresServer, app_url: str) -> dict[str, Any]:
    return {**dev_run.outputs, "db_endpoint": f"127.0.0.1:{server.port}", "app_url": app_url}


def test_a_healthy_stack_passes_every_check(
    dev_run: StackRun, server: PostgresServer, app: str, tools: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checks = verify.verify(outputs(dev_run, server, app))
    assert [(c.name, c.ok) for c in checks] == [
        ("database answers", True),
        ("extension btree_gist", True),
        ("extension vector", True),
        ("settings equal the plan", True),
        ("app /healthz", True),
        ("nightly backup", True),
    ]
    assert checks[0].detail.startswith("as memos, PostgreSQL 18.")
    assert checks[2].detail == "version 0.8.6"
    assert verify.report(checks) == 0
    assert "6 of 6 checks passed" in capsys.readouterr().out


def test_a_setting_that_drifted_from_the_plan_fails_and_is_named(
    dev_run: StackRun, server: PostgresServer, app: str, tools: Path
) -> None:
    # ALTER SYSTEM cannot override the container's -c flags, but a per-role default can.
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("ALTER ROLE memos SET work_mem = '64MB'")
    try:
        checks = {c.name: c for c in verify.verify(outputs(dev_run, server, app))}
    finally:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute("ALTER ROLE memos RESET work_mem")
    assert not checks["settings equal the plan"].ok
    assert checks["settings equal the plan"].detail == "work_mem is 64MB, planned 7808kB"


def test_a_missing_or_different_extension_fails(
    dev_run: StackRun, server: PostgresServer, app: str, tools: Path
) -> None:
    expected = {"vector": "0.7.0", "btree_gist": "any version", "pg_trgm": "any version"}
    stale = {**outputs(dev_run, server, app), "db_extensions_expected": expected}
    checks = {c.name: c for c in verify.verify(stale)}
    assert checks["extension vector"].detail == "version 0.8.6, the image ships 0.7.0"
    assert checks["extension pg_trgm"].detail == "not installed"
    assert not checks["extension vector"].ok
    assert checks["extension btree_gist"].ok


def test_a_stack_deployed_before_the_rename_is_checked_from_its_old_output(
    dev_run: StackRun, server: PostgresServer, app: str, tools: Path
) -> None:
    old = {k: v for k, v in outputs(dev_run, server, app).items() if k != "db_extensions_expected"}
    old["db_extensions"] = {"vector": "0.7.0", "btree_gist": None}
    checks = {c.name: c for c in verify.verify(old)}
    assert checks["extension vector"].detail == "version 0.8.6, the image ships 0.7.0"
    assert checks["extension btree_gist"].ok


def test_an_unhealthy_app_and_an_unreachable_database_fail(
    dev_run: StackRun, server: PostgresServer, app_endpoint: HealthEndpoint, app: str, tools: Path
) -> None:
    app_endpoint.status = 503
    unreachable = {**outputs(dev_run, server, app), "db_endpoint": "127.0.0.1:1"}
    checks = {c.name: c for c in verify.verify(unreachable)}
    assert not checks["database answers"].ok
    assert not checks["app /healthz"].ok
    assert checks["app /healthz"].detail.endswith("answered 503")
    assert verify.report(list(checks.values())) == 1


def test_a_failed_backup_fails(dev_run: StackRun, server: PostgresServer, app: str, tools: Path) -> None:
    stand_ins(tools, {"docker": "echo 'the last dump failed (1764007200 scheduled)'; exit 1"})
    checks = {c.name: c for c in verify.verify(outputs(dev_run, server, app))}
    assert not checks["nightly backup"].ok
    assert checks["nightly backup"].detail.startswith("the last dump failed (2025-11-24 18:00 UTC, ")
    assert checks["nightly backup"].detail.endswith(" ago, scheduled)")


def test_the_last_dump_is_shown_as_a_utc_time_and_its_age_not_as_epoch_seconds() -> None:
    # 1764007200 is 2025-11-24 18:00:00 UTC; the checks run 5 h 20 min, 50 min and 3 days later.
    dumped = 1764007200
    line = "last dump: 1764007200 scheduled memos-20251124T180000Z-scheduled.dump"
    assert verify.readable_health(line, dumped + 5 * 3600 + 20 * 60) == (
        "last dump: 2025-11-24 18:00 UTC, 5 h ago (scheduled, memos-20251124T180000Z-scheduled.dump)"
    )
    assert verify.readable_health("last dump: 1764007200 manual", dumped + 50 * 60) == (
        "last dump: 2025-11-24 18:00 UTC, 50 min ago (manual)"
    )
    assert verify.readable_health("the last dump failed (1764007200 nightly)", dumped + 3 * 86400) == (
        "the last dump failed (2025-11-24 18:00 UTC, 3 d ago, nightly)"
    )
    assert verify.readable_health("no successful dump in the last 25 hours", dumped) == (
        "no successful dump in the last 25 hours"
    )


def test_the_backup_check_reports_the_dump_time_readably(tools: Path) -> None:
    dumped = int(time.time()) - 2 * 3600 - 60
    stand_ins(tools, {"docker": f'echo "last dump: {dumped} scheduled memos-x-scheduled.dump"'})
    check = verify.check_backups([], "memos-backup")
    assert check.ok
    assert check.detail.endswith(" UTC, 2 h ago (scheduled, memos-x-scheduled.dump)")
    assert str(dumped) not in check.detail


def test_the_command_reads_the_stack_outputs_with_pulumi(
    dev_run: StackRun, server: PostgresServer, app: str, tools: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tools / "outputs.json"
    data.write_text(json.dumps(outputs(dev_run, server, app)))
    stand_ins(tools, {"pulumi": f'echo "$*" > "{tools}/pulumi-args"\ncat "{data}"'})
    assert verify.main(["--stack", "dev"]) == 0
    assert (tools / "pulumi-args").read_text().split() == [
        "stack", "output", "--json", "--show-secrets", "--stack", "dev",
    ]  # fmt: skip
    assert "6 of 6 checks passed" in capsys.readouterr().out


def test_an_rds_stack_is_verified_through_the_host_to_its_private_endpoint_without_container_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An RDS stack exports no memory plan, no database or dump container: verify used to fail on them.
    run = run_program("prod", {"database": "rds", "containerDatabaseVolumes": "remove"}, secrets=PROD_SECRETS)
    assert not {"db_settings", "db_container", "backup_container"} & set(run.outputs)
    endpoint = str(run.outputs["rds_endpoint"])
    assert verify.tunnel_target(run.outputs, ["ssh", "root@198.51.100.20"]) == (endpoint.rsplit(":", 1)[0], 5432)
    reached: list[str] = []

    @contextlib.contextmanager
    def tunnel(outputs: Any) -> Iterator[tuple[str, int]]:
        yield "127.0.0.1", 15432

    def database(dsn: str, settings: Any, extensions: Any) -> list[verify.Check]:
        reached.append(dsn)
        assert settings == {}
        return [verify.Check("database answers", True, "as memos"), verify.Check("settings equal the plan", True, "")]

    monkeypatch.setattr(verify, "database_endpoint", tunnel)
    monkeypatch.setattr(verify, "check_database", database)
    monkeypatch.setattr(verify, "check_app", lambda url: verify.Check("app /healthz", True, url))
    checks = verify.verify(run.outputs)
    assert [c.name for c in checks] == ["database answers", "app /healthz"]
    assert reached == [verify.with_endpoint(str(run.outputs["app_dsn"]), "127.0.0.1", 15432)]
    assert "sslmode=require" in reached[0]
