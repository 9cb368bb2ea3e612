"""Generated database passwords, shared by the container database and the RDS one."""

from __future__ import annotations

import pulumi
import pulumi_random as random


def generated_password(resource_name: str, generation: int, opts: pulumi.ResourceOptions) -> pulumi.Output[str]:
    """A new random password whenever `generation` is bumped (rotation), as a secret Output.

    32 alphanumerics with at least one lower, upper and digit: ~190 bits, safe unescaped in a DSN, and
    three of the four character classes ApsaraDB RDS requires.
    """
    result = random.RandomPassword(
        resource_name,
        length=32,
        special=False,
        min_lower=1,
        min_upper=1,
        min_numeric=1,
        keepers={"generation": str(generation)},
        opts=opts,
    ).result
    return pulumi.Output.secret(result)
