"""Rules the docker provider imposes on every container the program declares, for every stack shape.

These encode what the provider does for real (harness/realizer.py reproduces it on a real Engine and
tests/deploy/test_on_docker.py shows it there): Docker refuses uploads into a read-only root filesystem;
healthcheck durations read back in Go's canonical form and `start_interval` reads back as 0s on
Engines before API 1.44; healthcheck and tmpfs edits are never applied in place.
"""

from __future__ import annotations

from typing import Any

import pytest

from harness.mock_engine import Registered, StackRun, run_program
from lib.go_duration import format_go_duration, parse_go_duration
from tests.conftest import PROD_SECRETS

SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    "dev": ("dev", {}),
    "prod": ("prod", {}),
    "prod behind the proxy": ("prod", {"domain": "memos.example.com", "acmeEmail": "ops@example.com"}),
    "prod with off-site copies": ("prod", {"backupToOss": True}),
}


@pytest.fixture(scope="module", params=sorted(SHAPES))
def shape(request: pytest.FixtureRequest) -> StackRun:
    stack, overrides = SHAPES[request.param]
    return run_program(stack, overrides, secrets=PROD_SECRETS if stack == "prod" else {})


def containers(run: StackRun) -> list[Registered]:
    found = run.of_type("docker:index/container:Container")
    assert found, "the stack declares no container"
    return found


def test_no_container_combines_a_read_only_root_filesystem_with_uploads(shape: StackRun) -> None:
    both = [c.name for c in containers(shape) if c.inputs.get("readOnly") and c.inputs.get("uploads")]
    assert both == []


def test_every_healthcheck_duration_is_written_as_the_engine_reads_it_back(shape: StackRun) -> None:
    for container in containers(shape):
        health = container.inputs.get("healthcheck")
        assert health, f"{container.name} has no healthcheck"
        for field in ("interval", "timeout", "startPeriod"):
            value = health[field]
            assert format_go_duration(parse_go_duration(value)) == value, f"{container.name}.{field} = {value!r}"


def test_no_healthcheck_sets_start_interval_which_older_engines_drop(shape: StackRun) -> None:
    assert [c.name for c in containers(shape) if "startInterval" in c.inputs["healthcheck"]] == []


def test_a_healthcheck_or_tmpfs_edit_replaces_the_container(shape: StackRun) -> None:
    for container in containers(shape):
        wanted = {"healthcheck"} | ({"tmpfs"} if container.inputs.get("tmpfs") else set())
        assert wanted <= set(container.options["replace_on_changes"]), container.name
