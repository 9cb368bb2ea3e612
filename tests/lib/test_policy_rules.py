"""Each policy rule with a resource it accepts and one it rejects; then the real stacks pass them all."""

from __future__ import annotations

from typing import Any

import pytest

from harness.mock_engine import StackRun
from lib.policy_rules import (
    CONTAINER,
    DISK,
    ELASTIC_IP,
    FIREWALL_RULE,
    IMAGE,
    INSTANCE,
    RDS_ENDPOINT_ADDRESS,
    RDS_INSTANCE,
    RDS_PUBLIC_CONNECTION,
    RULES,
    STACK_RULES,
    VOLUME,
    PolicyResource,
    evaluate,
)
from tools.offline_check import policy_resources


def resource(typ: str, props: dict[str, Any], *, stack: str = "prod", protect: bool = False) -> PolicyResource:
    return PolicyResource(type=typ, name="thing", urn=f"urn:pulumi:{stack}::memos::{typ}::thing", props=props,
                          protect=protect)  # fmt: skip


def rule_names(resources: list[PolicyResource]) -> list[str]:
    return [name for name, _ in evaluate(resources)]


GOOD_CONTAINER = {
    "memory": 512,
    "restart": "unless-stopped",
    "healthcheck": {"tests": ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:5230/healthz"]},
    "envs": ["MEMOS_DSN_FILE=/run/memos-secrets/dsn", "MEMOS_AI_DEEPSEEK_API_KEY_FILE=/run/x", "TZ=UTC"],
    "ports": [{"internal": 5432, "external": 25432, "ip": "127.0.0.1"}],
}


def rule(ports: str, *, cidr: str = "0.0.0.0/0", protocol: str = "tcp", **extra: str) -> PolicyResource:
    return resource(FIREWALL_RULE, {"portRange": ports, "cidrIp": cidr, "ipProtocol": protocol, **extra})


def container(**changes: Any) -> PolicyResource:
    return resource(CONTAINER, {**GOOD_CONTAINER, **changes})


WORLD = ["no-world-open-ssh-or-postgres"]
LIMITS = ["containers-have-limits"]
LOOPBACK = ["database-port-loopback-only"]
ENV = ["no-secret-env-in-clear"]
ALARMS = "prod-alarms-reach-someone"

CASES: list[tuple[str, PolicyResource, list[str]]] = [
    ("protected prod volume", resource(VOLUME, {}, protect=True), []),
    ("unprotected prod volume", resource(VOLUME, {}), ["stateful-resources-protected"]),
    ("unprotected prod disk", resource(DISK, {}), ["stateful-resources-protected"]),
    # A host alone in a prod stack also has no alarm contact: the stack rule sees that too.
    ("unprotected prod instance", resource(INSTANCE, {}), ["stateful-resources-protected", ALARMS]),
    ("unprotected prod address", resource(ELASTIC_IP, {}), ["stateful-resources-protected"]),
    ("unprotected dev volume", resource(VOLUME, {}, stack="dev"), []),
    ("ssh from an admin address", rule("22/22", cidr="203.0.113.7/32"), []),
    ("https from the world", rule("443/443"), []),
    ("ssh from the world", rule("22/22"), WORLD),
    ("postgres inside a world-open range", rule("5000/6000"), WORLD),
    ("all ports from the world over ipv6",
     resource(FIREWALL_RULE, {"portRange": "-1/-1", "ipv6CidrIp": "::/0", "ipProtocol": "all"}), WORLD),
    ("world-open egress", rule("22/22", type="egress"), []),
    ("a complete container", container(), []),
    ("no memory limit", container(memory=0), LIMITS),
    ("no restart policy", container(restart="no"), LIMITS),
    ("no healthcheck", container(healthcheck=None), LIMITS),
    ("healthcheck NONE", container(healthcheck={"tests": ["NONE"]}), LIMITS),
    ("database on every interface", container(ports=[{"internal": 5432, "external": 5432, "ip": "0.0.0.0"}]), LOOPBACK),
    ("database without an ip", container(ports=[{"internal": 5432, "external": 5432}]), LOOPBACK),
    ("app on every interface", container(ports=[{"internal": 5230, "external": 5230, "ip": "0.0.0.0"}]), []),
    ("api key in clear env", container(envs=["MEMOS_AI_OPENAI_API_KEY=sk-x"]), ENV),
    ("password in clear env", container(envs=["POSTGRES_PASSWORD=x"]), ENV),
    ("dsn in clear env", container(envs=["MEMOS_DSN=postgres://u:p@h/d"]), ENV),
    ("pinned image", resource(IMAGE, {"name": "pgvector/pgvector:0.8.6-pg18-trixie"}), []),
    ("digest-pinned image", resource(IMAGE, {"name": "hrygo/memos@sha256:" + "a" * 64}), []),
    ("latest image", resource(IMAGE, {"name": "hrygo/memos:latest"}), ["images-pinned"]),
    ("untagged image", resource(IMAGE, {"name": "caddy"}), ["images-pinned"]),
    ("rds from the vswitch", resource(RDS_INSTANCE, {"securityIps": ["172.16.1.0/24"]}, protect=True), []),
    ("rds from the world", resource(RDS_INSTANCE, {"securityIps": ["172.16.1.0/24", "0.0.0.0/0"]}, protect=True),
     ["rds-private-only"]),
    ("unprotected prod rds", resource(RDS_INSTANCE, {"securityIps": ["172.16.1.0/24"]}),
     ["stateful-resources-protected"]),
    ("rds public connection", resource(RDS_PUBLIC_CONNECTION, {"instanceId": "pgm-x"}), ["rds-private-only"]),
    ("rds public endpoint address", resource(RDS_ENDPOINT_ADDRESS, {"ipType": "Public"}), ["rds-private-only"]),
    ("rds private endpoint address", resource(RDS_ENDPOINT_ADDRESS, {"ipType": "Private"}), []),
]  # fmt: skip


@pytest.mark.parametrize(("case", "res", "expected"), CASES, ids=[c[0] for c in CASES])
def test_rule(case: str, res: PolicyResource, expected: list[str]) -> None:
    assert rule_names([res]) == expected, case


def test_every_rule_has_a_case_that_trips_it() -> None:
    tripped = {name for _, res, _ in CASES for name in rule_names([res])}
    assert tripped == {rule.name for rule in (*RULES, *STACK_RULES)}


def test_the_dev_and_prod_stacks_pass_every_rule(dev_run: StackRun, prod_run: StackRun) -> None:
    for run in (dev_run, prod_run):
        assert evaluate(policy_resources(run)) == []


def test_the_prod_stack_protects_every_stateful_resource(prod_run: StackRun) -> None:
    stateful = [r for r in policy_resources(prod_run) if r.type in (VOLUME, DISK, INSTANCE, ELASTIC_IP)]
    assert {r.name for r in stateful} >= {
        "volumes-database", "volumes-app", "host-data-disk", "host-instance", "host-public-ip"
    }  # fmt: skip
    assert all(r.protect for r in stateful)
