"""Scheduled logical backups of the database, a dump before every app upgrade, and off-host copies.

Creates the backup container (the database's own image, so pg_dump matches the server): it dumps
the database in custom format every day at a configured UTC time, verifies each dump with
pg_restore --list, keeps the configured number of days on its volume, and reports a failed or
missing dump through its healthcheck. A one-shot command takes a fresh dump whenever the app's image
changes, before the app is replaced. With an OSS bucket, a sidecar copies every dump there with the
instance's RAM role.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_command as command
import pulumi_docker as docker

from components.container_defaults import baseline, unprivileged

SCRIPTS = Path(__file__).resolve().parent.parent / "ops"
BACKUP_SCRIPT = "/usr/local/bin/memos-backup"
RESTORE_SCRIPT = "/usr/local/bin/memos-restore"
UPLOAD_SCRIPT = "/usr/local/bin/memos-oss-upload"
PASSWORD_FILE = "/run/secrets/postgres-superuser-password"  # noqa: S105 (a path)
BACKUP_DIR = "/backups"
OFFSITE_STATE_DIR = "/var/lib/memos-offsite"
OFFSITE_PREFIX = "memos/"


@dataclass(frozen=True)
class OffsiteCopy:
    """Where the sidecar copies dumps: a bucket reached with the instance's RAM role."""

    bucket: pulumi.Input[str]
    #: The bucket region's VPC-internal endpoint, e.g. oss-cn-hangzhou-internal.aliyuncs.com.
    endpoint: str
    image: str
    #: Volume that remembers which dumps were copied.
    state_volume_name: pulumi.Input[str]
    memory_mib: int


@dataclass(frozen=True)
class DatabaseBackupsArgs:
    """Inputs of DatabaseBackups."""

    #: Image id of the database server (same PostgreSQL major for pg_dump).
    image_id: pulumi.Input[str]
    #: Fixed container name (operators and the restore script exec into it).
    container_name: str
    network_name: pulumi.Input[str]
    #: Volume for the dumps (on the data disk in prod).
    volume_name: pulumi.Input[str]
    #: Where the database answers inside the network.
    database_host: pulumi.Input[str]
    database: str
    app_role: str
    #: Superuser password (secret), delivered as a file.
    superuser_password: pulumi.Output[str]
    #: Daily dump time (hour, minute), UTC.
    time_utc: tuple[int, int]
    retention_days: int
    memory_mib: int
    #: argv prefix that runs a command on the Docker host.
    shell_prefix: pulumi.Input[Sequence[str]]
    #: Values whose change means an app upgrade: a dump is taken first.
    upgrade_triggers: Sequence[pulumi.Input[str]]
    #: Off-host copies, or None.
    offsite: OffsiteCopy | None
    labels: Mapping[str, str]
    #: The database and its role job: the first dump runs as soon as the container starts.
    depends_on: Sequence[pulumi.Resource]


#: The scripts write only to their volumes: the root filesystem is read-only, /tmp a small tmpfs.
SCRATCH = {"/tmp": "rw,noexec,nosuid,size=16m"}  # noqa: S108 (a tmpfs inside the container)


class DatabaseBackups(pulumi.ComponentResource):
    """The backup container, its pre-upgrade dump, and the optional off-host copier."""

    container_name: pulumi.Output[str]

    def __init__(self, name: str, args: DatabaseBackupsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("memos:index:DatabaseBackups", name, None, opts)
        labels = [docker.ContainerLabelArgs(label=k, value=v) for k, v in sorted(args.labels.items())]
        hour, minute = args.time_utc
        container = docker.Container(
            f"{name}-server",
            name=args.container_name,
            image=args.image_id,
            entrypoints=["/bin/sh", BACKUP_SCRIPT],
            command=["schedule"],
            envs=pulumi.Output.from_input(args.database_host).apply(
                lambda host: [
                    f"PGHOST={host}",
                    "PGPORT=5432",
                    "PGUSER=postgres",
                    f"PGDATABASE={args.database}",
                    f"PGPASSWORD_FILE={PASSWORD_FILE}",
                    "PGCONNECT_TIMEOUT=10",
                    f"BACKUP_DIR={BACKUP_DIR}",
                    f"BACKUP_RETENTION_DAYS={args.retention_days}",
                    f"BACKUP_TIME_UTC={hour:02d}:{minute:02d}",
                    f"MEMOS_APP_ROLE={args.app_role}",
                    "TZ=UTC",
                ]
            ),
            uploads=[
                docker.ContainerUploadArgs(
                    file=BACKUP_SCRIPT, content=(SCRIPTS / "container" / "memos-backup").read_text(), permissions="0555"
                ),
                docker.ContainerUploadArgs(
                    file=RESTORE_SCRIPT,
                    content=(SCRIPTS / "container" / "memos-restore").read_text(),
                    permissions="0555",
                ),
                docker.ContainerUploadArgs(
                    file=PASSWORD_FILE,
                    content=pulumi.Output.secret(args.superuser_password),
                    permissions="0400",
                    owner="0",
                    group="0",
                ),
            ],
            healthcheck=docker.ContainerHealthcheckArgs(
                tests=["CMD", "/bin/sh", BACKUP_SCRIPT, "health"],
                interval="5m",
                timeout="30s",
                retries=1,
                # The first dump runs at start; give a large database time before judging it.
                start_period="30m",
                start_interval="15s",
            ),
            networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=args.network_name)],
            volumes=[docker.ContainerVolumeArgs(volume_name=args.volume_name, container_path=BACKUP_DIR)],
            labels=labels,
            read_only=True,
            tmpfs=SCRATCH,
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=list(args.depends_on),
                delete_before_replace=True,
                replace_on_changes=["healthcheck"],
            ),
            **baseline(args.memory_mib),
            **unprivileged(),
        )

        dump = ["docker", "exec", args.container_name, "/bin/sh", BACKUP_SCRIPT, "run", "pre-upgrade"]
        command.local.Command(
            f"{name}-pre-upgrade-dump",
            create=pulumi.Output.from_input(args.shell_prefix).apply(lambda prefix: shlex.join([*prefix, *dump])),
            # Replaced (so run again) whenever the app's image changes, and before the app is.
            triggers=list(args.upgrade_triggers),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[container]),
        )

        if args.offsite is not None:
            offsite = args.offsite
            docker.Container(
                f"{name}-offsite",
                name=f"{args.container_name}-offsite",
                image=docker.RemoteImage(
                    f"{name}-offsite-image",
                    name=offsite.image,
                    keep_locally=True,
                    opts=pulumi.ResourceOptions(parent=self),
                ).image_id,
                entrypoints=["python", UPLOAD_SCRIPT],
                envs=pulumi.Output.from_input(offsite.bucket).apply(
                    lambda bucket: [
                        f"OSS_BUCKET={bucket}",
                        f"OSS_ENDPOINT={offsite.endpoint}",
                        f"OSS_PREFIX={OFFSITE_PREFIX}",
                        f"BACKUP_DIR={BACKUP_DIR}",
                        f"STATE_DIR={OFFSITE_STATE_DIR}",
                        "INTERVAL_SECONDS=300",
                        "TZ=UTC",
                    ]
                ),
                uploads=[
                    docker.ContainerUploadArgs(
                        file=UPLOAD_SCRIPT, content=(SCRIPTS / "oss_upload.py").read_text(), permissions="0555"
                    ),
                ],
                healthcheck=docker.ContainerHealthcheckArgs(
                    tests=["CMD", "python", UPLOAD_SCRIPT, "--health"],
                    interval="5m",
                    timeout="30s",
                    retries=1,
                    start_period="20m",
                    start_interval="15s",
                ),
                networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=args.network_name)],
                volumes=[
                    docker.ContainerVolumeArgs(volume_name=args.volume_name, container_path=BACKUP_DIR, read_only=True),
                    docker.ContainerVolumeArgs(volume_name=offsite.state_volume_name, container_path=OFFSITE_STATE_DIR),
                ],
                labels=labels,
                read_only=True,
                tmpfs=SCRATCH,
                opts=pulumi.ResourceOptions(
                    parent=self, delete_before_replace=True, replace_on_changes=["healthcheck"]
                ),
                **baseline(offsite.memory_mib),
                **unprivileged(),
            )

        self.container_name = container.name
        self.register_outputs({"container_name": self.container_name})
