"""Memory budget for one small host, and the PostgreSQL settings that live inside it.

The host runs the OS, Docker, the Memos app, optionally a TLS proxy and a backup job, and the database.
The planner gives every one of them a fixed share, hands the rest to the database container, and then
splits that container limit between Postgres' shared memory, the HNSW index build, autovacuum and the
connections, so that the worst case provably fits:

    shared memory + maintenance_work_mem + autovacuum workers
    + max_connections x (2 x work_mem + backend overhead) + auxiliary processes + margin
    <= database container limit

Nothing here imports Pulumi: the program, the tests and the benchmark all call the same functions.
Formulas carry their source and caveat in their docstrings; constants that were measured say where.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from lib.errors import ConfigError

KIB_PER_MIB = 1024
#: The app stores and indexes `vector(1024)`: 4 bytes a dimension (a float4 each).
BYTES_PER_DIMENSION = 4
#: Bytes per element of pgvector's in-memory HNSW graph beyond the vector itself (m = 16).
#: Measured here on PostgreSQL 18.6 + pgvector 0.8.6: the server reports "hnsw graph no longer fits
#: into maintenance_work_mem after 6961 tuples" at 32 MiB for vector(1024) (4820 B per element):
#: 4 bytes per dimension plus about 720 bytes of neighbour lists and element header.
HNSW_ELEMENT_OVERHEAD_BYTES = 724
#: Private memory of one busy backend besides work_mem (catalog and plan caches, the HNSW scan's
#: candidate queues). The benchmark's stress run (docs/benchmark.md) held 27 sessions, each with a
#: sort and a hash at their work_mem limit, during a REINDEX: the cgroup's anonymous plus shared
#: memory left under 2 MiB per session beyond shared memory, the build and work_mem. Budgeted at 2x.
BACKEND_OVERHEAD_MIB = 4
#: Bytes per row of a finished HNSW index (m = 16): pgvector keeps each element and its neighbour
#: list on one 8 kB page, so a vector(1024) element (about 4.5 kB) takes a page of its own.
#: Measured: 40 000 vector(1024) rows -> 313 MiB.
HNSW_PAGE_BYTES = 8192
HNSW_INDEX_TUPLE_OVERHEAD_BYTES = 400
#: Background processes every cluster runs: checkpointer, background writer, WAL writer, autovacuum
#: launcher, logical replication launcher, I/O workers, and the postmaster itself.
AUX_PROCESS_MIB = 4
#: Sort and hash nodes budgeted per query. With hash_mem_multiplier = 1 a hash node is held to
#: work_mem like a sort, so a query with one sort and one hash stays within 2 x work_mem.
WORK_MEM_NODES_PER_QUERY = 2
MIN_WORK_MEM_KB = 1024
#: shared_buffers beyond its floor gives way (in 16 MiB steps) while work_mem would be below this:
#: sorts of the app's memo lists (ids and timestamps of thousands of rows) still fit in memory.
PREFERRED_WORK_MEM_KB = 1536
MIN_DATABASE_LIMIT_MIB = 384


@dataclass(frozen=True)
class Host:
    """The machine the containers share."""

    vcpus: int
    memory_mib: int


@dataclass(frozen=True)
class Reserves:
    """Memory that is not the database's: the OS, Docker, and every other container's limit."""

    os_mib: int
    docker_mib: int
    app_mib: int
    proxy_mib: int
    backup_mib: int

    @property
    def total_mib(self) -> int:
        return self.os_mib + self.docker_mib + self.app_mib + self.proxy_mib + self.backup_mib


@dataclass(frozen=True)
class Workload:
    """What the database has to hold: the embeddings and the app's connections."""

    expected_embeddings: int
    max_connections: int
    dimensions: int = 1024


def round_down(value: float, step: int) -> int:
    return int(value // step * step)


def round_up(value: float, step: int) -> int:
    return int(math.ceil(value / step) * step)


def database_limit_mib(host: Host, reserves: Reserves) -> int:
    """The database container's memory limit: what the host has left after everyone else.

    Formula: host memory - (OS + Docker + app + proxy + backup).
    Source: the upstream compose split (Postgres 512M, app 1G, "512M left for the OS") made explicit
    and computed instead of fixed. Caveat: the OS reserve must cover what the kernel keeps for itself
    (a 2 GiB cloud instance reports less than 2048 MiB as MemTotal) and the cloud vendor's agents.
    """
    return host.memory_mib - reserves.total_mib


def hnsw_build_mib(workload: Workload) -> int:
    """maintenance_work_mem that holds the whole HNSW graph of the expected rows while it is built.

    Formula: rows x (dimensions x 4 B + 724 B) x 1.10, rounded up to 16 MiB.
    Source: pgvector builds the graph in memory and falls back to a much slower on-disk insert path
    once it outgrows maintenance_work_mem (measured 3-4x slower); the per-element size was measured
    on this project's PostgreSQL 18.6 + pgvector 0.8.6 (see HNSW_ELEMENT_OVERHEAD_BYTES).
    Caveat: valid for m = 16 (the app's index); the 10 % margin covers growth past the estimate,
    not a larger m. The build only happens on CREATE INDEX / REINDEX, i.e. on a restore.
    """
    element = workload.dimensions * BYTES_PER_DIMENSION + HNSW_ELEMENT_OVERHEAD_BYTES
    return max(64, round_up(workload.expected_embeddings * element * 1.10 / (1024 * 1024), 16))


def hnsw_index_mib(workload: Workload) -> int:
    """Size of the app's finished HNSW index on disk.

    Formula: rows / floor(8000 B / (dimensions x 4 B + 400 B)) pages of 8 kB.
    Source: pgvector stores an element with its neighbour list on one page; measured here with
    40 000 vector(1024) rows: 313 MiB, one row per page. Caveat: m = 16; a larger m grows the
    neighbour lists, and two tables (memo, memo_embedding) each have their own index.
    """
    per_page = max(1, 8000 // (workload.dimensions * BYTES_PER_DIMENSION + HNSW_INDEX_TUPLE_OVERHEAD_BYTES))
    return math.ceil(workload.expected_embeddings / per_page * HNSW_PAGE_BYTES / (1024 * 1024))


def shared_buffers_mib(limit_mib: int, workload: Workload) -> int:
    """Postgres' own page cache: the HNSW index and the table pages that queries touch.

    Formula: the index size x 1.25, rounded up to 16 MiB, but at least 20 % and at most 40 % of the
    database container limit (rounded down to 16 MiB).
    Source: the PostgreSQL manual's starting point of 25 % of RAM for a dedicated server (PGTune:
    RAM / 4), and pgvector's advice that HNSW queries are fast while the index stays in memory. The
    extra quarter is for the table: to evaluate the query's `ORDER BY embedding <=> $1`, the
    executor detoasts the embedding of every row the index returns, so searches also read the
    vectors' TOAST pages. Measured on PostgreSQL 18.6 + pgvector 0.8.6 (pg_buffercache), 800 top-10
    searches over 40 000 rows touched the 313 MiB index plus 65 MiB of TOAST; an earlier plan of the
    index x 1.05 (336 MB) kept a warm hit ratio of 96-97 % and a warm p95 up to 20 % behind a
    512 MB cache, which reached 100 %. Capped at 40 % because the container limit is not the machine: the page
    cache for the data files is charged to the same cgroup, and the limit must also carry the HNSW
    build and every backend. Caveat: as the distinct results grow towards the whole table, more of
    the TOAST is served from the page cache (a copy per page, still no disk read while it fits).
    """
    floor = shared_buffers_floor_mib(limit_mib)
    cap = max(floor, round_down(limit_mib * 0.40, 16))
    return min(cap, max(floor, round_up(hnsw_index_mib(workload) * 1.25, 16)))


def shared_buffers_floor_mib(limit_mib: int) -> int:
    """The least shared_buffers the planner gives: 20 % of the container limit (rounded down to
    16 MiB), at least 32 MiB. Source: below PGTune's 25 %, so that a small container keeps room
    for connections. Caveat: on such a floor the index is served largely from the page cache."""
    return max(32, round_down(limit_mib * 0.20, 16))


def wal_buffers_mib(shared_buffers: int) -> int:
    """WAL buffers, as the server would pick them for wal_buffers = -1, but made explicit.

    Formula: shared_buffers / 32, between 1 and 16 MiB (PostgreSQL's own rule for -1).
    Caveat: rendering it explicitly keeps the shared-memory arithmetic exact.
    """
    return int(min(16, max(1, shared_buffers // 32)))


def shared_memory_mib(shared_buffers: int, wal_buffers: int, max_connections: int) -> int:
    """Upper estimate of the server's whole shared memory segment.

    Formula: shared_buffers + wal_buffers + 16 MiB + 0.25 MiB per connection slot, rounded up.
    Source: `postgres -C shared_memory_size` on PostgreSQL 18 adds about 10 MiB plus lock and
    process tables to shared_buffers; the test suite asserts this estimate is never below the value
    the real server reports for the rendered settings. Caveat: pg_stat_statements or other preloaded
    libraries would add to it; none are loaded.
    """
    return math.ceil(shared_buffers + wal_buffers + 16 + 0.25 * max_connections)


def autovacuum_workers(vcpus: int) -> int:
    """Concurrent autovacuum workers.

    Formula: 2 on hosts with up to 2 vCPUs, else 3 (PostgreSQL's default).
    Caveat: fewer workers means a table waits longer for its vacuum on a busy day, not data loss.
    """
    return 2 if vcpus <= 2 else 3


#: Memory per autovacuum worker for dead-tuple tracking. PostgreSQL 17+ stores dead TIDs compactly,
#: so 32 MiB covers millions of dead rows, far beyond a personal notes database.
AUTOVACUUM_WORK_MEM_MIB = 32


@dataclass(frozen=True)
class MemoryPlan:
    """The container limits and Postgres settings for one host and workload."""

    host: Host
    reserves: Reserves
    workload: Workload
    database_limit_mib: int
    shared_buffers_mib: int
    wal_buffers_mib: int
    shared_memory_mib: int
    maintenance_work_mem_mib: int
    work_mem_kb: int
    autovacuum_max_workers: int
    autovacuum_work_mem_mib: int
    max_parallel_maintenance_workers: int
    shm_size_mib: int
    effective_cache_size_mib: int
    io_workers: int
    margin_mib: int

    @property
    def max_connections(self) -> int:
        return self.workload.max_connections

    def worst_case(self) -> dict[str, float]:
        """Every term of the worst case, in MiB, each bounded by a setting the server enforces."""
        conns = self.workload.max_connections
        return {
            "shared memory": float(self.shared_memory_mib),
            "maintenance_work_mem": float(self.maintenance_work_mem_mib),
            "parallel maintenance workers": float(self.max_parallel_maintenance_workers * BACKEND_OVERHEAD_MIB),
            "autovacuum": float(self.autovacuum_max_workers * (self.autovacuum_work_mem_mib + BACKEND_OVERHEAD_MIB)),
            "connections": conns * (WORK_MEM_NODES_PER_QUERY * self.work_mem_kb / KIB_PER_MIB + BACKEND_OVERHEAD_MIB),
            "auxiliary processes": float((6 + self.io_workers) * AUX_PROCESS_MIB),
            "margin": float(self.margin_mib),
        }

    def worst_case_mib(self) -> float:
        return sum(self.worst_case().values())

    def postgres_settings(self) -> dict[str, str]:
        """The server settings, in the order they are rendered as `-c` flags."""
        return {
            "max_connections": str(self.workload.max_connections),
            "shared_buffers": f"{self.shared_buffers_mib}MB",
            "effective_cache_size": f"{self.effective_cache_size_mib}MB",
            "maintenance_work_mem": f"{self.maintenance_work_mem_mib}MB",
            "work_mem": f"{self.work_mem_kb}kB",
            "hash_mem_multiplier": "1.0",
            "autovacuum_max_workers": str(self.autovacuum_max_workers),
            "autovacuum_work_mem": f"{self.autovacuum_work_mem_mib}MB",
            # One parallel worker for index builds and none for queries: on two shared vCPUs a
            # parallel query competes with the app, and every worker would add its own work_mem.
            "max_worker_processes": "4",
            "max_parallel_workers": str(self.max_parallel_maintenance_workers),
            "max_parallel_maintenance_workers": str(self.max_parallel_maintenance_workers),
            "max_parallel_workers_per_gather": "0",
            # The embeddings live in TOAST, so the heap the planner sizes a parallel index build by
            # is a few MB and below the default 8 MB threshold: without this, CREATE INDEX (a
            # restore, a REINDEX) never gets its worker. Queries stay serial (per_gather = 0).
            "min_parallel_table_scan_size": "0",
            # PostgreSQL 18 asynchronous I/O: io_uring is blocked by Docker's default seccomp profile.
            "io_method": "worker",
            "io_workers": str(self.io_workers),
            "effective_io_concurrency": "32",
            "maintenance_io_concurrency": "32",
            "wal_buffers": f"{self.wal_buffers_mib}MB",
            "min_wal_size": "256MB",
            "max_wal_size": "1GB",
            "checkpoint_timeout": "15min",
            "checkpoint_completion_target": "0.9",
            # JIT pays off for long analytical queries, not for the app's short ones, and costs
            # memory per backend.
            "jit": "off",
            # No huge pages are reserved on the host; "try" would only attempt and fall back.
            "huge_pages": "off",
            # Cloud SSDs: random reads cost about as much as sequential ones.
            "random_page_cost": "1.1",
            "idle_in_transaction_session_timeout": "10min",
        }

    def command_flags(self) -> list[str]:
        flags: list[str] = []
        for key, value in self.postgres_settings().items():
            flags += ["-c", f"{key}={value}"]
        return flags


def plan_memory(host: Host, reserves: Reserves, workload: Workload) -> MemoryPlan:
    """Split the host's memory and size Postgres inside its share; raise ConfigError if it cannot fit.

    work_mem is whatever is left once everything else is committed:
        work_mem = (limit - committed) / (max_connections x 2), rounded down to 64 kB,
    and must be at least 1 MiB. While it would be below PREFERRED_WORK_MEM_KB, shared_buffers gives
    way in 16 MiB steps down to its floor: the HNSW build comes first (it is what makes a restore
    or a REINDEX take seconds rather than minutes), then a usable work_mem, then the cache. If even
    1 MiB does not fit, the key to change is the one whose demand does not fit: the expected
    embeddings when the HNSW build alone leaves too little, the connections otherwise.
    """
    limit = database_limit_mib(host, reserves)
    if limit < MIN_DATABASE_LIMIT_MIB:
        raise ConfigError(
            "hostMemoryMb",
            f"{host.memory_mib} MiB leaves {limit} MiB for PostgreSQL after the OS ({reserves.os_mib}), "
            f"Docker ({reserves.docker_mib}), the app ({reserves.app_mib}), the proxy ({reserves.proxy_mib}) "
            f"and backups ({reserves.backup_mib}); it needs at least {MIN_DATABASE_LIMIT_MIB} MiB: "
            "lower memos:appMemoryMb or choose a larger instance",
        )
    maintenance = hnsw_build_mib(workload)

    def without_work_mem(sb: int) -> MemoryPlan:
        """Everything but work_mem, for a given shared_buffers; work_mem then gets what is left."""
        wal = wal_buffers_mib(sb)
        return MemoryPlan(
            host=host,
            reserves=reserves,
            workload=workload,
            database_limit_mib=limit,
            shared_buffers_mib=sb,
            wal_buffers_mib=wal,
            shared_memory_mib=shared_memory_mib(sb, wal, workload.max_connections),
            maintenance_work_mem_mib=maintenance,
            work_mem_kb=0,
            autovacuum_max_workers=autovacuum_workers(host.vcpus),
            autovacuum_work_mem_mib=AUTOVACUUM_WORK_MEM_MIB,
            max_parallel_maintenance_workers=1 if host.vcpus >= 2 else 0,
            shm_size_mib=shm_size_mib(maintenance),
            effective_cache_size_mib=effective_cache_size_mib(limit),
            io_workers=max(2, min(4, host.vcpus)),
            margin_mib=round_up(limit * 0.05, 1),
        )

    per_connection_kb = workload.max_connections * WORK_MEM_NODES_PER_QUERY

    def work_mem_left(plan: MemoryPlan) -> int:
        spare_kb = (limit - plan.worst_case_mib()) * KIB_PER_MIB
        return round_down(spare_kb / per_connection_kb, 64) if spare_kb > 0 else 0

    sb = shared_buffers_mib(limit, workload)
    floor = shared_buffers_floor_mib(limit)
    base = without_work_mem(sb)
    work_mem_kb = work_mem_left(base)
    while work_mem_kb < PREFERRED_WORK_MEM_KB and sb - 16 >= floor:
        sb -= 16
        base = without_work_mem(sb)
        work_mem_kb = work_mem_left(base)
    if work_mem_kb < MIN_WORK_MEM_KB:
        smallest_build = replace(base, maintenance_work_mem_mib=64)
        if (limit - smallest_build.worst_case_mib()) * KIB_PER_MIB >= per_connection_kb * MIN_WORK_MEM_KB:
            raise ConfigError(
                "expectedEmbeddings",
                f"{workload.expected_embeddings} vector({workload.dimensions}) rows need {maintenance} MiB for "
                f"an in-memory HNSW build (4.8 KB each), which does not fit the {limit} MiB database container "
                f"next to {workload.max_connections} connections; choose a larger memos:instanceType, lower "
                "memos:expectedEmbeddings, or move the database to ApsaraDB RDS (memos:database rds)",
            )
        raise ConfigError(
            "dbMaxConnections",
            f"{workload.max_connections} connections cannot each get 2 x 1 MiB of work_mem inside the "
            f"{limit} MiB database container; lower memos:dbMaxConnections, choose a larger "
            "memos:instanceType, or move the database to ApsaraDB RDS (memos:database rds)",
        )
    return replace(base, work_mem_kb=work_mem_kb)


def app_share_without_database(host: Host, reserves: Reserves) -> int:
    """The app's memory limit when the database runs elsewhere (ApsaraDB RDS): everything left.

    Formula: host memory - (OS + Docker + proxy); no database container and no dump container run,
    so their shares go to the app. `reserves.app_mib` (memos:appMemoryMb) is the least the app must
    get. Caveat: the app itself is small (tens of MB steady), so most of this is headroom for its
    spikes on image processing, not a working set.
    """
    app = host.memory_mib - reserves.os_mib - reserves.docker_mib - reserves.proxy_mib
    if app < reserves.app_mib:
        raise ConfigError(
            "appMemoryMb",
            f"{reserves.app_mib} MiB does not fit a {host.memory_mib} MiB host next to the OS ({reserves.os_mib}), "
            f"Docker ({reserves.docker_mib}) and the proxy ({reserves.proxy_mib}), which leave {app} MiB; "
            "lower memos:appMemoryMb or choose a larger memos:instanceType",
        )
    return app


def shm_size_mib(maintenance_work_mem: int) -> int:
    """Size of the container's /dev/shm.

    Formula: maintenance_work_mem + 64 MiB, rounded up to 16 MiB.
    Source: a parallel HNSW build places its whole graph (maintenance_work_mem) in dynamic shared
    memory, which is /dev/shm; Docker's default of 64 MiB makes such a build fail with "could not
    resize shared memory segment". Caveat: /dev/shm is a limit, not a reservation; its pages count
    against the container's memory limit only when used, and they are part of maintenance_work_mem.
    """
    return round_up(maintenance_work_mem + 64, 16)


def effective_cache_size_mib(limit_mib: int) -> int:
    """The planner's estimate of how much of the data can be cached (shared_buffers + page cache).

    Formula: 75 % of the database container limit, rounded down to 16 MiB.
    Source: PGTune's RAM x 3/4, applied to the container, because the page cache that serves this
    database is charged to (and capped by) the container's cgroup. Caveat: a hint only; it
    allocates nothing.
    """
    return round_down(limit_mib * 0.75, 16)
