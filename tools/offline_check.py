"""Offline check for pull requests without cloud credentials (and for anyone before `pulumi up`).

Runs every stack config (Pulumi.<stack>.yaml) through the program on Pulumi's mock engine with
placeholder secrets, evaluates the policy rules of the policy pack on the resulting resources,
checks the memory budget, prints a summary, and exits 1 on any violation.

    uv run python -m tools.offline_check          # every stack
    uv run python -m tools.offline_check prod     # one stack
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import pulumi

from harness.mock_engine import MOCK_ECS_OFFER, ROOT, StackRun, run_program, stack_config
from lib.config_reader import ConfigValues
from lib.errors import ConfigError
from lib.policy_rules import RULES, PolicyResource, evaluate
from settings import SECRET_KEYS, StackSettings, load_settings

PLACEHOLDER = "offline-check-placeholder"


@dataclass
class StackReport:
    stack: str
    lines: list[str] = field(default_factory=lambda: [])
    problems: list[str] = field(default_factory=lambda: [])


def stacks() -> list[str]:
    return sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in ROOT.glob("Pulumi.*.yaml"))


def policy_resources(run: StackRun) -> list[PolicyResource]:
    return [
        PolicyResource(type=r.type, name=r.name, urn=r.urn, props=r.inputs, protect=bool(r.options["protect"]))
        for r in run.resources.values()
        if r.options["custom"]
    ]


def settings_for(stack: str) -> StackSettings:
    config = stack_config(stack)
    for key in SECRET_KEYS:
        config[f"memos:{key}"] = PLACEHOLDER
    values = ConfigValues(lambda key: config.get(f"memos:{key}"), is_secret=lambda _key: True)
    return load_settings(
        values,
        stack=stack,
        secret=lambda _key: pulumi.Output.secret(PLACEHOLDER),
        region=config.get("alicloud:region"),
        offer=MOCK_ECS_OFFER,
    )


def check_memory(report: StackReport, settings: StackSettings, run: StackRun) -> None:
    plan = settings.database.plan
    if plan is None:
        report.lines.append(
            f"  memory: host {settings.host.memory_mib} MiB, app {settings.app.memory_mib} MiB, database on RDS"
        )
        return
    reserves = plan.reserves
    report.lines.append(
        f"  memory: host {plan.host.memory_mib} MiB = OS {reserves.os_mib} + Docker {reserves.docker_mib}"
        f" + app {reserves.app_mib} + proxy {reserves.proxy_mib} + backup {reserves.backup_mib}"
        f" + database {plan.database_limit_mib}"
    )
    terms = ", ".join(f"{name} {value:.0f}" for name, value in plan.worst_case().items())
    report.lines.append(f"  database worst case {plan.worst_case_mib():.1f} MiB of {plan.database_limit_mib} ({terms})")
    if plan.worst_case_mib() > plan.database_limit_mib:
        report.problems.append(f"the database's worst case exceeds its {plan.database_limit_mib} MiB limit")
    limits = {r.name: int(r.inputs.get("memory") or 0) for r in run.of_type("docker:index/container:Container")}
    if limits.get("database-server") != plan.database_limit_mib:
        report.problems.append(f"the database container's limit {limits.get('database-server')} is not the plan's")
    container_total = sum(limits.values())
    budget = plan.host.memory_mib - reserves.os_mib - reserves.docker_mib
    report.lines.append(f"  container limits {container_total} MiB of {budget} MiB left after the OS and Docker")
    if container_total > budget:
        report.problems.append(
            f"container limits ({container_total} MiB) exceed the host's {budget} MiB for containers"
        )


def check_stack(stack: str) -> StackReport:
    report = StackReport(stack)
    try:
        settings = settings_for(stack)
        run = run_program(stack, secrets=dict.fromkeys(SECRET_KEYS, PLACEHOLDER))
    except (pulumi.RunError, ConfigError) as error:
        report.problems.append(f"the program stops: {error}")
        return report
    resources = policy_resources(run)
    violations = evaluate(resources)
    report.lines.append(f"  {len(run.resources)} resources; {len(RULES)} policy rules, {len(violations)} violations")
    report.problems += [f"policy {name}: {message}" for name, message in violations]
    check_memory(report, settings, run)
    return report


def main(argv: list[str]) -> int:
    wanted = argv or stacks()
    unknown = sorted(set(wanted) - set(stacks()))
    if unknown:
        print(f"no Pulumi.<stack>.yaml for: {', '.join(unknown)}", file=sys.stderr)
        return 2
    print("memos offline check: mock engine, placeholder secrets, no cloud access")
    failed = False
    for stack in wanted:
        report = check_stack(stack)
        print(f"\nstack {stack}")
        for line in report.lines:
            print(line)
        for problem in report.problems:
            print(f"  FAIL {problem}")
        print("  OK" if not report.problems else f"  {len(report.problems)} problem(s)")
        failed = failed or bool(report.problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
