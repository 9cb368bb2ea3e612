"""The production host: one Alibaba Cloud ECS instance with Docker, its network and its data disk.

Creates a VPC and vSwitch, a security group whose rules are keyed by name, a key pair from the
operator's public key, the instance (shape, zone and image confirmed by lookups before anything is
created), an elastic IP, and a separate encrypted data disk with daily automatic snapshots that
outlives the instance. A readiness command blocks until cloud-init has finished and Docker answers
with its data root on that disk; every Docker resource of the stack waits for it.

Docker's whole state lives on the data disk and the address is an elastic IP, so a replaced instance
comes back with the same containers at the same address and the Docker resources do not change.
Before the disk leaves the old instance, the readiness command's delete step stops the containers
and unmounts the disk there, so it is never detached while PostgreSQL is writing to it; a host that
no longer answers is not waited for (see drain_command). In prod the instance, the data disk and the
address are protected, so a change that would replace or delete one of them stops the preview.
The RAM role for off-host backups is attached with its own resource.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_alicloud as alicloud
import pulumi_command as command
import pulumi_tls as tls

from lib.cloud_init import CloudInitInputs, disk_serial, render
from lib.host_scripts import SshTarget, drain_command, ready_command, ssh_argv
from lib.ssh_keys import key_pair_name
from settings import EcsSettings


@dataclass(frozen=True)
class EcsHostArgs:
    """Inputs of EcsHost."""

    #: The host's settings from stack config.
    ecs: EcsSettings
    #: Prefix for cloud resource names.
    name_prefix: str
    #: Protect the instance, and protect and retain the data disk and the elastic IP.
    protect: bool
    #: Public app port when no proxy fronts the app, else None.
    public_app_port: int | None
    #: RAM role the instance assumes (for OSS backups), or None.
    ram_role_name: pulumi.Input[str] | None
    #: Tags for every cloud resource.
    tags: Mapping[str, str]


def _rule_key(cidr: str) -> str:
    return "ssh-" + re.sub(r"[^0-9a-z]+", "-", cidr.lower()).strip("-")


class EcsHost(pulumi.ComponentResource):
    """A 2 vCPU / 2 GiB (or as configured) ECS instance running Docker, with a durable data disk."""

    public_ip: pulumi.Output[str]
    #: The host's network, for a managed database next to it.
    vpc_id: pulumi.Output[str]
    vswitch_id: pulumi.Output[str]
    instance_id: pulumi.Output[str]
    data_disk_id: pulumi.Output[str]
    cloud_init_sha256: pulumi.Output[str]
    ready: command.local.Command
    #: How to log in to the host, with its pinned host key.
    ssh: pulumi.Output[SshTarget]

    def __init__(self, name: str, args: EcsHostArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("memos:index:EcsHost", name, None, opts)
        ecs = args.ecs
        child = pulumi.ResourceOptions(parent=self)
        prefix = args.name_prefix
        tags = dict(args.tags)

        vpc = alicloud.vpc.Network(
            f"{name}-vpc", vpc_name=f"{prefix}-vpc", cidr_block=ecs.vpc_cidr, tags=tags, opts=child
        )
        vswitch = alicloud.vpc.Switch(
            f"{name}-vswitch",
            vswitch_name=f"{prefix}-vswitch",
            vpc_id=vpc.id,
            cidr_block=ecs.vswitch_cidr,
            zone_id=ecs.zone_id,
            tags=tags,
            opts=child,
        )
        group = alicloud.ecs.SecurityGroup(
            f"{name}-firewall",
            security_group_name=f"{prefix}-firewall",
            description="Memos host: SSH from admin CIDRs, HTTP(S) public, never the database",
            vpc_id=vpc.id,
            inner_access_policy="Drop",
            tags=tags,
            opts=child,
        )
        rules: dict[str, tuple[str, str]] = {"http": ("80/80", "0.0.0.0/0"), "https": ("443/443", "0.0.0.0/0")}
        if args.public_app_port is not None:
            rules["app"] = (f"{args.public_app_port}/{args.public_app_port}", "0.0.0.0/0")
        for cidr in ecs.admin_cidrs:
            rules[_rule_key(cidr)] = ("22/22", cidr)
        for key, (ports, cidr) in sorted(rules.items()):
            alicloud.ecs.SecurityGroupRule(
                f"{name}-rule-{key}",
                security_group_id=group.id,
                type="ingress",
                ip_protocol="tcp",
                port_range=ports,
                cidr_ip=cidr,
                nic_type="intranet",
                policy="accept",
                priority=1,
                description=f"{key}: tcp {ports} from {cidr}",
                opts=child,
            )

        # ECS reads public_key only on create, and an instance takes a key pair only when its key_name
        # changes: a name from the key's fingerprint makes a new key a new key pair, which the
        # provider attaches to the instance (and reboots it so the guest installs the key).
        key_pair = alicloud.ecs.EcsKeyPair(
            f"{name}-admin-key",
            key_pair_name=key_pair_name(prefix, ecs.ssh_public_key),
            public_key=ecs.ssh_public_key,
            tags=tags,
            opts=child,
        )

        data_disk = alicloud.ecs.EcsDisk(
            f"{name}-data-disk",
            disk_name=f"{prefix}-data",
            description="Docker data root: PostgreSQL, app data, backups. Outlives the instance.",
            zone_id=ecs.zone_id,
            category=ecs.disk_category,
            size=ecs.data_disk_gb,
            encrypted=True,
            delete_with_instance=False,
            delete_auto_snapshot=False,
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect, retain_on_delete=args.protect),
        )
        policy = alicloud.ecs.AutoSnapshotPolicy(
            f"{name}-snapshot-policy",
            auto_snapshot_policy_name=f"{prefix}-daily",
            time_points=[str(ecs.snapshot_hour_cst)],
            repeat_weekdays=[str(day) for day in range(1, 8)],
            retention_days=ecs.snapshot_retention_days,
            tags=tags,
            opts=child,
        )
        alicloud.ecs.EcsAutoSnapshotPolicyAttachment(
            f"{name}-snapshot-policy-attachment",
            auto_snapshot_policy_id=policy.id,
            disk_id=data_disk.id,
            opts=child,
        )

        # The host's SSH key, made here and given to cloud-init: the operator's ssh knows it before the
        # instance exists, so no first connection is trusted blindly. A new key would lock the stack out
        # of a running host (cloud-init installs it once per instance): protected in prod.
        host_key = tls.PrivateKey(
            f"{name}-ssh-host-key",
            algorithm="ED25519",
            opts=pulumi.ResourceOptions(
                parent=self,
                protect=args.protect,
                additional_secret_outputs=["privateKeyOpenssh", "privateKeyPem", "privateKeyPemPkcs8"],
            ),
        )
        # The provider appends a newline (and may append a comment); the pin is "type base64".
        public_host_key = host_key.public_key_openssh.apply(lambda line: " ".join(line.split()[:2]))
        user_data = pulumi.Output.all(
            data_disk.id, pulumi.Output.secret(host_key.private_key_openssh), public_host_key
        ).apply(
            lambda parts: render(
                CloudInitInputs(
                    data_disk_serial=disk_serial(parts[0]),
                    registry_mirrors=ecs.registry_mirrors,
                    docker_ce_mirror=ecs.docker_ce_mirror,
                    swap_mb=ecs.swap_mb,
                    host_key_private=parts[1],
                    host_key_public=parts[2],
                )
            )
        )
        instance = alicloud.ecs.Instance(
            f"{name}-instance",
            instance_name=f"{prefix}-host",
            host_name=f"{prefix}-host",
            availability_zone=ecs.zone_id,
            instance_type=ecs.instance_type,
            image_id=ecs.image_id,
            vswitch_id=vswitch.id,
            security_groups=[group.id],
            key_name=key_pair.key_pair_name,
            system_disk_category=ecs.disk_category,
            system_disk_size=ecs.system_disk_gb,
            system_disk_encrypted=True,
            deletion_protection=ecs.instance_deletion_protection,
            # An instance type change stops the instance, changes its spec and starts it again only
            # when the desired status is Running (resource_alicloud_instance.go): say so explicitly.
            status="Running",
            # The security agent's memory is budgeted nowhere on a 2 GiB host.
            security_enhancement_strategy="Deactive",
            user_data=user_data,
            tags=tags,
            opts=pulumi.ResourceOptions(
                parent=self,
                # ECS deletion protection refuses the delete only after the drain, the disk detach and
                # the address release have run; Pulumi's protect refuses a replacement before any step.
                protect=args.protect,
                # A user_data edit reboots the instance, and the engine creates even a replacement with the
                # ignored old value (processIgnoreChanges, pkg/resource/deploy/step_generator.go): a changed
                # cloud-init reaches a host only by a deliberate replacement, with memos:cloudInitRollout
                # (docs/operations.md, "Changing the host's cloud-init").
                ignore_changes=[] if ecs.cloud_init_rollout else ["userData"],
                replace_on_changes=["userData"] if ecs.cloud_init_rollout else [],
                # The data disk must leave the old instance before it can join a new one.
                delete_before_replace=True,
            ),
        )
        if args.ram_role_name is not None:
            alicloud.ecs.RamRoleAttachment(
                f"{name}-ram-role",
                instance_id=instance.id,
                ram_role_name=args.ram_role_name,
                opts=child,
            )
        attachment = alicloud.ecs.EcsDiskAttachment(
            f"{name}-data-disk-attachment",
            disk_id=data_disk.id,
            instance_id=instance.id,
            delete_with_instance=False,
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
        )

        public_ip = alicloud.ecs.EipAddress(
            f"{name}-public-ip",
            address_name=f"{prefix}-ip",
            description="Memos host address; stays when the instance is replaced",
            bandwidth=str(ecs.bandwidth_mbps),
            internet_charge_type="PayByTraffic",
            payment_type="PayAsYouGo",
            isp="BGP",
            deletion_protection=args.protect,
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
        )
        association = alicloud.ecs.EipAssociation(
            f"{name}-public-ip-association",
            allocation_id=public_ip.id,
            instance_id=instance.id,
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
        )

        address = public_ip.ip_address
        self.ssh = public_host_key.apply(
            lambda key: SshTarget(user=ecs.ssh_user, private_key_path=ecs.ssh_private_key_path, host_key=key)
        )
        self.ready = command.local.Command(
            f"{name}-docker-ready",
            create=pulumi.Output.all(self.ssh, address).apply(lambda parts: ready_command(parts[0], parts[1])),
            delete=pulumi.Output.all(self.ssh, address).apply(
                lambda parts: drain_command(ssh_argv(parts[0], parts[1]))
            ),
            # Runs again for every new instance, disk attachment or address association.
            triggers=[instance.id, attachment.id, association.id],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[attachment, association]),
        )

        pulumi.Output.all(instance.user_data, user_data).apply(_warn_on_cloud_init_drift)
        self.public_ip = address
        self.vpc_id = vpc.id
        self.vswitch_id = vswitch.id
        self.instance_id = instance.id
        self.data_disk_id = data_disk.id
        # A digest of the secret document, unsecret: it identifies the rendering and reveals nothing.
        self.cloud_init_sha256 = pulumi.Output.unsecret(
            user_data.apply(lambda text: hashlib.sha256(text.encode()).hexdigest())
        )
        self.register_outputs(
            {
                "public_ip": self.public_ip,
                "vpc_id": self.vpc_id,
                "vswitch_id": self.vswitch_id,
                "instance_id": self.instance_id,
                "data_disk_id": self.data_disk_id,
                "cloud_init_sha256": self.cloud_init_sha256,
            }
        )


def _warn_on_cloud_init_drift(parts: Sequence[str | None]) -> None:
    deployed, rendered = parts
    if deployed is None or rendered is None:
        return
    candidates = {deployed}
    with contextlib.suppress(ValueError):
        candidates.add(base64.b64decode(deployed, validate=True).decode())
    if rendered not in candidates:
        pulumi.log.warn(
            "the host's cloud-init has changed but is not applied (it would reboot the instance); "
            'roll it out as docs/operations.md describes under "Changing the host\'s cloud-init"'
        )
