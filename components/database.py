"""PostgreSQL 18 with pgvector in one container, tuned for its host, plus its roles and passwords.

Creates the superuser and app passwords (pulumi-random), the pinned pgvector image, the database
container (settings as `-c` flags from the memory plan, passwords and init script as files), and a
role job that gives the app a least-privilege login role. The container has a fixed name and the data
volume, so it is always deleted before its replacement starts: two servers must never share a data
directory.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_command as command
import pulumi_docker as docker

from components.container_defaults import REPLACE_ON, baseline, container_labels, healthcheck, pinned_image
from components.passwords import generated_password
from lib.app_env import dsn
from lib.database_sql import INIT_SQL, role_job_sql, scram_sha256_verifier
from lib.tuning import MemoryPlan

POSTGRES_PORT = 5432
POSTGRES_UID = "999"
PASSWORD_FILE = "/run/secrets/postgres-superuser-password"  # noqa: S105 (a path, not a password)
INIT_FILE = "/docker-entrypoint-initdb.d/10-extensions.sql"
#: The pgvector image for PostgreSQL 18 keeps PGDATA in /var/lib/postgresql/18/docker and declares
#: /var/lib/postgresql as its volume; mounting the old .../data path would leave the data unmounted.
DATA_MOUNT = "/var/lib/postgresql"
NETWORK_ALIAS = "postgres"


@dataclass(frozen=True)
class PgvectorDatabaseArgs:
    """Inputs of PgvectorDatabase."""

    #: Pinned image reference, e.g. pgvector/pgvector:0.8.6-pg18-trixie.
    image: str
    #: Fixed container name (jobs address the container by it).
    container_name: str
    #: Docker network to join (with the alias "postgres").
    network_name: pulumi.Input[str]
    #: Named volume that holds the cluster.
    data_volume_name: pulumi.Input[str]
    #: Memory limits and server settings for this host.
    plan: MemoryPlan
    #: Loopback host port to publish (dev only); None publishes nothing.
    host_port: int | None
    #: Database the app uses, and the role that owns it.
    database: str
    app_role: str
    #: Bump to generate a new app password (rotation); the role job applies it.
    app_password_generation: int
    #: Bump to generate a new superuser password; the role job applies it.
    superuser_password_generation: int
    #: argv prefix that runs a command on the Docker host.
    shell_prefix: pulumi.Input[Sequence[str]]
    #: Labels for the container.
    labels: Mapping[str, str]


class PgvectorDatabase(pulumi.ComponentResource):
    """The database server, its passwords and the app's login role."""

    host: pulumi.Output[str]
    port: pulumi.Output[int]
    container_name: pulumi.Output[str]
    app_dsn: pulumi.Output[str]
    superuser_password: pulumi.Output[str]
    image_id: pulumi.Output[str]

    def __init__(self, name: str, args: PgvectorDatabaseArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("memos:index:PgvectorDatabase", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        superuser_password = generated_password(f"{name}-superuser-password", args.superuser_password_generation, child)
        app_password = generated_password(f"{name}-app-password", args.app_password_generation, child)

        image = pinned_image(f"{name}-image", args.image, self)

        plan = args.plan
        container = docker.Container(
            f"{name}-server",
            name=args.container_name,
            image=image.image_id,
            command=["postgres", *plan.command_flags()],
            envs=[
                "POSTGRES_USER=postgres",
                f"POSTGRES_DB={args.database}",
                f"POSTGRES_PASSWORD_FILE={PASSWORD_FILE}",
                # Trust only on the container's own socket (jobs use `docker exec`), SCRAM over TCP.
                "POSTGRES_INITDB_ARGS=--auth-local=trust --auth-host=scram-sha-256",
            ],
            uploads=[
                docker.ContainerUploadArgs(
                    file=PASSWORD_FILE,
                    content=superuser_password,
                    permissions="0400",
                    owner="0",
                    group="0",
                ),
                docker.ContainerUploadArgs(file=INIT_FILE, content=INIT_SQL, permissions="0444"),
            ],
            healthcheck=healthcheck(
                # Over TCP on loopback: during first-time init the entrypoint's temporary server
                # listens on the socket only, so the check cannot pass before the init script ran.
                [
                    "CMD",
                    "pg_isready",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(POSTGRES_PORT),
                    "-U",
                    "postgres",
                    "-d",
                    args.database,
                ],
                interval_s=5,
                timeout_s=5,
                retries=5,
                start_period_s=120,
            ),
            wait=True,
            wait_timeout=300,
            shm_size=plan.shm_size_mib,
            networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=args.network_name, aliases=[NETWORK_ALIAS])],
            ports=(
                [docker.ContainerPortArgs(internal=POSTGRES_PORT, external=args.host_port, ip="127.0.0.1")]
                if args.host_port is not None
                else []
            ),
            volumes=[docker.ContainerVolumeArgs(volume_name=args.data_volume_name, container_path=DATA_MOUNT)],
            labels=container_labels(args.labels),
            # The image stops on SIGINT (fast shutdown with a checkpoint); give it time to finish.
            **baseline(plan.database_limit_mib, stop_seconds=60),
            opts=pulumi.ResourceOptions(
                parent=self,
                delete_before_replace=True,
                replace_on_changes=REPLACE_ON,
                # Both uploads are read only when the entrypoint initialises an empty volume. After
                # that the role job owns the passwords (and re-asserts the extensions), so rotating
                # the superuser password never restarts the database.
                ignore_changes=["uploads"],
            ),
        )

        sql = pulumi.Output.all(app_password, superuser_password).apply(
            lambda pw: role_job_sql(
                database=args.database,
                app_role=args.app_role,
                app_verifier=scram_sha256_verifier(pw[0], salt_context=args.app_role),
                superuser_verifier=scram_sha256_verifier(pw[1], salt_context="postgres"),
            )
        )
        psql = ["psql", "-v", "ON_ERROR_STOP=1", "--no-psqlrc", "-q", "-U", "postgres", "-d", args.database]
        command.local.Command(
            f"{name}-role-job",
            create=pulumi.Output.all(args.shell_prefix, container.name).apply(
                lambda parts: shlex.join([*parts[0], "docker", "exec", "-i", parts[1], *psql])
            ),
            stdin=pulumi.Output.secret(sql),
            # Re-run on a new server container too: a recreated volume has no app role yet.
            triggers=[container.id],
            logging=command.local.Logging.STDERR,
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["stdout", "stderr"]),
        )

        self.host = pulumi.Output.from_input(NETWORK_ALIAS)
        self.port = pulumi.Output.from_input(POSTGRES_PORT)
        self.container_name = container.name
        self.superuser_password = superuser_password
        self.image_id = image.image_id
        # Consumers order themselves after the role job by depending on this component; the DSN
        # itself depends only on the password, so a re-run job never shows up as an app change.
        self.app_dsn = pulumi.Output.secret(
            app_password.apply(
                lambda pw: dsn(
                    user=args.app_role, password=pw, host=NETWORK_ALIAS, port=POSTGRES_PORT, database=args.database
                )
            )
        )
        self.register_outputs(
            {
                "host": self.host,
                "port": self.port,
                "container_name": self.container_name,
                "app_dsn": self.app_dsn,
            }
        )
