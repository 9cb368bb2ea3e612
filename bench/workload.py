"""The app's vector workload, phase by phase, against one running server."""

from __future__ import annotations

import math
import os
import re
import resource
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import psycopg
from psycopg import sql

from bench.data import Dataset, copy_binary, recall_at_k, vector_literal
from bench.monitor import spilled_at
from harness.pg_server import PostgresServer

INDEX: Final = "memo_embedding_embedding_idx"
CREATE_TABLE = (
    "CREATE TABLE memo_embedding ("
    "id bigserial PRIMARY KEY, memo_id int, embedding vector(1024), updated_ts timestamptz)"
)
CREATE_INDEX = (
    f"CREATE INDEX {INDEX} ON memo_embedding "
    "USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
)
REINDEX = f"REINDEX INDEX {INDEX}"
TOP10 = "SELECT id FROM memo_embedding ORDER BY embedding <=> %s::vector LIMIT 10"
DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def connect(server: PostgresServer, **kwargs: Any) -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(server.dsn(), autocommit=True, connect_timeout=30, **kwargs)


class Notices:
    """Collects the server's NOTICE/WARNING messages on a connection."""

    def __init__(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        self.messages: list[str] = []
        conn.add_notice_handler(self._on_notice)

    def _on_notice(self, diag: psycopg.errors.Diagnostic) -> None:
        self.messages.append(f"{diag.severity}: {diag.message_primary}")


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), q in [0, 100]."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    pos = (len(ordered) - 1) * q / 100
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


# -- server facts ---------------------------------------------------------------------------------

SHOWN = (
    "max_connections",
    "shared_buffers",
    "shared_memory_size",
    "effective_cache_size",
    "maintenance_work_mem",
    "work_mem",
    "hash_mem_multiplier",
    "max_worker_processes",
    "max_parallel_workers",
    "max_parallel_maintenance_workers",
    "max_parallel_workers_per_gather",
    "min_parallel_table_scan_size",
    "autovacuum_max_workers",
    "autovacuum_work_mem",
    "wal_buffers",
    "max_wal_size",
    "io_method",
    "random_page_cost",
    "jit",
)


def server_facts(server: PostgresServer) -> dict[str, Any]:
    with connect(server) as conn:
        shown: dict[str, str] = {}
        for name in SHOWN:
            row = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
            shown[name] = str(row[0]) if row else "?"
        version = conn.execute("SELECT current_setting('server_version')").fetchone()
        vector = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        work_mem_kb = conn.execute("SELECT setting::bigint FROM pg_settings WHERE name = 'work_mem'").fetchone()
        hash_mult = conn.execute(
            "SELECT setting::float8 FROM pg_settings WHERE name = 'hash_mem_multiplier'"
        ).fetchone()
    assert version
    assert vector
    assert work_mem_kb
    assert hash_mult
    return {
        "shown": shown,
        "server_version": str(version[0]),
        "pgvector_version": str(vector[0]),
        "work_mem_kb": int(work_mem_kb[0]),
        "hash_mem_multiplier": float(hash_mult[0]),
    }


# -- load and build -------------------------------------------------------------------------------


def load(server: PostgresServer, dataset: Dataset) -> dict[str, Any]:
    stream = copy_binary(dataset.vectors)
    view = memoryview(stream)
    with connect(server) as conn:
        conn.execute(CREATE_TABLE)
        started = time.perf_counter()
        with (
            conn.cursor() as cur,
            cur.copy("COPY memo_embedding (memo_id, embedding, updated_ts) FROM STDIN (FORMAT binary)") as copy,
        ):
            for offset in range(0, len(stream), 1 << 20):
                copy.write(view[offset : offset + (1 << 20)])
        seconds = time.perf_counter() - started
        count = conn.execute("SELECT count(*) FROM memo_embedding").fetchone()
        # Same starting point for every configuration: statistics, visibility map, nothing dirty.
        conn.execute("VACUUM (ANALYZE) memo_embedding")
        conn.execute("CHECKPOINT")
        sizes = conn.execute(
            "SELECT pg_relation_size('memo_embedding'), pg_total_relation_size('memo_embedding')"
        ).fetchone()
    assert count
    assert sizes
    return {
        "seconds": seconds,
        "rows": int(count[0]),
        "copy_mib": len(stream) / 2**20,
        "heap_mib": sizes[0] / 2**20,
        "table_total_mib": sizes[1] / 2**20,
    }


_REQUESTED = re.compile(r"with request for (\d+) parallel worker")
_LAUNCHED = re.compile(r"using (\d+) parallel workers")


def _parallel(messages: list[str]) -> tuple[int, int | None]:
    """Parallel workers the server planned for an index build and pgvector launched (DEBUG1 lines)."""
    requested = next((int(m.group(1)) for msg in messages if (m := _REQUESTED.search(msg))), 0)
    launched = next((int(m.group(1)) for msg in messages if (m := _LAUNCHED.search(msg))), None)
    return requested, launched if launched is not None else (0 if requested == 0 else None)


def build_once(server: PostgresServer, server_cpu: Callable[[], float] | None = None) -> dict[str, Any]:
    """One timed CREATE INDEX, with the server's DEBUG1 messages to see the parallel workers it used."""
    error = None
    with connect(server) as conn:
        notices = Notices(conn)
        conn.execute("SET client_min_messages = debug1")
        cpu_before = server_cpu() if server_cpu else 0.0
        started = time.perf_counter()
        try:
            conn.execute(CREATE_INDEX)
        except psycopg.Error as exc:
            error = f"{type(exc).__name__}: {exc}".strip()
        seconds = time.perf_counter() - started
        cpu_used = (server_cpu() - cpu_before) if server_cpu else None
    requested, launched = _parallel(notices.messages)
    return {
        "seconds": seconds,
        "error": error,
        "server_cores": cpu_used / seconds if cpu_used is not None and seconds > 0 else None,
        "parallel_workers_requested": requested,
        "parallel_workers_launched": launched,
        "spilled_at": spilled_at(notices.messages),
        "notices": [m for m in notices.messages if not m.startswith("DEBUG") or "parallel" in m][:20],
    }


def build(server: PostgresServer, *, repeats: int, server_cpu: Callable[[], float] | None = None) -> dict[str, Any]:
    """CREATE INDEX `repeats` times (dropping the index in between); the median time is the result."""
    runs: list[dict[str, Any]] = []
    for i in range(repeats):
        if i:
            drop_index(server)
        runs.append(build_once(server, server_cpu))
        if runs[-1]["error"]:
            break
    good = [r["seconds"] for r in runs if not r["error"]]
    out: dict[str, Any] = {
        "seconds": statistics.median(good) if good else None,
        "min_seconds": min(good, default=None),
        "max_seconds": max(good, default=None),
        "runs": runs,
        "error": next((r["error"] for r in runs if r["error"]), None),
        "spilled_at": runs[0]["spilled_at"],
        "parallel_workers_launched": [r["parallel_workers_launched"] for r in runs],
    }
    if out["error"] is None:
        with connect(server) as conn:
            conn.execute("CHECKPOINT")
            size = conn.execute(f"SELECT pg_relation_size('{INDEX}')").fetchone()
        out["index_mib"] = size[0] / 2**20 if size else None
    return out


def drop_index(server: PostgresServer) -> None:
    """Undo build() so that it can be measured again."""
    with connect(server) as conn:
        conn.execute(f"DROP INDEX IF EXISTS {INDEX}")
        conn.execute("CHECKPOINT")


# -- top-10 queries -------------------------------------------------------------------------------


def try_drop_caches() -> str:
    """Try the host-wide page-cache drop; returns "ok" or why it was refused."""
    try:
        os.sync()
        DROP_CACHES.write_text("1")
    except OSError as exc:
        return f"refused: {type(exc).__name__}: {exc.strerror or exc}"
    return "ok"


def query_pass(server: PostgresServer, literals: list[str], ef: int) -> tuple[list[float], list[list[int]]]:
    """One pass over every query vector at hnsw.ef_search = ef: per-query latency (ms) and the ids."""
    latencies: list[float] = []
    found: list[list[int]] = []
    with connect(server, prepare_threshold=0) as conn:
        conn.execute(sql.SQL("SET hnsw.ef_search = {}").format(sql.Literal(int(ef))))
        conn.execute("SELECT 1")
        for literal in literals:
            started = time.perf_counter()
            rows = conn.execute(TOP10, (literal,)).fetchall()
            latencies.append((time.perf_counter() - started) * 1000)
            found.append([int(r[0]) for r in rows])
    return latencies, found


def _summary(latencies: list[float]) -> dict[str, float]:
    return {
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "mean_ms": statistics.fmean(latencies),
    }


def queries(server: PostgresServer, dataset: Dataset, *, efs: tuple[int, ...], repeats: int) -> dict[str, Any]:
    literals = [vector_literal(q) for q in dataset.queries]
    cgroup = server.cgroup
    with connect(server) as conn:
        plan = "\n".join(str(r[0]) for r in conn.execute("EXPLAIN " + TOP10, (literals[0],)).fetchall())
    out: dict[str, Any] = {"uses_index": INDEX in plan, "efs": {}, "eviction": []}
    for ef in efs:
        # Cold: a fresh server (empty shared_buffers) with this group's page cache reclaimed.
        server.stop()
        drop = try_drop_caches()
        emptied = cgroup.force_empty() if cgroup is not None else False
        cache_after = cgroup.stat().get("cache", 0) / 2**20 if cgroup is not None else None
        server.start()
        out["eviction"].append({"ef": ef, "drop_caches": drop, "force_empty": emptied, "cache_after_mib": cache_after})
        latencies, found = query_pass(server, literals, ef)
        out["efs"][str(ef)] = {"cold": _summary(latencies), "cold_recall": recall_at_k(found, dataset)}
    for ef in efs:  # one untimed pass per ef so every warm repeat starts warm
        query_pass(server, literals, ef)
    runs: dict[int, list[dict[str, float]]] = {ef: [] for ef in efs}
    for _ in range(repeats):
        for ef in efs:
            latencies, found = query_pass(server, literals, ef)
            runs[ef].append(_summary(latencies))
            entry = out["efs"][str(ef)]
            entry.setdefault("recall", recall_at_k(found, dataset))
    for ef in efs:
        entry = out["efs"][str(ef)]
        entry["warm_runs"] = runs[ef]
        entry["warm"] = {
            key: statistics.median(run[key] for run in runs[ef]) for key in ("p50_ms", "p95_ms", "mean_ms")
        }
        entry["warm_buffers"] = warm_buffers(server, literals[:50], ef)
    return out


def interleaved_warm(
    servers: dict[str, PostgresServer], dataset: Dataset, *, efs: tuple[int, ...], rounds: int
) -> dict[str, dict[str, Any]]:
    """Warm latency for every configuration, measured in alternation rather than one after the other.

    All servers are up at once (each in its own memory group); after one untimed pass per server and
    ef_search, every round runs one timed pass per server and ef_search, the order of the servers
    rotating from round to round. Slow drifts of the machine's speed (the hypervisor's other guests)
    then hit every configuration alike instead of whichever happened to run during them.
    """
    literals = [vector_literal(q) for q in dataset.queries]
    names = list(servers)
    for name in names:
        for ef in efs:
            query_pass(servers[name], literals, ef)
    runs: dict[str, dict[int, list[dict[str, float]]]] = {n: {ef: [] for ef in efs} for n in names}
    recall: dict[str, dict[int, float]] = {n: {} for n in names}
    for round_no in range(rounds):
        order = names[round_no % len(names) :] + names[: round_no % len(names)]
        for name in order:
            for ef in efs:
                latencies, found = query_pass(servers[name], literals, ef)
                runs[name][ef].append(_summary(latencies))
                recall[name].setdefault(ef, recall_at_k(found, dataset))
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        out[name] = {}
        for ef in efs:
            out[name][str(ef)] = {
                "warm_runs": runs[name][ef],
                "warm": {k: statistics.median(r[k] for r in runs[name][ef]) for k in ("p50_ms", "p95_ms", "mean_ms")},
                "recall": recall[name][ef],
                "warm_buffers": warm_buffers(servers[name], literals[:50], ef),
            }
    return out


_BUFFERS = re.compile(r"Buffers: shared(?: hit=(\d+))?(?: read=(\d+))?")


def warm_buffers(server: PostgresServer, literals: list[str], ef: int) -> dict[str, float]:
    """Where a warm query's pages come from: shared_buffers hits vs reads (from the OS page cache or disk),
    summed over EXPLAIN (ANALYZE, BUFFERS) of `literals` after the timed passes."""
    hits = reads = 0
    explain = "EXPLAIN (ANALYZE, BUFFERS, TIMING OFF, COSTS OFF) " + TOP10
    with connect(server) as conn:
        conn.execute(sql.SQL("SET hnsw.ef_search = {}").format(sql.Literal(int(ef))))
        for literal in literals:
            for row in conn.execute(explain, (literal,)).fetchall():
                found = _BUFFERS.search(str(row[0]))
                if found:  # the first Buffers line is the top node's total
                    hits += int(found.group(1) or 0)
                    reads += int(found.group(2) or 0)
                    break
    total = hits + reads
    return {
        "queries": len(literals),
        "hits_per_query": hits / max(1, len(literals)),
        "reads_per_query": reads / max(1, len(literals)),
        "hit_ratio": hits / total if total else math.nan,
    }


# -- pgbench ---------------------------------------------------------------------------------------

PGBENCH_SCRIPT = """\
\\set qid random(1, {queries})
\\set id random(1, {rows})
SELECT id FROM memo_embedding ORDER BY embedding <=> (SELECT v FROM bench_query WHERE qid = :qid) LIMIT 10;
UPDATE memo_embedding SET updated_ts = now() WHERE id = :id;
"""


def pgbench(server: PostgresServer, dataset: Dataset, *, clients: int, seconds: int) -> dict[str, Any]:
    literals = [vector_literal(q) for q in dataset.queries]
    with connect(server) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_query")
        conn.execute("CREATE TABLE bench_query (qid int PRIMARY KEY, v vector(1024))")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO bench_query VALUES (%s, %s::vector)", list(enumerate(literals, 1)))
        conn.execute("ANALYZE bench_query")
        plan = conn.execute(
            "EXPLAIN SELECT id FROM memo_embedding ORDER BY embedding <=> "
            "(SELECT v FROM bench_query WHERE qid = 1) LIMIT 10"
        ).fetchall()
    script = server.root / "pgbench-mixed.sql"
    script.write_text(PGBENCH_SCRIPT.format(queries=len(literals), rows=len(dataset.vectors)))
    argv = [
        server.bin("pgbench"),
        "-n",
        "-h",
        "127.0.0.1",
        "-p",
        str(server.port),
        "-U",
        "postgres",
        "-c",
        str(clients),
        "-j",
        str(min(2, clients)),
        "-T",
        str(seconds),
        "-M",
        "prepared",
        "-f",
        str(script),
        server.database,
    ]
    env = {**os.environ, "PGPASSWORD": server.superuser_password}
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds + 120, check=False)
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    pgbench_cpu = (children_after.ru_utime - children_before.ru_utime) + (
        children_after.ru_stime - children_before.ru_stime
    )
    text = proc.stdout + proc.stderr

    def grab(pattern: str) -> float | None:
        found = re.search(pattern, text)
        return float(found.group(1)) if found else None

    return {
        "clients": clients,
        "seconds": seconds,
        "uses_index": any(INDEX in str(r[0]) for r in plan),
        "exit_code": proc.returncode,
        "tps": grab(r"tps = ([0-9.]+) \(without initial connection time\)"),
        "latency_avg_ms": grab(r"latency average = ([0-9.]+) ms"),
        "transactions": grab(r"number of transactions actually processed: (\d+)"),
        "failed": grab(r"number of failed transactions: (\d+)"),
        "output_tail": text.strip().splitlines()[-25:],
        "client_program_cpu_s": pgbench_cpu,
    }


# -- stress ----------------------------------------------------------------------------------------


@dataclass
class StressStats:
    iterations: int = 0
    errors: dict[str, int] = field(default_factory=lambda: {})
    lock: threading.Lock = field(default_factory=threading.Lock)
    first_hold: int = 0

    def error(self, exc: BaseException) -> None:
        key = type(exc).__name__ + ": " + (str(exc).strip().splitlines() or [""])[0][:120]
        with self.lock:
            self.errors[key] = self.errors.get(key, 0) + 1


@dataclass(frozen=True)
class StressQueries:
    """A hash aggregate and a sort over generate_series, each with about twice its memory limit of input.

    generate_series runs in the target list (a ProjectSet node, value per call) so that no function
    scan materialises the rows into a third work_mem-sized tuplestore: the only memory consumers
    are the HashAggregate (limit hash_mem = work_mem x hash_mem_multiplier) and the Sort (work_mem).
    Both are held open as cursors at once, so each connection holds both limits, as a query with
    one hash and one sort node would.
    """

    hash_rows: int
    sort_rows: int

    @classmethod
    def sized_for(cls, work_mem_kb: int, hash_mem_multiplier: float) -> StressQueries:
        # A spilled row costs well over 40 bytes in either node, so 2 x limit / 40 rows overflow it.
        work_mem = work_mem_kb * 1024
        return cls(
            hash_rows=max(100_000, math.ceil(2 * work_mem * hash_mem_multiplier / 40)),
            sort_rows=max(100_000, math.ceil(2 * work_mem / 40)),
        )

    def hash_query(self) -> sql.Composed:
        return sql.SQL("SELECT g, count(*) FROM (SELECT generate_series(1, {}) AS g) s GROUP BY g").format(
            sql.Literal(self.hash_rows)
        )

    def sort_query(self) -> sql.Composed:
        return sql.SQL("SELECT g FROM (SELECT generate_series(1, {}) AS g) s ORDER BY hashint4(g)").format(
            sql.Literal(self.sort_rows)
        )

    def describe(self) -> dict[str, str]:
        return {
            "hash": f"SELECT g, count(*) FROM (SELECT generate_series(1, {self.hash_rows}) AS g) s GROUP BY g",
            "sort": f"SELECT g FROM (SELECT generate_series(1, {self.sort_rows}) AS g) s ORDER BY hashint4(g)",
        }


def _explain_memory(server: PostgresServer, queries: StressQueries) -> list[str]:
    """EXPLAIN ANALYZE of both stress queries: shows each node reaching its limit and spilling."""
    lines: list[str] = []
    explain = sql.SQL("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) {}")
    with connect(server) as conn, conn.transaction():
        conn.execute("SET LOCAL enable_sort = off")
        lines += [str(row[0]) for row in conn.execute(explain.format(queries.hash_query())).fetchall()]
        conn.execute("SET LOCAL enable_sort = on")
        lines += [str(row[0]) for row in conn.execute(explain.format(queries.sort_query())).fetchall()]
    keep = ("Aggregate", "Sort", "Batches", "Memory", "Disk")
    return [line.strip() for line in lines if any(k in line for k in keep)]


@dataclass
class StressJob:
    server: PostgresServer
    queries: StressQueries
    hold: float
    stop: threading.Event
    stats: StressStats


def _stress_worker(job: StressJob) -> None:
    declare_hash = sql.SQL("DECLARE h NO SCROLL CURSOR FOR {}").format(job.queries.hash_query())
    declare_sort = sql.SQL("DECLARE s NO SCROLL CURSOR FOR {}").format(job.queries.sort_query())
    stats = job.stats
    first = True
    while not job.stop.is_set():
        try:
            with connect(job.server) as conn:
                conn.execute("SET statement_timeout = '120s'")
                while not job.stop.is_set():
                    with conn.transaction():
                        conn.execute("SET LOCAL enable_sort = off")
                        conn.execute(declare_hash)
                        conn.execute("FETCH 1 FROM h")
                        conn.execute("SET LOCAL enable_sort = on")
                        conn.execute(declare_sort)
                        conn.execute("FETCH 1 FROM s")
                        with stats.lock:
                            stats.iterations += 1
                            if first:
                                stats.first_hold += 1
                                first = False
                        job.stop.wait(job.hold)  # both nodes keep their memory while the cursors are open
        except psycopg.Error as exc:
            stats.error(exc)
            job.stop.wait(1.0)


def stress(
    server: PostgresServer, *, connections: int, seconds: int, work_mem_kb: int, hash_mem_multiplier: float, hold: float
) -> dict[str, Any]:
    """`connections` sessions each holding a hash aggregate and a sort at their limits, while the HNSW
    index is rebuilt. Runs at least `seconds`, and on until the REINDEX ends, for at most 4 x `seconds`."""
    queries = StressQueries.sized_for(work_mem_kb, hash_mem_multiplier)
    explain = _explain_memory(server, queries)
    stop = threading.Event()
    stats = StressStats()
    job = StressJob(server, queries, hold, stop, stats)
    workers = [
        threading.Thread(target=_stress_worker, args=(job,), name=f"stress-{i}", daemon=True)
        for i in range(connections)
    ]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    # Let every session reach its first hold (or give up waiting) before the rebuild starts.
    while stats.first_hold < connections and time.monotonic() - started < 20:
        time.sleep(0.1)
    warmup = time.monotonic() - started

    reindex: dict[str, Any] = {"completed": False, "error": None, "seconds": None, "notices": []}
    reindex_pid: list[int] = []
    reindex_done = threading.Event()

    def run_reindex() -> None:
        try:
            with connect(server) as conn:
                notices = Notices(conn)
                conn.execute("SET client_min_messages = debug1")
                reindex_pid.append(conn.info.backend_pid)
                begin = time.perf_counter()
                try:
                    conn.execute(REINDEX)
                    reindex["completed"] = True
                finally:
                    reindex["seconds"] = time.perf_counter() - begin
                    reindex["notices"] = notices.messages
        except psycopg.Error as exc:
            reindex["error"] = f"{type(exc).__name__}: {str(exc).strip()[:200]}"
        finally:
            reindex_done.set()

    rebuilder = threading.Thread(target=run_reindex, name="reindex", daemon=True)
    rebuilder.start()
    cap = 4 * seconds
    cancelled = False
    while True:
        elapsed = time.monotonic() - started
        if elapsed >= seconds and reindex_done.is_set():
            break
        if elapsed >= cap:
            if not reindex_done.is_set() and reindex_pid:
                try:
                    with connect(server) as conn:
                        conn.execute("SELECT pg_cancel_backend(%s)", (reindex_pid[0],))
                    cancelled = True
                except psycopg.Error as exc:
                    stats.error(exc)
            break
        time.sleep(0.2)
    stop.set()
    rebuilder.join(timeout=120)
    for worker in workers:
        worker.join(timeout=150)
    reindex["cancelled_at_cap"] = cancelled
    reindex["spilled_at"] = spilled_at(reindex["notices"])
    reindex["parallel_workers_requested"], reindex["parallel_workers_launched"] = _parallel(reindex["notices"])
    reindex["notices"] = [m for m in reindex["notices"] if not m.startswith("DEBUG") or "parallel" in m][:20]
    return {
        "connections": connections,
        "hold_seconds": hold,
        "seconds": time.monotonic() - started,
        "warmup_seconds": warmup,
        "sessions_holding_at_start": stats.first_hold,
        "queries": queries.describe(),
        "explain": explain,
        "iterations": stats.iterations,
        "errors": stats.errors,
        "error_count": sum(stats.errors.values()),
        "reindex": reindex,
    }
