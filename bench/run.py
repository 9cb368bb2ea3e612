"""Benchmark PostgreSQL configurations for the app's vector workload inside the database container's limit.

    uv run python -m bench.run            # full run, writes docs/benchmark.{md,json,png}
    uv run python -m bench.run --quick    # smoke test, writes bench/.work/quick/

Needs root (cgroup v1 memory groups under /sys/fs/cgroup/memory) and numpy + matplotlib.
Every configuration gets a fresh cluster in its own cgroup with the same limit: the memory the
Pulumi program gives the database container for the prod stack.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shlex
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import report, workload
from bench.configs import ALL, BenchConfig, configurations, prod_deployment
from bench.data import make_dataset
from bench.monitor import CpuMeter, KernelLog, LogWatcher, MemorySampler
from harness.pg_server import CGROUP_ROOT, MemoryCgroup, PostgresServer
from lib.database_sql import INIT_SQL

ROOT = Path(__file__).resolve().parent.parent
MIN_ROWS = 30_000
EFS = (40, 100)
PASSWORD = "bench-superuser-password"  # noqa: S105 (a throwaway local cluster)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rows", type=int, help="embedding rows to load (default 40000; quick: 2000)")
    parser.add_argument("--queries", type=int, help="query vectors per pass (default 800; quick: 40)")
    parser.add_argument(
        "--repeats", type=int, help="interleaved warm rounds per ef_search, medians reported (default 9; quick: 2)"
    )
    parser.add_argument(
        "--build-repeats", type=int, help="HNSW builds per configuration, median reported (default 3; quick: 1)"
    )
    parser.add_argument("--pgbench-seconds", type=int, help="mixed pgbench duration (default 30; quick: 5)")
    parser.add_argument(
        "--stress-seconds",
        type=int,
        help="stress run length; it goes on until the REINDEX ends, at most 4x (default 45; quick: 8)",
    )
    parser.add_argument("--hold-seconds", type=float, default=5.0, help="how long each stress session holds its memory")
    parser.add_argument("--configs", default=",".join(ALL), help=f"comma-separated subset of {','.join(ALL)}")
    parser.add_argument("--out", type=Path, help="output directory (default docs/; quick: bench/.work/quick)")
    parser.add_argument("--quick", action="store_true", help="small data and short phases, for a smoke test")
    parser.add_argument("--seed", type=int, default=20251124)
    parser.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="only rewrite benchmark.md and benchmark.png next to an existing benchmark.json",
    )
    parser.add_argument(
        "--noisy-retries",
        type=int,
        default=2,
        help="measure build, queries and pgbench again (up to this often) when other work used the CPU meanwhile",
    )
    parser.add_argument(
        "--max-quiet-wait",
        type=float,
        default=300.0,
        help="before each phase, wait up to this many seconds for other work on the machine to stop (0: never)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "rows": (2000, 40_000),
        "queries": (40, 800),
        "repeats": (2, 9),
        "build_repeats": (1, 3),
        "pgbench_seconds": (5, 30),
        "stress_seconds": (8, 45),
    }
    for key, (small, full) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, small if quick else full)
    if args.out is None:
        args.out = ROOT / ("bench/.work/quick" if quick else "docs")
    names = tuple(n.strip() for n in args.configs.split(",") if n.strip())
    unknown = [n for n in names if n not in ALL]
    if unknown or not names:
        parser.error(f"--configs: unknown {unknown}; choose from {','.join(ALL)}")
    args.config_names = tuple(n for n in ALL if n in names)
    if (
        args.build_repeats < 1
        or args.repeats < 1
        or args.queries < 1
        or args.pgbench_seconds < 1
        or args.stress_seconds < 1
    ):
        parser.error("--repeats, --queries, --pgbench-seconds and --stress-seconds must be positive")
    if not quick and args.rows < MIN_ROWS:
        parser.error(f"--rows must be at least {MIN_ROWS} (use --quick for a smoke test)")
    return args


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    import os  # noqa: PLC0415

    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "mem_total_mib": mem_kb // 1024,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


class ConfigRun:
    """One configuration's server in its own memory group, measured phase by phase.

    The phases run in two stages: `prepare` (load, build, queries) and, after the interleaved warm
    queries over every configuration, `finish` (pgbench, stress). The warm queries thus meet every
    server in the same state: freshly built index, no pgbench updates, no stress-run REINDEX and no
    crash recovery (which the stress run causes where a configuration does not fit its limit).
    """

    def __init__(self, cfg: BenchConfig, args: argparse.Namespace, limit_mib: int) -> None:
        self.cfg = cfg
        self.args = args
        self.result: dict[str, Any] = {
            "description": cfg.description,
            "settings": cfg.settings,
            "phases": {},
            "errors": [],
        }
        self.cgroup = MemoryCgroup(f"memos-bench-{cfg.name}", limit_mib)
        self.server = PostgresServer(cfg.settings, superuser_password=PASSWORD, cgroup=self.cgroup)
        self.cpu = CpuMeter(self.cgroup)
        self.sampler = MemorySampler(self.cgroup, cpu=self.cpu)
        self.watcher = LogWatcher(self.server.log_path)  # reset once the server is up
        self.kernel = KernelLog()
        self.max_connections = 0
        self.seconds = 0.0
        self.ready = False

    # -- stages ----------------------------------------------------------------------------------

    def prepare(self, dataset: Any) -> None:
        """Start the server, then load, build and query; on any setup failure the server is dropped."""
        started = time.monotonic()
        server = self.server
        try:
            self.cgroup.create()
            server.initdb()
            server.start()
            server.setup_database(INIT_SQL)
            self.watcher = LogWatcher(server.log_path)
            facts = workload.server_facts(server)
            self.result["facts"] = facts
            self.max_connections = int(facts["shown"]["max_connections"])
            self.sampler.start()
            self.phase("load", lambda: workload.load(server, dataset))
            self.phase(
                "build",
                lambda: workload.build(server, repeats=self.args.build_repeats, server_cpu=self.cpu.server_seconds),
                redo=lambda: workload.drop_index(server),
            )
            self.phase(
                "queries",
                lambda: workload.queries(server, dataset, efs=EFS, repeats=self.args.repeats),
                redo=lambda: None,
            )
            self.ready = server.running
        except Exception as exc:
            self.fail(exc)
        self.seconds += time.monotonic() - started

    def finish(self, dataset: Any, app_clients: int) -> None:
        """The mixed pgbench run at the app's connection count, then the stress run at max_connections."""
        started = time.monotonic()
        server = self.server
        try:
            if self.ready:
                facts = self.result["facts"]
                clients = min(app_clients, self.max_connections - 3)
                self.phase(
                    "pgbench",
                    lambda: workload.pgbench(server, dataset, clients=clients, seconds=self.args.pgbench_seconds),
                    redo=lambda: None,
                )
                self.phase(
                    "stress",
                    lambda: workload.stress(
                        server,
                        connections=self.max_connections - 3,
                        seconds=self.args.stress_seconds,
                        work_mem_kb=facts["work_mem_kb"],
                        hash_mem_multiplier=facts["hash_mem_multiplier"],
                        hold=self.args.hold_seconds,
                    ),
                    timeline=True,
                )
        except Exception as exc:
            self.fail(exc)
        self.seconds += time.monotonic() - started

    def close(self) -> dict[str, Any]:
        """Stop the server, remove its groups and total the OOM kills and crashes of every attempt."""
        self.sampler.stop()
        self.server.cleanup()
        self.cgroup.remove()
        self.cpu.remove()
        result = self.result
        runs = [run for p in result["phases"].values() for run in [p, *p.get("noisy_attempts", [])]]
        result["oom_kills_total"] = sum(run["memory"]["oom_kills"] for run in runs)
        result["crashes_total"] = sum(run["log"]["crashes"] for run in runs)
        result["wall_seconds"] = self.seconds
        return result

    def fail(self, exc: Exception) -> None:
        self.result["errors"].append(f"setup: {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}")
        self.ready = False
        log(f"{self.cfg.name}: FAILED {exc}")

    # -- phases ----------------------------------------------------------------------------------

    def attempt(self, name: str, body: Callable[[], dict[str, Any]], timeline: bool) -> dict[str, Any]:
        args, cpu, server = self.args, self.cpu, self.server
        waited = cpu.wait_for_quiet(max_wait=args.max_quiet_wait) if args.max_quiet_wait > 0 else 0.0
        if waited > 5:
            log(f"{self.cfg.name}: waited {waited:.0f} s for other work on the machine to finish")
        log(f"{self.cfg.name}: {name}")
        out: dict[str, Any] = {}
        postmaster = server.pid
        before = cpu.snapshot()
        with self.sampler.phase() as memory:
            try:
                out = body()
            except Exception as exc:  # record and go on: a crash in one phase is a result
                out = {"failed": f"{type(exc).__name__}: {str(exc).strip()[:300]}"}
                self.result["errors"].append(f"{name}: {traceback.format_exc(limit=3)}")
        programs = float(out.get("client_program_cpu_s") or 0.0)
        out["cpu"] = {
            **CpuMeter.between(before, cpu.snapshot(), client_programs=programs),
            "quiet_wait_s": round(waited, 1),
        }
        out["memory"] = memory.as_dict(with_timeline=timeline)
        events = self.watcher.events(running=server.running)
        out["log"] = events.as_dict()
        victims = self.kernel.victims(self.cgroup.name, postmaster)
        for victim in victims or []:
            victim["process"] = "postmaster" if victim["postmaster"] else events.killed.get(victim["pid"], "?")
        out["oom_victims"] = victims
        summary = {k: v for k, v in out.items() if isinstance(v, (int, float, str)) or v is None}
        log(f"{self.cfg.name}: {name} -> {summary} mem={out['memory']} cpu={out['cpu']} crashes={events.crashes}")
        return out

    def phase(
        self,
        name: str,
        body: Callable[[], dict[str, Any]],
        *,
        timeline: bool = False,
        redo: Callable[[], object] | None = None,
    ) -> None:
        """Run a phase; if other work on the machine used CPU meanwhile and `redo` can reset the
        state, run it again (up to --noisy-retries times). Earlier attempts stay in the JSON."""
        server = self.server
        noisy: list[dict[str, Any]] = []
        while True:
            out = self.attempt(name, body, timeline)
            clean = out["cpu"]["other_cores"] <= report.NOISY_CORES
            broken = "failed" in out or out["log"]["crashes"] or out["memory"]["oom_kills"]
            if clean or broken or redo is None or len(noisy) >= self.args.noisy_retries or not server.running:
                break
            log(f"{self.cfg.name}: {name} shared the CPU with other work; measuring it again")
            noisy.append(out)
            redo()
        if noisy:
            out["noisy_attempts"] = noisy
        self.result["phases"][name] = out
        if not server.running:
            log(f"{self.cfg.name}: postmaster is gone; starting it again")
            try:
                server.stop()
                server.start()
            except Exception as exc:
                self.result["errors"].append(f"restart after {name}: {exc}")


def warm_in_alternation(runs: dict[str, ConfigRun], dataset: Any, rounds: int) -> None:
    """Warm latency of every prepared configuration, measured in alternation; merged into its results.

    A CHECKPOINT first, on every server, so that no configuration's queries share the CPU and the disk
    with the writeback of its own index build.
    """
    ready = {name: run for name, run in runs.items() if run.ready and run.server.running}
    if not ready:
        return
    for run in ready.values():
        with workload.connect(run.server) as conn:
            conn.execute("CHECKPOINT")
    log(f"=== warm queries, {rounds} interleaved rounds over {', '.join(ready)}")
    warm = workload.interleaved_warm({n: r.server for n, r in ready.items()}, dataset, efs=EFS, rounds=rounds)
    for name, by_ef in warm.items():
        for ef, measured in by_ef.items():
            entry = ready[name].result["phases"]["queries"]["efs"][ef]
            entry["sequential"] = {k: entry.pop(k) for k in ("warm_runs", "warm", "warm_buffers") if k in entry}
            entry.update(measured)
            log(f"{name}: ef_search {ef} warm {measured['warm']}")


def render(path: Path) -> None:
    """Rewrite the markdown and the chart from a results file, targets included."""
    data = json.loads(path.read_text())
    data["targets"] = report.evaluate_targets(data)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    report.write_chart(data, path.parent / "benchmark.png")
    (path.parent / "benchmark.md").write_text(report.markdown(data))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render is not None:
        render(args.render)
        log(f"rewrote {args.render.parent}/benchmark.md and benchmark.png")
        return 0
    if not CGROUP_ROOT.is_dir():
        print(
            f"{CGROUP_ROOT} is missing: the benchmark needs cgroup v1's memory controller (and root)", file=sys.stderr
        )
        return 2
    began = time.monotonic()
    started_utc = dt.datetime.now(dt.UTC)
    log("rendering the prod stack through the mock engine")
    prod = prod_deployment()
    if not args.quick and args.rows < prod.expected_embeddings:
        print(
            f"--rows must be at least the planner's expected embeddings ({prod.expected_embeddings})", file=sys.stderr
        )
        return 2
    limit = prod.memory_mib
    app_clients = prod.max_connections - 3
    log(f"database container limit {limit} MiB; app clients {app_clients}; generating {args.rows} vectors")
    dataset = make_dataset(args.rows, args.queries, seed=args.seed)
    runs: dict[str, ConfigRun] = {}
    try:
        for cfg in configurations(prod.settings, args.config_names):
            log(f"=== {cfg.name}: {cfg.description}")
            # Created only now, so that each new server's port is chosen while the others listen.
            runs[cfg.name] = run = ConfigRun(cfg, args, limit)
            run.prepare(dataset)
        warm_in_alternation(runs, dataset, args.repeats)
        for name, run in runs.items():
            log(f"=== {name}: pgbench and stress")
            run.finish(dataset, app_clients)
    finally:
        results = {name: run.close() for name, run in runs.items()}
    facts = next((r["facts"] for r in results.values() if "facts" in r), {})
    canonical = "uv run python -m bench.run" + (" --quick" if args.quick else "")
    given = argv if argv is not None else sys.argv[1:]
    data: dict[str, Any] = {
        "meta": {
            "command": canonical,
            "invoked_as": "uv run python -m bench.run " + shlex.join(given) if given else canonical,
            "started_utc": started_utc.isoformat(timespec="seconds"),
            "duration_seconds": None,
            "machine": machine(),
            "postgres_version": facts.get("server_version"),
            "pgvector_version": facts.get("pgvector_version"),
            "cgroup_limit_mib": limit,
            "shm_size_mib": prod.shm_size_mib,
            "planner": {"expected_embeddings": prod.expected_embeddings, "max_connections": prod.max_connections},
            "quick": args.quick,
            "rows": args.rows,
            "queries": args.queries,
            "repeats": args.repeats,
            "build_repeats": args.build_repeats,
            "efs": list(EFS),
            "pgbench_seconds": args.pgbench_seconds,
            "pgbench_clients": app_clients,
            "stress_seconds": args.stress_seconds,
            "stress_hold_seconds": args.hold_seconds,
            "max_quiet_wait_seconds": args.max_quiet_wait,
            "noisy_retries": args.noisy_retries,
            "dataset": {
                "clusters": dataset.clusters,
                "seed": dataset.seed,
                "dimensions": int(dataset.vectors.shape[1]),
            },
        },
        "configs": results,
    }
    data["targets"] = report.evaluate_targets(data)
    data["meta"]["duration_seconds"] = round(time.monotonic() - began, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmark.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    report.write_chart(data, args.out / "benchmark.png")
    (args.out / "benchmark.md").write_text(report.markdown(data))
    log(f"wrote {args.out}/benchmark.md, .json, .png in {data['meta']['duration_seconds']} s")
    for target in data["targets"]:
        log(f"target {target['status']}: {target['name']} ({target['detail']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
