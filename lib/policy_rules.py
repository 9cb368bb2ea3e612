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
INSTANCE = "alicloud:ecs/instance:Instance"
ELASTIC_IP = "alicloud:ecs/eipAddress:EipAddress"
ALARM_CONTACT = "alicloud:cms/alarmContact:AlarmContact"
ALARM_CONTACT_GROUP = "alicloud:cms/alarmContactGroup:AlarmContactGroup"
FIREWALL_RULE = "alicloud:ecs/securityGroupRule:SecurityGroupRule"
RDS_INSTANCE = "alicloud:rds/instance:Instance"
#: Resources that give an RDS instance an endpoint on the internet.
RDS_PUBLIC_CONNECTION = "alicloud:rds/connection:Connection"
RDS_ENDPOINT_ADDRESS = "alicloud:rds/dbInstanceEndpointAddress:DbInstanceEndpointAddress"
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


def _rds_private(resource: PolicyResource) -> list[str]:
    if resource.type == RDS_PUBLIC_CONNECTION:
        return [f"{resource.name} gives the RDS instance a public endpoint; reach it from inside the VPC only"]
    if resource.type == RDS_ENDPOINT_ADDRESS:
        if str(resource.props.get("ipType", "")).lower() == "public":
            return [f"{resource.name} adds a public address to an RDS endpoint; reach it from inside the VPC only"]
        return []
    # "0.0.0.0/0" is RDS's own spelling of "everyone"; a bare "0.0.0.0" is a single address.
    world = [ip for ip in _items(resource.props.get("securityIps")) if isinstance(ip, str) and _world(ip)]
    return [f"{resource.name} admits {', '.join(world)} to RDS; list only the host's vSwitch CIDR"] if world else []


RULES: tuple[Rule, ...] = (
    Rule("stateful-resources-protected",
         "Data volumes and disks, the host and its address are protected in production.",
         frozenset({VOLUME, DISK, INSTANCE, ELASTIC_IP, RDS_INSTANCE}), _stateful_protected),
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
    Rule("rds-private-only", "No RDS instance admits 0.0.0.0/0 or has a public endpoint.",
         frozenset({RDS_INSTANCE, RDS_PUBLIC_CONNECTION, RDS_ENDPOINT_ADDRESS}), _rds_private),
)  # fmt: skip


@dataclass(frozen=True)
class StackRule:
    """A rule over all of a stack's resources at once."""

    name: str
    description: str
    check: Callable[[Sequence[PolicyResource]], list[str]]


def _alarm_contact(resources: Sequence[PolicyResource]) -> list[str]:
    """A production host needs alarms that reach someone: an email contact inside a contact group."""
    problems: list[str] = []
    for stack in sorted({r.stack for r in resources if r.type == INSTANCE and r.stack in PROTECTED_STACKS}):
        mine = [r for r in resources if r.stack == stack]
        mailed = {
            str(r.props.get("alarmContactName"))
            for r in mine
            if r.type == ALARM_CONTACT and str(r.props.get("channelsMail") or "").strip()
        }
        grouped = {str(name) for r in mine if r.type == ALARM_CONTACT_GROUP for name in _items(r.props.get("contacts"))}
        if not mailed & grouped:
            problems.append(
                f"stack {stack} runs a host but no alarm reaches anyone (no email contact in a contact group); "
                "set memos:alertEmails"
            )
    return problems


STACK_RULES: tuple[StackRule, ...] = (
    StackRule("prod-alarms-reach-someone", "A production stack mails its alarms to at least one contact.",
              _alarm_contact),
)  # fmt: skip


def evaluate(resources: Sequence[PolicyResource]) -> list[tuple[str, str]]:
    """Every (rule name, violation message) for these resources, per resource and then for the stack."""
    return [
        (rule.name, message)
        for resource in resources
        for rule in RULES
        if resource.type in rule.types
        for message in rule.check(resource)
    ] + [(rule.name, message) for rule in STACK_RULES for message in rule.check(resources)]
