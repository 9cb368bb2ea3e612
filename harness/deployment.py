"""Helpers of the Docker tier: the private daemon, the stand-in images, and a deployed stack.

A `Deployment` is one stack applied by harness/realizer.py: it runs the program on the mock engine with the
given config, applies the registrations, and offers the checks the scenarios share (SQL in the database
container, HTTP to published ports, the app stand-in's status). Here the private daemon is the stack's
Docker host, as it is for the dev stack (tests/deploy/test_on_docker.py). The prod stack, whose Docker host
is the ECS instance reached over ssh, is a `RehearsalDeployment` (harness/rehearsal.py): its containers run
on the rehearsal host's own dockerd, reached through the provider's ssh connection, and its commands' ssh
goes to that host.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.models.containers

from harness.docker_daemon import PrivateDockerd
from harness.mock_engine import StackRun, run_program, stack_config
from harness.realizer import Realizer, Step
from harness.standin_images import StandIn, ensure_images


def standins() -> list[StandIn]:
    """Every image the dev and prod stack configs name, plus a second app release for upgrades."""
    dev, prod = stack_config("dev"), stack_config("prod")
    references = {
        "postgres": {dev["memos:postgresImage"], prod["memos:postgresImage"]},
        "memos": {dev["memos:appImage"], prod["memos:appImage"], UPGRADE_RELEASE},
        "caddy": {prod["memos:proxyImage"]},
        "python": {prod["memos:backupUploaderImage"]},
    }
    return [StandIn(kind, ref) for kind, refs in references.items() for ref in sorted(refs)]


#: The release the upgrade scenario moves to: another AI-capable release of the same image.
UPGRADE_RELEASE = "hrygo/memos:0.50.0"


def reachable_pip_index() -> str:
    """The package index this machine's pip would use (prod's default, Alibaba's mirror, is not reachable
    from here): PIP_INDEX_URL when set, else PyPI's own."""
    return os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple"


def run_in(container: docker.models.containers.Container, argv: list[str]) -> tuple[int, str]:
    """`docker exec` of `argv` in `container`: its exit code and its output as text."""
    result = container.exec_run(argv)
    output = result.output
    assert isinstance(output, bytes)
    return int(result.exit_code or 0), output.decode(errors="replace")


def http_get(url: str, *, timeout: float = 5) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (a loopback URL)
        return response.status, response.read()


@dataclass
class Deployment:
    """A stack config applied by the realizer, with the private daemon as its Docker host (a
    `RehearsalDeployment` has the rehearsal host instead); `up()` again after changing the config."""

    daemon: PrivateDockerd
    stack: str = "dev"
    overrides: dict[str, Any] = field(default_factory=lambda: {})
    secrets: dict[str, str] = field(default_factory=lambda: {})
    run: StackRun | None = None

    def __post_init__(self) -> None:
        #: The private daemon: where the stand-in images are built (and, in dev, the Docker host).
        self.daemon_client = self.daemon.client()
        self.realizer = self.make_realizer()
        ensure_images(self.daemon_client, standins())

    def make_realizer(self) -> Realizer:
        return Realizer(self.daemon_client, docker_host=self.daemon.host)

    @property
    def client(self) -> docker.DockerClient:
        """The stack's Docker host, as the provider reaches it."""
        return self.realizer.client

    def reconnect(self) -> None:
        """New clients after the daemon restarted; what was applied stays known."""
        self.daemon_client = self.daemon.client()
        self.realizer.client, self.realizer.api = self.daemon_client, self.daemon_client.api

    def run_program(self) -> StackRun:
        # The previous run stands for the state: ignored inputs keep their deployed values, as in the engine.
        return run_program(self.stack, self.overrides, secrets=self.secrets, deployed=self.run)

    def up(self, **changes: Any) -> list[Step]:
        """`pulumi up` with the config changed by `changes` (secrets: keys ending in ApiKey)."""
        for key, value in changes.items():
            if key.endswith("ApiKey"):
                self.secrets[key] = value
            else:
                self.overrides[key] = value
        ensure_images(self.daemon_client, standins())
        self.run = self.run_program()
        return self.realizer.apply(self.run)

    @property
    def outputs(self) -> Mapping[str, Any]:
        assert self.run is not None
        return self.run.outputs

    def container(self, output: str) -> docker.models.containers.Container:
        return self.client.containers.get(str(self.outputs[output]))

    def sql(self, query: str, *, database: str = "memos") -> list[str]:
        """Rows of `query`, run as the superuser over the database container's socket."""
        code, text = run_in(
            self.container("db_container"),
            ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-d", database, "-Atc", query],
        )
        assert code == 0, text
        text = text.strip()
        return text.splitlines() if text else []

    def app_status(self) -> dict[str, Any]:
        """The app stand-in's status endpoint, read from inside the app container."""
        code, text = run_in(
            self.container("app_container"), ["wget", "-q", "-O", "-", "http://127.0.0.1:5230/standin/status"]
        )
        assert code == 0, text
        return json.loads(text)

    def wait_healthy(self, names: list[str], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        pending = list(names)
        while pending and time.monotonic() < deadline:
            pending = [
                n
                for n in pending
                if self.client.containers.get(n).attrs["State"].get("Health", {}).get("Status") != "healthy"
            ]
            time.sleep(1)
        assert not pending, f"not healthy after {timeout} s: {pending}"

    def secret_values(self) -> set[str]:
        """Every secret this stack handles: config secrets, generated passwords, the app's DSN."""
        assert self.run is not None
        values = set(self.secrets.values())
        for resource in self.run.resources.values():
            if resource.type == "random:index/randomPassword:RandomPassword":
                values.add(str(resource.mock_outputs["result"]))
        values.add(str(self.outputs["app_dsn"]))
        return values

    def destroy(self) -> None:
        self.realizer.destroy()


def docker_env(daemon: PrivateDockerd) -> dict[str, str]:
    """The environment for a command that must reach the private daemon (and nothing else)."""
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_CONTEXT"}
    env["DOCKER_HOST"] = daemon.host
    return env
