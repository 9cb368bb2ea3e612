"""What every container of the stack gets, in one place.

Spread into `docker.Container(...)` as keyword arguments: a restart policy, a memory limit with no
swap on top, rotated logs, and a stop grace period that the provider honours on replacement (its
default is an immediate kill). `unprivileged()` adds what every container that needs no privileges
gets: no capabilities and no privilege escalation. `healthcheck()` writes a healthcheck the way the
provider reads it back, and `REPLACE_ON` lists the attributes whose edit the provider never applies.
`stack_labels()` and `container_labels()` are the labels every Docker object of the stack carries, and
`pinned_image()` the image resource every container runs from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypedDict

import pulumi
import pulumi_docker as docker

from lib.go_duration import go_duration

#: The provider's update of a running container applies neither a healthcheck nor a tmpfs edit (it
#: shows an update that does nothing), so a change to either must replace the container.
REPLACE_ON = ["healthcheck", "tmpfs"]


class Baseline(TypedDict):
    restart: str
    memory: int
    memory_swap: int
    log_driver: str
    log_opts: dict[str, str]
    stop_timeout: int
    destroy_grace_seconds: int


class Unprivileged(TypedDict):
    security_opts: list[str]
    capabilities: docker.ContainerCapabilitiesArgs


def baseline(memory_mib: int, *, stop_seconds: int = 30) -> Baseline:
    """Restart unless stopped by hand; `memory_mib` with no swap; 3 x 10 MB of logs; a clean stop."""
    return {
        "restart": "unless-stopped",
        "memory": memory_mib,
        "memory_swap": memory_mib,
        "log_driver": "json-file",
        "log_opts": {"max-size": "10m", "max-file": "3"},
        # Both: stop_timeout for `docker stop` and daemon shutdowns, destroy_grace_seconds for the
        # provider's stop before it removes the container.
        "stop_timeout": stop_seconds,
        "destroy_grace_seconds": stop_seconds,
    }


def unprivileged(*, keep: Sequence[str] = ()) -> Unprivileged:
    """Every capability dropped except `keep`, and no privilege escalation through setuid binaries."""
    return {
        "security_opts": ["no-new-privileges:true"],
        "capabilities": docker.ContainerCapabilitiesArgs(drops=["ALL"], adds=list(keep) or None),
    }


def healthcheck(
    tests: Sequence[str], *, interval_s: int, timeout_s: int, retries: int, start_period_s: int
) -> docker.ContainerHealthcheckArgs:
    """A healthcheck whose every field reads back from the Engine exactly as written.

    The provider stores durations as Go's `Duration.String()` (`120s` reads back as `2m0s`), so they
    are written in that form; any other spelling is a diff on every `pulumi up`, and with
    `replace_on_changes=["healthcheck"]` a replacement. `start_interval` is left out: Engines before API
    1.44 (Docker 25) drop it and read back `0s`, the same loop on an older Docker. The interval is
    therefore also what paces the first checks after a start.
    """
    return docker.ContainerHealthcheckArgs(
        tests=list(tests),
        interval=go_duration(interval_s),
        timeout=go_duration(timeout_s),
        retries=retries,
        start_period=go_duration(start_period_s),
    )


def stack_labels(stack: str) -> dict[str, str]:
    """The labels that mark a Docker object as this stack's (and let an operator filter on them)."""
    return {"org.memos-infra.project": "memos", "org.memos-infra.stack": stack}


def container_labels(labels: Mapping[str, str]) -> list[docker.ContainerLabelArgs]:
    """`labels` as the container resource takes them, sorted so that their order never diffs."""
    return [docker.ContainerLabelArgs(label=key, value=value) for key, value in sorted(labels.items())]


def pinned_image(name: str, reference: str, parent: pulumi.Resource) -> docker.RemoteImage:
    """The image a container runs from; its old version leaves the host once nothing uses it.

    `keep_locally=False` makes the provider remove the previous image when the reference changes, so
    upgrades do not fill the data disk; give the container `image.image_id`, not the tag.
    """
    return docker.RemoteImage(name, name=reference, keep_locally=False, opts=pulumi.ResourceOptions(parent=parent))
