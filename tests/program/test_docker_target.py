"""The docker provider and the `docker exec` jobs reach one and the same daemon.

The docker provider (kreuzwerker/terraform-provider-docker, internal/provider/provider.go) takes
`host` from DOCKER_HOST or the default socket, but a `context` (DOCKER_CONTEXT) overrides it; the
docker CLI that runs the jobs prefers DOCKER_HOST over DOCKER_CONTEXT and over the CLI's current
context. The last test runs the job's command line with the real docker CLI against a current
context and a DOCKER_CONTEXT that both point elsewhere, and reads from the CLI's own error which
daemon it tried. It cannot show the provider's side: there is no provider plugin here.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pulumi
import pytest

from components.docker_target import local_docker_host, local_shell_prefix
from harness.mock_engine import StackRun, run_program
from tests.conftest import PROD_SECRETS

JOBS = ("database-role-job", "backup-pre-upgrade-dump")
#: What a dev job's command starts with in this test run's environment (pinned exactly below).
LOCAL_JOB_PREFIX = shlex.join(local_shell_prefix(local_docker_host(os.environ)))


def jobs(run: StackRun) -> dict[str, str]:
    return {name: run.by_name(name).inputs["create"] for name in JOBS}


def test_dev_pins_the_provider_and_every_job_to_docker_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/user/1000/docker.sock")
    run = run_program("dev")
    assert run.by_name("docker").inputs["host"] == "unix:///run/user/1000/docker.sock"
    prefix = "env -u DOCKER_CONTEXT DOCKER_HOST=unix:///run/user/1000/docker.sock docker exec "
    assert all(create.startswith(prefix) for create in jobs(run).values()), jobs(run)
    assert {r.name for r in run.of_type("command:local:Command")} == set(JOBS)


def test_without_docker_host_both_use_the_default_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    run = run_program("dev")
    assert run.by_name("docker").inputs["host"] == "unix:///var/run/docker.sock"
    prefix = "env -u DOCKER_CONTEXT DOCKER_HOST=unix:///var/run/docker.sock docker exec "
    assert all(create.startswith(prefix) for create in jobs(run).values()), jobs(run)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_a_docker_context_in_the_environment_fails_the_preview(monkeypatch: pytest.MonkeyPatch, stack: str) -> None:
    monkeypatch.setenv("DOCKER_CONTEXT", "colima")
    with pytest.raises(pulumi.RunError) as raised:
        run_program(stack, secrets=PROD_SECRETS if stack == "prod" else None)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("env:DOCKER_CONTEXT: is 'colima', which would send the docker provider")


def test_the_real_docker_cli_runs_the_job_against_the_providers_daemon(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.fail("the docker CLI is required (apt-get install docker.io); ./scripts/test installs it")
    provider_socket = f"unix://{tmp_path}/provider.sock"
    monkeypatch.setenv("DOCKER_HOST", provider_socket)
    create = run_program("dev").by_name("database-role-job").inputs["create"]

    config = tmp_path / "docker-config"
    env = {"PATH": f"{Path(docker).parent}:/usr/bin:/bin", "DOCKER_CONFIG": str(config), "HOME": str(tmp_path)}
    made = subprocess.run(
        [docker, "context", "create", "elsewhere", "--docker", f"host=unix://{tmp_path}/elsewhere.sock"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    subprocess.run([docker, "context", "use", "elsewhere"], env=env, capture_output=True, check=True)
    # The operator's shell selects another daemon twice over: a current context and DOCKER_CONTEXT.
    result = subprocess.run(
        ["/bin/sh", "-c", create], env={**env, "DOCKER_CONTEXT": "elsewhere", "DOCKER_HOST": "unix:///nowhere.sock"},
        input="", capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert f"Cannot connect to the Docker daemon at {provider_socket}" in result.stderr


def test_a_replaced_image_is_removed_from_the_host(prod_run: StackRun, dev_run: StackRun) -> None:
    # keep_locally=True never removes an old image; each upgrade would leave one on the data disk.
    # With False the provider removes the old tag after its containers were replaced; a rollback
    # pulls the previous tag again.
    for run in (prod_run, dev_run):
        images = run.of_type("docker:index/remoteImage:RemoteImage")
        assert images
        assert {image.name: image.inputs["keepLocally"] for image in images} == {image.name: False for image in images}
