"""Named Docker volumes for everything that must outlive a container.

A volume's physical name includes memos:namePrefix, and Docker's volume name is ForceNew in the
provider (resource_docker_volume.go), so a new prefix would replace every volume: a new, empty one
under the new name, and a delete of the old one that `protect` refuses only when that step runs.
A protected volume therefore keeps the name it was created with (`ignore_changes`: the engine gives
an ignored property its deployed input, processIgnoreChanges in pulumi/pulumi
pkg/resource/deploy/step_generator.go, and an unchanged resource's step hands the program its
deployed outputs, SameStep.Apply in step.go), and the containers mount the volume resource's own
`name` output: what they mount always exists (a mount of a missing name would make Docker create a
new, empty volume).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_docker as docker


@dataclass(frozen=True)
class DataVolumesArgs:
    """Inputs of DataVolumes."""

    #: Docker volume name by role (e.g. "database" -> "memos-pgdata"); roles name the children.
    names: Mapping[str, str]
    #: Protect the volumes from deletion and keep them when removed from the program (prod); a
    #: protected volume also keeps its name when memos:namePrefix changes.
    protect: bool
    #: Labels that mark the volumes as this stack's.
    labels: Mapping[str, str] = field(default_factory=lambda: {})


def kept_names_warning(configured: Mapping[str, str], deployed: Sequence[str]) -> str | None:
    """A one-line warning when volumes keep names other than the config's (memos:namePrefix changed)."""
    kept = [(have, want) for have, want in zip(deployed, configured.values(), strict=True) if have and have != want]
    if not kept:
        return None
    pairs = ", ".join(f"{have} (not {want})" for have, want in kept)
    return (
        f"memos:namePrefix: the data volumes keep their names: {pairs}; they are protected and a new name would "
        "replace them with empty ones, while everything else takes the new prefix (docs/operations.md, "
        '"Changing memos:namePrefix")'
    )


class DataVolumes(pulumi.ComponentResource):
    """One named volume per role, protected and retained when the stack says so."""

    #: The volume's name by role, as the volume resource reports it: what containers must mount.
    names: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: DataVolumesArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("memos:index:DataVolumes", name, None, opts)
        self.names = {}
        configured = dict(sorted(args.names.items()))
        for role, volume_name in configured.items():
            volume = docker.Volume(
                f"{name}-{role}",
                name=volume_name,
                driver="local",
                labels=[docker.VolumeLabelArgs(label=k, value=v) for k, v in sorted(args.labels.items())],
                opts=pulumi.ResourceOptions(
                    parent=self,
                    protect=args.protect,
                    retain_on_delete=args.protect,
                    ignore_changes=["name"] if args.protect else None,
                ),
            )
            self.names[role] = volume.name
        pulumi.Output.all(*self.names.values()).apply(lambda deployed: _warn(kept_names_warning(configured, deployed)))
        self.register_outputs({"names": self.names})


def _warn(line: str | None) -> None:
    if line:
        pulumi.log.warn(line)
