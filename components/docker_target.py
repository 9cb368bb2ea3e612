"""Where the containers run: the Docker provider, and how to run a command beside the containers.

The provider and the `docker exec` jobs must reach the same daemon. The docker provider takes its
daemon from `host` unless a Docker context is named (its `context` setting, which defaults to the
DOCKER_CONTEXT environment variable and then overrides `host`); the docker CLI the jobs run prefers
DOCKER_HOST over DOCKER_CONTEXT and over the CLI's current context (checked with docker CLI 28). So
the program gives the provider an explicit host, runs every job with that same host in DOCKER_HOST,
and refuses to run while DOCKER_CONTEXT is set, which would silently move the provider elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from lib.errors import ConfigError
from lib.host_scripts import SshTarget, ssh_argv, ssh_options

#: The engine's socket when DOCKER_HOST is unset (the provider's and the CLI's default on Linux and macOS).
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"


@dataclass(frozen=True)
class DockerTarget:
    """A Docker engine the program deploys to."""

    #: The provider every Docker resource of the stack uses.
    provider: docker.Provider
    #: argv prefix that runs a command on the Docker host: `env DOCKER_HOST=<the provider's host>`
    #: for the local engine, `ssh ... user@host` for a remote one (the same transport the provider uses).
    shell_prefix: pulumi.Output[Sequence[str]]
    #: Public address of the host, for URLs (localhost for the local engine).
    address: pulumi.Output[str]
    #: What the target itself created (the provider, and the host in prod), for the destroy guard.
    resources: tuple[pulumi.Resource, ...]

    def options(self, *, parent: pulumi.Resource | None = None) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(providers={"docker": self.provider}, parent=parent)


def refuse_docker_context(environ: Mapping[str, str]) -> None:
    """Fail the preview while DOCKER_CONTEXT is set: the provider would follow it instead of `host`."""
    context = environ.get("DOCKER_CONTEXT", "")
    if context:
        raise ConfigError(
            "env:DOCKER_CONTEXT",
            f"is {context!r}, which would send the docker provider to that context instead of the stack's "
            "daemon; unset it (`unset DOCKER_CONTEXT`; for dev, DOCKER_HOST chooses the daemon)",
        )


def local_docker_host(environ: Mapping[str, str]) -> str:
    """The developer's engine: DOCKER_HOST, else the default socket."""
    return environ.get("DOCKER_HOST", "") or DEFAULT_DOCKER_HOST


def local_shell_prefix(host: str) -> list[str]:
    """Runs a job's `docker` against `host` whatever context the developer's CLI has selected."""
    return ["env", "-u", "DOCKER_CONTEXT", f"DOCKER_HOST={host}"]


def local_docker_target(environ: Mapping[str, str] | None = None) -> DockerTarget:
    """The developer's own Docker engine (DOCKER_HOST or the default socket)."""
    env = os.environ if environ is None else environ
    refuse_docker_context(env)
    host = local_docker_host(env)
    provider = docker.Provider("docker", host=host)
    return DockerTarget(
        provider=provider,
        shell_prefix=pulumi.Output.from_input(local_shell_prefix(host)),
        address=pulumi.Output.from_input("localhost"),
        resources=(provider,),
    )


def remote_docker_target(
    *,
    ssh: pulumi.Output[SshTarget],
    address: pulumi.Output[str],
    ready: pulumi.Resource,
    host: pulumi.Resource,
    environ: Mapping[str, str] | None = None,
) -> DockerTarget:
    """A Docker engine reached over SSH with the system `ssh` client (on `host`); waits for `ready` first."""
    refuse_docker_context(os.environ if environ is None else environ)
    provider = docker.Provider(
        "docker",
        host=pulumi.Output.all(ssh, address).apply(lambda parts: f"ssh://{parts[0].user}@{parts[1]}"),
        ssh_opts=ssh.apply(ssh_options),
        opts=pulumi.ResourceOptions(depends_on=[ready]),
    )
    return DockerTarget(
        provider=provider,
        shell_prefix=pulumi.Output.all(ssh, address).apply(lambda parts: ssh_argv(parts[0], parts[1])),
        address=address,
        resources=(provider, host),
    )
