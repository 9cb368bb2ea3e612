"""What `scripts/migrate-database` makes Pulumi do, step by step, with the engine's real ordering.

The script is run with stand-ins for `pulumi`, the stack's `ssh` and `docker` (the copy itself is
tests/scripts/test_migrate_database.py's subject) to learn what it does to the stack: the config
keys it sets and removes, and the URNs of its first, targeted `pulumi up`. The program is then run on
the mock engine with the config before and after, and harness/engine_steps.py plans the two `up`s
the script runs (the targeted one, then the full one) from the state the stack had, the way the
engine orders them: deletes after the program, dependents first, `protect` checked as each delete
step runs.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.engine_steps import Plan, Resource, plan, state_of
from harness.mock_engine import ROOT, StackRun, run_program
from tests.conftest import PROD_SECRETS
from tests.support import stand_ins

SCRIPT = ROOT / "scripts" / "migrate-database"
PROJECT_CONFIG: dict[str, Any] = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]
#: The stack on RDS, moved there from the container database (to-rds sets keep).
ON_RDS = {"database": "rds", "containerDatabaseVolumes": "keep"}
PULUMI = """
echo "pulumi $*" >>"$LOG"
case "$1 $2" in
    "stack output") case $3 in ssh_command) echo ssh-standin ;; app_container) echo memos-app ;; esac ;;
    "stack export") cat "$STATE_JSON" ;;
    "config get") exit 1 ;;
esac
exit 0
"""
SSH = 'exec /bin/sh -c "$1"'
DOCKER = 'cat >/dev/null; echo "docker $*" >>"$LOG"'


def engine_urn(urn: str) -> str:
    """The URN the engine gives a resource (the mock monitor names a top-level component with the root
    stack's type in front)."""
    return urn.replace("::pulumi:pulumi:Stack$", "::")


def script_steps(tmp_path: Path, direction: str) -> tuple[list[list[str]], set[str]]:
    """The `pulumi config` commands the script runs (as argv), and the URNs its first `pulumi up` targets."""
    state = {"deployment": {"resources": [
        {"urn": "urn:pulumi:prod::memos::x::rds-instance", "outputs": {"connectionString": "pgm.example"}},
        {"urn": "urn:pulumi:prod::memos::x::rds-app-password", "outputs": {"result": "a"}},
        {"urn": "urn:pulumi:prod::memos::x::database-superuser-password", "outputs": {"result": "b"}},
    ]}}  # fmt: skip
    (tmp_path / "state.json").write_text(json.dumps(state))
    bin_dir = stand_ins(tmp_path / "bin", {"pulumi": PULUMI, "ssh-standin": SSH, "docker": DOCKER})
    log = tmp_path / "calls.log"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "LOG": str(log), "STATE_JSON": str(tmp_path / "state.json")}
    result = subprocess.run(
        ["sh", str(SCRIPT), "--stack", "prod", direction], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    calls = [shlex.split(line) for line in log.read_text().splitlines()]
    config = [c[1:] for c in calls if c[:2] == ["pulumi", "config"] and c[2] in ("set", "rm")]
    first_up = next(c for c in calls if c[:2] == ["pulumi", "up"])
    targets = {first_up[i + 1] for i, word in enumerate(first_up) if word == "--target"}
    return config, targets


def configured(overrides: dict[str, Any], commands: list[list[str]]) -> dict[str, Any]:
    """`overrides` after the script's `pulumi config set KEY VALUE` / `pulumi config rm KEY` commands."""
    result = dict(overrides)
    for command in commands:
        verb, key = command[1], command[2].removeprefix("memos:")
        # Removed from the stack file, the key takes its default from Pulumi.yaml again.
        result[key] = command[3] if verb == "set" else PROJECT_CONFIG[key]["default"]
    return result


def rds_names(plan_or_run: Plan | StackRun) -> set[str]:
    return {
        r.name for r in (plan_or_run.state if isinstance(plan_or_run, Plan) else plan_or_run.resources).values()
        if r.name == "rds" or r.name.startswith("rds-")
    }  # fmt: skip


@pytest.fixture(scope="module")
def on_rds() -> tuple[StackRun, dict[str, Resource]]:
    run = run_program("prod", ON_RDS, secrets=PROD_SECRETS)
    return run, state_of(run)


def test_moving_back_to_the_container_deletes_nothing_of_rds_and_the_next_up_is_clean(
    on_rds: tuple[StackRun, dict[str, Resource]], tmp_path: Path
) -> None:
    rds_run, state = on_rds
    commands, script_targets = script_steps(tmp_path, "to-container")
    config = configured(ON_RDS, commands)
    back = run_program("prod", config, secrets=PROD_SECRETS)
    targets = {urn for urn in back.resources if engine_urn(urn) in script_targets}
    assert {engine_urn(urn) for urn in targets} == script_targets, "every URN the script targets is in the program"

    # 1. `pulumi up --target ...`: the container database and its volume next to RDS.
    targeted = plan(state, back, targets=targets)
    assert targeted.ok, targeted.errors
    assert {s.name for s in targeted.changes()} == {
        "database", "database-superuser-password", "database-app-password", "database-image", "database-server",
        "database-role-job",
    }  # fmt: skip
    assert not targeted.names("delete")

    # 2. The full `pulumi up` after the copy: the app moves; nothing of RDS is deleted, the run succeeds.
    full = plan(targeted.state, back)
    deleted = full.names("delete")
    assert not [name for name in deleted if name == "rds" or name.startswith("rds-")], full.changes()
    assert full.ok, full.errors
    assert rds_names(full) == rds_names(rds_run)

    # 3. Every later `pulumi up` (the program run again, same config) has nothing to do.
    again = plan(full.state, run_program("prod", config, secrets=PROD_SECRETS))
    assert again.changes() == []
    assert again.ok


def test_a_stack_moved_back_without_keep_deletes_no_rds_data_and_fails_on_protect(
    on_rds: tuple[StackRun, dict[str, Resource]],
) -> None:
    # By hand, without the script: memos:database container and no memos:rdsInstance. The RDS database,
    # accounts, privilege and backup policy are protected like the instance, so the engine refuses the
    # first of them it reaches and skips everything they depend on: the `memos` database stays.
    _, state = on_rds
    by_hand = run_program("prod", {"database": "container", "containerDatabaseVolumes": ""}, secrets=PROD_SECRETS)
    result = plan(state, by_hand)
    assert not result.ok
    assert set(result.names("delete")) <= {"rds-extensions", "rds-client-image"}  # a job and a kept-local image
    assert [e for e in result.errors if "rds-database" in e or "rds-app-account" in e] == []  # never reached
    assert {"rds-instance", "rds-database", "rds-app-account", "rds-admin-account"} <= rds_names(result)


def test_moving_to_rds_keeps_the_container_volumes_and_the_next_up_is_clean(tmp_path: Path) -> None:
    container = run_program("prod", secrets=PROD_SECRETS)
    commands, script_targets = script_steps(tmp_path, "to-rds")
    config = configured({}, commands)
    assert config == ON_RDS
    moved = run_program("prod", config, secrets=PROD_SECRETS)
    targets = {urn for urn in moved.resources if engine_urn(urn) in script_targets}
    targeted = plan(state_of(container), moved, targets=targets)
    assert targeted.ok, targeted.errors
    assert {s.name for s in targeted.changes()} == rds_names(moved)
    full = plan(targeted.state, moved)
    assert full.ok, full.errors
    assert not [name for name in full.names("delete") if name.startswith("volumes-")]
    assert plan(full.state, run_program("prod", config, secrets=PROD_SECRETS)).changes() == []
