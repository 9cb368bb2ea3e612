"""The production host on Alibaba Cloud: whole inputs, options, lookups and their failures.

The prod stack runs through __main__.py with the cloud lookups answered by the mocks from a small
table of real instance types, zones and images (harness/mock_engine.py), so the program's own
checks decide what passes.
"""

from __future__ import annotations

import base64
import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from harness.mock_engine import StackRun, instance_types_answer, run_program
from lib.cloud_init import CloudInitInputs, render
from lib.host_scripts import SshTarget, drain_command, ready_command
from tests.conftest import PROD_SECRETS

TAGS = {"project": "memos", "stack": "prod"}
#: The host key the mocked tls provider generates for `host-ssh-host-key` (a real ED25519 key).
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGPG8dWvCwJs2by0GxILY4aZMEpQWRovKlg9dvByvj3p"
SSH_OPTS = [
    *("-o", "BatchMode=yes"),
    # Only the pinned key, for any host name, from no file: nothing is trusted on first use.
    *("-o", "StrictHostKeyChecking=yes"),
    *("-o", "UserKnownHostsFile=/dev/null"),
    *("-o", "GlobalKnownHostsFile=/dev/null"),
    *("-o", f"KnownHostsCommand=/bin/echo * {HOST_KEY}"),
    *("-o", "HostKeyAlgorithms=ssh-ed25519"),
    *("-o", "UpdateHostKeys=no"),
    *("-o", "ConnectTimeout=10"),
    *("-o", "ServerAliveInterval=30"),
]
SSH_PREFIX = shlex.join(["ssh", *SSH_OPTS])


def inputs(run: StackRun, name: str) -> dict[str, Any]:
    return run.by_name(name).inputs


def test_vpc_vswitch_and_firewall(prod_run: StackRun) -> None:
    assert inputs(prod_run, "host-vpc") == {"vpcName": "memos-vpc", "cidrBlock": "172.16.0.0/16", "tags": TAGS}
    assert inputs(prod_run, "host-vswitch") == {
        "vswitchName": "memos-vswitch",
        "vpcId": prod_run.by_name("host-vpc").mock_id,
        "cidrBlock": "172.16.1.0/24",
        "zoneId": "cn-hangzhou-j",
        "tags": TAGS,
    }
    assert inputs(prod_run, "host-firewall") == {
        "securityGroupName": "memos-firewall",
        "description": "Memos host: SSH from admin CIDRs, HTTP(S) public, never the database",
        "vpcId": prod_run.by_name("host-vpc").mock_id,
        "innerAccessPolicy": "Drop",
        "tags": TAGS,
    }


def rule(ports: str, cidr: str, key: str, group_id: str) -> dict[str, Any]:
    return {
        "securityGroupId": group_id,
        "type": "ingress",
        "ipProtocol": "tcp",
        "portRange": ports,
        "cidrIp": cidr,
        "nicType": "intranet",
        "policy": "accept",
        "priority": 1,
        "description": f"{key}: tcp {ports} from {cidr}",
    }


def rules(run: StackRun) -> dict[str, dict[str, Any]]:
    return {
        r.name.removeprefix("host-rule-"): r.inputs
        for r in run.of_type("alicloud:ecs/securityGroupRule:SecurityGroupRule")
    }


def test_firewall_rules_are_keyed_by_name(prod_run: StackRun) -> None:
    group = prod_run.by_name("host-firewall").mock_id
    assert rules(prod_run) == {
        "http": rule("80/80", "0.0.0.0/0", "http", group),
        "https": rule("443/443", "0.0.0.0/0", "https", group),
        "app": rule("5230/5230", "0.0.0.0/0", "app", group),
        "ssh-203-0-113-10-32": rule("22/22", "203.0.113.10/32", "ssh-203-0-113-10-32", group),
    }


def test_adding_an_admin_cidr_adds_one_rule_and_renames_none(prod_run: StackRun) -> None:
    run = run_program("prod", {"adminCidrs": ["198.51.100.0/28", "203.0.113.10/32"]}, secrets=PROD_SECRETS)
    assert set(rules(run)) == set(rules(prod_run)) | {"ssh-198-51-100-0-28"}


def test_behind_the_proxy_the_app_port_is_not_opened(prod_run: StackRun) -> None:
    run = run_program("prod", {"domain": "notes.example.com", "acmeEmail": "ops@example.com"}, secrets=PROD_SECRETS)
    assert set(rules(run)) == set(rules(prod_run)) - {"app"}


def test_no_rule_ever_opens_postgres() -> None:
    for overrides in ({}, {"domain": "notes.example.com", "acmeEmail": "ops@example.com"}):
        run = run_program("prod", overrides, secrets=PROD_SECRETS)
        for spec in rules(run).values():
            low, high = (int(p) for p in spec["portRange"].split("/"))
            assert not low <= 5432 <= high


def fingerprint_by_ssh_keygen(tmp_path: Path, public_key: str) -> str:
    """The key's SHA256 fingerprint as OpenSSH computes it, in hex."""
    path = tmp_path / "key.pub"
    path.write_text(public_key + "\n")
    listed = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(path)], capture_output=True, text=True, check=False
    )
    assert listed.returncode == 0, listed.stderr
    encoded = listed.stdout.split()[1].removeprefix("SHA256:")
    return base64.b64decode(encoded + "=" * (-len(encoded) % 4)).hex()


def test_key_pair_holds_only_the_public_key_and_is_named_after_its_fingerprint(
    prod_run: StackRun, tmp_path: Path
) -> None:
    key = prod_run.config["memos:sshPublicKey"]
    name = f"memos-admin-{fingerprint_by_ssh_keygen(tmp_path, key)[:16]}"
    assert inputs(prod_run, "host-admin-key") == {"keyPairName": name, "publicKey": key, "tags": TAGS}
    assert inputs(prod_run, "host-instance")["keyName"] == name


def test_a_new_ssh_key_is_a_new_key_pair_that_the_instance_switches_to(prod_run: StackRun, tmp_path: Path) -> None:
    # ECS reads public_key only on create: the key reaches the host only through a new key pair
    # (key_pair_name forces a new one) whose name the instance's key_name then follows.
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "new")], check=True)
    new_key = (tmp_path / "new.pub").read_text().strip()
    run = run_program("prod", {"sshPublicKey": new_key}, secrets=PROD_SECRETS)
    name = f"memos-admin-{fingerprint_by_ssh_keygen(tmp_path, new_key)[:16]}"
    assert inputs(run, "host-admin-key")["keyPairName"] == name
    assert inputs(run, "host-instance")["keyName"] == name
    assert name != inputs(prod_run, "host-admin-key")["keyPairName"]
    # The instance itself is updated in place (the provider attaches the key pair and reboots it):
    # nothing else of the host changes.
    changed = {
        r.name
        for r in run.resources.values()
        if r.name in prod_run.names() and r.inputs != prod_run.by_name(r.name).inputs
    }
    assert changed == {"host-admin-key", "host-instance"}


def test_data_disk_is_encrypted_outlives_the_instance_and_is_protected(prod_run: StackRun) -> None:
    disk = prod_run.by_name("host-data-disk")
    assert disk.inputs == {
        "diskName": "memos-data",
        "description": "Docker data root: PostgreSQL, app data, backups. Outlives the instance.",
        "zoneId": "cn-hangzhou-j",
        "category": "cloud_essd_entry",
        "size": 40,
        "encrypted": True,
        "deleteWithInstance": False,
        "deleteAutoSnapshot": False,
        "tags": TAGS,
    }
    assert (disk.options["protect"], disk.options["retain_on_delete"]) == (True, True)
    attachment = prod_run.by_name("host-data-disk-attachment")
    assert attachment.inputs == {
        "diskId": disk.mock_id,
        "instanceId": prod_run.by_name("host-instance").mock_id,
        "deleteWithInstance": False,
    }
    assert attachment.options["delete_before_replace"] is True


def test_data_disk_has_a_daily_snapshot_policy(prod_run: StackRun) -> None:
    policy = prod_run.by_name("host-snapshot-policy")
    assert policy.inputs == {
        "autoSnapshotPolicyName": "memos-daily",
        "timePoints": ["3"],
        "repeatWeekdays": ["1", "2", "3", "4", "5", "6", "7"],
        "retentionDays": 7,
        "tags": TAGS,
    }
    assert inputs(prod_run, "host-snapshot-policy-attachment") == {
        "autoSnapshotPolicyId": policy.mock_id,
        "diskId": prod_run.by_name("host-data-disk").mock_id,
    }


def test_instance_inputs(prod_run: StackRun) -> None:
    instance = prod_run.by_name("host-instance")
    disk_id = prod_run.by_name("host-data-disk").mock_id
    expected_user_data = render(
        CloudInitInputs(
            data_disk_serial=disk_id.removeprefix("d-"),
            registry_mirrors=("https://docker.m.daocloud.io",),
            docker_ce_mirror="https://mirrors.aliyun.com/docker-ce",
            swap_mb=1024,
            host_key_private=prod_run.by_name("host-ssh-host-key").mock_outputs["privateKeyOpenssh"],
            host_key_public=HOST_KEY,
        )
    )
    # The user data carries the host's private key: it reaches the engine as a secret.
    assert "userData" in instance.secret_paths
    assert instance.inputs == {
        "instanceName": "memos-host",
        "hostName": "memos-host",
        "availabilityZone": "cn-hangzhou-j",
        "instanceType": "ecs.e-c1m1.large",
        "imageId": "ubuntu_24_04_x64_20G_alibase_20250722.vhd",
        "vswitchId": prod_run.by_name("host-vswitch").mock_id,
        "securityGroups": [prod_run.by_name("host-firewall").mock_id],
        "keyName": prod_run.by_name("host-admin-key").inputs["keyPairName"],
        "systemDiskCategory": "cloud_essd_entry",
        "systemDiskSize": 40,
        "systemDiskEncrypted": True,
        "deletionProtection": True,
        # An instance type change restarts the instance only towards this status.
        "status": "Running",
        "securityEnhancementStrategy": "Deactive",
        "userData": expected_user_data,
        "tags": TAGS,
    }


def test_the_address_is_an_elastic_ip_that_outlives_the_instance(prod_run: StackRun) -> None:
    eip = prod_run.by_name("host-public-ip")
    assert eip.inputs == {
        "addressName": "memos-ip",
        "description": "Memos host address; stays when the instance is replaced",
        "bandwidth": "5",
        "internetChargeType": "PayByTraffic",
        "paymentType": "PayAsYouGo",
        "isp": "BGP",
        "deletionProtection": True,
        "tags": TAGS,
    }
    assert eip.options["protect"] is True
    association = prod_run.by_name("host-public-ip-association")
    assert association.inputs == {"allocationId": eip.mock_id, "instanceId": prod_run.by_name("host-instance").mock_id}
    assert association.options["delete_before_replace"] is True


def test_user_data_changes_do_not_reboot_the_instance_and_replacement_frees_the_disk_first(prod_run: StackRun) -> None:
    options = prod_run.by_name("host-instance").options
    assert options["ignore_changes"] == ["userData"]
    assert options["replace_on_changes"] == []
    assert options["delete_before_replace"] is True


def test_a_cloud_init_rollout_makes_a_changed_user_data_replace_the_instance_with_the_new_document() -> None:
    # The engine resets ignored inputs to their old values even for a replacement's create
    # (processIgnoreChanges in pkg/resource/deploy/step_generator.go): with `ignore_changes` in place a
    # replaced instance would boot with the first cloud-init again. The rollout lifts it.
    options = run_program("prod", {"cloudInitRollout": True}, secrets=PROD_SECRETS).by_name("host-instance").options
    assert options["ignore_changes"] == []
    assert options["replace_on_changes"] == ["userData"]
    assert options["protect"] is True


def test_the_host_key_is_generated_once_protected_and_its_private_half_is_secret(prod_run: StackRun) -> None:
    key = prod_run.by_name("host-ssh-host-key")
    assert key.inputs == {"algorithm": "ED25519"}
    assert key.options["protect"] is True
    assert {"privateKeyOpenssh", "privateKeyPem"} <= set(key.options["additional_secret_outputs"])
    document = yaml.safe_load(prod_run.by_name("host-instance").inputs["userData"])
    assert document["ssh_keys"] == {
        "ed25519_private": key.mock_outputs["privateKeyOpenssh"],
        "ed25519_public": HOST_KEY,
    }
    assert document["ssh_genkeytypes"] == ["ed25519"]
    assert prod_run.outputs["ssh_known_hosts"] == f"198.51.100.20 {HOST_KEY}"
    assert prod_run.output_secrets >= {"app_dsn"}
    assert "cloud_init_sha256" not in prod_run.output_secrets


def test_the_instance_is_protected_so_a_replacement_stops_before_the_drain(prod_run: StackRun) -> None:
    # ECS deletion protection refuses only the final delete, after the drain, the disk detach and the
    # address release; Pulumi refuses to replace a protected resource before any step.
    assert prod_run.by_name("host-instance").options["protect"] is True


def test_what_production_cannot_lose_is_protected_and_what_must_be_replaceable_is_not(prod_run: StackRun) -> None:
    protected = {r.name for r in prod_run.resources.values() if r.name.startswith("host-") and r.options["protect"]}
    # The key pair is replaced whenever the key changes, and holds nothing that cannot be recreated;
    # network, firewall and attachments are recreated unchanged from config. A new host key would no
    # longer match the running host's.
    assert protected == {"host-instance", "host-data-disk", "host-public-ip", "host-ssh-host-key"}


def test_the_instance_uses_no_deprecated_field(prod_run: StackRun) -> None:
    oss = run_program("prod", {"backupToOss": True}, secrets=PROD_SECRETS)
    for run in (prod_run, oss):
        assert "roleName" not in inputs(run, "host-instance")
        assert "enableAutoSnapshot" not in inputs(run, "host-data-disk")
        assert [w for w in run.warnings if "deprecated" in w] == []


def test_one_lookup_confirms_zone_and_shape_and_another_the_image(prod_run: StackRun) -> None:
    assert prod_run.calls == [
        # The type, its shape, and the zones that sell it with the stack's system disk: one question.
        (
            "alicloud:ecs/getInstanceTypes:getInstanceTypes",
            {"instanceType": "ecs.e-c1m1.large", "systemDiskCategory": "cloud_essd_entry"},
        ),
        ("alicloud:ecs/getImages:getImages", {"imageId": "ubuntu_24_04_x64_20G_alibase_20250722.vhd"}),
    ]


@pytest.mark.parametrize("category", ["cloud_essd_entry", "cloud_auto", "cloud_essd", "cloud_efficiency"])
def test_every_disk_category_the_config_allows_is_one_the_instance_type_lookup_accepts(category: str) -> None:
    run = run_program("prod", {"diskCategory": category}, secrets=PROD_SECRETS)
    [call] = [arguments for token, arguments in run.calls if token.endswith("getInstanceTypes")]
    assert call["systemDiskCategory"] == category
    assert inputs(run, "host-data-disk")["category"] == category
    assert inputs(run, "host-instance")["systemDiskCategory"] == category


def test_the_instance_types_mock_refuses_what_the_provider_refuses() -> None:
    with pytest.raises(Exception, match=r"expected system_disk_category to be one of .*got cloud_essd_pl0"):
        instance_types_answer({"systemDiskCategory": "cloud_essd_pl0"})
    # A category no zone sells: DescribeAvailableResource answers no zone, and the provider fails.
    with pytest.raises(Exception, match="There are no available zones"):
        instance_types_answer({"systemDiskCategory": "ephemeral_ssd"})
    answer = instance_types_answer({"instanceType": "ecs.e-c1m1.large", "systemDiskCategory": "cloud_essd_entry"})
    assert answer["instanceTypes"][0]["availabilityZones"] == ["cn-hangzhou-i", "cn-hangzhou-j", "cn-hangzhou-k"]


def test_docker_waits_for_cloud_init_and_the_data_disk(prod_run: StackRun) -> None:
    ready = prod_run.by_name("host-docker-ready")
    target = "root@198.51.100.20"
    # No known-hosts file to forget or learn: the pinned key is in the options, for every instance.
    assert ready.inputs["create"] == ready_command(SshTarget("root", "", HOST_KEY), "198.51.100.20")
    assert f"{SSH_PREFIX} -o ConnectionAttempts=60 {target} " in ready.inputs["create"]
    assert "cloud-init status --wait" in ready.inputs["create"]
    assert "/data/docker" in ready.inputs["create"]
    assert ready.inputs["delete"] == drain_command(["ssh", *SSH_OPTS, target])
    assert ready.inputs["triggers"] == [
        prod_run.by_name("host-instance").mock_id,
        prod_run.by_name("host-data-disk-attachment").mock_id,
        prod_run.by_name("host-public-ip-association").mock_id,
    ]
    provider = prod_run.by_name("docker")
    assert provider.inputs["host"] == f"ssh://{target}"
    # Provider configuration travels as JSON-encoded strings.
    assert json.loads(provider.inputs["sshOpts"]) == SSH_OPTS
    assert ready.urn in provider.options["dependencies"]


def test_a_key_file_path_reaches_ssh_but_no_key_material_enters_pulumi() -> None:
    run = run_program("prod", {"sshPrivateKeyPath": "~/.ssh/memos_ed25519"}, secrets=PROD_SECRETS)
    expected = [*SSH_OPTS, "-o", "IdentitiesOnly=yes", "-i", "~/.ssh/memos_ed25519"]
    assert json.loads(run.by_name("docker").inputs["sshOpts"]) == expected
    assert "-o IdentitiesOnly=yes -i '~/.ssh/memos_ed25519'" in run.by_name("host-docker-ready").inputs["create"]
    assert "-i '~/.ssh/memos_ed25519'" in run.by_name("database-role-job").inputs["create"]


def test_the_role_job_reaches_the_database_over_ssh(prod_run: StackRun) -> None:
    assert prod_run.by_name("database-role-job").inputs["create"] == (
        f"{SSH_PREFIX} root@198.51.100.20 "
        "docker exec -i memos-postgres psql -v ON_ERROR_STOP=1 --no-psqlrc -q -U postgres -d memos"
    )


@pytest.mark.parametrize(
    ("overrides", "key", "fragment"),
    [
        (
            {"instanceType": "ecs.unknown.large"},
            "memos:instanceType",
            "not sold with cloud_essd_entry disks in any zone of this region",
        ),
        ({"zoneId": "cn-hangzhou-x"}, "memos:zoneId", "zones that do: cn-hangzhou-i, cn-hangzhou-j, cn-hangzhou-k"),
        (
            {"zoneId": "cn-hangzhou-h"},
            "memos:zoneId",
            "cn-hangzhou-h does not offer ecs.e-c1m1.large with cloud_essd_entry disks; zones that do: cn-hangzhou-i",
        ),
        ({"imageId": "centos_6_x64.vhd"}, "memos:imageId", "not an image this account can use"),
        ({"imageId": ""}, "memos:imageId", "pin an image id"),
        ({"adminCidrs": ["0.0.0.0/0"]}, "memos:adminCidrs", "opens SSH to the whole internet"),
        ({"adminCidrs": []}, "memos:adminCidrs", "nobody could reach SSH"),
        ({"adminCidrs": ["10.0.0.300/32"]}, "memos:adminCidrs", "not a CIDR block"),
        ({"sshPublicKey": ""}, "memos:sshPublicKey", "the private key stays in your agent or key file"),
        # A private key pasted by mistake (only its armour line, split so no scanner takes it for a key).
        ({"sshPublicKey": "-----BEGIN OPENSSH " + "PRIVATE KEY-----"}, "memos:sshPublicKey", "not an OpenSSH public"),
        ({"vswitchCidr": "10.0.0.0/24"}, "memos:vswitchCidr", "not inside memos:vpcCidr"),
        ({"diskCategory": "cloud_essd_pl9"}, "memos:diskCategory", "'cloud_essd_pl9' is not one of"),
        (
            {"diskCategory": "cloud_auto", "zoneId": "cn-hangzhou-k"},
            "memos:zoneId",
            "does not offer ecs.e-c1m1.large with cloud_auto disks; zones that do: cn-hangzhou-h, cn-hangzhou-i, "
            "cn-hangzhou-j",
        ),
        ({"hostMemoryMb": 4096, "instanceType": "ecs.e-c1m1.large"}, "memos:instanceType", "assumes 2 vCPU / 4 GiB"),
    ],
    ids=[
        "unknown type",
        "zone not offered",
        "zone without the disk category",
        "unknown image",
        "no image",
        "ssh open to world",
        "no admin cidr",
        "bad cidr",
        "no public key",
        "private key as public key",
        "vswitch outside vpc",
        "unknown disk category",
        "cloud_auto not in the zone",
        "plan for another shape",
    ],
)
def test_bad_host_config_fails_with_one_line(overrides: dict[str, Any], key: str, fragment: str) -> None:
    with pytest.raises(pulumi.RunError) as raised:
        run_program("prod", overrides, secrets=PROD_SECRETS)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"{key}: ")
    assert fragment in message


def test_user_data_is_small_enough_and_carries_no_secret(prod_run: StackRun) -> None:
    user_data = prod_run.by_name("host-instance").inputs["userData"]
    assert len(user_data.encode()) < 16 * 1024
    for secret in PROD_SECRETS.values():
        assert secret not in user_data
    config = yaml.safe_load(user_data)
    assert "password" not in user_data.lower()
    assert config["ssh_pwauth"] is False
