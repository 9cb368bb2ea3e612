"""The policy pack itself: started in its own environment and driven over the analyzer protocol.

This is what `pulumi preview --policy-pack policy` does: start `policy/__main__.py`, read the port it
prints, ask for the pack's policies, and send each resource to `Analyze`.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.mock_engine import ROOT, StackRun
from lib.policy_rules import RULES, STACK_RULES
from tools.offline_check import policy_resources

PACK_PYTHON = ROOT / "policy" / ".venv" / "bin" / "python"


@pytest.fixture(scope="module")
def pack_port() -> Iterator[str]:
    if not PACK_PYTHON.exists():
        pytest.fail("the policy pack's environment is missing; run: uv sync --frozen --directory policy")
    process = subprocess.Popen([str(PACK_PYTHON), str(ROOT / "policy" / "__main__.py")], stdout=subprocess.PIPE)
    assert process.stdout is not None
    port = process.stdout.readline().decode().strip()
    assert port.isdigit(), port
    yield port
    process.kill()
    process.wait()


def analyze(port: str, cases: list[dict[str, object]], tmp_path: Path) -> dict[str, object]:
    path = tmp_path / "cases.json"
    path.write_text(json.dumps(cases))
    out = subprocess.run([str(PACK_PYTHON), str(ROOT / "harness" / "policy_engine.py"), port, str(path)],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout)


def test_the_pack_serves_every_rule_as_a_mandatory_policy(pack_port: str, tmp_path: Path, prod_run: StackRun) -> None:
    resources = {r.name: r for r in policy_resources(prod_run)}
    volume = resources["volumes-database"]
    cases: list[dict[str, object]] = [
        {"id": "prod volume", "type": volume.type, "name": volume.name, "urn": volume.urn, "props": dict(volume.props),
         "protect": True},
        {"id": "unprotected prod volume", "type": volume.type, "name": volume.name, "urn": volume.urn,
         "props": dict(volume.props), "protect": False},
        {"id": "world ssh", "type": "alicloud:ecs/securityGroupRule:SecurityGroupRule", "name": "r",
         "urn": "urn:pulumi:prod::memos::alicloud:ecs/securityGroupRule:SecurityGroupRule::r",
         "props": {"type": "ingress", "ipProtocol": "tcp", "portRange": "22/22", "cidrIp": "0.0.0.0/0"},
         "protect": False},
    ]  # fmt: skip
    for name in ("database-server", "app-server", "database-image", "app-image"):
        r = resources[name]
        cases.append(
            {"id": name, "type": r.type, "name": r.name, "urn": r.urn, "props": dict(r.props), "protect": False}
        )
    result = analyze(pack_port, cases, tmp_path)
    assert result["pack"] == "memos-policies"
    assert result["policies"] == sorted(rule.name for rule in (*RULES, *STACK_RULES))
    assert result["cases"] == {
        "prod volume": [],
        "unprotected prod volume": [["stateful-resources-protected", "MANDATORY"]],
        "world ssh": [["no-world-open-ssh-or-postgres", "MANDATORY"]],
        "database-server": [],
        "app-server": [],
        "database-image": [],
        "app-image": [],
    }


def test_the_pack_refuses_a_prod_stack_whose_alarms_reach_nobody(
    pack_port: str, tmp_path: Path, prod_run: StackRun
) -> None:
    def case(resources: list[Any]) -> list[dict[str, object]]:
        return [{"type": r.type, "name": r.name, "urn": r.urn, "props": dict(r.props), "protect": r.protect}
                for r in resources]  # fmt: skip

    everything = policy_resources(prod_run)
    silent = [r for r in everything if r.type != "alicloud:cms/alarmContact:AlarmContact"]
    path = tmp_path / "stacks.json"
    path.write_text(json.dumps({"prod stack": case(everything), "prod stack without contacts": case(silent)}))
    out = subprocess.run([str(PACK_PYTHON), str(ROOT / "harness" / "policy_engine.py"), pack_port, str(path),
                          "--stack"], capture_output=True, text=True, check=True)  # fmt: skip
    assert json.loads(out.stdout) == {
        "prod stack": [],
        "prod stack without contacts": [["prod-alarms-reach-someone", "MANDATORY"]],
    }
