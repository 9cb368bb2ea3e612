"""Memos with AI features and PostgreSQL 18 + pgvector: local Docker (dev) or one ECS host (prod).

Only composes: read the settings, build the components in dependency order, export the outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components.alarms import HostAlarms, HostAlarmsArgs
from components.app import MemosApp, MemosAppArgs
from components.backup import OFFSITE_PREFIX, DatabaseBackups, DatabaseBackupsArgs, OffsiteCopy
from components.container_defaults import stack_labels
from components.database import PgvectorDatabase, PgvectorDatabaseArgs
from components.destroy_guard import DestroyGuard, DestroyGuardArgs
from components.docker_target import DockerTarget, local_docker_target, remote_docker_target
from components.ecs_host import EcsHost, EcsHostArgs
from components.network import AppNetwork, AppNetworkArgs
from components.offsite_bucket import OffsiteBackupBucket, OffsiteBackupBucketArgs
from components.proxy import HttpsProxy, HttpsProxyArgs
from components.rds import RdsDatabase, RdsDatabaseArgs
from components.volumes import DataVolumes, DataVolumesArgs
from lib.app_env import APP_PORT, app_environment
from lib.errors import ConfigError
from lib.host_scripts import operator_ssh_command
from lib.images import expected_extensions
from settings import RdsSettings, StackSettings, from_pulumi_config


@dataclass(frozen=True)
class Database:
    """What the app needs from either database: its DSN, and what must exist before it starts."""

    dsn: pulumi.Output[str]
    before_app: list[pulumi.Resource]


def main(s: StackSettings) -> None:
    tags, labels, prefix = {"project": "memos", "stack": s.stack}, stack_labels(s.stack), s.name_prefix
    bucket = offsite_bucket(s, tags)
    target, host = docker_target(s, tags, bucket)
    alarms = host_alarms(s, host, target, backup_age=bucket is not None)
    on_docker = target.options()
    network = AppNetwork("network", AppNetworkArgs(name=f"{prefix}-net", labels=labels), opts=on_docker)
    volumes = DataVolumes("volumes", DataVolumesArgs(names=volume_names(s), protect=s.protect_data, labels=labels),
                          opts=on_docker)  # fmt: skip
    kept: list[pulumi.Resource] = []
    if s.database.rds is not None:
        database = rds_database(s, s.database.rds, host, target, tags)
    else:
        database = container_database(
            s, target=target, network=network, volumes=volumes, bucket=bucket, alarms=alarms, labels=labels
        )
        if s.database.kept_rds is not None:
            # Moved back from RDS: the instance stays declared, unused, until memos:rdsInstance says remove.
            kept = rds_database(s, s.database.kept_rds, host, target, tags).before_app
    instance_url = public_url(s, target)
    app = MemosApp("app", MemosAppArgs(
        image=str(s.images.app), container_name=None if s.proxy else f"{prefix}-app", network_name=network.name,
        data_volume_name=volumes.names["app"], dsn=database.dsn, api_keys=s.ai.keys,
        clear_env=instance_url.apply(lambda u: app_environment(
            s.ai.plan, instance_url=u, timezone=s.app.timezone, memory_mib=s.app.memory_mib)),
        memory_mib=s.app.memory_mib, host_port=s.app.host_port, public=s.app.public, labels=labels,
        depends_on=database.before_app,
    ), opts=on_docker)  # fmt: skip
    proxy = None
    if s.proxy is not None:
        proxy = HttpsProxy("proxy", HttpsProxyArgs(
            image=str(s.images.proxy), container_name=f"{prefix}-proxy", domain=s.proxy.domain,
            acme_email=s.proxy.acme_email, upstream=f"{app.network_alias}:{APP_PORT}", network_name=network.name,
            data_volume_name=volumes.names["proxy"], memory_mib=s.proxy.memory_mib, public=s.is_prod,
            labels=labels, depends_on=[app],
        ), opts=on_docker)  # fmt: skip
    # Every resource of the stack, for the destroy guard (deleted first, protected in prod).
    parts = [*target.resources, network, volumes, *database.before_app, *kept, app, alarms, proxy, bucket]
    DestroyGuard("destroy-guard", DestroyGuardArgs(protect=s.protect_data),
                 opts=pulumi.ResourceOptions(depends_on=[p for p in parts if p is not None]))  # fmt: skip

    pulumi.export("app_url", instance_url)
    if s.database.host_port is not None:
        pulumi.export("db_endpoint", f"127.0.0.1:{s.database.host_port}")
    pulumi.export("app_container", app.container_name)
    # What the database is expected to have; tools.verify reads what it has.
    pulumi.export("db_extensions_expected", expected_extensions(s.images.postgres))
    pulumi.export("memory_plan", memory_plan(s))
    pulumi.export("app_dsn", database.dsn)
    if bucket:
        pulumi.export("backup_bucket", bucket.bucket_name)


def offsite_bucket(s: StackSettings, tags: dict[str, str]) -> OffsiteBackupBucket | None:
    """The OSS bucket and RAM role for off-host dump copies (memos:backupToOss)."""
    if not s.backup.to_oss:
        return None
    return OffsiteBackupBucket("offsite", OffsiteBackupBucketArgs(
        name_prefix=s.name_prefix, stack=s.stack, prefix=OFFSITE_PREFIX, retention_days=s.backup.oss_retention_days,
        region=s.region, protect=s.protect_data, tags=tags,
    ))  # fmt: skip


def docker_target(
    s: StackSettings, tags: dict[str, str], bucket: OffsiteBackupBucket | None
) -> tuple[DockerTarget, EcsHost | None]:
    """The local engine in dev; in prod the ECS host, reached over SSH once it is ready."""
    if s.ecs is None:
        return local_docker_target(), None
    ecs = s.ecs
    host = EcsHost("host", EcsHostArgs(
        ecs=ecs, name_prefix=s.name_prefix, protect=s.protect_data, tags=tags,
        ram_role_name=bucket.role_name if bucket else None,
        public_app_port=s.app.host_port if s.app.public else None,
    ))  # fmt: skip
    pulumi.export("public_ip", host.public_ip)
    login = pulumi.Output.all(host.ssh, host.public_ip)
    pulumi.export("ssh_command", login.apply(lambda parts: operator_ssh_command(parts[0], parts[1])))
    pulumi.export("ssh_known_hosts", login.apply(lambda parts: f"{parts[1]} {parts[0].host_key}"))
    pulumi.export("docker_host", host.public_ip.apply(lambda ip: f"ssh://{ecs.ssh_user}@{ip}"))
    pulumi.export("cloud_init_sha256", host.cloud_init_sha256)
    return remote_docker_target(ssh=host.ssh, address=host.public_ip, ready=host.ready, host=host), host


def volume_names(s: StackSettings) -> dict[str, str]:
    """The stack's named volumes by role (the role is the resource name: never rename one)."""
    prefix, rds = s.name_prefix, s.database.rds
    names = {"app": f"{prefix}-appdata"}
    # On RDS the container database's volumes stay declared (protected, retained) only while the stack
    # says keep (memos:containerDatabaseVolumes); a new RDS stack, or one past `remove`, has none.
    if rds is None or rds.keep_container_volumes:
        names |= {"database": f"{prefix}-pgdata", "backups": f"{prefix}-backups"}
    if s.proxy:
        names["proxy"] = f"{prefix}-caddy"
    if s.backup.to_oss:
        names["offsite"] = f"{prefix}-offsite"
    return names


def container_database(
    s: StackSettings,
    *,
    target: DockerTarget,
    network: AppNetwork,
    volumes: DataVolumes,
    bucket: OffsiteBackupBucket | None,
    alarms: HostAlarms | None,
    labels: dict[str, str],
) -> Database:
    """PostgreSQL + pgvector in a container on the host, with its dumps (and their copies to OSS)."""
    prefix, db, plan = s.name_prefix, s.database, s.database.plan
    if plan is None:
        raise ValueError("the container database needs its memory plan")
    on_docker = target.options()
    database = PgvectorDatabase("database", PgvectorDatabaseArgs(
        image=str(s.images.postgres), container_name=f"{prefix}-postgres", network_name=network.name,
        data_volume_name=volumes.names["database"], plan=plan, host_port=db.host_port, database=db.name,
        app_role=db.app_role, app_password_generation=db.password_generation,
        superuser_password_generation=db.superuser_password_generation, shell_prefix=target.shell_prefix,
        labels=labels,
    ), opts=on_docker)  # fmt: skip
    backups = DatabaseBackups("backup", DatabaseBackupsArgs(
        image_id=database.image_id, container_name=f"{prefix}-backup", network_name=network.name,
        volume_name=volumes.names["backups"], database_host=database.host, database=db.name, app_role=db.app_role,
        superuser_password=database.superuser_password, time_utc=s.backup.time_utc,
        retention_days=s.backup.retention_days, memory_mib=s.backup.memory_mib, shell_prefix=target.shell_prefix,
        upgrade_triggers=[str(s.images.app)], labels=labels, depends_on=[database],
        offsite=OffsiteCopy(
            bucket=bucket.bucket_name, endpoint=bucket.internal_endpoint, region=s.region, role_name=bucket.role_name,
            base_image=str(s.backup.uploader_image), pip_index_url=s.backup.pip_index_url, stack=s.stack,
            metric_group_id=alarms.group_id if alarms else None, state_volume_name=volumes.names["offsite"],
            memory_mib=s.backup.copier_memory_mib,
        ) if bucket else None,
    ), opts=on_docker)  # fmt: skip
    pulumi.export("db_container", database.container_name)
    pulumi.export("backup_container", backups.container_name)
    pulumi.export("db_settings", plan.postgres_settings())
    return Database(dsn=database.app_dsn, before_app=[database, backups])


def rds_database(
    s: StackSettings, rds: RdsSettings, host: EcsHost | None, target: DockerTarget, tags: dict[str, str]
) -> Database:
    """ApsaraDB RDS for PostgreSQL in the host's VPC; its extensions are made from the host."""
    db, ecs = s.database, s.ecs
    if ecs is None or host is None:
        raise ConfigError("database", "rds runs only next to the production ECS host (memos:stage prod)")
    managed = RdsDatabase("rds", RdsDatabaseArgs(
        rds=rds, zone_id=ecs.zone_id, vpc_id=host.vpc_id, vswitch_id=host.vswitch_id,
        vswitch_cidr=ecs.vswitch_cidr, name_prefix=s.name_prefix, database=db.name, app_account=db.app_role,
        app_password_generation=db.password_generation, admin_password_generation=db.superuser_password_generation,
        client_image=str(s.images.postgres), shell_prefix=target.shell_prefix, docker_options=target.options(),
        depends_on=[host.ready], protect=s.protect_data, tags=tags,
    ))  # fmt: skip
    pulumi.export("rds_endpoint", pulumi.Output.concat(managed.host, ":", managed.port.apply(str)))
    return Database(dsn=managed.app_dsn, before_app=[managed])


def public_url(s: StackSettings, target: DockerTarget) -> pulumi.Output[str]:
    """Where users reach the app: memos:instanceUrl, the domain behind the proxy, or the host's port."""
    if s.app.instance_url:
        return pulumi.Output.from_input(s.app.instance_url)
    if s.proxy is not None:
        return pulumi.Output.from_input(f"https://{s.proxy.domain}")
    return target.address.apply(lambda host: f"http://{host}:{s.app.host_port}")


def host_alarms(s: StackSettings, host: EcsHost | None, target: DockerTarget, *, backup_age: bool) -> HostAlarms | None:
    """CloudMonitor alarms on the prod host and its public /healthz."""
    if s.alarms is None or host is None:
        return None
    return HostAlarms("alarms", HostAlarmsArgs(
        alarms=s.alarms, name_prefix=s.name_prefix, stack=s.stack, region=s.region, instance_id=host.instance_id,
        instance_name=f"{s.name_prefix}-host", health_url=public_url(s, target).apply(lambda u: f"{u}/healthz"),
        backup_age=backup_age,
    ))  # fmt: skip


def memory_plan(s: StackSettings) -> dict[str, int | str]:
    """The host's memory split, as the planner made it (MiB)."""
    proxy = s.proxy.memory_mib if s.proxy else 0
    plan = s.database.plan
    split: dict[str, int | str] = {"host": s.host.memory_mib, "app": s.app.memory_mib, "proxy": proxy}
    if plan is None:
        split["database"] = "ApsaraDB RDS: no database or dump container here, their memory went to the app"
    else:
        split |= {"os": plan.reserves.os_mib, "docker": plan.reserves.docker_mib,
                  "backup": plan.reserves.backup_mib, "database": plan.database_limit_mib}  # fmt: skip
    return split


try:
    main(from_pulumi_config())
except ConfigError as error:
    raise pulumi.RunError(str(error)) from None
