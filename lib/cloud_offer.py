"""What the region sells, in the shape the program's checks need it: ECS instance types and images.

In prod the settings fill an `EcsOffer` from the alicloud lookups; the tests and the offline check fill
it from the mock engine's tables. One lookup answers the instance type's shape and the zones that sell
it with the stack's system disk category (`ecs.get_instance_types(instance_type=..., system_disk_category=...)`,
which the provider answers from DescribeAvailableResource: alicloud/data_source_alicloud_instance_types.go
and service_alicloud_ecs.go at v1.247.0, the Terraform provider pulumi-alicloud 4.0.0 bridges).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

#: Disk categories the provider's `get_instance_types(system_disk_category=...)` accepts (StringInSlice,
#: checked before any API call); anything else fails the invoke.
SYSTEM_DISK_CATEGORIES = (
    "cloud",
    "ephemeral_ssd",
    "cloud_essd",
    "cloud_efficiency",
    "cloud_ssd",
    "cloud_essd_entry",
    "cloud_auto",
)


@dataclass(frozen=True)
class InstanceTypeOffer:
    """One ECS instance type as the region sells it."""

    id: str
    vcpus: int
    memory_mib: int
    #: Zones that sell it (with the system disk category it was asked for), sorted.
    zones: tuple[str, ...]


class EcsOffer(Protocol):
    """The region's ECS offer, looked up once per program run (prod only)."""

    def instance_type(self, instance_type: str, system_disk_category: str) -> InstanceTypeOffer | None:
        """The type with the zones that sell it with that system disk, or None when no zone does."""
        ...

    def instance_types(self, system_disk_category: str) -> Sequence[InstanceTypeOffer]:
        """Every type some zone sells with that system disk (asked only to suggest a larger one)."""
        ...

    def has_image(self, image_id: str) -> bool:
        """Whether this account can start instances from the image in this region."""
        ...


def memory_gib_to_mib(memory_size: float) -> int:
    """`memory_size` as the lookup reports it (GiB, a float: 2.0) in MiB."""
    return round(float(memory_size) * 1024)


def smallest_fitting(offers: Sequence[InstanceTypeOffer], fits: Callable[[InstanceTypeOffer], bool]) -> str | None:
    """The smallest type (memory, then vCPUs, then name) for which `fits` holds, as "id (N vCPU / M GiB)"."""
    for offer in sorted(offers, key=lambda o: (o.memory_mib, o.vcpus, o.id)):
        if fits(offer):
            return f"{offer.id} ({offer.vcpus} vCPU / {offer.memory_mib / 1024:g} GiB)"
    return None
