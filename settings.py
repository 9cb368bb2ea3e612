"""Stack configuration, parsed once into frozen, typed settings and validated eagerly.

Every `memos:*` key is declared with its default in Pulumi.yaml, except the three optional AI API keys
(the CLI rejects a secret with a default, and a declared key without one is required in every stack).
Components and pure modules never read config: they receive these objects. Secrets stay Outputs from
config to container. Any invalid value raises ConfigError naming the key and the fix.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import pulumi
from pulumi.runtime.config import is_config_secret

from lib.ai import API_KEYS, AiPlan, plan_ai
from lib.config_reader import ConfigValues
from lib.errors import ConfigError
from lib.images import ImageRef, parse_image
from lib.schedule import parse_daily_time
from lib.tuning import Host, MemoryPlan, Reserves, Workload, plan_memory

Stage = Literal["dev", "prod"]

#: Config keys that hold secrets and are read only with `get_secret`.
SECRET_KEYS = tuple(config_key for config_key, _ in API_KEYS.values())
_NAME_PREFIX = re.compile(r"^[a-z][a-z0-9-]{1,20}$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))+$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_TIMEZONE = re.compile(r"^(UTC|[A-Za-z]+(/[A-Za-z0-9_+-]+){1,2})$")


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
class DatabaseSettings:
    plan: MemoryPlan
    #: Loopback port in dev; None means the database publishes no port at all.
    host_port: int | None
    password_generation: int
    superuser_password_generation: int
    name: str = "memos"
    app_role: str = "memos"


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


#: Memory of the sidecar that copies dumps to OSS (a small stdlib Python loop).
OFFSITE_MEMORY_MIB = 32


@dataclass(frozen=True)
class BackupSettings:
    #: Daily run time, UTC, as (hour, minute).
    time_utc: tuple[int, int]
    retention_days: int
    to_oss: bool
    memory_mib: int
    oss_retention_days: int
    uploader_image: ImageRef

    @property
    def reserved_mib(self) -> int:
        """Everything the backups may use: the dump container and, with OSS, the copier."""
        return self.memory_mib + (OFFSITE_MEMORY_MIB if self.to_oss else 0)


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
    images: Images
    app: AppSettings
    database: DatabaseSettings
    ai: AiSettings
    backup: BackupSettings
    proxy: ProxySettings | None
    ecs: EcsSettings | None

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
        vpc_cidr=vpc,
        vswitch_cidr=vswitch,
    )


def load_settings(
    values: ConfigValues,
    *,
    stack: str,
    secret: Callable[[str], pulumi.Output[str]],
    region: str | None,
) -> StackSettings:
    """Parse and validate the whole stack config; `secret(key)` returns a configured secret's Output.

    `region` is the provider's `alicloud:region`, required in prod.
    """
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

    domain = values.string("domain").strip().lower()
    proxy: ProxySettings | None = None
    if domain:
        if not _DOMAIN.match(domain):
            raise ConfigError("domain", f"{domain!r} is not a DNS name such as memos.example.com")
        email = values.string("acmeEmail").strip()
        if not _EMAIL.match(email):
            raise ConfigError(
                "acmeEmail",
                "must be an email address when memos:domain is set (Let's Encrypt sends expiry notices there); "
                "run: pulumi config set memos:acmeEmail you@example.com",
            )
        proxy = ProxySettings(
            domain=domain, acme_email=email, memory_mib=values.integer("proxyMemoryMb", minimum=32, maximum=1024)
        )

    timezone = values.string("timezone")
    if not _TIMEZONE.match(timezone):
        raise ConfigError("timezone", f"{timezone!r} is not an IANA zone name such as UTC or Asia/Shanghai")
    instance_url = values.string("instanceUrl").strip()
    if instance_url:
        instance_url = _url("instanceUrl", instance_url)
    app_host_port = values.integer("appHostPort", minimum=1, maximum=65535)
    app = AppSettings(
        memory_mib=values.integer("appMemoryMb", minimum=128, maximum=65536),
        host_port=None if proxy else app_host_port,
        public=prod and proxy is None,
        instance_url=instance_url,
        timezone=timezone,
    )

    backup_time = parse_daily_time("backupTimeUtc", values.string("backupTimeUtc"))
    backup = BackupSettings(
        time_utc=backup_time,
        retention_days=values.integer("backupRetentionDays", minimum=1, maximum=365),
        to_oss=values.boolean("backupToOss"),
        memory_mib=values.integer("backupMemoryMb", minimum=32, maximum=1024),
        oss_retention_days=values.integer("backupOssRetentionDays", minimum=1, maximum=3650),
        uploader_image=parse_image("backupUploaderImage", values.string("backupUploaderImage"), require_pinned=prod),
    )
    if backup.to_oss and not prod:
        raise ConfigError(
            "backupToOss", "copies dumps with the ECS instance's RAM role, which only prod has; set it to false in dev"
        )

    db_port = values.integer("dbHostPort", minimum=0, maximum=65535)
    if prod and db_port:
        raise ConfigError(
            "dbHostPort",
            f"{db_port}: production never publishes the database; remove the key and reach it "
            "with `ssh -L` instead (see the README's operations runbook)",
        )
    if db_port and db_port == app_host_port:
        raise ConfigError("dbHostPort", f"{db_port} is also memos:appHostPort; choose another port")

    plan = plan_memory(
        Host(
            vcpus=values.integer("hostVcpus", minimum=1, maximum=256),
            memory_mib=values.integer("hostMemoryMb", minimum=512, maximum=1048576),
        ),
        Reserves(
            os_mib=values.integer("osReserveMb", minimum=128, maximum=65536),
            docker_mib=values.integer("dockerReserveMb", minimum=32, maximum=65536),
            app_mib=app.memory_mib,
            proxy_mib=proxy.memory_mib if proxy else 0,
            backup_mib=backup.reserved_mib,
        ),
        Workload(
            expected_embeddings=values.integer("expectedEmbeddings", minimum=0, maximum=100_000_000),
            storage=values.choice("embeddingStorage", ("vector", "halfvec")),
            max_connections=values.integer("dbMaxConnections", minimum=10, maximum=1000),
        ),
    )
    database = DatabaseSettings(
        plan=plan,
        host_port=db_port or None,
        password_generation=values.integer("dbPasswordGeneration", minimum=1, maximum=1_000_000),
        superuser_password_generation=values.integer("dbSuperuserPasswordGeneration", minimum=1, maximum=1_000_000),
    )

    configured: list[str] = []
    for provider, (config_key, _) in API_KEYS.items():
        raw = values.raw(config_key)
        if raw is None:
            continue
        if not values.is_secret(config_key):
            raise ConfigError(
                config_key,
                f"is stored in plain text in Pulumi.{stack}.yaml; treat it as leaked: revoke it at the "
                f"provider, then `pulumi config rm memos:{config_key}` and "
                f"`pulumi config set --secret memos:{config_key} <new-key>`",
            )
        configured.append(provider)
    ai_plan = plan_ai(
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
    ai = AiSettings(
        plan=ai_plan,
        keys={provider: secret(API_KEYS[provider][0]) for provider in ai_plan.key_providers},
    )

    return StackSettings(
        stack=stack,
        stage=stage,
        region=region or "",
        name_prefix=name_prefix,
        protect_data=protect,
        images=images,
        app=app,
        database=database,
        ai=ai,
        backup=backup,
        proxy=proxy,
        ecs=_ecs(values) if prod else None,
    )


def from_pulumi_config() -> StackSettings:
    """Read the current stack's `memos:*` config through the Pulumi SDK."""
    config = pulumi.Config("memos")
    values = ConfigValues(config.get, is_secret=lambda key: is_config_secret(f"memos:{key}"))
    region = pulumi.Config("alicloud").get("region")
    return load_settings(values, stack=pulumi.get_stack(), secret=config.require_secret, region=region)
