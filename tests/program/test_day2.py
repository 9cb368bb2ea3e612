"""Day-2 pieces under the mock engine: backups, the dump before upgrades, off-host copies, HTTPS."""

from __future__ import annotations

import json
from typing import Any

from harness.mock_engine import ROOT, StackRun, run_program
from lib.caddyfile import caddyfile
from tests.conftest import PROD_SECRETS
from tests.program.test_docker_target import LOCAL_JOB_PREFIX
from tests.program.test_secrets import changed

PROXY = {"domain": "notes.example.com", "acmeEmail": "ops@example.com"}


def labels(stack: str) -> list[dict[str, str]]:
    return [
        {"label": "org.memos-infra.project", "value": "memos"},
        {"label": "org.memos-infra.stack", "value": stack},
    ]


def test_backup_container_inputs(dev_run: StackRun) -> None:
    backup = dev_run.by_name("backup-server")
    superuser = dev_run.by_name("database-superuser-password").mock_outputs["result"]
    assert backup.inputs == {
        "name": "memos-backup",
        # The database server's own image: pg_dump is always the server's major version.
        "image": dev_run.by_name("database-image").mock_outputs["imageId"],
        "entrypoints": ["/bin/sh", "/usr/local/bin/memos-backup"],
        "command": ["schedule"],
        "envs": [
            "PGHOST=postgres",
            "PGPORT=5432",
            "PGUSER=postgres",
            "PGDATABASE=memos",
            "PGPASSWORD_FILE=/run/secrets/postgres-superuser-password",
            "PGCONNECT_TIMEOUT=10",
            "BACKUP_DIR=/backups",
            "BACKUP_RETENTION_DAYS=7",
            "BACKUP_TIME_UTC=18:00",
            "MEMOS_APP_ROLE=memos",
            "TZ=UTC",
        ],
        "uploads": [
            {"file": "/usr/local/bin/memos-backup", "content": (ROOT / "ops/container/memos-backup").read_text(),
             "permissions": "0555"},
            {"file": "/usr/local/bin/memos-restore", "content": (ROOT / "ops/container/memos-restore").read_text(),
             "permissions": "0555"},
            {"file": "/run/secrets/postgres-superuser-password", "content": superuser, "permissions": "0400",
             "owner": "0", "group": "0"},
        ],
        "healthcheck": {
            "tests": ["CMD", "/bin/sh", "/usr/local/bin/memos-backup", "health"],
            "interval": "5m0s",
            "timeout": "30s",
            "retries": 1,
            "startPeriod": "30m0s",
        },
        "restart": "unless-stopped",
        "memory": 64,
        "memorySwap": 64,
        "networksAdvanced": [{"name": "memos-net"}],
        "volumes": [{"volumeName": "memos-backups", "containerPath": "/backups"}],
        "labels": labels("dev"),
        "stopTimeout": 30,
        "destroyGraceSeconds": 30,
        "securityOpts": ["no-new-privileges:true"],
        "capabilities": {"drops": ["ALL"]},
        "tmpfs": {"/tmp": "rw,noexec,nosuid,size=16m"},
        "logDriver": "json-file",
        "logOpts": {"max-size": "10m", "max-file": "3"},
    }  # fmt: skip
    assert "uploads[2].content" in backup.secret_paths
    assert backup.options["delete_before_replace"] is True
    assert dev_run.by_name("database-server").urn in backup.options["dependencies"]


def test_the_backup_volume_is_protected_in_prod(prod_run: StackRun) -> None:
    volume = prod_run.by_name("volumes-backups")
    assert volume.inputs["name"] == "memos-backups"
    assert (volume.options["protect"], volume.options["retain_on_delete"]) == (True, True)


def test_a_dump_is_taken_before_the_app_is_replaced(dev_run: StackRun) -> None:
    dump = dev_run.by_name("backup-pre-upgrade-dump")
    assert dump.inputs == {
        "create": f"{LOCAL_JOB_PREFIX} docker exec memos-backup /bin/sh /usr/local/bin/memos-backup run pre-upgrade",
        "triggers": ["hrygo/memos:0.51.0"],
    }
    assert dump.options["replace_on_changes"] == ["triggers[*]"]
    assert dev_run.by_name("backup-server").urn in dump.options["dependencies"]
    # The engine runs a resource's step only after its dependencies' steps.
    assert dump.urn in dev_run.by_name("app-server").options["dependencies"]


def test_upgrading_the_app_dumps_first_then_replaces_only_the_app() -> None:
    before = run_program("prod", secrets=PROD_SECRETS)
    after = run_program("prod", {"appImage": "hrygo/memos:0.50.0"}, secrets=PROD_SECRETS)
    assert changed(before, after) == {
        "app-image": {"name"},
        "app-server": {"image"},
        "backup-pre-upgrade-dump": {"triggers"},  # replaced: the dump runs again, before the app
    }


def test_rolling_back_is_changing_the_config_back() -> None:
    upgraded = run_program("prod", {"appImage": "hrygo/memos:0.50.0"}, secrets=PROD_SECRETS)
    rolled_back = run_program("prod", secrets=PROD_SECRETS)
    original = run_program("prod", secrets=PROD_SECRETS)
    assert changed(upgraded, rolled_back) == changed(upgraded, original)
    assert changed(original, rolled_back) == {}


def test_behind_the_proxy_the_app_has_no_fixed_name_or_port_and_starts_before_the_old_one_stops() -> None:
    run = run_program("prod", PROXY, secrets=PROD_SECRETS)
    app = run.by_name("app-server")
    assert "name" not in app.inputs
    assert app.inputs.get("ports", []) == []
    assert app.options["delete_before_replace"] is False
    assert app.inputs["wait"] is True  # health-gated: the new one is healthy before the old one goes
    env = dict(entry.split("=", 1) for entry in app.inputs["envs"])
    assert env["MEMOS_INSTANCE_URL"] == "https://notes.example.com"
    assert run.outputs["app_url"] == "https://notes.example.com"


def test_proxy_container_inputs() -> None:
    run = run_program("prod", PROXY, secrets=PROD_SECRETS)
    proxy = run.by_name("proxy-server")
    assert run.by_name("proxy-image").inputs == {"name": "caddy:2.10.2-alpine", "keepLocally": False}
    inputs: dict[str, Any] = dict(proxy.inputs)
    inputs.pop("image")
    assert inputs == {
        "name": "memos-proxy",
        "envs": ["GOMEMLIMIT=57MiB"],
        "uploads": [{"file": "/etc/caddy/Caddyfile", "permissions": "0444",
                     "content": caddyfile(domain="notes.example.com", acme_email="ops@example.com",
                                          upstream="memos:5230")}],
        "healthcheck": {"tests": ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:2019/config/"],
                        "interval": "10s", "timeout": "5s", "retries": 3, "startPeriod": "30s"},
        "wait": True,
        "waitTimeout": 120,
        "restart": "unless-stopped",
        "memory": 64,
        "memorySwap": 64,
        "logDriver": "json-file",
        "logOpts": {"max-size": "10m", "max-file": "3"},
        "networksAdvanced": [{"name": "memos-net"}],
        "ports": [
            {"internal": 80, "external": 80, "ip": "0.0.0.0"},
            {"internal": 443, "external": 443, "ip": "0.0.0.0"},
        ],
        "volumes": [{"volumeName": "memos-caddy", "containerPath": "/data"}],
        "tmpfs": {"/config": "rw,noexec,nosuid,size=8m"},
        "securityOpts": ["no-new-privileges:true"],
        "capabilities": {"drops": ["ALL"], "adds": ["NET_BIND_SERVICE"]},
        "labels": labels("prod"),
        "stopTimeout": 30,
        "destroyGraceSeconds": 30,
    }  # fmt: skip
    assert proxy.options["delete_before_replace"] is True
    assert run.by_name("app-server").urn in proxy.options["dependencies"]
    caddy_volume = run.by_name("volumes-proxy")
    assert caddy_volume.inputs["name"] == "memos-caddy"
    assert caddy_volume.options["protect"] is True


def test_the_memory_plan_accounts_for_the_proxy() -> None:
    without = run_program("prod", secrets=PROD_SECRETS).by_name("database-server").inputs["memory"]
    behind_proxy = run_program("prod", PROXY, secrets=PROD_SECRETS).by_name("database-server").inputs["memory"]
    assert without - behind_proxy == 64


def test_the_caddyfile_gets_certificates_and_retries_the_app() -> None:
    assert caddyfile(domain="notes.example.com", acme_email="ops@example.com", upstream="memos:5230") == (
        "{\n\temail ops@example.com\n\tadmin 127.0.0.1:2019\n\tservers {\n\t\tprotocols h1 h2\n\t}\n}\n\n"
        "notes.example.com {\n\tencode zstd gzip\n\treverse_proxy memos:5230 {\n\t\tlb_try_duration 30s\n"
        "\t\tlb_try_interval 250ms\n\t}\n}\n"
    )


OSS = {"backupToOss": True}


def test_off_host_copies_go_to_a_private_encrypted_expiring_bucket() -> None:
    run = run_program("prod", OSS, secrets=PROD_SECRETS)
    bucket = run.by_name("offsite-bucket")
    suffix = run.by_name("offsite-suffix").mock_outputs["hex"]
    assert len(suffix) == 8  # 4 random bytes
    assert bucket.inputs == {
        "bucket": f"memos-prod-backups-{suffix}",
        "storageClass": "Standard",
        "serverSideEncryptionRule": {"sseAlgorithm": "AES256"},
        "lifecycleRules": [{"id": "expire-dumps", "enabled": True, "prefix": "memos/", "expirations": [{"days": 30}]}],
        "forceDestroy": False,
        "tags": {"project": "memos", "stack": "prod"},
    }
    assert (bucket.options["protect"], bucket.options["retain_on_delete"]) == (True, True)
    assert run.by_name("offsite-acl").inputs == {"bucket": bucket.inputs["bucket"], "acl": "private"}
    assert run.by_name("offsite-public-access-block").inputs == {
        "bucket": bucket.inputs["bucket"],
        "blockPublicAccess": True,
    }


def test_the_host_may_only_put_dumps_into_that_bucket_through_its_role() -> None:
    run = run_program("prod", OSS, secrets=PROD_SECRETS)
    bucket = run.by_name("offsite-bucket").inputs["bucket"]
    role = run.by_name("offsite-role")
    assert json.loads(role.inputs["assumeRolePolicyDocument"]) == {
        "Version": "1",
        "Statement": [{"Action": "sts:AssumeRole", "Effect": "Allow", "Principal": {"Service": ["ecs.aliyuncs.com"]}}],
    }
    policy = run.by_name("offsite-policy")
    # PutObject also authorises a multipart upload's parts; the copier aborts its own failed uploads and
    # reports the backup age (CloudMonitor has no resource-level permission for it).
    assert json.loads(policy.inputs["policyDocument"]) == {
        "Version": "1",
        "Statement": [
            {"Effect": "Allow", "Action": ["oss:PutObject", "oss:AbortMultipartUpload"],
             "Resource": [f"acs:oss:*:*:{bucket}/memos/*"]},
            {"Effect": "Allow", "Action": ["cms:PutCustomMetric"], "Resource": ["*"]},
        ],
    }  # fmt: skip
    assert run.by_name("offsite-role-policy").inputs == {
        "roleName": "memos-prod-backup-writer",
        "policyName": "memos-prod-backup-put",
        "policyType": "Custom",
    }
    assert run.by_name("host-ram-role").inputs == {
        "instanceId": run.by_name("host-instance").mock_id,
        "ramRoleName": "memos-prod-backup-writer",
    }


def test_the_copier_reads_dumps_read_only_with_no_key_of_its_own() -> None:
    run = run_program("prod", OSS, secrets=PROD_SECRETS)
    copier = run.by_name("backup-offsite")
    env = dict(entry.split("=", 1) for entry in copier.inputs["envs"])
    assert env == {
        "OSS_BUCKET": run.by_name("offsite-bucket").inputs["bucket"],
        "OSS_REGION": "cn-hangzhou",
        "OSS_ENDPOINT": "oss-cn-hangzhou-internal.aliyuncs.com",
        "OSS_PREFIX": "memos/",
        "RAM_ROLE_NAME": "memos-prod-backup-writer",
        "CMS_GROUP_ID": run.by_name("alarms-group").mock_id,
        "MEMOS_STACK": "prod",
        "BACKUP_DIR": "/backups",
        "STATE_DIR": "/var/lib/memos-offsite",
        "INTERVAL_SECONDS": "300",
        "TZ": "UTC",
    }
    assert copier.inputs["volumes"] == [
        {"volumeName": "memos-backups", "containerPath": "/backups", "readOnly": True},
        {"volumeName": "memos-offsite", "containerPath": "/var/lib/memos-offsite"},
    ]
    # The script is part of the image built from ops/copier/ (tests/program/test_copier_image.py), not an upload.
    assert "uploads" not in copier.inputs
    assert copier.inputs["image"] == run.by_name("backup-offsite-image").inputs["imageName"]
    assert copier.inputs["healthcheck"]["tests"] == ["CMD", "python", "/usr/local/bin/memos-oss-upload", "--health"]
    assert copier.inputs["memory"] == 128


def test_the_memory_plan_accounts_for_the_copier() -> None:
    without = run_program("prod", secrets=PROD_SECRETS).by_name("database-server").inputs["memory"]
    with_copier = run_program("prod", OSS, secrets=PROD_SECRETS).by_name("database-server").inputs["memory"]
    assert without - with_copier == 128
