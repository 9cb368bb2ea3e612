"""Memos with AI features and PostgreSQL 18 + pgvector: local Docker (dev) or one ECS host (prod).

Only composes: read the settings, build the components in dependency order, export the outputs.
"""

from __future__ import annotations

import pulumi

from components.app import MemosApp, MemosAppArgs
from components.backup import OFFSITE_PREFIX, DatabaseBackups, DatabaseBackupsArgs, OffsiteCopy
from components.database import PgvectorDatabase, PgvectorDatabaseArgs
from components.docker_target import DockerTarget, local_docker_target, remote_docker_target
from components.ecs_host import EcsHost, EcsHostArgs, operator_ssh_command, ssh_options
from components.network import AppNetwork, AppNetworkArgs
from components.offsite_bucket import OffsiteBackupBucket, OffsiteBackupBucketArgs
from components.proxy import HttpsProxy, HttpsProxyArgs
from components.volumes import DataVolumes, DataVolumesArgs
from lib.app_env import APP_PORT, app_environment
from lib.errors import ConfigError
from lib.images import expected_extensions
from settings import OFFSITE_MEMORY_MIB, StackSettings, from_pulumi_config


def docker_target(s: StackSettings, tags: dict[str, str], role: pulumi.Input[str] | None) -> DockerTarget:
    if s.ecs is None:
        return local_docker_target()
    ecs, plan = s.ecs, s.database.plan
    host = EcsHost("host", EcsHostArgs(
        ecs=ecs, name_prefix=s.name_prefix, stack=s.stack, protect=s.protect_data, tags=tags,
        vcpus=plan.host.vcpus, memory_mib=plan.host.memory_mib, ram_role_name=role,
        public_app_port=s.app.host_port if s.app.public else None,
    ))  # fmt: skip
    pulumi.export("public_ip", host.public_ip)
    pulumi.export("ssh_command", host.public_ip.apply(lambda ip: operator_ssh_command(ecs, s.stack, ip)))
    pulumi.export("docker_host", host.public_ip.apply(lambda ip: f"ssh://{ecs.ssh_user}@{ip}"))
    pulumi.export("cloud_init_sha256", host.cloud_init_sha256)
    options = ssh_options(ecs, s.stack)
    return remote_docker_target(user=ecs.ssh_user, address=host.public_ip, ssh_options=options, ready=host.ready)


def main(s: StackSettings) -> None:
    tags = {"project": "memos", "stack": s.stack}
    labels = {"org.memos-infra.project": "memos", "org.memos-infra.stack": s.stack}
    prefix, db = s.name_prefix, s.database
    bucket = None
    if s.backup.to_oss:
        bucket = OffsiteBackupBucket("offsite", OffsiteBackupBucketArgs(
            name_prefix=prefix, stack=s.stack, prefix=OFFSITE_PREFIX, retention_days=s.backup.oss_retention_days,
            region=s.region, protect=s.protect_data, tags=tags,
        ))  # fmt: skip
    target = docker_target(s, tags, bucket.role_name if bucket else None)
    on_docker = target.options()

    network = AppNetwork("network", AppNetworkArgs(name=f"{prefix}-net", labels=labels), opts=on_docker)
    volume_names = {"database": f"{prefix}-pgdata", "app": f"{prefix}-appdata", "backups": f"{prefix}-backups"}
    if s.proxy:
        volume_names["proxy"] = f"{prefix}-caddy"
    if bucket:
        volume_names["offsite"] = f"{prefix}-offsite"
    volumes = DataVolumes("volumes", DataVolumesArgs(names=volume_names, protect=s.protect_data, labels=labels),
                          opts=on_docker)  # fmt: skip
    database = PgvectorDatabase("database", PgvectorDatabaseArgs(
        image=str(s.images.postgres), container_name=f"{prefix}-postgres", network_name=network.name,
        data_volume_name=volumes.names["database"], plan=db.plan, host_port=db.host_port, database=db.name,
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
            bucket=bucket.bucket_name, endpoint=bucket.internal_endpoint, image=str(s.backup.uploader_image),
            state_volume_name=volumes.names["offsite"], memory_mib=OFFSITE_MEMORY_MIB,
        ) if bucket else None,
    ), opts=on_docker)  # fmt: skip

    if s.proxy is not None:
        url: pulumi.Output[str] = pulumi.Output.from_input(f"https://{s.proxy.domain}")
    else:
        url = target.address.apply(lambda host: f"http://{host}:{s.app.host_port}")
    instance_url = pulumi.Output.from_input(s.app.instance_url) if s.app.instance_url else url
    app = MemosApp("app", MemosAppArgs(
        image=str(s.images.app), container_name=None if s.proxy else f"{prefix}-app", network_name=network.name,
        data_volume_name=volumes.names["app"], dsn=database.app_dsn, api_keys=s.ai.keys,
        clear_env=instance_url.apply(lambda u: app_environment(
            s.ai.plan, instance_url=u, timezone=s.app.timezone, memory_mib=s.app.memory_mib)),
        memory_mib=s.app.memory_mib, host_port=s.app.host_port, public=s.app.public, labels=labels,
        depends_on=[database, backups],
    ), opts=on_docker)  # fmt: skip
    if s.proxy is not None:
        HttpsProxy("proxy", HttpsProxyArgs(
            image=str(s.images.proxy), container_name=f"{prefix}-proxy", domain=s.proxy.domain,
            acme_email=s.proxy.acme_email, upstream=f"{app.network_alias}:{APP_PORT}", network_name=network.name,
            data_volume_name=volumes.names["proxy"], memory_mib=s.proxy.memory_mib, public=s.is_prod,
            labels=labels, depends_on=[app],
        ), opts=on_docker)  # fmt: skip

    pulumi.export("app_url", instance_url)
    if db.host_port is not None:
        pulumi.export("db_endpoint", f"127.0.0.1:{db.host_port}")
    pulumi.export("db_container", database.container_name)
    pulumi.export("backup_container", backups.container_name)
    pulumi.export("app_container", app.container_name)
    pulumi.export("db_settings", db.plan.postgres_settings())
    pulumi.export("db_extensions", expected_extensions(s.images.postgres))
    pulumi.export("app_dsn", database.app_dsn)
    if bucket:
        pulumi.export("backup_bucket", bucket.bucket_name)


try:
    main(from_pulumi_config())
except ConfigError as error:
    raise pulumi.RunError(str(error)) from None
