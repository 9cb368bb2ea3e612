"""The HTTPS reverse proxy: Caddy with automatic certificates in front of the app.

Creates the pinned Caddy image and one container that publishes ports 80 and 443, keeps its
certificates on a named volume, and proxies the configured domain to the app's network alias. It
exists only when a domain is configured; the app then publishes no port of its own.
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
from lib.app_env import gomemlimit_mib
from lib.caddyfile import ADMIN, caddyfile

CADDYFILE = "/etc/caddy/Caddyfile"


@dataclass(frozen=True)
class HttpsProxyArgs:
    """Inputs of HttpsProxy."""

    #: Pinned Caddy image, e.g. caddy:2.10.2-alpine.
    image: str
    #: Fixed container name (the container holds the fixed ports 80 and 443).
    container_name: str
    #: DNS name served, and the email Let's Encrypt writes to.
    domain: str
    acme_email: str
    #: host:port of the app inside the network.
    upstream: str
    network_name: pulumi.Input[str]
    #: Volume for certificates and ACME account keys (/data).
    data_volume_name: pulumi.Input[str]
    memory_mib: int
    #: Publish on every interface (prod) instead of loopback.
    public: bool
    labels: Mapping[str, str]
    depends_on: Sequence[pulumi.Resource]


class HttpsProxy(pulumi.ComponentResource):
    """Caddy on ports 80/443 for one domain."""

    container_name: pulumi.Output[str]

    def __init__(self, name: str, args: HttpsProxyArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("memos:index:HttpsProxy", name, None, opts)
        image = pinned_image(f"{name}-image", args.image, self)
        bind_ip = "0.0.0.0" if args.public else "127.0.0.1"  # noqa: S104 (public only in prod)
        container = docker.Container(
            f"{name}-server",
            name=args.container_name,
            image=image.image_id,
            envs=[f"GOMEMLIMIT={gomemlimit_mib(args.memory_mib)}MiB"],
            uploads=[
                docker.ContainerUploadArgs(
                    file=CADDYFILE,
                    content=caddyfile(domain=args.domain, acme_email=args.acme_email, upstream=args.upstream),
                    permissions="0444",
                )
            ],
            healthcheck=healthcheck(
                ["CMD", "wget", "-q", "-O", "/dev/null", f"http://{ADMIN}/config/"],
                interval_s=10,
                timeout_s=5,
                retries=3,
                start_period_s=30,
            ),
            wait=True,
            wait_timeout=120,
            networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=args.network_name)],
            ports=[
                docker.ContainerPortArgs(internal=80, external=80, ip=bind_ip),
                docker.ContainerPortArgs(internal=443, external=443, ip=bind_ip),
            ],
            volumes=[docker.ContainerVolumeArgs(volume_name=args.data_volume_name, container_path="/data")],
            tmpfs={"/config": "rw,noexec,nosuid,size=8m"},
            labels=container_labels(args.labels),
            **baseline(args.memory_mib),
            **unprivileged(keep=["NET_BIND_SERVICE"]),
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=list(args.depends_on),
                delete_before_replace=True,
                replace_on_changes=REPLACE_ON,
            ),
        )
        self.container_name = container.name
        self.register_outputs({"container_name": self.container_name})
