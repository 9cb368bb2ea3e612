"""Named Docker volumes for everything that must outlive a container."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_docker as docker


@dataclass(frozen=True)
class DataVolumesArgs:
    """Inputs of DataVolumes."""

    #: Docker volume name by role (e.g. "database" -> "memos-pgdata"); roles name the children.
    names: Mapping[str, str]
    #: Protect the volumes from deletion and keep them when removed from the program (prod).
    protect: bool
    #: Labels that mark the volumes as this stack's.
    labels: Mapping[str, str] = field(default_factory=lambda: {})


class DataVolumes(pulumi.ComponentResource):
    """One named volume per role, protected and retained when the stack says so."""

    names: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: DataVolumesArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("memos:index:DataVolumes", name, None, opts)
        self.names = {}
        for role, volume_name in sorted(args.names.items()):
            volume = docker.Volume(
                f"{name}-{role}",
                name=volume_name,
                driver="local",
                labels=[docker.VolumeLabelArgs(label=k, value=v) for k, v in sorted(args.labels.items())],
                opts=pulumi.ResourceOptions(
                    parent=self,
                    protect=args.protect,
                    retain_on_delete=args.protect,
                ),
            )
            self.names[role] = volume.name
        self.register_outputs({"names": self.names})
