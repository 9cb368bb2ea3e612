"""Runs the Pulumi program on the SDK's mock engine and records everything it registered.

Used by the test suite and by the offline check. The stack config is assembled the way the CLI does
it (project defaults from Pulumi.yaml, then Pulumi.<stack>.yaml, then secrets), the program runs with
`preview=False` so every `apply` executes, and a recording monitor keeps each resource's inputs *and*
its resource options (protect, retainOnDelete, deleteBeforeReplace, ...), which the plain mock API
does not expose. Secret inputs are detected by the SDK's secret signature on the wire, before the
mock unwraps them. The mocks answer the cloud lookups from small tables of real-world facts.
"""

from __future__ import annotations

import functools
import hashlib
import json
import runpy
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pulumi
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from google.protobuf import json_format
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime.config import set_all_config
from pulumi.runtime.settings import get_root_resource, set_root_resource
from pulumi.runtime.stack import Stack

from lib.cloud_offer import SYSTEM_DISK_CATEGORIES, EcsOffer, InstanceTypeOffer

ROOT = Path(__file__).resolve().parent.parent
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
PROJECT = "memos"

#: Instance types the mocked lookup knows, with (vCPUs, GiB), as `get_instance_types` reports them.
INSTANCE_TYPES: Mapping[str, tuple[int, float]] = {
    "ecs.t5-lc1m1.small": (1, 1.0),
    "ecs.t5-lc1m2.small": (1, 2.0),
    "ecs.e-c1m1.large": (2, 2.0),
    "ecs.u1-c1m1.large": (2, 2.0),
    "ecs.e-c1m2.large": (2, 4.0),
    "ecs.c7.large": (2, 4.0),
    "ecs.t6-c1m1.large": (2, 2.0),
    "ecs.e-c1m2.xlarge": (4, 8.0),
    "ecs.c7.xlarge": (4, 8.0),
}
#: Zones and the disk categories each offers, as DescribeZones reports them (`AvailableDiskCategories`).
#: The category names are real; which zone lacks which category is illustrative.
ZONE_DISK_CATEGORIES: Mapping[str, tuple[str, ...]] = {
    "cn-hangzhou-h": ("cloud_efficiency", "cloud_ssd", "cloud_essd", "cloud_auto"),
    "cn-hangzhou-i": ("cloud_efficiency", "cloud_ssd", "cloud_essd", "cloud_auto", "cloud_essd_entry"),
    "cn-hangzhou-j": ("cloud_efficiency", "cloud_ssd", "cloud_essd", "cloud_auto", "cloud_essd_entry"),
    "cn-hangzhou-k": ("cloud_efficiency", "cloud_essd", "cloud_essd_entry"),
}
ZONES = tuple(ZONE_DISK_CATEGORIES)
#: The account id `get_account` answers (an Alibaba Cloud UID is 16 digits).
ACCOUNT_ID = "1234567890123456"
#: The elastic IP's address in the mocked answers (TEST-NET-2).
DEFAULT_PUBLIC_IP = "198.51.100.20"
IMAGES = ("ubuntu_24_04_x64_20G_alibase_20250722.vhd", "ubuntu_22_04_x64_20G_alibase_20250722.vhd")

#: ApsaraDB RDS for PostgreSQL as its lookups describe it: major versions 14.0-18.0 (14 is the first
#: with pgvector on RDS) in both editions, and instance classes with (vCPUs, GiB) by edition. The
#: class names and shapes are RDS's own (pg.n2.small.1 is 1 vCPU / 2 GiB Basic, pg.n2.medium.2c
#: 2 vCPU / 4 GiB High-availability); which zone sells which is illustrative.
RDS_ENGINE_VERSIONS = ("14.0", "15.0", "16.0", "17.0", "18.0")
RDS_CLASSES: Mapping[str, Mapping[str, tuple[int, int]]] = {
    "Basic": {"pg.n2.small.1": (1, 2), "pg.n2.medium.1": (2, 4), "pg.n2.large.1": (4, 8)},
    "HighAvailability": {"pg.n2.small.2c": (1, 2), "pg.n2.medium.2c": (2, 4), "pg.n2.large.2c": (4, 8)},
}
RDS_ZONES = ("cn-hangzhou-h", "cn-hangzhou-i", "cn-hangzhou-j")
RDS_STORAGE_TYPES = ("cloud_essd", "cloud_essd2", "cloud_essd3", "general_essd")
#: Values the provider's RDS data sources accept (StringInSlice in alicloud/data_source_alicloud_db_instance_
#: classes.go and ..._engines.go, v1.247.0); anything else fails the invoke before any API call. Neither
#: takes general_essd as a filter, though RDS sells it and the instance resource accepts it.
RDS_FILTERS: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "alicloud:rds/getInstanceClasses:getInstanceClasses": {
        "engine": ("MySQL", "SQLServer", "PostgreSQL", "PPAS", "MariaDB"),
        "category": (
            "Basic", "HighAvailability", "AlwaysOn", "Finance", "serverless_basic", "serverless_standard",
            "serverless_ha", "cluster",
        ),
        "storageType": ("cloud_ssd", "local_ssd", "cloud_essd", "cloud_essd2", "cloud_essd3"),
        "dbInstanceStorageType": ("cloud_ssd", "local_ssd", "cloud_essd", "cloud_essd2", "cloud_essd3"),
        "instanceChargeType": ("PostPaid", "PrePaid", "Serverless"),
    },
    "alicloud:rds/getInstanceEngines:getInstanceEngines": {
        "engine": ("MySQL", "SQLServer", "PostgreSQL", "PPAS", "MariaDB"),
        "category": ("Basic", "HighAvailability", "AlwaysOn", "Finance"),
        "dbInstanceStorageType": ("cloud_ssd", "local_ssd", "cloud_essd", "cloud_essd2", "cloud_essd3"),
        "instanceChargeType": ("PostPaid", "PrePaid"),
    },
}  # fmt: skip
#: A class's storage range as the provider fills it: one {min, max, step} map of fmt.Sprint'ed numbers
#: (data_source_alicloud_db_instance_classes.go). Whether it reaches the program as that one object or
#: as the list the SDK's schema names (`storageRanges`) depends on the bridge; the mock answers either,
#: as RDS_STORAGE_RANGE_SHAPE says ("list" or "object").
RDS_STORAGE_RANGE: Mapping[str, str] = {"min": "20", "max": "32000", "step": "5"}
RDS_STORAGE_RANGE_SHAPE = "list"


class MockEcsOffer:
    """The region's ECS offer from the same tables the mocked lookups answer from, for code that parses
    settings outside a program run (the offline check, the project-file tests)."""

    def instance_type(self, instance_type: str, system_disk_category: str) -> InstanceTypeOffer | None:
        found = [o for o in self.instance_types(system_disk_category) if o.id == instance_type]
        return found[0] if found else None

    def instance_types(self, system_disk_category: str) -> list[InstanceTypeOffer]:
        answer = instance_types_answer({"systemDiskCategory": system_disk_category})
        return [
            InstanceTypeOffer(
                id=t["id"], vcpus=t["cpuCoreCount"], memory_mib=round(t["memorySize"] * 1024),
                zones=tuple(t["availabilityZones"]),
            )
            for t in answer["instanceTypes"]
        ]  # fmt: skip

    def has_image(self, image_id: str) -> bool:
        return image_id in IMAGES


MOCK_ECS_OFFER: EcsOffer = MockEcsOffer()


def _config_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def stack_config(stack: str, overrides: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Project defaults from Pulumi.yaml overlaid with Pulumi.<stack>.yaml and `overrides`.

    Keys are fully qualified (`memos:appImage`), values are strings as the CLI hands them over.
    Secure (encrypted) stack values are skipped: a real passphrase would be needed to read them.
    """
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    config: dict[str, str] = {}
    for key, spec in (project.get("config") or {}).items():
        default = spec.get("default") if isinstance(spec, dict) else spec
        if default is not None:
            config[key if ":" in key else f"{PROJECT}:{key}"] = _config_value(default)
    stack_file = ROOT / f"Pulumi.{stack}.yaml"
    if stack_file.exists():
        for key, value in ((yaml.safe_load(stack_file.read_text()) or {}).get("config") or {}).items():
            if isinstance(value, dict) and "secure" in value:
                continue
            config[key if ":" in key else f"{PROJECT}:{key}"] = _config_value(value)
    for key, value in (overrides or {}).items():
        full = key if ":" in key else f"{PROJECT}:{key}"
        if value is None:
            config.pop(full, None)
        else:
            config[full] = _config_value(value)
    return config


@dataclass
class Registered:
    """One RegisterResource request: type, name, inputs, options."""

    type: str
    name: str
    urn: str
    parent: str
    inputs: dict[str, Any]
    secret_paths: frozenset[str]
    options: dict[str, Any]
    #: What the mocks answered for it: the physical id and output properties.
    mock_id: str = ""
    mock_outputs: dict[str, Any] = field(default_factory=lambda: {})
    #: The inputs as they were on the wire (secrets still wrapped), for a later run against this one.
    wire: dict[str, Any] = field(default_factory=lambda: {})


def _walk_secrets(value: Any, path: str, found: set[str]) -> Any:
    """Strip secret wrappers from a wire value, recording the property paths that were secret."""
    if isinstance(value, dict):
        if value.get(pulumi.runtime.rpc._special_sig_key) == SECRET_SIG:  # pyright: ignore[reportPrivateUsage]
            found.add(path)
            return _walk_secrets(value.get("value"), path, found)
        return {k: _walk_secrets(v, f"{path}.{k}" if path else k, found) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk_secrets(v, f"{path}[{i}]", found) for i, v in enumerate(value)]
    if isinstance(value, float) and value.is_integer():
        return int(value)  # the wire's Struct has only doubles; the program sent an int
    return value


def _fake_password(seed: str, length: int) -> str:
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"
    digest = hashlib.sha256(seed.encode()).digest() * 4
    text = "".join(alphabet[b % len(alphabet)] for b in digest)[: length - 3]
    return "Aa9" + text


@functools.cache
def host_key_outputs(seed: str) -> dict[str, str]:
    """A real ED25519 key pair in the forms the tls provider outputs (terraform-provider-tls v4,
    resource_private_key.go): `publicKeyOpenssh` ends with a newline, as the provider's does.
    The same key for the same resource name, and the same text: the OpenSSH private format carries a
    random check number, so it is made once per process, as the provider makes it once and keeps it."""
    key = ed25519.Ed25519PrivateKey.from_private_bytes(hashlib.sha256(f"host-key:{seed}".encode()).digest())
    public = key.public_key()
    openssh_public = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return {
        "privateKeyOpenssh": key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        ).decode(),
        "privateKeyPem": key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
        "publicKeyOpenssh": openssh_public + "\n",
        "publicKeyPem": public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode(),
    }


class RecordingMocks(pulumi.runtime.Mocks):
    """Answers registrations with the outputs the real providers compute, and the cloud lookups."""

    def __init__(self, *, public_ip: str = DEFAULT_PUBLIC_IP, generations: Mapping[str, int] | None = None) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.public_ip = public_ip
        self.generations = dict(generations or {})

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        resource_id, outputs = self._new_resource(args)
        generation = self.generations.get(args.name, 0)
        # A replaced resource (`pulumi up --replace`) gets a new id from the provider.
        return (f"{resource_id}-r{generation}" if generation else resource_id), outputs

    def _new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        outputs = dict(args.inputs)
        typ = args.typ
        resource_id = f"{args.name}-id"
        if typ == "random:index/randomPassword:RandomPassword":
            keepers = json.dumps(args.inputs.get("keepers", {}), sort_keys=True)
            outputs["result"] = _fake_password(f"{args.name}:{keepers}", int(args.inputs.get("length", 16)))
        elif typ == "random:index/randomId:RandomId":
            outputs["hex"] = hashlib.sha256(args.name.encode()).hexdigest()[: 2 * int(args.inputs["byteLength"])]
        elif typ == "docker:index/remoteImage:RemoteImage":
            outputs["imageId"] = "sha256:" + hashlib.sha256(str(args.inputs["name"]).encode()).hexdigest()
            outputs["repoDigest"] = f"{args.inputs['name']}@sha256:{hashlib.sha256(args.name.encode()).hexdigest()}"
        elif typ == "docker:index/container:Container":
            outputs.setdefault("name", f"{args.name}-{hashlib.sha256(args.name.encode()).hexdigest()[:7]}")
            resource_id = hashlib.sha256(args.name.encode()).hexdigest()
        elif typ == "alicloud:ecs/ecsDisk:EcsDisk":
            resource_id = "d-bp1" + hashlib.sha256(args.name.encode()).hexdigest()[:17]
        elif typ == "alicloud:ecs/instance:Instance":
            resource_id = "i-bp1" + hashlib.sha256(args.name.encode()).hexdigest()[:17]
            outputs["privateIp"] = "172.16.1.10"
        elif typ == "alicloud:ecs/eipAddress:EipAddress":
            resource_id = "eip-bp1" + hashlib.sha256(args.name.encode()).hexdigest()[:17]
            outputs["ipAddress"] = self.public_ip
        elif typ == "tls:index/privateKey:PrivateKey":
            outputs |= host_key_outputs(args.name)
        elif typ == "command:local:Command":
            outputs["stdout"] = ""
            outputs["stderr"] = ""
        elif typ == "alicloud:cms/monitorGroup:MonitorGroup":
            # CloudMonitor numbers its application groups (the copier refuses any other group id).
            resource_id = str(int(hashlib.sha256(args.name.encode()).hexdigest()[:7], 16))
        elif typ == "alicloud:rds/instance:Instance":
            resource_id = "pgm-bp1" + hashlib.sha256(args.name.encode()).hexdigest()[:13]
            # The private endpoint RDS assigns (no public one is ever requested).
            outputs["connectionString"] = f"{resource_id}.pg.rds.aliyuncs.com"
            outputs["port"] = "5432"
        return resource_id, outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        self.calls.append((args.token, dict(args.args)))
        if args.token == "alicloud:index/getAccount:getAccount":
            return {"id": ACCOUNT_ID}, []
        if args.token == "alicloud:ecs/getInstanceTypes:getInstanceTypes":
            return instance_types_answer(dict(args.args)), []
        if args.token == "alicloud:ecs/getImages:getImages":
            wanted = args.args.get("imageId")
            images = [{"id": i, "imageId": i, "name": i} for i in IMAGES if wanted in (None, i)]
            return {"images": images, "ids": [i["id"] for i in images]}, []
        if args.token in RDS_FILTERS:
            return rds_answer(args.token, dict(args.args)), []
        raise AssertionError(f"the program made an invoke the mocks do not know: {args.token}")


class ProviderInvokeError(grpc.RpcError):
    """A data source's failure as the engine relays it: a gRPC error the SDK turns into a catchable
    `Exception("invoke of <token> failed: <details>")` at the call site, as a real provider's does."""

    def __init__(self, details: str) -> None:
        super().__init__(details)
        self._details = details

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNKNOWN

    def details(self) -> str:
        return self._details


def instance_types_answer(args: Mapping[str, Any]) -> dict[str, Any]:
    """`ecs.get_instance_types` as the provider answers it (data_source_alicloud_instance_types.go, v1.247.0).

    A `system_disk_category` outside the provider's list is refused before the call. The provider asks
    DescribeAvailableResource for the zones that sell instance types with that system disk, fails when
    no zone does, and reports each type with the zones that sell it (a type no zone sells is left out).
    """
    category = args.get("systemDiskCategory")
    if category is not None and category not in SYSTEM_DISK_CATEGORIES:
        raise ProviderInvokeError(
            "invoking alicloud:ecs/getInstanceTypes:getInstanceTypes: expected system_disk_category to be one of "
            f"{list(SYSTEM_DISK_CATEGORIES)}, got {category}"
        )
    zones = [z for z, offered in ZONE_DISK_CATEGORIES.items() if category is None or category in offered]
    zones = [z for z in zones if args.get("availabilityZone") in (None, z)]
    if not zones:
        raise ProviderInvokeError("There are no available zones in the API DescribeAvailableResource response")
    wanted = args.get("instanceType")
    types = [
        {
            "id": name,
            "cpuCoreCount": cpus,
            "memorySize": mem,
            "family": name.rsplit(".", 1)[0],
            "availabilityZones": sorted(zones),
        }
        for name, (cpus, mem) in INSTANCE_TYPES.items()
        if wanted in (None, name)
    ]
    return {"instanceTypes": types, "ids": [t["id"] for t in types]}


def rds_answer(token: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """The RDS engines and classes data sources, refusing the filter values the provider refuses.

    Without a storage type, get_instance_classes takes the provider's slow path: DescribeAvailableZones
    narrows the zones by edition, then every edition and storage type of each zone is listed
    (data_source_alicloud_db_instance_classes.go, v1.247.0), so the classes of both editions come back.
    """
    for key, allowed in RDS_FILTERS[token].items():
        value = args.get(key)
        if value is not None and value not in allowed:
            raise ProviderInvokeError(f"invoking {token}: expected {key} to be one of {list(allowed)}, got {value}")
    zone = args.get("zoneId")
    zones = [z for z in RDS_ZONES if zone in (None, z)]
    storage = args.get("dbInstanceStorageType")
    sold = (
        args.get("engine") in (None, "PostgreSQL")
        and storage in (None, *RDS_STORAGE_TYPES)
        and args.get("instanceChargeType") in (None, "PostPaid")
        and bool(zones)
    )
    categories = [c for c in RDS_CLASSES if args.get("category") in (None, c)] if sold else []
    zone_ids = [{"id": z, "subZoneIds": [z]} for z in zones]
    if token.endswith("getInstanceEngines"):
        engines = [
            {"category": c, "engine": "PostgreSQL", "engineVersion": v, "zoneIds": zone_ids}
            for c in categories
            for v in RDS_ENGINE_VERSIONS
            if args.get("engineVersion") in (None, v)
        ]
        return {"instanceEngines": engines, "ids": [e["engineVersion"] for e in engines]}
    if args.get("engineVersion") not in (None, *RDS_ENGINE_VERSIONS):
        categories = []
    if categories and storage is None:
        categories = list(RDS_CLASSES)
    storage_range = dict(RDS_STORAGE_RANGE)
    classes = [
        {
            "instanceClass": name,
            # The API reports a price only with sorted_by=Price; the program does not ask for one.
            "price": "",
            "storageRanges": storage_range if RDS_STORAGE_RANGE_SHAPE == "object" else [storage_range],
            "zoneIds": zone_ids,
        }
        for c in categories
        for name in RDS_CLASSES[c]
        if args.get("dbInstanceClass") in (None, name)
    ]
    return {"instanceClasses": classes, "ids": [c["instanceClass"] for c in classes]}


def _with_ignored_kept(request: Any, deployed: Registered) -> Any:
    """The registration as the engine hands it to the provider when the resource already exists: each
    `ignore_changes` property takes its value from the deployed inputs, or is dropped if they had none
    (processIgnoreChanges, pkg/resource/deploy/step_generator.go). Only top-level properties are
    emulated; this program ignores no nested path."""
    processed = type(request)()
    processed.CopyFrom(request)
    for path in request.ignoreChanges:
        if not path.isidentifier():
            raise AssertionError(f"ignore_changes path {path!r}: only top-level properties are emulated")
        if path in deployed.wire:
            processed.object[path] = deployed.wire[path]
        elif path in processed.object:
            del processed.object[path]
    return processed


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """A mock monitor that also keeps every registration's inputs, secrets and options.

    With `deployed` (an earlier run standing for the stack's state), a resource registered again with
    `ignore_changes` is answered as the engine would: its ignored properties keep their deployed values,
    so the program reads those back from the resource's outputs.
    """

    def __init__(self, mocks: RecordingMocks, deployed: Mapping[str, Registered] | None = None) -> None:
        super().__init__(mocks)
        self.registered: dict[str, Registered] = {}
        self.deployed = dict(deployed or {})

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 (gRPC method name)
        wire = json_format.MessageToDict(request.object)
        previous = self.deployed.get(self.make_urn(request.parent, request.type, request.name))
        sent = _with_ignored_kept(request, previous) if previous and request.ignoreChanges else request
        response = super().RegisterResource(sent)
        if request.type == "pulumi:pulumi:Stack":
            return response
        secrets: set[str] = set()
        inputs = _walk_secrets(wire, "", secrets)
        urn = response.urn
        answered = self.resources[urn]
        self.registered[urn] = Registered(
            type=request.type,
            name=request.name,
            urn=urn,
            parent=request.parent,
            inputs=inputs,
            secret_paths=frozenset(secrets),
            options={
                "protect": request.protect if request.HasField("protect") else None,
                "retain_on_delete": request.retainOnDelete if request.HasField("retainOnDelete") else None,
                "delete_before_replace": request.deleteBeforeReplace,
                "ignore_changes": sorted(request.ignoreChanges),
                "replace_on_changes": sorted(request.replaceOnChanges),
                "additional_secret_outputs": sorted(request.additionalSecretOutputs),
                "dependencies": sorted(request.dependencies),
                "provider": request.provider,
                "aliases": [json_format.MessageToDict(a) for a in request.aliases],
                "custom": request.custom,
            },
            mock_id=answered.id,
            mock_outputs=dict(answered.state),
            wire=wire,
        )
        return response


@dataclass
class StackRun:
    """Everything one run of the program registered."""

    stack: str
    config: dict[str, str]
    resources: dict[str, Registered]
    outputs: dict[str, Any]
    output_secrets: set[str]
    calls: list[tuple[str, dict[str, Any]]]
    warnings: list[str]

    def by_name(self, name: str) -> Registered:
        matches = [r for r in self.resources.values() if r.name == name]
        if len(matches) != 1:
            raise KeyError(
                f"{len(matches)} resources are named {name!r}; names: {sorted(r.name for r in self.resources.values())}"
            )
        return matches[0]

    def of_type(self, typ: str) -> list[Registered]:
        return [r for r in self.resources.values() if r.type == typ]

    def names(self) -> set[str]:
        return {r.name for r in self.resources.values()}


class _WarningCollector:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def debug(self, msg: str) -> None:
        pass

    def info(self, msg: str) -> None:
        pass

    def warning(self, msg: str) -> None:
        self.messages.append(msg)

    def error(self, msg: str) -> None:
        self.messages.append(f"error: {msg}")


def run_program(
    stack: str,
    overrides: Mapping[str, Any] | None = None,
    secrets: Mapping[str, str] | None = None,
    plain_secrets: Mapping[str, str] | None = None,
    *,
    deployed: StackRun | None = None,
    public_ip: str = DEFAULT_PUBLIC_IP,
    generations: Mapping[str, int] | None = None,
) -> StackRun:
    """Run __main__.py for `stack` with config overrides and secret config values.

    `plain_secrets` are set without the secret flag, as `pulumi config set` without `--secret` would.
    `deployed` is an earlier run whose resources stand for the stack's state (see RecordingMonitor).
    `public_ip` is the elastic IP's address; `generations` gives a resource (by name) a new id, as a
    replacement does.
    Raises pulumi.RunError with the program's one-line message when the config is invalid.
    """
    config = stack_config(stack, overrides)
    secret_keys: list[str] = []
    for key, value in (secrets or {}).items():
        full = key if ":" in key else f"{PROJECT}:{key}"
        config[full] = value
        secret_keys.append(full)
    for key, value in (plain_secrets or {}).items():
        config[key if ":" in key else f"{PROJECT}:{key}"] = value

    mocks = RecordingMocks(public_ip=public_ip, generations=generations)
    monitor = RecordingMonitor(mocks, deployed.resources if deployed else None)
    logger = _WarningCollector()
    # A fresh root stack per run, so that each run registers its own resources and outputs.
    set_root_resource(None)  # type: ignore[arg-type]
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor, logger=logger)  # type: ignore[arg-type]
    set_all_config(config, secret_keys)

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))

    outputs: dict[str, Any] = {}
    output_secrets: set[str] = set()

    async def collect_outputs(exported: Mapping[str, Any]) -> None:
        for name, value in exported.items():
            output = pulumi.Output.from_input(value)
            outputs[name] = await output.future()
            if await output.is_secret():
                output_secrets.add(name)

    @pulumi.runtime.test
    def program() -> pulumi.Output[None]:
        runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")
        root = get_root_resource()
        assert isinstance(root, Stack)
        # set_mocks registers the root stack's outputs before the program runs, so the exports
        # are read from the stack object itself.
        return pulumi.Output.from_input(collect_outputs(dict(root.outputs)))  # type: ignore[arg-type]

    program()
    return StackRun(
        stack=stack,
        config=config,
        resources=dict(monitor.registered),
        outputs=outputs,
        output_secrets=output_secrets,
        calls=list(mocks.calls),
        warnings=list(logger.messages),
    )
