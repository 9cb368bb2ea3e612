"""`memos:database rds`: ApsaraDB RDS for PostgreSQL in the host's VPC, as the program registers it.

The mocks answer the RDS lookups from the table in harness/mock_engine.py and refuse the filter values
the provider's data sources refuse; what RDS does with these inputs (endpoints, SSL, the privileged
account's rights) cannot be shown here. The extension job and the migration copy are exercised on a
real PostgreSQL in tests/scripts/test_migrate_database.py.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pytest

from components.rds import deployed_drift
from harness import mock_engine
from harness.mock_engine import RDS_FILTERS, StackRun, rds_answer, run_program
from lib.policy_rules import evaluate
from settings import RdsSettings
from tests.conftest import PROD_SECRETS
from tests.program.test_ecs_host import SSH_PREFIX
from tests.program.test_secrets import changed, leaves, under_secret
from tools.offline_check import policy_resources

#: A stack that starts on RDS: the container database's volumes are never created.
RDS = {"database": "rds", "containerDatabaseVolumes": "remove"}
#: A stack moved from the container database (scripts/migrate-database sets keep).
MOVED = {**RDS, "containerDatabaseVolumes": "keep"}
TAGS = {"project": "memos", "stack": "prod"}
CONTAINER_DATABASE_VOLUMES = ("volumes-database", "volumes-backups")


@pytest.fixture(scope="module")
def rds_run() -> StackRun:
    return run_program("prod", RDS, secrets=PROD_SECRETS)


def volumes(run: StackRun) -> dict[str, str]:
    """Docker volume name by resource name."""
    return {r.name: r.inputs["name"] for r in run.of_type("docker:index/volume:Volume")}


def test_a_new_rds_stack_has_no_database_or_dump_container_and_none_of_their_volumes(rds_run: StackRun) -> None:
    containers = {r.name for r in rds_run.of_type("docker:index/container:Container")}
    assert containers == {"app-server"}
    images = {r.name for r in rds_run.of_type("docker:index/remoteImage:RemoteImage")}
    assert images == {"app-image", "rds-client-image"}
    assert not {n for n in rds_run.names() if n == "database" or n.startswith(("database-", "backup"))}
    assert volumes(rds_run) == {"volumes-app": "memos-appdata"}


def test_keep_declares_the_container_databases_volumes_exactly_as_the_container_stack_does() -> None:
    container = run_program("prod", secrets=PROD_SECRETS)
    kept = run_program("prod", MOVED, secrets=PROD_SECRETS)
    assert volumes(container) == {
        "volumes-app": "memos-appdata",
        "volumes-database": "memos-pgdata",
        "volumes-backups": "memos-backups",
    }
    assert volumes(kept) == volumes(container)
    for name in CONTAINER_DATABASE_VOLUMES:
        before, after = container.by_name(name), kept.by_name(name)
        assert (after.urn, after.inputs) == (before.urn, before.inputs), name
        assert (after.options["protect"], after.options["retain_on_delete"]) == (True, True), name
    # Kept, not used: still no database or dump container.
    assert {r.name for r in kept.of_type("docker:index/container:Container")} == {"app-server"}


def test_remove_on_a_moved_stack_drops_exactly_the_two_volumes() -> None:
    # What `pulumi up` would then delete; in prod `protect` refuses it until the operator unprotects the
    # two URNs, and `retain_on_delete` leaves the data on the host (README): the mocks cannot show either.
    kept = run_program("prod", MOVED, secrets=PROD_SECRETS)
    removed = run_program("prod", RDS, secrets=PROD_SECRETS)
    assert kept.names() - removed.names() == set(CONTAINER_DATABASE_VOLUMES)
    assert removed.names() <= kept.names()
    for name in removed.names():
        assert removed.by_name(name).inputs == kept.by_name(name).inputs, name


def test_the_instance_is_private_next_to_the_host_encrypted_and_protected(rds_run: StackRun) -> None:
    instance = rds_run.by_name("rds-instance")
    assert instance.inputs == {
        "instanceName": "memos-db",
        "engine": "PostgreSQL",
        "engineVersion": "18.0",
        "instanceType": "pg.n2.small.1",
        "instanceStorage": 20,
        "dbInstanceStorageType": "cloud_essd",
        "category": "Basic",
        "instanceChargeType": "Postpaid",
        "zoneId": "cn-hangzhou-j",
        "vpcId": rds_run.by_name("host-vpc").mock_id,
        "vswitchId": rds_run.by_name("host-vswitch").mock_id,
        "securityIps": ["172.16.1.0/24"],
        "sslAction": "Open",
        "caType": "aliyun",
        "deletionProtection": True,
        "tags": TAGS,
    }
    assert (instance.options["protect"], instance.options["retain_on_delete"]) == (True, True)
    # Nothing gives it a public endpoint.
    assert not [r for r in rds_run.resources.values() if r.type.startswith("alicloud:rds/connection")]


def test_database_accounts_privilege_and_backups(rds_run: StackRun) -> None:
    instance_id = rds_run.by_name("rds-instance").mock_id
    admin_password = rds_run.by_name("rds-admin-password").mock_outputs["result"]
    app_password = rds_run.by_name("rds-app-password").mock_outputs["result"]
    assert rds_run.by_name("rds-database").inputs == {
        "instanceId": instance_id,
        "dataBaseName": "memos",
        "characterSet": "UTF8,C,en_US.utf8",
        "description": "Memos",
    }
    admin, app = rds_run.by_name("rds-admin-account"), rds_run.by_name("rds-app-account")
    assert admin.inputs == {
        "dbInstanceId": instance_id,
        "accountName": "memos_admin",
        "accountPassword": admin_password,
        "accountType": "Super",
        "accountDescription": "creates the extensions; never used by the app",
    }
    assert app.inputs == {
        "dbInstanceId": instance_id,
        "accountName": "memos",
        "accountPassword": app_password,
        "accountType": "Normal",
        "accountDescription": "the Memos app",
    }
    assert "accountPassword" in admin.secret_paths
    assert "accountPassword" in app.secret_paths
    assert rds_run.by_name("rds-app-privilege").inputs == {
        "instanceId": instance_id,
        "accountName": "memos",
        "dbNames": ["memos"],
        "privilege": "DBOwner",
    }
    assert rds_run.by_name("rds-backup-policy").inputs == {
        "instanceId": instance_id,
        "backupRetentionPeriod": 7,
        "preferredBackupTime": "18:00Z-19:00Z",
        "preferredBackupPeriods": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
    }


def test_the_extensions_are_created_from_the_host_before_the_app_starts(rds_run: StackRun) -> None:
    job = rds_run.by_name("rds-extensions")
    admin_password = rds_run.by_name("rds-admin-password").mock_outputs["result"]
    endpoint = rds_run.by_name("rds-instance").mock_outputs["connectionString"]
    assert job.inputs["create"] == (
        f"{SSH_PREFIX} root@198.51.100.20 docker run --rm -i --network host"
        " --entrypoint /bin/sh pgvector/pgvector:0.8.6-pg18-trixie -c 'IFS= read -r PGPASSWORD && export PGPASSWORD"
        f' && exec psql -v ON_ERROR_STOP=1 --no-psqlrc -q "host={endpoint} port=5432 dbname=memos user=memos_admin'
        " sslmode=require\"'"
    )
    assert admin_password not in job.inputs["create"]
    assert job.inputs["stdin"].startswith(f"{admin_password}\nCREATE EXTENSION IF NOT EXISTS vector;")
    assert "stdin" in job.secret_paths
    assert job.options["additional_secret_outputs"] == ["stderr", "stdout"]
    deps = set(job.options["dependencies"])
    for name in ("host-docker-ready", "rds-database", "rds-admin-account", "rds-app-privilege", "rds-client-image"):
        assert rds_run.by_name(name).urn in deps, name
    assert job.urn in rds_run.by_name("app-server").options["dependencies"]


def test_the_app_reaches_the_private_endpoint_over_ssl_with_its_dsn_as_a_file(rds_run: StackRun) -> None:
    app = rds_run.by_name("app-server")
    password = rds_run.by_name("rds-app-password").mock_outputs["result"]
    endpoint = rds_run.by_name("rds-instance").mock_outputs["connectionString"]
    uploads = {u["file"]: u["content"] for u in app.inputs["uploads"]}
    assert uploads["/run/memos-secrets/dsn"] == f"postgres://memos:{password}@{endpoint}:5432/memos?sslmode=require"
    assert rds_run.outputs["app_dsn"] == uploads["/run/memos-secrets/dsn"]
    assert rds_run.output_secrets == {"app_dsn"}
    assert rds_run.outputs["rds_endpoint"] == f"{endpoint}:5432"


def test_the_database_containers_memory_goes_to_the_app_and_the_plan_says_so(rds_run: StackRun) -> None:
    app = rds_run.by_name("app-server")
    # 2048 - (320 OS + 128 Docker) = 1600 MiB, GOMEMLIMIT 90 % of it
    assert app.inputs["memory"] == 1600
    assert "GOMEMLIMIT=1440MiB" in app.inputs["envs"]
    assert rds_run.outputs["memory_plan"] == {
        "host": 2048,
        "app": 1600,
        "proxy": 0,
        "database": "ApsaraDB RDS: no database or dump container here, their memory went to the app",
    }
    assert "db_settings" not in rds_run.outputs


def test_no_password_appears_outside_a_secret_input(rds_run: StackRun) -> None:
    passwords = [r.mock_outputs["result"] for r in rds_run.of_type("random:index/randomPassword:RandomPassword")]
    assert len(passwords) == 2
    for resource in rds_run.resources.values():
        for path, text in leaves(resource.inputs):
            for secret in passwords:
                if secret in text:
                    assert under_secret(path, resource.secret_paths), f"{resource.name}.{path} holds a secret"


def test_rotating_the_app_password_restarts_only_the_app() -> None:
    before = run_program("prod", RDS, secrets=PROD_SECRETS)
    after = run_program("prod", {**RDS, "dbPasswordGeneration": 2}, secrets=PROD_SECRETS)
    assert changed(before, after) == {
        "rds-app-password": {"keepers"},
        # Not ForceNew in the provider: the account's password is changed in place.
        "rds-app-account": {"accountPassword"},
        "app-server": {"uploads"},
    }


def test_the_rds_stack_passes_every_policy_rule(rds_run: StackRun) -> None:
    assert evaluate(policy_resources(rds_run)) == []
    assert evaluate(policy_resources(run_program("prod", MOVED, secrets=PROD_SECRETS))) == []


def test_the_lookups_ask_for_postgresql_in_the_hosts_zone(rds_run: StackRun) -> None:
    calls = [(token, args) for token, args in rds_run.calls if token.startswith("alicloud:rds/")]
    common = {
        "engine": "PostgreSQL",
        "zoneId": "cn-hangzhou-j",
        "category": "Basic",
        "dbInstanceStorageType": "cloud_essd",
        "instanceChargeType": "PostPaid",
    }
    assert calls == [
        ("alicloud:rds/getInstanceEngines:getInstanceEngines", common),
        ("alicloud:rds/getInstanceClasses:getInstanceClasses", {**common, "engineVersion": "18.0"}),
    ]


def test_the_rds_mocks_refuse_what_the_provider_refuses() -> None:
    for token in RDS_FILTERS:
        with pytest.raises(Exception, match="expected category to be one of"):
            rds_answer(token, {"engine": "PostgreSQL", "category": "Standard"})
        with pytest.raises(Exception, match="expected engine to be one of"):
            rds_answer(token, {"engine": "postgres"})
    engines = rds_answer("alicloud:rds/getInstanceEngines:getInstanceEngines", {"engine": "MySQL"})
    assert engines["instanceEngines"] == []


def test_moving_from_the_container_to_rds_keeps_host_volumes_and_disk() -> None:
    container = run_program("prod", secrets=PROD_SECRETS)
    rds = run_program("prod", MOVED, secrets=PROD_SECRETS)
    gone = container.names() - rds.names()
    assert gone == {
        "database", "database-image", "database-server", "database-role-job", "database-app-password",
        "database-superuser-password", "backup", "backup-server", "backup-pre-upgrade-dump",
    } | {n for n in container.names() if n.startswith("backup-")}  # fmt: skip
    assert {n for n in rds.names() if n.startswith("volumes-")} == {
        n for n in container.names() if n.startswith("volumes-")
    }
    for name in container.names() & rds.names():
        if name.startswith(("host-", "volumes-")):
            assert container.by_name(name).inputs == rds.by_name(name).inputs, name


@pytest.mark.parametrize(
    ("overrides", "key", "fragment"),
    [
        ({"database": "mysql"}, "memos:database", "'mysql' is not one of container, rds"),
        ({"rdsEngineVersion": "13.0"}, "memos:rdsEngineVersion", "needs PostgreSQL 14 or later"),
        ({"rdsEngineVersion": "19.0"}, "memos:rdsEngineVersion", "offered there: 14.0, 15.0, 16.0, 17.0, 18.0"),
        ({"rdsEngineVersion": "18"}, "memos:rdsEngineVersion", "not a major version as RDS names it, e.g. 18.0"),
        ({"rdsMajorUpgradeTo": "18"}, "memos:rdsMajorUpgradeTo", "not a major version as RDS names it, e.g. 18.0"),
        (
            {"rdsInstanceClass": "pg.n2.medium.2c"},
            "memos:rdsInstanceClass",
            "pg.n2.medium.2c is not sold for PostgreSQL 18.0 Basic with cloud_essd storage in cn-hangzhou-j; classes "
            "there: "
            "pg.n2.large.1, pg.n2.medium.1, pg.n2.small.1",
        ),
        ({"rdsCategory": "Standard"}, "memos:rdsCategory", "not one of Basic, HighAvailability"),
        ({"zoneId": "cn-hangzhou-k"}, "memos:rdsEngineVersion", "offered there: none"),
        ({"backupRetentionDays": 3}, "memos:backupRetentionDays", "RDS keeps backups for 7 to 730 days"),
        ({"backupToOss": True}, "memos:backupToOss", "there is no dump container"),
        ({"appMemoryMb": 1700}, "memos:appMemoryMb", "1700 MiB does not fit a 2048 MiB host"),
        (
            {"containerDatabaseVolumes": ""},
            "memos:containerDatabaseVolumes",
            "with memos:database rds, say what happens to the container database's volumes (memos-pgdata, "
            "memos-backups): keep for a stack that ran on the container database (scripts/migrate-database sets it), "
            "remove for a new stack or once they are no longer needed",
        ),
        ({"containerDatabaseVolumes": "drop"}, "memos:containerDatabaseVolumes", "'drop' is not one of keep, remove"),
        ({"rdsInstance": "remove"}, "memos:rdsInstance", "remove applies only with memos:database container"),
        ({"rdsInstance": "drop"}, "memos:rdsInstance", "'drop' is not one of keep, remove"),
    ],
    ids=[
        "neither container nor rds", "engine without vector", "engine not offered", "engine version format",
        "upgrade acknowledgement format",
        "class of the other edition", "unknown edition", "zone without RDS", "retention below RDS minimum",
        "dump copies without dumps", "app floor above the host", "container volumes not decided",
        "container volumes neither keep nor remove", "rds instance removed while on rds", "rds instance neither",
    ],
)  # fmt: skip
def test_bad_rds_config_fails_with_one_line(overrides: dict[str, Any], key: str, fragment: str) -> None:
    with pytest.raises(pulumi.RunError) as raised:
        run_program("prod", {**RDS, **overrides}, secrets=PROD_SECRETS)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"{key}: "), message
    assert fragment in message, message


def test_rds_in_dev_is_refused() -> None:
    with pytest.raises(pulumi.RunError) as raised:
        run_program("dev", RDS)
    assert str(raised.value).startswith("memos:database: rds runs ApsaraDB RDS next to the production ECS host")


def test_a_high_availability_class_is_accepted_in_its_edition() -> None:
    run = run_program(
        "prod", {**RDS, "rdsCategory": "HighAvailability", "rdsInstanceClass": "pg.n2.medium.2c"}, secrets=PROD_SECRETS
    )
    assert run.by_name("rds-instance").inputs["category"] == "HighAvailability"


def test_general_essd_is_deployed_though_neither_rds_lookup_takes_it_as_a_filter() -> None:
    # The provider's data sources refuse general_essd (the mock does as they do), the instance takes it.
    for token in RDS_FILTERS:
        with pytest.raises(Exception, match="expected dbInstanceStorageType to be one of"):
            rds_answer(token, {"engine": "PostgreSQL", "dbInstanceStorageType": "general_essd"})
    run = run_program("prod", {**RDS, "rdsStorageType": "general_essd"}, secrets=PROD_SECRETS)
    assert run.by_name("rds-instance").inputs["dbInstanceStorageType"] == "general_essd"
    lookups = [args for token, args in run.calls if token.startswith("alicloud:rds/")]
    assert len(lookups) == 2
    assert not [args for args in lookups if "dbInstanceStorageType" in args]
    assert [w for w in run.warnings if w.startswith("memos:rdsStorageType: general_essd is not checked")] == [
        "memos:rdsStorageType: general_essd is not checked against cn-hangzhou-j's offer: the provider's RDS "
        "lookups accept only cloud_ssd, local_ssd, cloud_essd, cloud_essd2, cloud_essd3, so the engine version and "
        "the class were checked for the zone without a storage type; RDS checks general_essd when it creates the "
        "instance"
    ]


def test_a_storage_type_the_lookups_take_is_checked_without_a_warning(rds_run: StackRun) -> None:
    assert not [w for w in rds_run.warnings if "rdsStorageType" in w]


@pytest.mark.parametrize("shape", ["list", "object"])
def test_a_classs_storage_range_is_read_as_one_object_or_as_a_list(shape: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The provider prints the API's numbers with fmt.Sprint; "20.0" must read as 20.
    monkeypatch.setattr(mock_engine, "RDS_STORAGE_RANGE_SHAPE", shape)
    monkeypatch.setattr(mock_engine, "RDS_STORAGE_RANGE", {"min": "20.0", "max": "6000.0", "step": "5"})
    run = run_program("prod", {**RDS, "rdsStorageGb": 6000}, secrets=PROD_SECRETS)
    assert run.by_name("rds-instance").inputs["instanceStorage"] == 6000
    with pytest.raises(pulumi.RunError) as raised:
        run_program("prod", {**RDS, "rdsStorageGb": 6001}, secrets=PROD_SECRETS)
    assert str(raised.value) == (
        "memos:rdsStorageGb: 6001 GiB is outside what pg.n2.small.1 takes (20-6000 GiB); choose a size in that range"
    )


def instance_warnings(run: StackRun) -> list[str]:
    return [w for w in run.warnings if w.startswith(("memos:rdsCategory", "memos:rdsEngineVersion", "memos:rdsMajor"))]


def test_a_category_change_is_never_sent_as_a_silent_update() -> None:
    # The provider sends `category` only for serverless instances and reads the API's value back.
    deployed = run_program("prod", RDS, secrets=PROD_SECRETS)
    edited = {**RDS, "rdsCategory": "HighAvailability", "rdsInstanceClass": "pg.n2.medium.2c"}
    run = run_program("prod", edited, secrets=PROD_SECRETS, deployed=deployed)
    instance = run.by_name("rds-instance")
    assert "category" in instance.options["ignore_changes"]
    assert instance.mock_outputs["category"] == "Basic"  # what the engine keeps for the existing instance
    assert instance_warnings(run) == [
        "memos:rdsCategory: HighAvailability is not applied: the RDS instance is Basic, and the provider changes an "
        "edition only for serverless instances, so `pulumi up` cannot do it; upgrade the edition in the RDS console "
        '(docs/outgrowing.md, "Changing the RDS edition") or set memos:rdsCategory back to Basic'
    ]
    # A new instance is created with the edition the config names, and nothing is said.
    fresh = run_program("prod", edited, secrets=PROD_SECRETS)
    assert fresh.by_name("rds-instance").mock_outputs["category"] == "HighAvailability"
    assert instance_warnings(fresh) == []


def test_a_changed_engine_version_is_not_sent_without_the_upgrade_acknowledgement() -> None:
    deployed = run_program("prod", {**RDS, "rdsEngineVersion": "17.0"}, secrets=PROD_SECRETS)
    run = run_program("prod", RDS, secrets=PROD_SECRETS, deployed=deployed)
    instance = run.by_name("rds-instance")
    assert instance.options["ignore_changes"] == ["category", "engineVersion"]
    assert instance.mock_outputs["engineVersion"] == "17.0"
    assert instance_warnings(run) == [
        "memos:rdsEngineVersion: 18.0 is not sent: the RDS instance runs PostgreSQL 17.0, and a major upgrade needs "
        'memos:rdsMajorUpgradeTo 18.0 too (docs/outgrowing.md, "Upgrading PostgreSQL on RDS"); or set '
        "memos:rdsEngineVersion back to 17.0"
    ]


def test_an_acknowledged_major_upgrade_sends_the_engine_version() -> None:
    deployed = run_program("prod", {**RDS, "rdsEngineVersion": "17.0"}, secrets=PROD_SECRETS)
    run = run_program("prod", {**RDS, "rdsMajorUpgradeTo": "18.0"}, secrets=PROD_SECRETS, deployed=deployed)
    instance = run.by_name("rds-instance")
    assert instance.options["ignore_changes"] == ["category"]
    assert instance.mock_outputs["engineVersion"] == "18.0"
    assert instance_warnings(run) == []


def test_an_acknowledgement_of_another_version_sends_nothing_and_says_so() -> None:
    run = run_program("prod", {**RDS, "rdsMajorUpgradeTo": "17.0"}, secrets=PROD_SECRETS)
    assert run.by_name("rds-instance").options["ignore_changes"] == ["category", "engineVersion"]
    assert instance_warnings(run) == [
        "memos:rdsMajorUpgradeTo: 17.0 is not memos:rdsEngineVersion (18.0), so no engine version is sent to the RDS "
        "instance; set both to the version you upgrade to, or remove memos:rdsMajorUpgradeTo (docs/outgrowing.md, "
        '"Upgrading PostgreSQL on RDS")'
    ]


def test_an_acknowledged_upgrade_the_provider_did_not_run_is_reported() -> None:
    # pulumi-alicloud 4.0.0 (provider v1.247.0) sends a changed engine version for MySQL only, so after the
    # `up` its Read still reports the old version; the mock engine answers with the inputs and cannot show it.
    rds = RdsSettings(
        engine_version="18.0", major_upgrade_to="18.0", instance_class="pg.n2.small.1", category="Basic",
        storage_gb=20, storage_type="cloud_essd", backup_retention_days=7, backup_window="18:00Z-19:00Z",
        keep_container_volumes=False,
    )  # fmt: skip
    assert deployed_drift(rds, "Basic", "17.0") == [
        "memos:rdsMajorUpgradeTo: the RDS instance still runs PostgreSQL 17.0: the provider of pulumi-alicloud 4.0.0 "
        'does not upgrade PostgreSQL in place; run the upgrade with RDS (docs/outgrowing.md, "Upgrading PostgreSQL '
        'on RDS")'
    ]
    assert deployed_drift(rds, "Basic", "18.0") == []


#: A stack moved back from RDS to the container database (scripts/migrate-database to-container).
MOVED_BACK = {"database": "container", "rdsInstance": "keep"}
RDS_DATA = ("rds-instance", "rds-database", "rds-admin-account", "rds-app-account", "rds-app-privilege",
            "rds-backup-policy")  # fmt: skip


def test_the_database_and_its_accounts_are_protected_and_retained_like_the_instance(rds_run: StackRun) -> None:
    for name in RDS_DATA:
        options = rds_run.by_name(name).options
        assert (options["protect"], options["retain_on_delete"]) == (True, True), name
    # Rotation replaces a password: those are not protected.
    assert not rds_run.by_name("rds-app-password").options["protect"]


def test_keep_declares_the_rds_instance_on_a_container_stack_exactly_as_on_rds() -> None:
    on_rds = run_program("prod", MOVED, secrets=PROD_SECRETS)
    back = run_program("prod", MOVED_BACK, secrets=PROD_SECRETS)
    rds = {r.name for r in on_rds.resources.values() if r.name == "rds" or r.name.startswith("rds-")}
    assert len(rds) == 11
    for name in rds:
        before, after = on_rds.by_name(name), back.by_name(name)
        assert (after.urn, after.inputs) == (before.urn, before.inputs), name
        assert after.options["protect"] == before.options["protect"], name
    # The app is on the container database again.
    assert back.outputs["app_dsn"].startswith("postgres://memos:") and "@postgres:5432/" in back.outputs["app_dsn"]
    assert {"database-server", "backup-server"} <= back.names()
    assert back.by_name("rds-instance").urn in back.by_name("destroy-guard").options["dependencies"]
    assert evaluate(policy_resources(back)) == []


def test_a_container_stack_without_keep_declares_no_rds() -> None:
    for overrides in ({}, {"rdsInstance": "remove"}):
        run = run_program("prod", overrides, secrets=PROD_SECRETS)
        assert not [n for n in run.names() if n == "rds" or n.startswith("rds-")], overrides


def test_a_kept_rds_instance_still_needs_an_rds_backup_retention() -> None:
    with pytest.raises(pulumi.RunError) as raised:
        run_program("prod", {**MOVED_BACK, "backupRetentionDays": 3}, secrets=PROD_SECRETS)
    assert str(raised.value).startswith("memos:backupRetentionDays: 3: RDS keeps backups for 7 to 730 days")
