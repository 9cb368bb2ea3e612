"""Memos with AI features and PostgreSQL 18 + pgvector: local Docker (dev) or one ECS host (prod).

Only composes: read the settings, build the components in dependency order, export the outputs.
"""

from __future__ import annotations

import pulumi

from components.app import MemosApp, MemosAppArgs
from components.database import PgvectorDatabase, PgvectorDatabaseArgs
from components.docker_target import DockerTarget, local_docker_target, remote_docker_target
from components.ecs_host import EcsHost, EcsHostArgs, operator_ssh_command, ssh_options
from components.network import AppNetwork, AppNetworkArgs
from components.volumes import DataVolumes, DataVolumesArgs
from lib.app_env import app_environment
from lib.errors import ConfigError
from settings import StackSettings, from_pulumi_config


def docker_target(s: StackSettings, tags: dict[str, str]) -> DockerTarget:
    if s.ecs is None:
        return local_docker_target()
    ecs = s.ecs
    host = EcsHost("host", EcsHostArgs(
        ecs=ecs, name_prefix=s.name_prefix, stack=s.stack, protect=s.protect_data, tags=tags,
        vcpus=s.database.plan.host.vcpus, memory_mib=s.database.plan.host.memory_mib,
        public_app_port=s.app.host_port if s.app.public else None, ram_role_name=None,
    ))  # fmt: skip
    pulumi.export("public_ip", host.public_ip)
    pulumi.export("ssh_command", host.public_ip.apply(lambda ip: operator_ssh_command(ecs, s.stack, ip)))
    pulumi.export("docker_host", host.public_ip.apply(lambda ip: f"ssh://{ecs.ssh_user}@{ip}"))
    pulumi.export("cloud_init_sha256", host.cloud_init_sha256)
    return remote_docker_target(
        user=ecs.ssh_user, address=host.public_ip, ssh_options=ssh_options(ecs, s.stack), ready=host.ready
    )


def main(s: StackSettings) -> None:
    tags = {"project": "memos", "stack": s.stack}
    labels = {"org.memos-infra.project": "memos", "org.memos-infra.stack": s.stack}
    target = docker_target(s, tags)
    prefix = s.name_prefix

    network = AppNetwork("network", AppNetworkArgs(name=f"{prefix}-net", labels=labels), opts=target.options())
    volumes = DataVolumes(
        "volumes",
        DataVolumesArgs(
            names={"database": f"{prefix}-pgdata", "app": f"{prefix}-appdata"},
            protect=s.protect_data,
            labels=labels,
        ),
        opts=target.options(),
    )
    database = PgvectorDatabase(
        "database",
        PgvectorDatabaseArgs(
            image=str(s.images.postgres),
            container_name=f"{prefix}-postgres",
            network_name=network.name,
            data_volume_name=volumes.names["database"],
            plan=s.database.plan,
            host_port=s.database.host_port,
            database=s.database.name,
            app_role=s.database.app_role,
            app_password_generation=s.database.password_generation,
            superuser_password_generation=s.database.superuser_password_generation,
            shell_prefix=target.shell_prefix,
            labels=labels,
        ),
        opts=target.options(),
    )

    if s.proxy is not None:
        url: pulumi.Output[str] = pulumi.Output.from_input(f"https://{s.proxy.domain}")
    else:
        url = target.address.apply(lambda host: f"http://{host}:{s.app.host_port}")
    instance_url = pulumi.Output.from_input(s.app.instance_url) if s.app.instance_url else url
    MemosApp(
        "app",
        MemosAppArgs(
            image=str(s.images.app),
            container_name=None if s.proxy else f"{prefix}-app",
            network_name=network.name,
            data_volume_name=volumes.names["app"],
            clear_env=instance_url.apply(
                lambda u: app_environment(
                    s.ai.plan, instance_url=u, timezone=s.app.timezone, memory_mib=s.app.memory_mib
                )
            ),
            dsn=database.app_dsn,
            api_keys=s.ai.keys,
            memory_mib=s.app.memory_mib,
            host_port=s.app.host_port,
            public=s.app.public,
            labels=labels,
            depends_on=[database],
        ),
        opts=target.options(),
    )

    pulumi.export("app_url", instance_url)
    if s.database.host_port is not None:
        pulumi.export("db_endpoint", f"127.0.0.1:{s.database.host_port}")
    pulumi.export("db_container", database.container_name)


try:
    settings = from_pulumi_config()
    main(settings)
except ConfigError as error:
    raise pulumi.RunError(str(error)) from None
