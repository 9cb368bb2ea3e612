"""The realizer's reference: every argument of the installed SDKs is either reproduced or knowingly ignored.

harness/realizer.py follows kreuzwerker/terraform-provider-docker v4.5.0 as bridged by pulumi-docker 5.2.0,
and pulumi-command 1.2.1 (its docstring says which rule follows which release). Its tables
HANDLED_*_INPUTS and IGNORED_*_INPUTS say, for each argument of those SDKs, whether the realizer reproduces
it. These tests check the tables against the SDKs' own argument names (pulumi's input types, in the Pulumi
names the mock engine records) and against what the program sends for every stack shape, so that neither an
SDK upgrade nor a new argument in the program passes without someone deciding what the realizer does with it.
"""

from __future__ import annotations

import importlib.metadata
import typing
from collections.abc import Iterator, Mapping
from typing import Any

import pulumi_command.local
import pulumi_docker
import pytest
from pulumi import _types as pulumi_types  # how the SDK itself reads an input type's names and types

from harness import realizer
from harness.mock_engine import StackRun, run_program
from tests.conftest import PROD_SECRETS

#: The SDK's argument type of each resource type the realizer applies.
SDK_ARGS: Mapping[str, type] = {
    realizer.CONTAINER: pulumi_docker.ContainerArgs,
    realizer.NETWORK: pulumi_docker.NetworkArgs,
    realizer.VOLUME: pulumi_docker.VolumeArgs,
    realizer.IMAGE: pulumi_docker.RemoteImageArgs,
    realizer.BUILT_IMAGE: pulumi_docker.ImageArgs,
    realizer.DOCKER_PROVIDER: pulumi_docker.ProviderArgs,
    realizer.COMMAND: pulumi_command.local.CommandArgs,
}
#: Every stack shape whose resources differ in kind: the Docker tier's and the rehearsal's configs.
SHAPES: Mapping[str, tuple[str, dict[str, Any]]] = {
    "dev": ("dev", {}),
    "dev with AI": ("dev", {"aiEnabled": True}),
    "prod": ("prod", {}),
    "prod behind the proxy": ("prod", {"domain": "memos.example.com", "acmeEmail": "ops@example.com"}),
    "prod with off-site copies": ("prod", {"backupToOss": True}),
    "prod on RDS": ("prod", {"database": "rds", "containerDatabaseVolumes": "remove"}),
}


def _input_class(hint: Any) -> type | None:
    """The SDK input type a type hint holds (itself, a sequence's element, a union's member), if any."""
    if isinstance(hint, type) and pulumi_types.is_input_type(hint):
        return hint
    for argument in typing.get_args(hint):
        found = _input_class(argument)
        if found is not None:
            return found
    return None


def sdk_arguments(args_type: type, prefix: str = "") -> dict[str, bool]:
    """Every argument path of an SDK input type (Pulumi names, nested ones as `parent.child`), each with
    whether it is an object whose own arguments are listed too."""
    paths: dict[str, bool] = {}
    for name, hint in pulumi_types.input_type_types(args_type).items():
        nested = _input_class(hint)
        paths[prefix + name] = nested is not None
        if nested is not None:
            paths |= sdk_arguments(nested, f"{prefix}{name}.")
    return paths


def sent_paths(inputs: Mapping[str, Any], objects: Mapping[str, bool], prefix: str = "") -> Iterator[str]:
    """The argument paths of what the program sent, down to the SDK's leaves (a map's keys are not paths)."""
    for key, value in inputs.items():
        path = prefix + key
        items: list[Any] = value if isinstance(value, list) else [value]
        if objects.get(path) and all(isinstance(item, dict) for item in items):
            for item in items:
                yield from sent_paths(item, objects, path + ".")
        else:
            yield path


@pytest.fixture(scope="module", params=sorted(SHAPES))
def shape(request: pytest.FixtureRequest) -> StackRun:
    stack, overrides = SHAPES[request.param]
    return run_program(stack, overrides, secrets=PROD_SECRETS if stack == "prod" or overrides.get("aiEnabled") else {})


def test_the_installed_sdks_are_the_releases_the_realizer_names() -> None:
    # The realizer's docstring and tables are a reading of these releases: an upgrade means reading them again.
    assert importlib.metadata.version("pulumi_docker") == "5.2.0"
    assert importlib.metadata.version("pulumi_command") == "1.2.1"


@pytest.mark.parametrize("type_token", sorted(SDK_ARGS))
def test_every_sdk_argument_is_handled_or_knowingly_ignored_exactly_once(type_token: str) -> None:
    arguments = sdk_arguments(SDK_ARGS[type_token])
    handled, ignored = realizer.INPUT_TABLES[type_token]
    assert sorted(set(handled) & set(ignored)) == []
    assert sorted(e for e in (*handled, *ignored) if e not in arguments) == [], "entries the SDK does not have"
    leaves = [path for path, is_object in arguments.items() if not is_object]
    uncovered = [path for path in leaves if not realizer.input_entries(type_token, path)]
    assert uncovered == [], f"{type_token}: arguments the realizer neither handles nor lists as ignored"
    twice = {path: entries for path in leaves if len(entries := realizer.input_entries(type_token, path)) > 1}
    assert twice == {}
    assert all(reason.strip() for reason in ignored.values())


def test_the_container_rule_tables_name_only_sdk_arguments() -> None:
    arguments = sdk_arguments(pulumi_docker.ContainerArgs)
    for table in (realizer.FORCE_NEW, realizer.UPDATABLE, realizer.COMPUTED, realizer.SETS, realizer.DEFAULTS):
        assert sorted(set(table) - set(arguments)) == []
    healthcheck = {p.removeprefix("healthcheck.") for p in arguments if p.startswith("healthcheck.")}
    assert sorted(set(realizer.HEALTH_DEFAULTS) - healthcheck) == []


def test_the_program_sends_no_argument_the_realizer_neither_handles_nor_lists_as_ignored(shape: StackRun) -> None:
    applied = [r for r in shape.resources.values() if r.type in SDK_ARGS]
    assert {r.type for r in applied} >= {realizer.CONTAINER, realizer.NETWORK, realizer.COMMAND}
    unknown: dict[str, set[str]] = {}
    for resource in applied:
        for path in sent_paths(resource.inputs, sdk_arguments(SDK_ARGS[resource.type])):
            if realizer.input_rule(resource.type, path) is None:
                unknown.setdefault(f"{resource.type} {resource.name}", set()).add(path)
    assert unknown == {}
