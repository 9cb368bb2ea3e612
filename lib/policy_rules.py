"""Policy rules for a Memos stack, as plain functions over resources.

The same rules run in two places: the Pulumi policy pack in policy/ (`pulumi preview --policy-pack`),
which adapts pulumi_policy's arguments to `PolicyResource`, and the offline check
(tools/offline_check.py), which feeds them the resources of a mock-engine run. Nothing here imports
Pulumi. Properties are the engine's raw (camelCase) input names.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from lib.errors import ConfigError
from lib.images import parse_image

CONTAINER = "docker:index/container:Container"
VOLUME = "docker:index/volume:Volume"
IMAGE = "docker:index/remoteImage:RemoteImage"
DISK = "alicloud:ecs/ecsDisk:EcsDisk"
FIREWALL_RULE = "alicloud:ecs/securityGroupRule:SecurityGroupRule"
POSTGRES_PORT = 5432
SSH_PORT = 22
#: Stacks whose stateful resources must be protected.
PROTECTED_STACKS = frozenset({"prod"})
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|PASS|DSN|CREDENTIALS?)$", re.IGNORECASE)


@dataclass(frozen=True)
class PolicyResource:
    """What a rule sees of one resource."""

    type: str
    name: str
    urn: str
    props: Mapping[str, Any]
    protect: bool

    @property
    def stack(self) -> str:
        """The stack name, from the URN (urn:pulumi:<stack>::<project>::...)."""
        return self.urn.removeprefix("urn:pulumi:").split("::", 1)[0]


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    types: frozenset[str]
    check: Callable[[PolicyResource], list[str]]


def _mapping(value: Any) -> Mapping[str, Any]:
    return cast("Mapping[str, Any]", value) if isinstance(value, Mapping) else {}


def _items(value: Any) -> list[Any]:
    # The policy SDK hands over proxies that are Sequences and Mappings, not lists and dicts.
    if isinstance(value, Sequence) and not isinstance(value, str):
        return list(cast("Sequence[Any]", value))
    return []


def _stateful_protected(resource: PolicyResource) -> list[str]:
    if resource.stack in PROTECTED_STACKS and not resource.protect:
        return [f"{resource.name} holds data but is not protected in stack {resource.stack}; set protect=True"]
    return []


def _ports(port_range: str) -> tuple[int, int]:
    low, _, high = port_range.partition("/")
    return int(low), int(high or low)


def _world(cidr: str) -> bool:
    try:
        return ipaddress.ip_network(cidr, strict=False).prefixlen == 0
    except ValueError:
        return False


def _no_world_ssh_or_postgres(resource: PolicyResource) -> list[str]:
    props = resource.props
    if props.get("type", "ingress") != "ingress" or props.get("policy", "accept") != "accept":
        return []
    cidrs = [c for c in (props.get("cidrIp"), props.get("ipv6CidrIp")) if isinstance(c, str)]
    if not any(_world(c) for c in cidrs):
        return []
    if str(props.get("ipProtocol", "all")).lower() not in ("tcp", "all"):
        return []
    low, high = _ports(str(props.get("portRange", "-1/-1"))) if props.get("portRange") else (1, 65535)
    if low == -1:
        low, high = 1, 65535
    opened = [name for name, port in (("SSH", SSH_PORT), ("PostgreSQL", POSTGRES_PORT)) if low <= port <= high]
    return [f"{resource.name} opens {' and '.join(opened)} to the whole internet"] if opened else []


def _container_limits(resource: PolicyResource) -> list[str]:
    props = resource.props
    problems: list[str] = []
    if not props.get("memory"):
        problems.append(f"{resource.name} has no memory limit")
    if props.get("restart") not in ("unless-stopped", "always", "on-failure"):
        problems.append(f"{resource.name} has no restart policy (restart={props.get('restart')!r})")
    tests = [str(t) for t in _items(_mapping(props.get("healthcheck")).get("tests"))]
    if not tests or tests[0] == "NONE":
        problems.append(f"{resource.name} has no healthcheck")
    return problems


def _image_pinned(resource: PolicyResource) -> list[str]:
    name = str(resource.props.get("name", ""))
    try:
        parse_image("image", name, require_pinned=True)
    except ConfigError as error:
        return [f"{resource.name}: {error.message}"]
    return []


def _database_port_loopback(resource: PolicyResource) -> list[str]:
    problems: list[str] = []
    for port in map(_mapping, _items(resource.props.get("ports"))):
        if port.get("internal") == POSTGRES_PORT and port.get("ip") not in ("127.0.0.1", "::1"):
            problems.append(
                f"{resource.name} publishes PostgreSQL on {port.get('ip') or 'every interface'}:"
                f"{port.get('external')}; publish it on 127.0.0.1 only, or not at all"
            )
    return problems


def _no_secret_env(resource: PolicyResource) -> list[str]:
    problems: list[str] = []
    for entry in _items(resource.props.get("envs")):
        name, _, value = str(entry).partition("=")
        if value and not name.endswith("_FILE") and _SECRET_NAME.search(name):
            problems.append(f"{resource.name} sets {name} in clear in its environment; deliver it as a file")
    return problems


RULES: tuple[Rule, ...] = (
    Rule("stateful-resources-protected", "Data volumes and disks are protected in production.",
         frozenset({VOLUME, DISK}), _stateful_protected),
    Rule("no-world-open-ssh-or-postgres", "No firewall rule opens SSH or PostgreSQL to 0.0.0.0/0.",
         frozenset({FIREWALL_RULE}), _no_world_ssh_or_postgres),
    Rule("containers-have-limits", "Every container has a memory limit, a restart policy and a healthcheck.",
         frozenset({CONTAINER}), _container_limits),
    Rule("images-pinned", "No image is untagged or on a floating tag such as latest.",
         frozenset({IMAGE}), _image_pinned),
    Rule("database-port-loopback-only", "PostgreSQL is never published beyond loopback.",
         frozenset({CONTAINER}), _database_port_loopback),
    Rule("no-secret-env-in-clear", "No key-, token- or password-like variable in a container's clear environment.",
         frozenset({CONTAINER}), _no_secret_env),
)  # fmt: skip


def evaluate(resources: Sequence[PolicyResource]) -> list[tuple[str, str]]:
    """Every (rule name, violation message) for these resources."""
    return [
        (rule.name, message)
        for resource in resources
        for rule in RULES
        if resource.type in rule.types
        for message in rule.check(resource)
    ]
