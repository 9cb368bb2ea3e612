"""The four PostgreSQL configurations the benchmark compares, all inside the same memory limit."""

from __future__ import annotations

from dataclasses import dataclass

from harness.mock_engine import run_program

#: The prod stack needs both AI keys to render; their values never reach the database.
PROD_SECRETS = {"siliconflowApiKey": "bench-placeholder", "deepseekApiKey": "bench-placeholder"}

UPSTREAM = {
    "shared_buffers": "128MB",
    "effective_cache_size": "384MB",
    "maintenance_work_mem": "32MB",
    "work_mem": "4MB",
    "max_connections": "50",
}

#: PGTune (le0pard/pgtune) for PostgreSQL, Linux, "Web application", 2 GB RAM, 2 CPUs, SSD, with
#: 100 connections entered: see docs/benchmark.md for which of these its published formulas give.
PGTUNE = {
    "max_connections": "100",
    "shared_buffers": "512MB",
    "effective_cache_size": "1536MB",
    "maintenance_work_mem": "128MB",
    "checkpoint_completion_target": "0.9",
    "wal_buffers": "16MB",
    "default_statistics_target": "100",
    "random_page_cost": "1.1",
    "effective_io_concurrency": "200",
    "work_mem": "4854kB",
    "huge_pages": "off",
    "min_wal_size": "1GB",
    "max_wal_size": "4GB",
    "max_worker_processes": "2",
    "max_parallel_workers_per_gather": "1",
    "max_parallel_workers": "2",
    "max_parallel_maintenance_workers": "1",
}

DESCRIPTIONS = {
    "defaults": "PostgreSQL defaults (initdb's postgresql.conf; only the harness's port/socket/listen flags)",
    "upstream": "the upstream compose file's values",
    "pgtune": "PGTune: web application, 2 GB, 2 CPUs, SSD, 100 connections",
    "ours": "the flags the Pulumi program renders for the prod stack",
}
ALL = ("defaults", "upstream", "pgtune", "ours")


@dataclass(frozen=True)
class BenchConfig:
    name: str
    description: str
    settings: dict[str, str]


@dataclass(frozen=True)
class Deployment:
    """What the program deploys for prod: the database command and container limit, and the planner's inputs."""

    settings: dict[str, str]
    memory_mib: int
    shm_size_mib: int | None
    expected_embeddings: int
    max_connections: int


def prod_deployment() -> Deployment:
    run = run_program("prod", secrets=PROD_SECRETS)
    server = run.by_name("database-server")
    command = list(server.inputs["command"])
    if command[0] != "postgres" or command[1::2] != ["-c"] * (len(command) // 2):
        raise RuntimeError(f"unexpected database command: {command}")
    settings = dict(pair.split("=", 1) for pair in command[2::2])
    shm = server.inputs.get("shmSize")
    return Deployment(
        settings=settings,
        memory_mib=int(server.inputs["memory"]),
        shm_size_mib=int(shm) if shm is not None else None,
        expected_embeddings=int(run.config["memos:expectedEmbeddings"]),
        max_connections=int(settings["max_connections"]),
    )


def configurations(ours: dict[str, str], names: tuple[str, ...] = ALL) -> list[BenchConfig]:
    table = {"defaults": {}, "upstream": UPSTREAM, "pgtune": PGTUNE, "ours": ours}
    return [BenchConfig(name, DESCRIPTIONS[name], dict(table[name])) for name in names]
