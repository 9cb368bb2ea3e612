"""The memory planner's assumptions, checked against a real PostgreSQL 18 + pgvector.

- `postgres -C shared_memory_size` with the rendered flags never exceeds the planner's estimate;
- the HNSW graph really needs about what the planner budgets per row: the server reports when the
  graph outgrows maintenance_work_mem, and that row count pins the bytes per element.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from harness.mock_engine import run_program
from harness.pg_server import PostgresServer
from lib.tuning import HNSW_ELEMENT_OVERHEAD_BYTES, Workload, hnsw_build_mib, hnsw_index_mib, shared_memory_mib
from tests.conftest import PROD_SECRETS
from tests.support import rendered_database

pytestmark = pytest.mark.postgres

RUNS = {
    "dev": lambda: run_program("dev"),
    "prod": lambda: run_program("prod", secrets=PROD_SECRETS),
    "prod behind the proxy": lambda: run_program(
        "prod", {"domain": "notes.example.com", "acmeEmail": "ops@example.com"}, secrets=PROD_SECRETS
    ),
}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_shared_memory_fits_the_plan(name: str) -> None:
    run = RUNS[name]()
    db = rendered_database(run)
    planned_shared = run.outputs["db_settings"]
    server = PostgresServer(db.settings, superuser_password=db.superuser_password)
    try:
        server.initdb()
        reported = server.show_config("shared_memory_size")
    finally:
        server.cleanup()
    match = re.fullmatch(r"(\d+)(?:MB)?", reported)  # postgres -C prints it in MB, without the unit
    assert match, reported
    estimate = shared_memory_mib(
        int(planned_shared["shared_buffers"].removesuffix("MB")),
        int(planned_shared["wal_buffers"].removesuffix("MB")),
        int(planned_shared["max_connections"]),
    )
    assert int(match[1]) <= estimate, f"PostgreSQL needs {match[1]} MB of shared memory, the plan allows {estimate}"


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    pg = PostgresServer({"max_parallel_maintenance_workers": "0"}, superuser_password="calibration")
    pg.initdb()
    pg.start()
    pg.setup_database("CREATE EXTENSION vector;")
    yield pg
    pg.cleanup()


def build(server: PostgresServer, column: str, rows: int, maintenance_mb: int) -> tuple[int, int]:
    """Build the app's index over `rows` random rows; return the rows that fitted in memory, index bytes."""
    rng = random.Random(5)
    notices: list[str] = []
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        conn.execute(sql.SQL("DROP TABLE IF EXISTS t; CREATE TABLE t (v {}(1024))").format(sql.Identifier(column)))
        with conn.cursor().copy("COPY t (v) FROM STDIN") as copy:
            for _ in range(rows):
                copy.write_row(("[" + ",".join(f"{rng.random():.4f}" for _ in range(1024)) + "]",))
        conn.execute("SELECT set_config('maintenance_work_mem', %s, false)", (f"{maintenance_mb}MB",))
        ops = sql.Identifier(f"{column}_cosine_ops")
        conn.execute(
            sql.SQL("CREATE INDEX t_hnsw ON t USING hnsw (v {}) WITH (m = 16, ef_construction = 64)").format(ops)
        )
        size = conn.execute("SELECT pg_relation_size('t_hnsw')").fetchone()
    spilled = [m for m in notices if "no longer fits into maintenance_work_mem" in m]
    assert spilled, notices
    found = re.search(r"after (\d+) tuples", spilled[0])
    assert found
    assert size is not None
    return int(found[1]), int(size[0])


@pytest.mark.parametrize(("column", "bytes_per_dim", "rows"), [("vector", 4, 4000)])
def test_the_planned_build_memory_and_index_size_match_pgvector(
    server: PostgresServer, column: str, bytes_per_dim: int, rows: int
) -> None:
    maintenance_mb = 8
    fitted, index_bytes = build(server, column, rows=rows, maintenance_mb=maintenance_mb)
    measured = maintenance_mb * 1024 * 1024 / fitted
    planned = 1024 * bytes_per_dim + HNSW_ELEMENT_OVERHEAD_BYTES
    assert abs(measured - planned) / planned < 0.02, f"pgvector used {measured:.0f} B per row, the plan says {planned}"
    # And the planner's build memory for that many rows would have held them all.
    assert hnsw_build_mib(Workload(fitted, 30)) >= maintenance_mb
    # The finished index is the size the planner sizes shared_buffers by.
    estimate = hnsw_index_mib(Workload(rows, 30)) * 1024 * 1024
    assert abs(index_bytes - estimate) / estimate < 0.10, f"index {index_bytes} B, planned {estimate} B"
