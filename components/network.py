"""The Docker network the database, the app and the proxy share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_docker as docker


@dataclass(frozen=True)
class AppNetworkArgs:
    """Inputs of AppNetwork."""

    #: Docker network name; fixed, so containers and operators can find it.
    name: str
    #: Labels that mark the network as this stack's.
    labels: Mapping[str, str] = field(default_factory=lambda: {})


class AppNetwork(pulumi.ComponentResource):
    """A user-defined bridge network: containers reach each other by alias, nothing is published."""

    name: pulumi.Output[str]

    def __init__(self, name: str, args: AppNetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("memos:index:AppNetwork", name, None, opts)
        network = docker.Network(
            f"{name}-bridge",
            name=args.name,
            driver="bridge",
            labels=[docker.NetworkLabelArgs(label=k, value=v) for k, v in sorted(args.labels.items())],
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.name = network.name
        self.register_outputs({"name": self.name})
