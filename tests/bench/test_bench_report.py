"""The benchmark's verdicts: the issue's targets, evaluated on results shaped like bench/run.py writes them."""

from __future__ import annotations

from typing import Any

import pytest

from bench.report import evaluate_targets


def config(build_s: float, p95_ms: float, recall: float, *, oom_kills: int = 0, stress: bool = True) -> dict[str, Any]:
    def phase(**extra: Any) -> dict[str, Any]:
        return {"memory": {"oom_kills": 0}, "log": {"crashes": 0}, **extra}

    efs = {ef: {"warm": {"p95_ms": p95_ms}, "recall": recall} for ef in ("40", "100")}
    phases = {
        "build": phase(seconds=build_s, error=None),
        "queries": phase(efs=efs),
        "pgbench": phase(),
    }
    if stress:
        phases["stress"] = {**phase(), "memory": {"oom_kills": oom_kills}}
    return {"phases": phases}


def verdicts(**configs: dict[str, Any]) -> dict[str, str]:
    return {t["name"]: t["status"] for t in evaluate_targets({"configs": configs})}


BUILD_UPSTREAM = {"ours' HNSW build >= 3x faster than upstream"}
BUILD_PGTUNE = {"ours' HNSW build >= 1.5x faster than pgtune"}
P95 = {f"ours' warm p95 (ef_search {ef}) within 10% of the best" for ef in ("40", "100")}
RECALL = {f"ours' recall@10 (ef_search {ef}) within 10% of the best" for ef in ("40", "100")}
OOM = {"zero OOM kills for ours, stress run included"}


def test_every_target_passes_on_results_that_meet_them() -> None:
    got = verdicts(
        upstream=config(90.0, 3.0, 0.99),
        pgtune=config(45.0, 1.60, 1.0),
        ours=config(15.0, 1.76, 0.90),  # p95 exactly 10 % behind, recall exactly 10 % behind
    )
    assert set(got.values()) == {"PASS"}
    assert len(got) == 7


@pytest.mark.parametrize(
    ("upstream_build", "ours", "failed"),
    [
        (84.0, config(29.0, 1.5, 1.0), BUILD_UPSTREAM),  # 84 / 29 = 2.90x, pgtune 45 / 29 = 1.55x
        (120.0, config(30.5, 1.5, 1.0), BUILD_PGTUNE),  # 45 / 30.5 = 1.48x, upstream 3.9x
        (90.0, config(15.0, 1.77, 1.0), P95),  # 10.6 % behind pgtune's 1.60
        (90.0, config(15.0, 1.5, 0.89), RECALL),  # 11 % behind pgtune's 1.0
        (90.0, config(15.0, 1.5, 1.0, oom_kills=1), OOM),
    ],
)
def test_each_target_fails_when_its_measurement_misses(
    upstream_build: float, ours: dict[str, Any], failed: set[str]
) -> None:
    got = verdicts(upstream=config(upstream_build, 3.0, 0.99), pgtune=config(45.0, 1.60, 1.0), ours=ours)
    assert {name for name, status in got.items() if status != "PASS"} == failed
    assert {got[name] for name in failed} == {"FAIL"}


def test_a_stress_run_that_never_happened_is_not_a_pass() -> None:
    got = verdicts(
        upstream=config(90.0, 3.0, 1.0), pgtune=config(45.0, 1.6, 1.0), ours=config(15.0, 1.5, 1.0, stress=False)
    )
    assert {got[name] for name in OOM} == {"N/A"}
