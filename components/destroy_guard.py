"""A protected marker that makes `pulumi destroy` stop before it deletes anything.

Pulumi deletes in reverse dependency order and refuses a protected resource only when its own turn
comes, so a stack whose protected resources are its volumes and disks loses its containers, firewall
rules and instance before the destroy stops. This component depends on every other resource of the
stack: it is the first thing a destroy would delete, and, protected, it refuses at once. It has no
cloud object and no provider, and a dependency declared with `depends_on` alone never makes Pulumi
replace it, so it costs nothing on `pulumi up`. Tearing down on purpose: docs/operations.md, "Tearing down".
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi


@dataclass(frozen=True)
class DestroyGuardArgs:
    """Inputs of DestroyGuard."""

    #: Refuse `pulumi destroy` (prod); False lets a dev stack be destroyed in one command.
    protect: bool


class DestroyGuard(pulumi.ComponentResource):
    """Deleted first on destroy; protected, so the destroy stops there."""

    def __init__(self, name: str, args: DestroyGuardArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        options = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(protect=args.protect))
        super().__init__("memos:index:DestroyGuard", name, None, options)
        self.register_outputs({})
