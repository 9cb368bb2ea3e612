"""The database the program renders, on a real PostgreSQL 18 + pgvector server.

The server gets exactly what the program sends to Docker: the `-c` flags of the database container's
command, the init script it uploads into /docker-entrypoint-initdb.d, the superuser password it
uploads, and the role job's SQL fed to psql over the local socket as `docker exec ... psql` does.
"""

from __future__ import annotations

import random
import subprocess
from collections.abc import Iterator

import psycopg
import pytest

from harness.mock_engine import run_program
from harness.pg_server import PostgresServer
from tests.support import RenderedDatabase, local_dsn, rendered_database, same_setting, start_rendered

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module", params=["dev", "prod"])
def stack(request: pytest.FixtureRequest) -> RenderedDatabase:
    secrets = {"siliconflowApiKey": "sf-test", "deepseekApiKey": "ds-test"} if request.param == "prod" else {}
    return rendered_database(run_program(request.param, secrets=secrets))


@pytest.fixture(scope="module")
def server(stack: RenderedDatabase) -> Iterator[PostgresServer]:
    pg = start_rendered(stack)
    yield pg
    pg.cleanup()


def test_the_rendered_settings_start_the_server_and_show_returns_them(
    server: PostgresServer, stack: RenderedDatabase
) -> None:
    with psycopg.connect(server.dsn()) as conn:
        for name, value in stack.settings.items():
            shown = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
            assert shown is not None
            assert same_setting(shown[0], value), f"{name}: SHOW gives {shown[0]}, rendered {value}"


def test_the_init_script_creates_both_extensions(server: PostgresServer) -> None:
    with psycopg.connect(server.dsn()) as conn:
        rows = conn.execute("SELECT extname FROM pg_extension ORDER BY extname").fetchall()
    assert {"vector", "btree_gist"} <= {r[0] for r in rows}


def test_the_superuser_logs_in_over_tcp_with_the_generated_password(
    server: PostgresServer, stack: RenderedDatabase
) -> None:
    with psycopg.connect(server.dsn(password=stack.superuser_password)) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(server.dsn(password="not-the-password")).close()


def test_the_app_logs_in_with_the_dsn_the_program_delivers(server: PostgresServer, stack: RenderedDatabase) -> None:
    with psycopg.connect(local_dsn(server, stack.app_dsn)) as conn:
        assert conn.execute("SELECT current_user, current_database()").fetchone() == ("memos", "memos")


def test_the_app_role_owns_only_its_database(server: PostgresServer, stack: RenderedDatabase) -> None:
    with psycopg.connect(server.dsn()) as conn:
        role = conn.execute(
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls "
            "FROM pg_roles WHERE rolname = 'memos'"
        ).fetchone()
        owned = conn.execute(
            "SELECT datname FROM pg_database WHERE datdba = (SELECT oid FROM pg_roles WHERE rolname = 'memos')"
        ).fetchall()
    assert role == (False, False, False, False, False)
    assert owned == [("memos",)]
    other = local_dsn(server, stack.app_dsn).replace("/memos?", "/postgres?")
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        psycopg.connect(other).close()


def test_the_role_job_is_idempotent(server: PostgresServer, stack: RenderedDatabase) -> None:
    server.psql(stdin=stack.role_sql)
    with psycopg.connect(local_dsn(server, stack.app_dsn)) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_the_app_builds_its_schema_and_hnsw_index_as_its_own_role(
    server: PostgresServer, stack: RenderedDatabase
) -> None:
    rng = random.Random(7)
    rows = 3000
    with psycopg.connect(local_dsn(server, stack.app_dsn), autocommit=True) as conn:
        # The app's schema file runs this too; for a non-superuser it must be a no-op, not an error.
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute("CREATE TABLE memo_embedding (id bigserial PRIMARY KEY, memo_id int, embedding vector(1024))")
        with conn.cursor().copy("COPY memo_embedding (memo_id, embedding) FROM STDIN") as copy:
            for i in range(rows):
                vector = "[" + ",".join(f"{rng.gauss(0, 1):.5f}" for _ in range(1024)) + "]"
                copy.write_row((i, vector))
        conn.execute(
            "CREATE INDEX memo_embedding_hnsw ON memo_embedding "
            "USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
        )
        index = conn.execute(
            "SELECT am.amname, pg_get_indexdef(i.indexrelid) FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam "
            "WHERE c.relname = 'memo_embedding_hnsw'"
        ).fetchone()
        assert index is not None
        assert index[0] == "hnsw"
        assert "vector_cosine_ops" in index[1] and "m='16'" in index[1] and "ef_construction='64'" in index[1]
        probe = "[" + ",".join("0.1" for _ in range(1024)) + "]"
        plan = conn.execute(
            "EXPLAIN SELECT id FROM memo_embedding ORDER BY embedding <=> %s::vector LIMIT 10", (probe,)
        ).fetchall()
        assert any("memo_embedding_hnsw" in line[0] for line in plan), plan
        count = conn.execute("SELECT count(*) FROM memo_embedding").fetchone()
        assert count == (rows,)


def test_the_healthcheck_cannot_pass_while_init_scripts_run() -> None:
    """The image's init phase listens on the socket only; the TCP healthcheck must see no server."""
    pg = PostgresServer({}, superuser_password="init-phase")
    try:
        pg.initdb()
        pg.start(tcp=False)
        healthcheck = subprocess.run(
            [pg.bin("pg_isready"), "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "-d", "memos"],
            capture_output=True,
            check=False,
            text=True,
        )
        assert healthcheck.returncode == 2, healthcheck.stdout  # 2: no response
    finally:
        pg.cleanup()
