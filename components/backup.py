"""Scheduled logical backups of the database, a dump before every app upgrade, and off-host copies.

Creates the backup container (the database's own image, so pg_dump matches the server): it dumps
the database in custom format every day at a configured UTC time, verifies each dump with
pg_restore --list, keeps the configured number of days on its volume, and reports a failed or
missing dump through its healthcheck. A one-shot command takes a fresh dump whenever the app's image
changes, before the app is replaced. With an OSS bucket, a sidecar copies every dump there with the
instance's RAM role and reports the newest dump's age to CloudMonitor; its image is built on the
Docker host from ops/copier/ (hash-locked requirements).
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pulumi
import pulumi_command as command
import pulumi_docker as docker

from components.container_defaults import (
    REPLACE_ON,
    baseline,
    container_labels,
    healthcheck,
    unprivileged,
)

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
    #: The bucket's region (OSS signature V4 signs for it), e.g. cn-hangzhou.
    region: str
    #: The instance's RAM role.
    role_name: pulumi.Input[str]
    #: Image the copier is built from, and the package index its locked requirements come from.
    base_image: str
    pip_index_url: str
    #: Stack name, the backup-age metric's dimension.
    stack: str
    #: CloudMonitor application group for the backup-age metric, or None to report none.
    metric_group_id: pulumi.Input[str] | None
    #: Volume that remembers which dumps were copied.
    state_volume_name: pulumi.Input[str]
    memory_mib: int


#: The copier's build context (ops/) and recipe: a hash-locked install of Alibaba's SDKs, no install at start.
COPIER_CONTEXT = SCRIPTS
COPIER_FILES = ("copier/Dockerfile", "copier/build-requirements.txt", "copier/requirements.txt", "oss_upload.py")


COPIER_REPOSITORY = "memos-oss-copier"


def prune_copier_images_script(keep: str) -> str:
    """Shell script for the Docker host: remove every copier image but `keep`. The provider's Delete of
    a built image does nothing, so without this each new recipe would leave its predecessor on the
    host's disk; `docker image rm` refuses an image a container still uses, and that one is kept."""
    return f"""set -eu
keep={shlex.quote(keep)}
docker image ls --format '{{{{.Repository}}}}:{{{{.Tag}}}}' {COPIER_REPOSITORY} | while read -r ref; do
  [ "$ref" = "$keep" ] && continue
  if docker image rm "$ref" >/dev/null 2>&1; then echo "removed $ref"; else echo "kept $ref (still in use)"; fi
done
"""


def copier_build_args(base_image: str, pip_index_url: str) -> dict[str, str]:
    """The copier's build arguments. pip ignores an index reached over plain HTTP (such as Alibaba's
    VPC-internal mirror, http://mirrors.cloud.aliyuncs.com/pypi/simple/) unless its host is trusted;
    every package is hash-locked, so such an index can withhold files but never change them."""
    build_args = {"BASE_IMAGE": base_image, "PIP_INDEX_URL": pip_index_url}
    parts = urlsplit(pip_index_url)
    if parts.scheme == "http" and parts.hostname:
        build_args["PIP_TRUSTED_HOST"] = parts.hostname
    return build_args


def copier_tag(base_image: str) -> str:
    """`memos-oss-copier:<hash>` of the recipe, its inputs and the base image: a change builds a new tag."""
    digest = hashlib.sha256(base_image.encode())
    for name in COPIER_FILES:
        digest.update(name.encode() + b"\0" + (COPIER_CONTEXT / name).read_bytes())
    return f"{COPIER_REPOSITORY}:{digest.hexdigest()[:16]}"


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


#: Scratch space in memory. The root filesystem stays writable: the provider uploads the scripts and the
#: password file after create, and Docker refuses any upload into a read-only root filesystem.
SCRATCH = {"/tmp": "rw,noexec,nosuid,size=16m"}  # noqa: S108 (a tmpfs inside the container)


class DatabaseBackups(pulumi.ComponentResource):
    """The backup container, its pre-upgrade dump, and the optional off-host copier."""

    container_name: pulumi.Output[str]

    def __init__(self, name: str, args: DatabaseBackupsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("memos:index:DatabaseBackups", name, None, opts)
        labels = container_labels(args.labels)
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
            healthcheck=healthcheck(
                ["CMD", "/bin/sh", BACKUP_SCRIPT, "health"],
                interval_s=5 * 60,
                timeout_s=30,
                retries=1,
                # The first dump runs at start; give a large database time before judging it.
                start_period_s=30 * 60,
            ),
            networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=args.network_name)],
            volumes=[docker.ContainerVolumeArgs(volume_name=args.volume_name, container_path=BACKUP_DIR)],
            labels=labels,
            tmpfs=SCRATCH,
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=list(args.depends_on),
                delete_before_replace=True,
                replace_on_changes=REPLACE_ON,
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
            # Built on the Docker host from the locked requirements (the host reaches the package index
            # mirror); never pushed, so the content-addressed tag is what the container runs.
            image = docker.Image(
                f"{name}-offsite-image",
                image_name=copier_tag(offsite.base_image),
                build=docker.DockerBuildArgs(
                    # Relative to the project directory (where `pulumi` runs), so state does not hold a
                    # checkout's absolute path.
                    context="ops",
                    dockerfile="ops/copier/Dockerfile",
                    args=copier_build_args(offsite.base_image, offsite.pip_index_url),
                    platform="linux/amd64",
                ),
                skip_push=True,
                opts=pulumi.ResourceOptions(parent=self),
            )
            copier = docker.Container(
                f"{name}-offsite",
                name=f"{args.container_name}-offsite",
                image=image.image_name,
                entrypoints=["python", UPLOAD_SCRIPT],
                envs=pulumi.Output.all(offsite.bucket, offsite.role_name, offsite.metric_group_id).apply(
                    lambda parts: [
                        f"OSS_BUCKET={parts[0]}",
                        f"OSS_REGION={offsite.region}",
                        f"OSS_ENDPOINT={offsite.endpoint}",
                        f"OSS_PREFIX={OFFSITE_PREFIX}",
                        f"RAM_ROLE_NAME={parts[1]}",
                        *([f"CMS_GROUP_ID={parts[2]}", f"MEMOS_STACK={offsite.stack}"] if parts[2] else []),
                        f"BACKUP_DIR={BACKUP_DIR}",
                        f"STATE_DIR={OFFSITE_STATE_DIR}",
                        "INTERVAL_SECONDS=300",
                        "TZ=UTC",
                    ]
                ),
                healthcheck=healthcheck(
                    ["CMD", "python", UPLOAD_SCRIPT, "--health"],
                    interval_s=5 * 60,
                    timeout_s=30,
                    retries=1,
                    start_period_s=20 * 60,
                ),
                networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=args.network_name)],
                volumes=[
                    docker.ContainerVolumeArgs(volume_name=args.volume_name, container_path=BACKUP_DIR, read_only=True),
                    docker.ContainerVolumeArgs(volume_name=offsite.state_volume_name, container_path=OFFSITE_STATE_DIR),
                ],
                labels=labels,
                tmpfs=SCRATCH,
                opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True, replace_on_changes=REPLACE_ON),
                **baseline(offsite.memory_mib),
                **unprivileged(),
            )
            # After the copier moved to a new image (the old container is deleted before its
            # replacement), the images of earlier recipes go. The script comes on stdin, so the same
            # `sh -s` runs it through the local prefix and through ssh alike.
            command.local.Command(
                f"{name}-offsite-image-prune",
                create=pulumi.Output.from_input(args.shell_prefix).apply(
                    lambda prefix: shlex.join([*prefix, "sh", "-s"])
                ),
                stdin=image.image_name.apply(prune_copier_images_script),
                triggers=[image.image_name],
                opts=pulumi.ResourceOptions(parent=self, depends_on=[copier]),
            )

        self.container_name = container.name
        self.register_outputs({"container_name": self.container_name})
