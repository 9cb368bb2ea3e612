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
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_alicloud as alicloud
import pulumi_command as command

from lib.cloud_init import DATA_MOUNT, DOCKER_ROOT, CloudInitInputs, disk_serial, render
from lib.errors import ConfigError
from lib.ssh_keys import key_pair_name
from settings import EcsSettings


@dataclass(frozen=True)
class EcsHostArgs:
    """Inputs of EcsHost."""

    #: The host's settings from stack config.
    ecs: EcsSettings
    #: Prefix for cloud resource names.
    name_prefix: str
    #: Shape the memory plan assumes; the instance type must have exactly this.
    vcpus: int
    memory_mib: int
    #: Stack name (keeps this stack's SSH host keys apart from others).
    stack: str
    #: Protect the instance, and protect and retain the data disk and the elastic IP.
    protect: bool
    #: Public app port when no proxy fronts the app, else None.
    public_app_port: int | None
    #: RAM role the instance assumes (for OSS backups), or None.
    ram_role_name: pulumi.Input[str] | None
    #: Tags for every cloud resource.
    tags: Mapping[str, str]


def known_hosts_file(stack: str) -> str:
    return f"~/.ssh/memos-{stack}.known_hosts"


def ssh_options(ecs: EcsSettings, stack: str) -> list[str]:
    """Options for the system `ssh` client, shared by the Docker provider and the host commands.

    The key comes from the agent, or from the configured key file; it is never read by Pulumi.
    A new instance's host key is accepted on first contact (the readiness command forgets the
    previous instance's key when it runs for a new one) and pinned from then on, in a file of this
    stack's own.
    """
    settings = [
        "BatchMode=yes",
        "StrictHostKeyChecking=accept-new",
        f"UserKnownHostsFile={known_hosts_file(stack)}",
        "ConnectTimeout=10",
        "ServerAliveInterval=30",
    ]
    if ecs.ssh_private_key_path:
        settings.append("IdentitiesOnly=yes")
    options = [arg for setting in settings for arg in ("-o", setting)]
    if ecs.ssh_private_key_path:
        options += ["-i", ecs.ssh_private_key_path]
    return options


def operator_ssh_command(ecs: EcsSettings, stack: str, address: str) -> str:
    """An interactive `ssh` command for operators, using this stack's pinned host key."""
    options = ["-o", f"UserKnownHostsFile={known_hosts_file(stack)}"]
    if ecs.ssh_private_key_path:
        options += ["-i", ecs.ssh_private_key_path]
    return shlex.join(["ssh", *options, f"{ecs.ssh_user}@{address}"])


def ready_script() -> str:
    """Runs on the host: wait for cloud-init, then require Docker with its data root on the data disk.

    `cloud-init status --wait` exits 0 when done, 1 on an unrecoverable error and (cloud-init 23.4
    and later) 2 when it finished with recoverable errors, e.g. a deprecated key: only 1 (or any other
    code) fails; with 2 the long status goes to stderr as a warning and the Docker check decides.
    """
    return (
        "cloud-init status --wait >/dev/null; status=$?; "
        'if [ "$status" -eq 2 ]; then echo "cloud-init finished with recoverable errors:" >&2; '
        "cloud-init status --long >&2; "
        'elif [ "$status" -ne 0 ]; then cloud-init status --long; exit 1; fi; '
        f"root=$(docker info --format '{{{{.DockerRootDir}}}}') && "
        f'test "$root" = {DOCKER_ROOT} || {{ echo "docker data root is $root, not {DOCKER_ROOT}" >&2; exit 1; }}'
    )


def drain_script() -> str:
    """Runs on the old host before its data disk is detached: stop Docker, unmount the disk."""
    # live-restore keeps containers running without dockerd, so stop them first (PostgreSQL gets
    # the same grace period as on a normal replacement).
    return (
        "docker ps -q | xargs -r docker stop -t 60 && "
        f"systemctl stop docker.socket docker.service containerd.service && sync && umount {DATA_MOUNT}"
    )


#: Exit status of `ssh` itself (connection or authentication failure), never of the remote command.
SSH_FAILED = 255
#: ssh's own messages for failures that are not "the host does not answer": these must not be skipped.
_SSH_REFUSALS = ("Permission denied", "Host key verification failed", "REMOTE HOST IDENTIFICATION HAS CHANGED")


def drain_command(ssh_argv: Sequence[str]) -> str:
    """The readiness command's delete step: drain the old host, or go on without it if it is dead.

    A host that does not answer within ssh's bounded connect (ConnectTimeout x ConnectionAttempts)
    cannot be drained, and insisting would block its own replacement. Then the step warns and
    succeeds: the disk is detached as after a power cut, which PostgreSQL's WAL and ext4's journal
    recover from. An authentication or host-key failure means the host may be alive: it fails.
    """
    ssh = shlex.join([*ssh_argv[:1], "-o", "ConnectionAttempts=3", *ssh_argv[1:], drain_script()])
    refusals = " ".join(f"-e {shlex.quote(text)}" for text in _SSH_REFUSALS)
    return (
        f"out=$({ssh} 2>&1); status=$?; printf '%s\n' \"$out\"; "
        f'if [ "$status" -eq {SSH_FAILED} ] && ! printf \'%s\' "$out" | grep -q {refusals}; then '
        'echo "warning: the old host does not answer over SSH; detaching its data disk without a drain '
        '(PostgreSQL recovers as after a power cut)" >&2; exit 0; fi; '
        'exit "$status"'
    )


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

    def __init__(self, name: str, args: EcsHostArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("memos:index:EcsHost", name, None, opts)
        ecs = args.ecs
        self._check_lookups(args)
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

        user_data = data_disk.id.apply(
            lambda disk_id: render(
                CloudInitInputs(
                    data_disk_serial=disk_serial(disk_id),
                    registry_mirrors=ecs.registry_mirrors,
                    docker_ce_mirror=ecs.docker_ce_mirror,
                    swap_mb=ecs.swap_mb,
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
                # A user_data change reboots the instance: roll it out on purpose instead
                # (README, "Changing the host's cloud-init").
                ignore_changes=["userData"],
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
        ssh = address.apply(lambda ip: shlex.join(["ssh", *ssh_options(ecs, args.stack), f"{ecs.ssh_user}@{ip}"]))
        forget_old_host_key = address.apply(
            lambda ip: (
                f'mkdir -p "$HOME/.ssh" && {{ ssh-keygen -R {shlex.quote(ip)} '
                f'-f "$HOME/.ssh/memos-{args.stack}.known_hosts" >/dev/null 2>&1 || true; }}'
            )
        )
        self.ready = command.local.Command(
            f"{name}-docker-ready",
            create=pulumi.Output.all(forget_old_host_key, ssh).apply(
                lambda parts: f"{parts[0]} && {parts[1]} -o ConnectionAttempts=60 {shlex.quote(ready_script())}"
            ),
            delete=address.apply(
                lambda ip: drain_command(["ssh", *ssh_options(ecs, args.stack), f"{ecs.ssh_user}@{ip}"])
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
        self.cloud_init_sha256 = user_data.apply(lambda text: hashlib.sha256(text.encode()).hexdigest())
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

    @staticmethod
    def _check_lookups(args: EcsHostArgs) -> None:
        """Fail the preview, with the key to fix, when the zone, shape or image is not what config says."""
        ecs = args.ecs
        # The data source filters only on a few legacy disk categories (not cloud_essd_entry or
        # cloud_auto, which it refuses before the call), so ask for the details and filter here.
        zones = alicloud.get_zones(
            available_instance_type=ecs.instance_type,
            available_resource_creation="Instance",
            enable_details=True,
        )
        categories = {zone.id: set(zone.available_disk_categories) for zone in zones.zones}
        if not categories:
            raise ConfigError(
                "instanceType",
                f"{ecs.instance_type} is not sold in any zone of this region; pick one that `get_instance_types` lists",
            )
        zone_ids = sorted(zone_id for zone_id, offered in categories.items() if ecs.disk_category in offered)
        if ecs.zone_id not in zone_ids:
            raise ConfigError(
                "zoneId",
                f"{ecs.zone_id} does not offer {ecs.instance_type} with {ecs.disk_category} disks; "
                f"zones that do: {', '.join(zone_ids) or 'none in this region (try another memos:diskCategory)'}",
            )
        found = alicloud.ecs.get_instance_types(instance_type=ecs.instance_type, availability_zone=ecs.zone_id)
        shapes = [t for t in found.instance_types if t.id == ecs.instance_type]
        if not shapes:
            raise ConfigError(
                "instanceType",
                f"{ecs.instance_type} is not sold in {ecs.zone_id}; pick one that `get_instance_types` lists",
            )
        shape = shapes[0]
        wanted_gib = args.memory_mib / 1024
        if shape.cpu_core_count != args.vcpus or float(shape.memory_size) != wanted_gib:
            raise ConfigError(
                "instanceType",
                f"{ecs.instance_type} has {shape.cpu_core_count} vCPU / {shape.memory_size:g} GiB, but the memory plan "
                f"assumes {args.vcpus} vCPU / {wanted_gib:g} GiB (memos:hostVcpus, memos:hostMemoryMb); choose a "
                "type with that shape, e.g. ecs.e-c1m1.large, or change those keys",
            )
        images = alicloud.ecs.get_images(image_id=ecs.image_id)
        if not any(image.id == ecs.image_id for image in images.images):
            raise ConfigError(
                "imageId",
                f"{ecs.image_id} is not an image this account can use in this region; list them with "
                "`aliyun ecs DescribeImages --ImageOwnerAlias system --OSType linux`",
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
            'roll it out as the README describes under "Changing the host\'s cloud-init"'
        )
