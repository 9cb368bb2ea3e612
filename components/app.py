"""The Memos app container, with clear env, secret files and a health-gated start.

Creates the pinned app image and one container that runs as uid 10001, keeps its data on a named
volume, reads the DSN and the AI keys from files uploaded into the container, and counts as created
only once `/healthz` answers. With a fixed host port the old container must go before the new one
binds it; behind the proxy the app has neither fixed name nor port, so the new one starts first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from components.container_defaults import (
    REPLACE_ON,
    baseline,
    container_labels,
    healthcheck,
    pinned_image,
    unprivileged,
)
from lib.app_env import (
    APP_PORT,
    APP_UID,
    DATA_DIR,
    DSN_FILE,
    HEALTH_URL,
    WRAPPER_PATH,
    key_file,
    secret_env_wrapper,
)

NETWORK_ALIAS = "memos"


@dataclass(frozen=True)
class MemosAppArgs:
    """Inputs of MemosApp."""

    #: Pinned image reference, e.g. hrygo/memos:0.25.3.
    image: str
    #: Fixed container name, or None to let Pulumi name it (needed for start-before-stop).
    container_name: str | None
    #: Docker network to join (with the alias "memos").
    network_name: pulumi.Input[str]
    #: Named volume for /var/opt/memos.
    data_volume_name: pulumi.Input[str]
    #: Environment visible to `docker inspect`: nothing secret.
    clear_env: pulumi.Input[Mapping[str, str]]
    #: The database DSN (secret), delivered as the file MEMOS_DSN_FILE names.
    dsn: pulumi.Output[str]
    #: API keys by provider (secret), delivered as files the entrypoint wrapper reads.
    api_keys: Mapping[str, pulumi.Output[str]]
    #: Container memory limit in MiB (GOMEMLIMIT in clear_env matches it).
    memory_mib: int
    #: Host port to publish, or None behind the proxy.
    host_port: int | None
    #: Publish on every interface (prod without proxy) instead of loopback.
    public: bool
    #: Labels for the container.
    labels: Mapping[str, str]
    #: Resources the app must start after (the database and its role job).
    depends_on: Sequence[pulumi.Resource]


class MemosApp(pulumi.ComponentResource):
    """The app server."""

    container_name: pulumi.Output[str]
    #: The app's name on the Docker network, for the proxy.
    network_alias: str = NETWORK_ALIAS

    def __init__(self, name: str, args: MemosAppArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("memos:index:MemosApp", name, None, opts)
        image = pinned_image(f"{name}-image", args.image, self)

        def secret_file(path: str, content: pulumi.Output[str]) -> docker.ContainerUploadArgs:
            return docker.ContainerUploadArgs(
                file=path,
                content=pulumi.Output.secret(content),
                permissions="0400",
                owner=str(APP_UID),
                group=str(APP_UID),
            )

        uploads = [
            # Read by `sh`, so it needs no execute bit for uid 10001.
            docker.ContainerUploadArgs(file=WRAPPER_PATH, content=secret_env_wrapper(), permissions="0444"),
            secret_file(DSN_FILE, args.dsn),
            *(secret_file(key_file(provider), key) for provider, key in sorted(args.api_keys.items())),
        ]
        fixed_port = args.host_port is not None
        # Every interface only in prod without a proxy (the security group opens the port);
        # loopback in dev.
        bind_ip = "0.0.0.0" if args.public else "127.0.0.1"  # noqa: S104
        container = docker.Container(
            f"{name}-server",
            name=args.container_name,
            image=image.image_id,
            user=f"{APP_UID}:{APP_UID}",
            entrypoints=["/bin/sh", WRAPPER_PATH],
            envs=pulumi.Output.from_input(args.clear_env).apply(
                lambda env: [f"{key}={value}" for key, value in sorted(env.items())]
            ),
            uploads=uploads,
            healthcheck=healthcheck(
                # BusyBox wget: the image has no curl and its sh has no /dev/tcp.
                ["CMD", "wget", "-q", "-O", "/dev/null", HEALTH_URL],
                interval_s=5,
                timeout_s=5,
                retries=3,
                start_period_s=120,
            ),
            wait=True,
            # First start runs the schema migration before /healthz answers.
            wait_timeout=300,
            networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=args.network_name, aliases=[NETWORK_ALIAS])],
            ports=[docker.ContainerPortArgs(internal=APP_PORT, external=args.host_port, ip=bind_ip)]
            if fixed_port
            else [],
            volumes=[docker.ContainerVolumeArgs(volume_name=args.data_volume_name, container_path=DATA_DIR)],
            labels=container_labels(args.labels),
            **baseline(args.memory_mib),
            **unprivileged(),
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=list(args.depends_on),
                delete_before_replace=fixed_port or args.container_name is not None,
                replace_on_changes=REPLACE_ON,
            ),
        )
        self.container_name = container.name
        self.register_outputs({"container_name": self.container_name})
