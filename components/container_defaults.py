"""What every container of the stack gets, in one place.

Spread into `docker.Container(...)` as keyword arguments: a restart policy, a memory limit with no
swap on top, rotated logs, and a stop grace period that the provider honours on replacement (its
default is an immediate kill). `unprivileged()` adds what every container that needs no privileges
gets: no capabilities and no privilege escalation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

import pulumi_docker as docker


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
