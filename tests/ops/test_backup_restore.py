"""Backups and restores, end to end on a real PostgreSQL 18 + pgvector.

The scripts are the files the program uploads into the backup container (ops/container/), run with
dash (Debian's /bin/sh, as in the PostgreSQL image) and the PostgreSQL 18 client tools, against a
database set up exactly as the program renders it: dump, wipe, restore, then the rows, the owners and
the HNSW index are back.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from harness.mock_engine import ROOT, run_program
from harness.pg_server import BIN, PostgresServer
from tests.support import RenderedDatabase, load_app_data, local_dsn, rendered_database, start_rendered, vector

pytestmark = pytest.mark.postgres

BACKUP = ROOT / "ops" / "container" / "memos-backup"
RESTORE = ROOT / "ops" / "container" / "memos-restore"
ROWS = 2000


@pytest.fixture(scope="module")
def db() -> RenderedDatabase:
    return rendered_database(run_program("dev"))


@pytest.fixture(scope="module")
def server(db: RenderedDatabase) -> Iterator[PostgresServer]:
    pg = start_rendered(db)
    yield pg
    pg.cleanup()


@pytest.fixture(scope="module")
def app_data(server: PostgresServer, db: RenderedDatabase) -> str:
    """The app's tables and index, created as the app's role, with a few thousand embeddings."""
    rng = random.Random(11)
    with psycopg.connect(local_dsn(server, db.app_dsn), autocommit=True) as conn:
        load_app_data(conn, ROWS, rng, indexed=["memo_embedding"])
    return vector(random.Random(99))


def run_script(script: Path, server: PostgresServer, db: RenderedDatabase, backups: Path, *args: str,
               password: str | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    secret = backups.parent / "superuser-password"
    secret.write_text(password if password is not None else db.superuser_password)
    env = {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "PGHOST": "127.0.0.1",
        "PGPORT": str(server.port),
        "PGUSER": "postgres",
        "PGDATABASE": "memos",
        "PGPASSWORD_FILE": str(secret),
        "PGCONNECT_TIMEOUT": "5",
        "BACKUP_DIR": str(backups),
        "BACKUP_RETENTION_DAYS": "7",
        "BACKUP_TIME_UTC": "18:00",
        "MEMOS_APP_ROLE": "memos",
    }
    dash = shutil.which("dash")
    if dash is None:
        pytest.fail("dash is required; ./scripts/test installs it")
    return subprocess.run([dash, str(script), *args], env=env, capture_output=True, text=True, check=False)


def snapshot(server: PostgresServer, probe: str) -> dict[str, object]:
    with psycopg.connect(server.dsn()) as conn:
        index = conn.execute(
            "SELECT i.indisvalid, am.amname, pg_get_indexdef(i.indexrelid) FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam "
            "WHERE c.relname = 'memo_embedding_hnsw'"
        ).fetchone()
        plan = conn.execute(
            "EXPLAIN SELECT memo_id FROM memo_embedding ORDER BY embedding <=> %s::vector LIMIT 10", (probe,)
        ).fetchall()
        return {
            "memos": conn.execute("SELECT count(*), md5(string_agg(content, ',' ORDER BY id)) FROM memo").fetchone(),
            "embeddings": conn.execute(
                "SELECT count(*), md5(string_agg(embedding::text, ',' ORDER BY memo_id)) FROM memo_embedding"
            ).fetchone(),
            "owners": conn.execute(
                "SELECT tableowner FROM pg_tables WHERE schemaname = 'public' GROUP BY tableowner"
            ).fetchall(),
            "index": index,
            "index used": any("memo_embedding_hnsw" in row[0] for row in plan),
            "database owner": conn.execute(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'memos'"
            ).fetchone(),
        }


def test_dump_wipe_restore_brings_back_rows_owners_and_the_hnsw_index(
    server: PostgresServer, db: RenderedDatabase, app_data: str, tmp_path: Path
) -> None:
    backups = tmp_path / "backups"
    backups.mkdir()
    before = snapshot(server, app_data)
    assert before["memos"][0] == ROWS  # type: ignore[index]
    assert before["index used"] is True

    dumped = run_script(BACKUP, server, db, backups, "run", "test")
    assert dumped.returncode == 0, dumped.stderr
    dumps = sorted(p.name for p in backups.glob("memos-*.dump"))
    assert len(dumps) == 1
    assert not list(backups.glob("*.partial"))
    assert run_script(BACKUP, server, db, backups, "health").returncode == 0
    assert run_script(BACKUP, server, db, backups, "list").stdout.split() == dumps

    with psycopg.connect(server.dsn(), autocommit=True) as conn:  # the wipe
        conn.execute("DROP TABLE memo_embedding, memo")

    restored = run_script(RESTORE, server, db, backups, dumps[0])
    assert restored.returncode == 0, restored.stderr
    assert snapshot(server, app_data) == before
    with psycopg.connect(local_dsn(server, db.app_dsn), autocommit=True) as conn:  # the app still owns it all
        conn.execute("INSERT INTO memo (content) VALUES ('after the restore')")


def test_a_failed_dump_is_visible_to_the_healthcheck(
    server: PostgresServer, db: RenderedDatabase, app_data: str, tmp_path: Path
) -> None:
    backups = tmp_path / "backups"
    backups.mkdir()
    assert run_script(BACKUP, server, db, backups, "health").returncode == 1  # nothing yet
    assert run_script(BACKUP, server, db, backups, "run").returncode == 0
    assert run_script(BACKUP, server, db, backups, "health").returncode == 0
    time.sleep(1.1)
    failed = run_script(BACKUP, server, db, backups, "run", "nightly", password="wrong-password")
    assert failed.returncode == 1
    assert "nightly dump FAILED" in failed.stderr
    health = run_script(BACKUP, server, db, backups, "health")
    assert health.returncode == 1
    assert "the last dump failed" in health.stdout
    assert not list(backups.glob("*.partial"))


def test_dumps_older_than_the_retention_are_removed_but_never_the_newest(
    server: PostgresServer, db: RenderedDatabase, app_data: str, tmp_path: Path
) -> None:
    backups = tmp_path / "backups"
    backups.mkdir()
    old, recent = backups / "memos-20200101T000000Z.dump", backups / "memos-20200108T000000Z.dump"
    for path, age_days in ((old, 8), (recent, 6)):
        path.write_bytes(b"old dump")
        stamp = time.time() - age_days * 86400
        os.utime(path, (stamp, stamp))
    assert run_script(BACKUP, server, db, backups, "run").returncode == 0
    names = {p.name for p in backups.glob("memos-*.dump")}
    assert old.name not in names
    assert recent.name in names
    assert len(names) == 2


def test_restore_refuses_a_damaged_dump_before_dropping_anything(
    server: PostgresServer, db: RenderedDatabase, app_data: str, tmp_path: Path
) -> None:
    backups = tmp_path / "backups"
    backups.mkdir()
    (backups / "memos-broken.dump").write_bytes(b"PGDMP this is not an archive")
    before = snapshot(server, app_data)
    result = run_script(RESTORE, server, db, backups, "memos-broken.dump")
    assert result.returncode != 0
    assert snapshot(server, app_data) == before
