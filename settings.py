"""Stack configuration, parsed once into frozen, typed settings and validated eagerly.

Every `memos:*` key is declared with its default in Pulumi.yaml, except the three optional AI API keys
(the CLI rejects a secret with a default, and a declared key without one is required in every stack).
Components and pure modules never read config: they receive these objects. Secrets stay Outputs from
config to container. Any invalid value raises ConfigError naming the key and the fix.
"""

from __future__ import annotations

import ipaddress
import re
import zoneinfo
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal
from urllib.parse import urlsplit

import pulumi
import pulumi_alicloud as alicloud
from pulumi.runtime.config import is_config_secret

from lib.ai import API_KEYS, AiPlan, plan_ai
from lib.cloud_offer import EcsOffer, InstanceTypeOffer, memory_gib_to_mib, smallest_fitting
from lib.config_reader import ConfigValues
from lib.errors import ConfigError
from lib.images import ImageRef, parse_image
from lib.rds import backup_window
from lib.releases import SCHEMA_EXISTS_KEY, check_app_release
from lib.schedule import parse_daily_time
from lib.tuning import (
    MIN_DATABASE_LIMIT_MIB,
    Host,
    MemoryPlan,
    Reserves,
    Workload,
    app_share_without_database,
    database_limit_mib,
    plan_memory,
)

Stage = Literal["dev", "prod"]
DatabaseKind = Literal["container", "rds"]

#: Config keys that hold secrets and are read only with `get_secret`.
SECRET_KEYS = tuple(config_key for config_key, _ in API_KEYS.values())
_NAME_PREFIX = re.compile(r"^[a-z][a-z0-9-]{1,20}$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))+$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
#: Keys that were removed; a stack that still sets one is told what replaced it.
RETIRED_KEYS: Mapping[str, str] = {
    "embeddingStorage": (
        "is no longer a setting: the app stores and indexes vector(1024) (4 bytes a dimension), so the "
        "HNSW build is always sized for vector, and sizing it as halfvec would under-size "
        "maintenance_work_mem for the index the app really builds; run: pulumi config rm memos:embeddingStorage"
    ),
}


@dataclass(frozen=True)
class Images:
    app: ImageRef
    postgres: ImageRef
    proxy: ImageRef


@dataclass(frozen=True)
class AppSettings:
    memory_mib: int
    #: Host port the app is published on; None when a proxy fronts it.
    host_port: int | None
    #: Whether the published port listens on every interface (prod without proxy) or loopback only.
    public: bool
    #: Public URL; empty means "derive it from the host's address".
    instance_url: str
    timezone: str


@dataclass(frozen=True)
class RdsSettings:
    """ApsaraDB RDS for PostgreSQL in place of the database container (prod only)."""

    #: Major version as RDS names it, e.g. "18.0".
    engine_version: str
    #: memos:rdsMajorUpgradeTo: the engine version reaches an existing instance only while this equals
    #: engine_version (the provider may run a major upgrade with an immediate switch-over); "" otherwise.
    major_upgrade_to: str
    instance_class: str
    #: RDS edition: Basic (one node) or HighAvailability (primary and standby).
    category: str
    storage_gb: int
    storage_type: str
    #: Days RDS keeps its backups (memos:backupRetentionDays, 7-730 on RDS).
    backup_retention_days: int
    #: Daily backup window in UTC, as RDS writes it: "HH:00Z-HH:00Z".
    backup_window: str
    #: memos:containerDatabaseVolumes keep: the container database's volumes stay declared (protected,
    #: retained in prod) for a stack that ran on the container database; remove: they are not declared.
    keep_container_volumes: bool


@dataclass(frozen=True)
class DatabaseSettings:
    #: The database container's memory plan; None when the database is on RDS.
    plan: MemoryPlan | None
    #: Loopback port in dev; None means the database publishes no port at all.
    host_port: int | None
    password_generation: int
    superuser_password_generation: int
    name: str = "memos"
    app_role: str = "memos"
    rds: RdsSettings | None = None
    #: memos:rdsInstance keep on a container stack that ran on RDS: the RDS instance and everything in
    #: it stay declared (protected, retained in prod), though the app no longer uses them.
    kept_rds: RdsSettings | None = None

    @property
    def kind(self) -> DatabaseKind:
        return "rds" if self.rds else "container"


@dataclass(frozen=True)
class AiSettings:
    plan: AiPlan
    #: API keys the app receives, by provider, as secret Outputs.
    keys: Mapping[str, pulumi.Output[str]]


@dataclass(frozen=True)
class ProxySettings:
    domain: str
    acme_email: str
    memory_mib: int


#: Memory of the sidecar that copies dumps to OSS: Alibaba's OSS, credentials and CloudMonitor SDKs
#: take about 70 MiB once imported (measured, tests/ops/test_oss_upload.py); a dump adds one part at most.
OFFSITE_MEMORY_MIB = 128


@dataclass(frozen=True)
class BackupSettings:
    #: Daily run time, UTC, as (hour, minute).
    time_utc: tuple[int, int]
    retention_days: int
    to_oss: bool
    memory_mib: int
    oss_retention_days: int
    #: Base image the OSS copier is built from on the Docker host.
    uploader_image: ImageRef
    #: Package index the copier's build installs its hash-locked requirements from.
    pip_index_url: str
    #: Memory limit of the OSS copier's container (used only with to_oss).
    copier_memory_mib: int = OFFSITE_MEMORY_MIB

    @property
    def reserved_mib(self) -> int:
        """Everything the backups may use: the dump container and, with OSS, the copier."""
        return self.memory_mib + (self.copier_memory_mib if self.to_oss else 0)


@dataclass(frozen=True)
class AlarmSettings:
    """CloudMonitor alarms (prod): who hears them and when the host's metrics alarm."""

    emails: tuple[str, ...]
    cpu_percent: int
    memory_percent: int
    data_disk_percent: int


@dataclass(frozen=True)
class EcsSettings:
    """The production host on Alibaba Cloud."""

    zone_id: str
    instance_type: str
    image_id: str
    system_disk_gb: int
    disk_category: str
    data_disk_gb: int
    snapshot_retention_days: int
    snapshot_hour_cst: int
    admin_cidrs: tuple[str, ...]
    ssh_public_key: str
    ssh_user: str
    ssh_private_key_path: str
    swap_mb: int
    registry_mirrors: tuple[str, ...]
    docker_ce_mirror: str
    bandwidth_mbps: int
    instance_deletion_protection: bool
    #: memos:cloudInitRollout: a changed cloud-init replaces the instance (else it is ignored, with a warning).
    cloud_init_rollout: bool
    vpc_cidr: str
    vswitch_cidr: str


@dataclass(frozen=True)
class StackSettings:
    stack: str
    stage: Stage
    #: Alibaba Cloud region (alicloud:region); empty outside prod.
    region: str
    name_prefix: str
    protect_data: bool
    #: The Docker host's shape: from the instance type's lookup in prod, from config in dev.
    host: Host
    images: Images
    app: AppSettings
    database: DatabaseSettings
    ai: AiSettings
    backup: BackupSettings
    proxy: ProxySettings | None
    ecs: EcsSettings | None
    #: Checks that could not be made, as one-line warnings for the preview.
    warnings: tuple[str, ...] = ()
    #: CloudMonitor alarms; prod only.
    alarms: AlarmSettings | None = None

    @property
    def is_prod(self) -> bool:
        return self.stage == "prod"


def _cidrs(key: str, values: tuple[str, ...], *, prod: bool) -> tuple[str, ...]:
    parsed: list[str] = []
    for value in values:
        try:
            network = ipaddress.ip_network(value, strict=True)
        except ValueError:
            raise ConfigError(key, f"{value!r} is not a CIDR block, e.g. 203.0.113.7/32") from None
        if prod and network.prefixlen == 0:
            raise ConfigError(
                key,
                f"{value} opens SSH to the whole internet; list only your admin addresses, e.g. 203.0.113.7/32",
            )
        parsed.append(str(network))
    return tuple(parsed)


def _url(key: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(key, f"{value!r} is not an http(s) URL")
    return value.rstrip("/")


def _ecs(values: ConfigValues) -> EcsSettings:
    admin_cidrs = _cidrs("adminCidrs", values.strings("adminCidrs"), prod=True)
    if not admin_cidrs:
        raise ConfigError(
            "adminCidrs",
            "is empty, so nobody could reach SSH; run: pulumi config set --path 'memos:adminCidrs[0]' <your-ip>/32",
        )
    public_key = values.string("sshPublicKey").strip()
    if not public_key:
        raise ConfigError(
            "sshPublicKey",
            'is not set; run: pulumi config set memos:sshPublicKey "$(cat ~/.ssh/id_ed25519.pub)" '
            "(the public half only: the private key stays in your agent or key file)",
        )
    if not re.match(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/=]+( .*)?$", public_key):
        raise ConfigError("sshPublicKey", "is not an OpenSSH public key line such as 'ssh-ed25519 AAAA... you@laptop'")
    if "PRIVATE KEY" in public_key:
        raise ConfigError("sshPublicKey", "holds a private key; remove it and set the .pub file's content")
    image_id = values.string("imageId").strip()
    if not image_id:
        raise ConfigError(
            "imageId",
            "is not set; pin an image id, e.g. from `aliyun ecs DescribeImages --ImageOwnerAlias system`",
        )
    ssh_user = values.string("sshUser")
    if not re.match(r"^[a-z_][a-z0-9_-]{0,31}$", ssh_user):
        raise ConfigError("sshUser", f"{ssh_user!r} is not a Unix user name")
    mirrors = tuple(_url("dockerRegistryMirrors", m) for m in values.strings("dockerRegistryMirrors"))
    vpc = _cidrs("vpcCidr", (values.string("vpcCidr"),), prod=False)[0]
    vswitch = _cidrs("vswitchCidr", (values.string("vswitchCidr"),), prod=False)[0]
    if not ipaddress.ip_network(vswitch).subnet_of(ipaddress.ip_network(vpc)):  # type: ignore[arg-type]
        raise ConfigError("vswitchCidr", f"{vswitch} is not inside memos:vpcCidr {vpc}; pick a subnet of it")
    return EcsSettings(
        zone_id=values.string("zoneId"),
        instance_type=values.string("instanceType"),
        image_id=image_id,
        system_disk_gb=values.integer("systemDiskGb", minimum=20, maximum=500),
        disk_category=values.choice(
            "diskCategory", ("cloud_essd_entry", "cloud_essd", "cloud_auto", "cloud_efficiency")
        ),
        data_disk_gb=values.integer("dataDiskGb", minimum=20, maximum=32768),
        snapshot_retention_days=values.integer("snapshotRetentionDays", minimum=1, maximum=65536),
        snapshot_hour_cst=values.integer("snapshotHour", minimum=0, maximum=23),
        admin_cidrs=admin_cidrs,
        ssh_public_key=public_key,
        ssh_user=ssh_user,
        ssh_private_key_path=values.string("sshPrivateKeyPath"),
        swap_mb=values.integer("swapMb", minimum=0, maximum=16384),
        registry_mirrors=mirrors,
        docker_ce_mirror=_url("dockerCeMirror", values.string("dockerCeMirror")),
        bandwidth_mbps=values.integer("internetMaxBandwidthOut", minimum=1, maximum=200),
        instance_deletion_protection=values.boolean("instanceDeletionProtection"),
        cloud_init_rollout=values.boolean("cloudInitRollout"),
        vpc_cidr=vpc,
        vswitch_cidr=vswitch,
    )


def _host(values: ConfigValues, ecs: EcsSettings | None, offer: EcsOffer | None) -> Host:
    """The Docker host's vCPUs and memory: in prod the instance type's, as the region sells it.

    memos:hostVcpus / memos:hostMemoryMb (0 = not set) describe the developer's Docker in dev; in
    prod they may be set only to the instance type's own shape, so nothing has to be kept in step.
    Prod's one lookup also answers whether the zone sells the type with the stack's disk category,
    and the image is checked here too: a config the region cannot serve stops before any resource.
    """
    vcpus = values.integer("hostVcpus", minimum=0, maximum=256)
    memory = values.integer("hostMemoryMb", minimum=0, maximum=1048576)
    if ecs is None:
        if not vcpus or not memory:
            raise ConfigError(
                "hostVcpus" if not vcpus else "hostMemoryMb",
                "is not set; dev plans the containers for the Docker host you run, e.g. "
                "pulumi config set memos:hostVcpus 2 and memos:hostMemoryMb 2048 --stack dev",
            )
        if memory < 512:
            raise ConfigError("hostMemoryMb", f"{memory} is out of range; set a number between 512 and 1048576")
        return Host(vcpus=vcpus, memory_mib=memory)
    if offer is None:
        raise ValueError("production settings need the region's ECS offer (offer)")
    found = offer.instance_type(ecs.instance_type, ecs.disk_category)
    if found is None:
        raise ConfigError(
            "instanceType",
            f"{ecs.instance_type} is not sold with {ecs.disk_category} disks in any zone of this region; pick a "
            "type that `aliyun ecs DescribeAvailableResource --DestinationResource InstanceType "
            f"--SystemDiskCategory {ecs.disk_category}` lists, or another memos:diskCategory",
        )
    if ecs.zone_id not in found.zones:
        raise ConfigError(
            "zoneId",
            f"{ecs.zone_id} does not offer {ecs.instance_type} with {ecs.disk_category} disks; "
            f"zones that do: {', '.join(found.zones)}",
        )
    if (vcpus and vcpus != found.vcpus) or (memory and memory != found.memory_mib):
        raise ConfigError(
            "instanceType",
            f"{ecs.instance_type} has {found.vcpus} vCPU / {found.memory_mib / 1024:g} GiB, but the plan in "
            f"memos:hostVcpus / memos:hostMemoryMb assumes {vcpus or found.vcpus} vCPU / "
            f"{(memory or found.memory_mib) / 1024:g} GiB; prod reads the shape from the instance type, so remove "
            "those keys from the stack (pulumi config rm)",
        )
    if not offer.has_image(ecs.image_id):
        raise ConfigError(
            "imageId",
            f"{ecs.image_id} is not an image this account can use in this region; list them with "
            "`aliyun ecs DescribeImages --ImageOwnerAlias system --OSType linux`",
        )
    return Host(vcpus=found.vcpus, memory_mib=found.memory_mib)


_RDS_ENGINE_VERSION = re.compile(r"^(?P<major>\d+)\.0$")
#: pgvector on ApsaraDB RDS for PostgreSQL needs major version 14 or later (Alibaba Cloud's pgvector guide).
RDS_MIN_MAJOR = 14


def _keep_container_volumes(values: ConfigValues, kind: DatabaseKind, name_prefix: str) -> bool:
    """memos:containerDatabaseVolumes: whether an RDS stack still declares the container database's volumes."""
    key = "containerDatabaseVolumes"
    choice = values.string(key)
    if kind == "container":
        if choice:
            raise ConfigError(
                key,
                f"{choice!r} applies only with memos:database rds (the container database always keeps its volumes); "
                f"run: pulumi config rm memos:{key}",
            )
        return True
    if not choice:
        raise ConfigError(
            key,
            f"with memos:database rds, say what happens to the container database's volumes ({name_prefix}-pgdata, "
            f"{name_prefix}-backups): keep for a stack that ran on the container database (scripts/migrate-database "
            "sets it), remove for a new stack or once they are no longer needed (docs/outgrowing.md, "
            f'"Moving the database to RDS and back"); run: pulumi config set memos:{key} keep (or remove)',
        )
    return values.choice(key, ("keep", "remove")) == "keep"


def _keep_rds(values: ConfigValues, kind: DatabaseKind) -> bool:
    """memos:rdsInstance: whether a container stack still declares the RDS instance it ran on."""
    key = "rdsInstance"
    choice = values.string(key)
    if not choice:
        return False
    keep = values.choice(key, ("keep", "remove")) == "keep"
    if kind == "rds" and not keep:
        raise ConfigError(
            key,
            "remove applies only with memos:database container (the stack runs on RDS now); run: "
            f"pulumi config rm memos:{key}",
        )
    return keep


def _rds_version(values: ConfigValues, key: str) -> str:
    """A major version key (memos:rdsEngineVersion, memos:rdsMajorUpgradeTo) as RDS names it."""
    version = values.string(key)
    match = _RDS_ENGINE_VERSION.match(version)
    if not match:
        raise ConfigError(key, f"{version!r} is not a major version as RDS names it, e.g. 18.0")
    if int(match["major"]) < RDS_MIN_MAJOR:
        raise ConfigError(
            key,
            f"{version}: the vector extension needs PostgreSQL 14 or later on RDS; use 18.0 (what the container runs)",
        )
    return version


def rds_upgrade_warning(rds: RdsSettings) -> str | None:
    """A one-line warning when memos:rdsMajorUpgradeTo names another version than memos:rdsEngineVersion."""
    if not rds.major_upgrade_to or rds.major_upgrade_to == rds.engine_version:
        return None
    return (
        f"memos:rdsMajorUpgradeTo: {rds.major_upgrade_to} is not memos:rdsEngineVersion ({rds.engine_version}), so "
        "no engine version is sent to the RDS instance; set both to the version you upgrade to, or remove "
        'memos:rdsMajorUpgradeTo (docs/outgrowing.md, "Upgrading PostgreSQL on RDS")'
    )


def _rds(values: ConfigValues, backup: BackupSettings, kind: DatabaseKind, name_prefix: str) -> RdsSettings:
    """The RDS keys, parsed in every stack (they are inert unless memos:database is rds)."""
    version = _rds_version(values, "rdsEngineVersion")
    upgrade_to = _rds_version(values, "rdsMajorUpgradeTo") if values.string("rdsMajorUpgradeTo") else ""
    retention = backup.retention_days
    if (kind == "rds" or _keep_rds(values, kind)) and not 7 <= retention <= 730:
        raise ConfigError(
            "backupRetentionDays",
            f"{retention}: RDS keeps backups for 7 to 730 days; set a number in that range with memos:database rds "
            "(or memos:rdsInstance keep)",
        )
    return RdsSettings(
        engine_version=version,
        major_upgrade_to=upgrade_to,
        instance_class=values.string("rdsInstanceClass"),
        category=values.choice("rdsCategory", ("Basic", "HighAvailability")),
        storage_gb=values.integer("rdsStorageGb", minimum=20, maximum=32000),
        storage_type=values.choice("rdsStorageType", ("cloud_essd", "cloud_essd2", "cloud_essd3", "general_essd")),
        backup_retention_days=retention,
        backup_window=backup_window(backup.time_utc[0]),
        keep_container_volumes=_keep_container_volumes(values, kind, name_prefix),
    )


def _alarms(values: ConfigValues) -> AlarmSettings:
    emails = tuple(email.strip() for email in values.strings("alertEmails"))
    if not emails:
        raise ConfigError(
            "alertEmails",
            "is empty; prod alarms must reach someone: pulumi config set --path 'memos:alertEmails[0]' "
            "you@example.com (CloudMonitor then mails a confirmation link to each address)",
        )
    for email in emails:
        if not _EMAIL.match(email):
            raise ConfigError("alertEmails", f"{email!r} is not an email address")
    if len(set(emails)) != len(emails):
        raise ConfigError("alertEmails", "lists an address twice; list each once")
    return AlarmSettings(
        emails=emails,
        cpu_percent=values.integer("alarmCpuPercent", minimum=1, maximum=100),
        memory_percent=values.integer("alarmMemoryPercent", minimum=1, maximum=100),
        data_disk_percent=values.integer("alarmDataDiskPercent", minimum=1, maximum=100),
    )


def _images(values: ConfigValues, *, prod: bool) -> tuple[Images, str | None]:
    """The three pinned images, and a warning when the app's release could not be checked."""
    images = Images(
        app=parse_image("appImage", values.string("appImage"), require_pinned=prod),
        postgres=parse_image("postgresImage", values.string("postgresImage"), require_pinned=prod),
        proxy=parse_image("proxyImage", values.string("proxyImage"), require_pinned=prod),
    )
    if not re.search(r"pg18|18", images.postgres.tag or "") and images.postgres.digest is None:
        raise ConfigError(
            "postgresImage",
            f"{images.postgres} is not a PostgreSQL 18 image; the settings and data directory layout are "
            "planned for 18, e.g. pgvector/pgvector:0.8.6-pg18-trixie",
        )
    warning = check_app_release(
        images.app, ai_enabled=values.boolean("aiEnabled"), schema_exists=values.boolean(SCHEMA_EXISTS_KEY)
    )
    return images, warning


def _proxy(values: ConfigValues) -> ProxySettings | None:
    """Caddy in front of the app, only with memos:domain."""
    domain = values.string("domain").strip().lower()
    if not domain:
        return None
    if not _DOMAIN.match(domain):
        raise ConfigError("domain", f"{domain!r} is not a DNS name such as memos.example.com")
    email = values.string("acmeEmail").strip()
    if not _EMAIL.match(email):
        raise ConfigError(
            "acmeEmail",
            "must be an email address when memos:domain is set (Let's Encrypt sends expiry notices there); "
            "run: pulumi config set memos:acmeEmail you@example.com",
        )
    return ProxySettings(
        domain=domain, acme_email=email, memory_mib=values.integer("proxyMemoryMb", minimum=32, maximum=1024)
    )


def _app(values: ConfigValues, *, prod: bool, proxy: ProxySettings | None) -> AppSettings:
    """The app container: memory, published port (none behind the proxy), public URL and time zone."""
    timezone = values.string("timezone")
    if timezone not in _iana_zones():
        raise ConfigError(
            "timezone",
            f"{timezone!r} is not in the IANA time zone database; use a zone name such as UTC or Asia/Shanghai",
        )
    instance_url = values.string("instanceUrl").strip()
    if instance_url:
        instance_url = _url("instanceUrl", instance_url)
    return AppSettings(
        memory_mib=values.integer("appMemoryMb", minimum=128, maximum=65536),
        host_port=None if proxy else values.integer("appHostPort", minimum=1, maximum=65535),
        public=prod and proxy is None,
        instance_url=instance_url,
        timezone=timezone,
    )


def _backup(values: ConfigValues, *, prod: bool) -> BackupSettings:
    """Nightly dumps on the host, and the optional copies to OSS (prod: they need the instance's role)."""
    backup = BackupSettings(
        time_utc=parse_daily_time("backupTimeUtc", values.string("backupTimeUtc")),
        retention_days=values.integer("backupRetentionDays", minimum=1, maximum=365),
        to_oss=values.boolean("backupToOss"),
        memory_mib=values.integer("backupMemoryMb", minimum=32, maximum=1024),
        oss_retention_days=values.integer("backupOssRetentionDays", minimum=1, maximum=3650),
        uploader_image=parse_image("backupUploaderImage", values.string("backupUploaderImage"), require_pinned=prod),
        pip_index_url=_url("pipIndexUrl", values.string("pipIndexUrl")),
    )
    if backup.to_oss and not prod:
        raise ConfigError(
            "backupToOss", "copies dumps with the ECS instance's RAM role, which only prod has; set it to false in dev"
        )
    return backup


def _database(
    values: ConfigValues,
    *,
    prod: bool,
    name_prefix: str,
    host: Host,
    reserves: Reserves,
    backup: BackupSettings,
    offer: EcsOffer | None,
    ecs: EcsSettings | None,
) -> DatabaseSettings:
    """Where PostgreSQL runs and, for the container, its memory plan inside the host's share."""
    db_port = values.integer("dbHostPort", minimum=0, maximum=65535)
    if prod and db_port:
        raise ConfigError(
            "dbHostPort",
            f"{db_port}: production never publishes the database; remove the key and reach it "
            "with `ssh -L` instead (see the operations runbook)",
        )
    kind = values.choice("database", ("container", "rds"))
    if kind == "rds" and not prod:
        raise ConfigError(
            "database",
            "rds runs ApsaraDB RDS next to the production ECS host, which dev does not have; use container in dev",
        )
    kept = _keep_rds(values, kind)
    rds = _rds(values, backup, kind, name_prefix)
    workload = Workload(
        expected_embeddings=values.integer("expectedEmbeddings", minimum=0, maximum=100_000_000),
        max_connections=values.integer("dbMaxConnections", minimum=10, maximum=1000),
    )
    return DatabaseSettings(
        plan=None if kind == "rds" else _plan(host, reserves, workload, offer=offer, ecs=ecs),
        host_port=db_port or None,
        password_generation=values.integer("dbPasswordGeneration", minimum=1, maximum=1_000_000),
        superuser_password_generation=values.integer("dbSuperuserPasswordGeneration", minimum=1, maximum=1_000_000),
        rds=rds if kind == "rds" else None,
        kept_rds=rds if kind == "container" and kept else None,
    )


def _plan(
    host: Host, reserves: Reserves, workload: Workload, *, offer: EcsOffer | None, ecs: EcsSettings | None
) -> MemoryPlan:
    """The database container's plan. In prod the host is the instance type, so a host too small for
    the database's share is reported against memos:instanceType, with the smallest type that fits."""
    limit = database_limit_mib(host, reserves)
    if ecs is not None and offer is not None and limit < MIN_DATABASE_LIMIT_MIB:

        def fits(candidate: InstanceTypeOffer) -> bool:
            try:
                plan_memory(Host(vcpus=candidate.vcpus, memory_mib=candidate.memory_mib), reserves, workload)
            except ConfigError:
                return False
            return True

        smallest = smallest_fitting(offer.instance_types(ecs.disk_category), fits)
        raise ConfigError(
            "instanceType",
            f"{ecs.instance_type} has {host.vcpus} vCPU / {host.memory_mib / 1024:g} GiB, which leaves {limit} MiB "
            f"for PostgreSQL after the OS ({reserves.os_mib}), Docker ({reserves.docker_mib}), the app "
            f"({reserves.app_mib}), the proxy ({reserves.proxy_mib}) and backups ({reserves.backup_mib}); it needs "
            f"at least {MIN_DATABASE_LIMIT_MIB} MiB: choose "
            + (f"{smallest}, the smallest type this region sells that fits" if smallest else "a larger type")
            + ", or lower memos:appMemoryMb",
        )
    return plan_memory(host, reserves, workload)


def _ai(values: ConfigValues, *, stack: str, secret: Callable[[str], pulumi.Output[str]]) -> AiSettings:
    """The AI providers the app uses, and their keys as secret Outputs (refused when stored in plain text)."""
    configured: list[str] = []
    for provider, (config_key, _) in API_KEYS.items():
        if values.raw(config_key) is None:
            continue
        if not values.is_secret(config_key):
            raise ConfigError(
                config_key,
                f"is stored in plain text in Pulumi.{stack}.yaml; treat it as leaked: revoke it at the "
                f"provider, then `pulumi config rm memos:{config_key}` and "
                f"`pulumi config set --secret memos:{config_key} <new-key>`",
            )
        configured.append(provider)
    plan = plan_ai(
        enabled=values.boolean("aiEnabled"),
        embedding_provider=values.string("aiEmbeddingProvider"),
        llm_provider=values.string("aiLlmProvider"),
        embedding_model=values.string("aiEmbeddingModel"),
        rerank_model=values.string("aiRerankModel"),
        llm_model=values.string("aiLlmModel"),
        base_urls={
            "siliconflow": values.string("aiSiliconflowBaseUrl"),
            "deepseek": values.string("aiDeepseekBaseUrl"),
            "openai": values.string("aiOpenaiBaseUrl"),
            "ollama": values.string("aiOllamaBaseUrl"),
        },
        configured_keys=configured,
        stack=stack,
    )
    return AiSettings(plan=plan, keys={provider: secret(API_KEYS[provider][0]) for provider in plan.key_providers})


def load_settings(
    values: ConfigValues,
    *,
    stack: str,
    secret: Callable[[str], pulumi.Output[str]],
    region: str | None,
    offer: EcsOffer | None = None,
) -> StackSettings:
    """Parse and validate the whole stack config; `secret(key)` returns a configured secret's Output.

    Each section is read by its own function; what spans sections is checked here. `region` is the
    provider's `alicloud:region`, required in prod. `offer` is what the region sells (prod sizes
    everything from the instance type the cloud reports, not from config).
    """
    for retired, why in RETIRED_KEYS.items():
        if values.raw(retired) is not None:
            raise ConfigError(retired, why)
    stage = values.choice("stage", ("dev", "prod"))
    prod = stage == "prod"
    if prod and not region:
        raise ConfigError(
            "alicloud:region", "is not set; prod runs on Alibaba Cloud: pulumi config set alicloud:region cn-hangzhou"
        )
    name_prefix = values.string("namePrefix")
    if not _NAME_PREFIX.match(name_prefix):
        raise ConfigError(
            "namePrefix", f"{name_prefix!r} must be 2-21 lowercase letters, digits or dashes, starting with a letter"
        )
    protect = values.boolean("protectData")
    if prod and not protect:
        raise ConfigError(
            "protectData",
            "false is not allowed when memos:stage is prod: the database and its disk must be protected "
            "and retained; to tear down on purpose, unprotect with `pulumi state unprotect` first",
        )

    images, release_warning = _images(values, prod=prod)
    proxy = _proxy(values)
    app = _app(values, prod=prod, proxy=proxy)
    backup = _backup(values, prod=prod)
    ecs = _ecs(values) if prod else None
    host = _host(values, ecs, offer)
    reserves = Reserves(
        os_mib=values.integer("osReserveMb", minimum=128, maximum=65536),
        docker_mib=values.integer("dockerReserveMb", minimum=32, maximum=65536),
        app_mib=app.memory_mib,
        proxy_mib=proxy.memory_mib if proxy else 0,
        backup_mib=backup.reserved_mib,
    )
    database = _database(
        values, prod=prod, name_prefix=name_prefix, host=host, reserves=reserves, backup=backup, offer=offer, ecs=ecs
    )

    # Rules across sections.
    if database.host_port is not None and database.host_port == values.integer("appHostPort", minimum=1, maximum=65535):
        raise ConfigError("dbHostPort", f"{database.host_port} is also memos:appHostPort; choose another port")
    if database.kind == "rds":
        if backup.to_oss:
            raise ConfigError(
                "backupToOss",
                "copies the dump container's dumps to OSS, and with memos:database rds there is no dump container "
                "(RDS keeps its own backups for memos:backupRetentionDays days); set it to false",
            )
        # No database or dump container: their memory goes to the app.
        app = replace(app, memory_mib=app_share_without_database(host, reserves))

    warnings = tuple(w for w in (release_warning, database.rds and rds_upgrade_warning(database.rds)) if w)
    return StackSettings(
        stack=stack,
        stage=stage,
        region=region or "",
        name_prefix=name_prefix,
        protect_data=protect,
        host=host,
        images=images,
        app=app,
        database=database,
        ai=_ai(values, stack=stack, secret=secret),
        backup=backup,
        proxy=proxy,
        ecs=ecs,
        warnings=warnings,
        alarms=_alarms(values) if prod else None,
    )


def from_pulumi_config() -> StackSettings:
    """Read the current stack's `memos:*` config through the Pulumi SDK."""
    config = pulumi.Config("memos")
    values = ConfigValues(config.get, is_secret=lambda key: is_config_secret(f"memos:{key}"))
    region = pulumi.Config("alicloud").get("region")
    settings = load_settings(
        values, stack=pulumi.get_stack(), secret=config.require_secret, region=region, offer=AlicloudEcsOffer()
    )
    for warning in settings.warnings:
        pulumi.log.warn(warning)
    return settings


class AlicloudEcsOffer:
    """The region's ECS offer from the alicloud lookups (called only for a prod stack)."""

    def instance_type(self, instance_type: str, system_disk_category: str) -> InstanceTypeOffer | None:
        found = _offered(self.instance_types(system_disk_category, instance_type=instance_type), instance_type)
        return found[0] if found else None

    def instance_types(
        self, system_disk_category: str, *, instance_type: str | None = None
    ) -> Sequence[InstanceTypeOffer]:
        try:
            found = alicloud.ecs.get_instance_types(
                instance_type=instance_type, system_disk_category=system_disk_category
            )
        except Exception as error:
            # DescribeAvailableResource answering no zone at all is the provider's error, not an empty list
            # (service_alicloud_ecs.go); that is "not sold", anything else is a real failure.
            if "There are no available zones" in str(error):
                return []
            raise
        return [
            InstanceTypeOffer(
                id=t.id,
                vcpus=t.cpu_core_count,
                memory_mib=memory_gib_to_mib(t.memory_size),
                zones=tuple(sorted(t.availability_zones)),
            )
            for t in found.instance_types
        ]

    def has_image(self, image_id: str) -> bool:
        return any(image.id == image_id for image in alicloud.ecs.get_images(image_id=image_id).images)


def _offered(offers: Sequence[InstanceTypeOffer], instance_type: str) -> list[InstanceTypeOffer]:
    return [o for o in offers if o.id == instance_type and o.zones]


def _iana_zones() -> frozenset[str]:
    """Zone names of the IANA database as the standard library finds it (system files or tzdata)."""
    return frozenset(zoneinfo.available_timezones())
