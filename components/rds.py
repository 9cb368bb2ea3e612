"""The database on ApsaraDB RDS for PostgreSQL, in the ECS host's VPC and zone, instead of a container.

Creates the RDS instance (private endpoint only, whitelist limited to the host's vSwitch, SSL on, ECS-
style deletion protection and Pulumi `protect` in prod; the database, both accounts, the privilege and
the backup policy are protected and retained in prod as well), the app's database, a privileged account used
only to create the `vector` and `btree_gist` extensions, a normal account that owns the app's database
(RDS's DBOwner privilege), the backup policy, and a job that creates the extensions from the ECS host
before the app first starts. The engine version and instance class are checked against the zone's
offer (`get_instance_engines`, `get_instance_classes`) before anything is created.

Passwords are generated (pulumi-random, alphanumeric, so they sit in a DSN unescaped) and stay
secret Outputs; the privileged one reaches the job only on its stdin.
"""

from __future__ import annotations

import importlib.metadata
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_alicloud as alicloud
import pulumi_command as command
import pulumi_docker as docker

from components.passwords import generated_password
from lib.errors import ConfigError
from lib.rds import (
    ADMIN_ACCOUNT,
    LOOKUP_STORAGE_TYPES,
    extension_job_command,
    extension_job_stdin,
    rds_dsn,
    storage_ranges,
)
from settings import RdsSettings

ENGINE = "PostgreSQL"
CHARGE_TYPE = "PostPaid"
#: The database's encoding, collation and ctype, in the `charset,collate,ctype` form RDS takes for PostgreSQL.
CHARACTER_SET = "UTF8,C,en_US.utf8"
INSTANCE_CLASSES = "alicloud:rds/getInstanceClasses:getInstanceClasses"
#: The provider plugin the SDK's own lookups name (pulumi_alicloud's invoke defaults: its version).
_ALICLOUD_VERSION = importlib.metadata.version("pulumi-alicloud")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass(frozen=True)
class RdsDatabaseArgs:
    """Inputs of RdsDatabase."""

    #: Engine, class, storage, edition and backups from stack config.
    rds: RdsSettings
    #: Zone, VPC and vSwitch of the ECS host: the instance is created next to it.
    zone_id: str
    vpc_id: pulumi.Input[str]
    vswitch_id: pulumi.Input[str]
    #: The only addresses the instance's whitelist admits (the host's vSwitch).
    vswitch_cidr: str
    #: Prefix for cloud resource names.
    name_prefix: str
    #: Database the app uses, and its account (owner of that database).
    database: str
    app_account: str
    #: Bump to generate a new password (rotation, applied in place by the provider).
    app_password_generation: int
    admin_password_generation: int
    #: PostgreSQL client image the extension job runs on the host (psql).
    client_image: str
    #: argv prefix that runs a command on the ECS host.
    shell_prefix: pulumi.Input[Sequence[str]]
    #: Options that place Docker resources on the host's engine.
    docker_options: pulumi.ResourceOptions
    #: What the job must wait for (the host's readiness gate).
    depends_on: Sequence[pulumi.Resource]
    #: Deletion protection and Pulumi `protect` on the instance.
    protect: bool
    #: Tags for every cloud resource.
    tags: Mapping[str, str]


class RdsDatabase(pulumi.ComponentResource):
    """ApsaraDB RDS for PostgreSQL with the app's database, accounts, backups and extensions."""

    instance_id: pulumi.Output[str]
    host: pulumi.Output[str]
    port: pulumi.Output[int]
    app_dsn: pulumi.Output[str]

    def __init__(self, name: str, args: RdsDatabaseArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("memos:index:RdsDatabase", name, None, opts)
        rds = args.rds
        check_offer(rds, args.zone_id)
        child = pulumi.ResourceOptions(parent=self)
        # What holds the data and the access to it: protected and retained like the instance, so that a
        # stack that stops declaring them (moved back to the container database) cannot drop the database
        # before the instance's own protect refuses (the engine checks protect as each delete runs).
        kept = pulumi.ResourceOptions(parent=self, protect=args.protect, retain_on_delete=args.protect)

        admin_password = generated_password(f"{name}-admin-password", args.admin_password_generation, child)
        app_password = generated_password(f"{name}-app-password", args.app_password_generation, child)

        instance = alicloud.rds.Instance(
            f"{name}-instance",
            instance_name=f"{args.name_prefix}-db",
            engine=ENGINE,
            engine_version=rds.engine_version,
            instance_type=rds.instance_class,
            instance_storage=rds.storage_gb,
            db_instance_storage_type=rds.storage_type,
            category=rds.category,
            instance_charge_type="Postpaid",
            zone_id=args.zone_id,
            vpc_id=args.vpc_id,
            vswitch_id=args.vswitch_id,
            # Only the host's subnet; no public endpoint is ever allocated (no rds.Connection).
            security_ips=[args.vswitch_cidr],
            ssl_action="Open",
            ca_type="aliyun",
            deletion_protection=args.protect,
            tags=dict(args.tags),
            opts=pulumi.ResourceOptions(
                parent=self, protect=args.protect, retain_on_delete=args.protect, ignore_changes=ignored_on_update(rds)
            ),
        )
        # What runs, read back from the instance (the provider's Read writes the API's values), against
        # what the config says: an ignored difference is said in the preview, not silently dropped.
        pulumi.Output.all(instance.category, instance.engine_version).apply(
            lambda deployed: _warn(deployed_drift(rds, *deployed))
        )
        database = alicloud.rds.Database(
            f"{name}-database",
            instance_id=instance.id,
            data_base_name=args.database,
            character_set=CHARACTER_SET,
            description="Memos",
            opts=kept,
        )
        admin = alicloud.rds.RdsAccount(
            f"{name}-admin-account",
            db_instance_id=instance.id,
            account_name=ADMIN_ACCOUNT,
            account_password=admin_password,
            account_type="Super",
            account_description="creates the extensions; never used by the app",
            opts=kept,
        )
        app = alicloud.rds.RdsAccount(
            f"{name}-app-account",
            db_instance_id=instance.id,
            account_name=args.app_account,
            account_password=app_password,
            account_type="Normal",
            account_description="the Memos app",
            opts=kept,
        )
        privilege = alicloud.rds.AccountPrivilege(
            f"{name}-app-privilege",
            instance_id=instance.id,
            account_name=app.account_name,
            db_names=[database.data_base_name],
            privilege="DBOwner",
            opts=kept,
        )
        alicloud.rds.BackupPolicy(
            f"{name}-backup-policy",
            instance_id=instance.id,
            backup_retention_period=rds.backup_retention_days,
            preferred_backup_time=rds.backup_window,
            preferred_backup_periods=list(WEEKDAYS),
            opts=kept,
        )

        client = docker.RemoteImage(
            f"{name}-client-image",
            name=args.client_image,
            keep_locally=True,
            opts=pulumi.ResourceOptions.merge(args.docker_options, pulumi.ResourceOptions(parent=self)),
        )
        port = instance.port.apply(int)
        job = pulumi.Output.all(args.shell_prefix, instance.connection_string, port).apply(
            lambda parts: shlex.join(
                [
                    *parts[0],
                    *extension_job_command(
                        image=args.client_image,
                        host=parts[1],
                        port=parts[2],
                        database=args.database,
                        user=ADMIN_ACCOUNT,
                    ),
                ]
            )
        )
        self.extensions = command.local.Command(
            f"{name}-extensions",
            create=job,
            stdin=pulumi.Output.secret(admin_password.apply(extension_job_stdin)),
            # Again on a new instance or database; a rotated admin password alone changes nothing.
            triggers=[instance.id, database.id],
            logging=command.local.Logging.STDERR,
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[*args.depends_on, database, admin, privilege, client],
                additional_secret_outputs=["stdout", "stderr"],
                ignore_changes=["stdin"],
            ),
        )

        self.instance_id = instance.id
        self.host = instance.connection_string
        self.port = port
        self.app_dsn = pulumi.Output.secret(
            pulumi.Output.all(app_password, instance.connection_string, port).apply(
                lambda parts: rds_dsn(
                    user=args.app_account, password=parts[0], host=parts[1], port=parts[2], database=args.database
                )
            )
        )
        self.register_outputs(
            {"instance_id": self.instance_id, "host": self.host, "port": self.port, "app_dsn": self.app_dsn}
        )


def _warn(lines: Sequence[str]) -> None:
    for line in lines:
        pulumi.log.warn(line)


def ignored_on_update(rds: RdsSettings) -> list[str]:
    """What an existing instance never receives from config (a new instance is created with all of it).

    `category`: the provider's Update sends it only with a serverless configuration, and Read writes
    the API's value back (resource_alicloud_db_instance.go, v1.247.0), so an edition change would be an
    update that changes nothing and diffs on every preview. `engineVersion`, unless
    memos:rdsMajorUpgradeTo equals it: v1.247.0 sends a changed version for MySQL only (again an
    update that changes nothing), and from v1.277.0 on the PostgreSQL branch runs
    UpgradeDBInstanceMajorVersion in place with SwitchTimeMode Immediate; `protect` stops neither.
    """
    ignored = ["category"]
    if rds.major_upgrade_to != rds.engine_version:
        ignored.append("engineVersion")
    return ignored


def deployed_drift(rds: RdsSettings, category: str | None, engine_version: str | None) -> list[str]:
    """One-line warnings for an ignored difference between the deployed instance and the config."""
    warnings: list[str] = []
    if category and category != rds.category:
        warnings.append(
            f"memos:rdsCategory: {rds.category} is not applied: the RDS instance is {category}, and the provider "
            "changes an edition only for serverless instances, so `pulumi up` cannot do it; upgrade the edition in "
            'the RDS console (docs/outgrowing.md, "Changing the RDS edition") or set memos:rdsCategory back to '
            f"{category}"
        )
    if engine_version and engine_version != rds.engine_version:
        if rds.major_upgrade_to == rds.engine_version:
            warnings.append(
                f"memos:rdsMajorUpgradeTo: the RDS instance still runs PostgreSQL {engine_version}: the provider of "
                "pulumi-alicloud 4.0.0 does not upgrade PostgreSQL in place; run the upgrade with RDS "
                '(docs/outgrowing.md, "Upgrading PostgreSQL on RDS")'
            )
        else:
            warnings.append(
                f"memos:rdsEngineVersion: {rds.engine_version} is not sent: the RDS instance runs PostgreSQL "
                f"{engine_version}, and a major upgrade needs memos:rdsMajorUpgradeTo {rds.engine_version} too "
                '(docs/outgrowing.md, "Upgrading PostgreSQL on RDS"); or set memos:rdsEngineVersion back to '
                f"{engine_version}"
            )
    return warnings


def check_offer(rds: RdsSettings, zone_id: str) -> None:
    """Fail the preview, naming the key, when the zone does not sell this engine version or class.

    The lookups take a storage type only from LOOKUP_STORAGE_TYPES; for another one (general_essd)
    they are asked without it and the preview says what could not be checked. The classes are read
    from the invoke's raw answer: `storage_range` may come as one object or as a list (lib/rds.py).
    """
    storage = rds.storage_type if rds.storage_type in LOOKUP_STORAGE_TYPES else None
    offer = f"{rds.category} with {storage} storage" if storage else rds.category
    if storage is None:
        # Without a storage type, get_instance_classes lists the zone's classes of every edition and
        # storage type (data_source_alicloud_db_instance_classes.go): the class check is coarser too.
        pulumi.log.warn(
            f"memos:rdsStorageType: {rds.storage_type} is not checked against {zone_id}'s offer: the provider's RDS "
            f"lookups accept only {', '.join(LOOKUP_STORAGE_TYPES)}, so the engine version and the class were "
            f"checked for the zone without a storage type; RDS checks {rds.storage_type} when it creates the instance"
        )
    engines = alicloud.rds.get_instance_engines(
        engine=ENGINE,
        zone_id=zone_id,
        category=rds.category,
        db_instance_storage_type=storage,
        instance_charge_type=CHARGE_TYPE,
    )
    versions = sorted({e.engine_version for e in engines.instance_engines if e.engine == ENGINE})
    if rds.engine_version not in versions:
        offered = ", ".join(versions) or "none"
        raise ConfigError(
            "rdsEngineVersion",
            f"PostgreSQL {rds.engine_version} is not offered as {offer} in {zone_id}; offered there: {offered}",
        )
    query = {
        "engine": ENGINE,
        "engineVersion": rds.engine_version,
        "zoneId": zone_id,
        "category": rds.category,
        "dbInstanceStorageType": storage,
        "instanceChargeType": CHARGE_TYPE,
    }
    answer: Mapping[str, Any] = pulumi.runtime.invoke(
        INSTANCE_CLASSES,
        {key: value for key, value in query.items() if value is not None},
        pulumi.InvokeOptions(version=_ALICLOUD_VERSION),
    ).value
    classes: list[Mapping[str, Any]] = list(answer.get("instanceClasses") or [])
    ranges: dict[str, list[tuple[int, int]]] = {}
    for found in classes:
        ranges.setdefault(str(found["instanceClass"]), []).extend(storage_ranges(found.get("storageRanges")))
    if rds.instance_class not in ranges:
        raise ConfigError(
            "rdsInstanceClass",
            f"{rds.instance_class} is not sold for PostgreSQL {rds.engine_version} {offer} in {zone_id}; classes "
            f"there: {', '.join(sorted(ranges)) or 'none'}",
        )
    fitting = ranges[rds.instance_class]
    if fitting and not any(low <= rds.storage_gb <= high for low, high in fitting):
        takes = ", ".join(f"{low}-{high}" for low, high in sorted(set(fitting)))
        raise ConfigError(
            "rdsStorageGb",
            f"{rds.storage_gb} GiB is outside what {rds.instance_class} takes ({takes} GiB); choose a size in "
            "that range",
        )
