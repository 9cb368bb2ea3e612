"""In prod the host's shape comes from the instance type's lookup, and a new type re-plans everything.

What an instance type change does on the real cloud is the provider's (resource_alicloud_instance.go:
`instance_type` is not ForceNew; an update stops the instance, calls ModifyInstanceSpec and starts it
again towards `status`); the mocks cannot show that, so these tests pin what the program sends: only
the instance's type changes among the cloud resources, and the containers get the new plan.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pytest

from harness import mock_engine
from harness.mock_engine import ZONE_DISK_CATEGORIES, StackRun, run_program
from tests.conftest import PROD_SECRETS
from tests.program.test_secrets import changed


def flags(run: StackRun) -> dict[str, str]:
    command = run.by_name("database-server").inputs["command"]
    return dict(pair.split("=", 1) for pair in command[2::2])


@pytest.mark.parametrize(
    ("instance_type", "database_mib", "shared_buffers", "work_mem"),
    [
        ("ecs.e-c1m1.large", 1024, "400MB", "1664kB"),
        ("ecs.e-c1m2.large", 3072, "608MB", "31296kB"),
        ("ecs.e-c1m2.xlarge", 7168, "1424MB", "83008kB"),
    ],
    ids=["2C2G", "2C4G", "4C8G"],
)
def test_the_instance_type_alone_sizes_the_containers_and_postgres(
    instance_type: str, database_mib: int, shared_buffers: str, work_mem: str
) -> None:
    run = run_program("prod", {"instanceType": instance_type}, secrets=PROD_SECRETS)
    assert run.by_name("database-server").inputs["memory"] == database_mib
    assert (flags(run)["shared_buffers"], flags(run)["work_mem"]) == (shared_buffers, work_mem)
    assert run.outputs["memory_plan"]["host"] == database_mib + 1024
    assert run.by_name("host-instance").inputs["instanceType"] == instance_type


def test_moving_to_a_larger_type_changes_the_instance_in_place_and_keeps_disk_address_and_volumes() -> None:
    before = run_program("prod", secrets=PROD_SECRETS)
    after = run_program("prod", {"instanceType": "ecs.e-c1m2.large"}, secrets=PROD_SECRETS)
    diff = changed(before, after)
    assert diff == {
        # In place (not ForceNew in the provider): stop, ModifyInstanceSpec, start towards status Running.
        "host-instance": {"instanceType"},
        # The new memory plan: a new limit (memory and memory_swap update in place) and new -c flags.
        "database-server": {"memory", "memorySwap", "command"},
    }
    assert after.by_name("host-instance").inputs["status"] == "Running"
    for name in ("host-data-disk", "host-public-ip", "volumes-database", "volumes-app", "volumes-backups"):
        assert name not in diff


def test_moving_back_is_the_same_config_again() -> None:
    original = run_program("prod", secrets=PROD_SECRETS)
    back = run_program("prod", {"instanceType": "ecs.e-c1m1.large"}, secrets=PROD_SECRETS)
    assert changed(original, back) == {}


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"hostMemoryMb": 4096}, "ecs.e-c1m1.large has 2 vCPU / 2 GiB, but the plan in memos:hostVcpus"),
        ({"hostVcpus": 4}, "assumes 4 vCPU / 2 GiB"),
        ({"instanceType": "ecs.unknown.large"}, "not sold with cloud_essd_entry disks in any zone of this region"),
    ],
    ids=["memory key out of step", "vcpu key out of step", "unknown type"],
)
def test_host_keys_out_of_step_with_the_type_stop_the_preview(overrides: dict[str, Any], fragment: str) -> None:
    with pytest.raises(pulumi.RunError) as raised:
        run_program("prod", overrides, secrets=PROD_SECRETS)
    assert str(raised.value).startswith("memos:instanceType: ")
    assert fragment in str(raised.value)


def test_host_keys_that_match_the_type_are_accepted() -> None:
    run = run_program("prod", {"hostVcpus": 2, "hostMemoryMb": 2048}, secrets=PROD_SECRETS)
    assert run.by_name("database-server").inputs["memory"] == 1024


def test_dev_needs_the_host_shape_in_config() -> None:
    with pytest.raises(pulumi.RunError) as raised:
        run_program("dev", {"hostMemoryMb": 0})
    assert str(raised.value).startswith("memos:hostMemoryMb: is not set; dev plans the containers")


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (
            {"instanceType": "ecs.t5-lc1m1.small"},
            "ecs.t5-lc1m1.small has 1 vCPU / 1 GiB, which leaves 0 MiB for PostgreSQL after the OS (320), Docker "
            "(128), the app (512), the proxy (0) and backups (64); it needs at least 384 MiB: choose "
            "ecs.t5-lc1m2.small (1 vCPU / 2 GiB), the smallest type this region sells that fits, or lower "
            "memos:appMemoryMb",
        ),
        (
            {"appMemoryMb": 1200},
            "ecs.e-c1m1.large has 2 vCPU / 2 GiB, which leaves 336 MiB for PostgreSQL after the OS (320), Docker "
            "(128), the app (1200), the proxy (0) and backups (64); it needs at least 384 MiB: choose "
            "ecs.c7.large (2 vCPU / 4 GiB), the smallest type this region sells that fits, or lower memos:appMemoryMb",
        ),
    ],
    ids=["a 1 GiB type", "an app that leaves the database too little"],
)
def test_a_type_too_small_for_the_plan_names_the_instance_type_and_the_smallest_that_fits(
    overrides: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(pulumi.RunError) as raised:
        run_program("prod", overrides, secrets=PROD_SECRETS)
    assert str(raised.value) == f"memos:instanceType: {fragment}"


def test_in_dev_a_host_too_small_still_names_the_host_memory_key() -> None:
    with pytest.raises(pulumi.RunError) as raised:
        run_program("dev", {"hostMemoryMb": 1024})
    assert str(raised.value).startswith("memos:hostMemoryMb: 1024 MiB leaves ")


def test_a_disk_category_no_zone_sells_is_a_config_error_not_the_providers_raw_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # DescribeAvailableResource answers no zone at all, which the provider turns into an error.
    without_auto = {
        zone: tuple(c for c in offered if c != "cloud_auto") for zone, offered in ZONE_DISK_CATEGORIES.items()
    }
    monkeypatch.setattr(mock_engine, "ZONE_DISK_CATEGORIES", without_auto)
    with pytest.raises(pulumi.RunError) as raised:
        run_program("prod", {"diskCategory": "cloud_auto"}, secrets=PROD_SECRETS)
    assert str(raised.value).startswith(
        "memos:instanceType: ecs.e-c1m1.large is not sold with cloud_auto disks in any zone of this region"
    )
