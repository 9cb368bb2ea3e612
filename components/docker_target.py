"""Where the containers run: the Docker provider, and how to run a command beside the containers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_docker as docker


@dataclass(frozen=True)
class DockerTarget:
    """A Docker engine the program deploys to."""

    #: The provider every Docker resource of the stack uses.
    provider: docker.Provider
    #: argv prefix that runs a command on the Docker host: empty for the local engine,
    #: `ssh ... user@host` for a remote one (the same transport the provider uses).
    shell_prefix: pulumi.Output[Sequence[str]]
    #: Public address of the host, for URLs (localhost for the local engine).
    address: pulumi.Output[str]

    def options(self, *, parent: pulumi.Resource | None = None) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(providers={"docker": self.provider}, parent=parent)


def local_docker_target() -> DockerTarget:
    """The developer's own Docker engine (DOCKER_HOST or the default socket)."""
    provider = docker.Provider("docker")
    return DockerTarget(
        provider=provider,
        shell_prefix=pulumi.Output.from_input([]),
        address=pulumi.Output.from_input("localhost"),
    )


def remote_docker_target(
    *, user: str, address: pulumi.Output[str], ssh_options: Sequence[str], ready: pulumi.Resource
) -> DockerTarget:
    """A Docker engine reached over SSH with the system `ssh` client; waits for `ready` first."""
    provider = docker.Provider(
        "docker",
        host=pulumi.Output.concat("ssh://", user, "@", address),
        ssh_opts=list(ssh_options),
        opts=pulumi.ResourceOptions(depends_on=[ready]),
    )
    return DockerTarget(
        provider=provider,
        shell_prefix=address.apply(lambda ip: ["ssh", *ssh_options, f"{user}@{ip}"]),
        address=address,
    )
