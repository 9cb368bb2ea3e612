"""Whole inputs and resource options of every component, on the realistic dev and prod configs.

Inputs are what the program sends to the providers; the assertions compare whole dicts so that an
unintended extra or missing property fails here, not on someone's server. Options encode what the
providers do (see the README's "How changes roll out"): a container with a fixed name or host port
must be deleted before its replacement starts, healthcheck edits must replace, state is protected.
"""

from __future__ import annotations

import shlex
from typing import Any

from harness.mock_engine import StackRun
from lib.app_env import secret_env_wrapper
from lib.database_sql import INIT_SQL
from tests.program.test_docker_target import LOCAL_JOB_PREFIX
from tests.program.test_ecs_host import HOST_KEY, SSH_OPTS


def labels(stack: str) -> list[dict[str, str]]:
    return [
        {"label": "org.memos-infra.project", "value": "memos"},
        {"label": "org.memos-infra.stack", "value": stack},
    ]


def flags(settings: dict[str, str]) -> list[str]:
    out = ["postgres"]
    for key, value in settings.items():
        out += ["-c", f"{key}={value}"]
    return out


# The dev plan: 2 vCPU / 2048 MiB host, 10 000 expected embeddings, 30 connections (see test_tuning).
DEV_POSTGRES_SETTINGS = {
    "max_connections": "30",
    "shared_buffers": "192MB",
    "effective_cache_size": "768MB",
    "maintenance_work_mem": "64MB",
    "work_mem": "7808kB",
    "hash_mem_multiplier": "1.0",
    "autovacuum_max_workers": "2",
    "autovacuum_work_mem": "32MB",
    "max_worker_processes": "4",
    "max_parallel_workers": "1",
    "max_parallel_maintenance_workers": "1",
    "max_parallel_workers_per_gather": "0",
    "min_parallel_table_scan_size": "0",
    "io_method": "worker",
    "io_workers": "2",
    "effective_io_concurrency": "32",
    "maintenance_io_concurrency": "32",
    "wal_buffers": "6MB",
    "min_wal_size": "256MB",
    "max_wal_size": "1GB",
    "checkpoint_timeout": "15min",
    "checkpoint_completion_target": "0.9",
    "jit": "off",
    "huge_pages": "off",
    "random_page_cost": "1.1",
    "idle_in_transaction_session_timeout": "10min",
}


def without(inputs: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in inputs.items() if k not in keys}


def test_network_is_a_named_bridge(dev_run: StackRun) -> None:
    network = dev_run.by_name("network-bridge")
    assert network.inputs == {"name": "memos-net", "driver": "bridge", "labels": labels("dev")}
    assert network.type == "docker:index/network:Network"


def test_volumes_have_stable_names_and_are_unprotected_in_dev(dev_run: StackRun) -> None:
    for child, name in (("volumes-database", "memos-pgdata"), ("volumes-app", "memos-appdata")):
        volume = dev_run.by_name(child)
        assert volume.inputs == {"name": name, "driver": "local", "labels": labels("dev")}
        assert volume.options["protect"] is False
        assert volume.options["retain_on_delete"] is False


def test_volumes_are_protected_and_retained_in_prod(prod_run: StackRun) -> None:
    for child in ("volumes-database", "volumes-app"):
        volume = prod_run.by_name(child)
        assert volume.options["protect"] is True
        assert volume.options["retain_on_delete"] is True


def test_database_container_inputs(dev_run: StackRun) -> None:
    server = dev_run.by_name("database-server")
    image = dev_run.by_name("database-image")
    password = dev_run.by_name("database-superuser-password")
    assert image.inputs == {"name": "pgvector/pgvector:0.8.6-pg18-trixie", "keepLocally": False}
    assert without(server.inputs, "image", "uploads") == {
        "name": "memos-postgres",
        "command": flags(DEV_POSTGRES_SETTINGS),
        "envs": [
            "POSTGRES_USER=postgres",
            "POSTGRES_DB=memos",
            "POSTGRES_PASSWORD_FILE=/run/secrets/postgres-superuser-password",
            "POSTGRES_INITDB_ARGS=--auth-local=trust --auth-host=scram-sha-256",
        ],
        "healthcheck": {
            "tests": ["CMD", "pg_isready", "-h", "127.0.0.1", "-p", "5432", "-U", "postgres", "-d", "memos"],
            "interval": "5s",
            "timeout": "5s",
            "retries": 5,
            "startPeriod": "2m0s",
        },
        "wait": True,
        "waitTimeout": 300,
        "restart": "unless-stopped",
        "memory": 1024,
        "memorySwap": 1024,
        "shmSize": 128,
        "logDriver": "json-file",
        "logOpts": {"max-size": "10m", "max-file": "3"},
        "networksAdvanced": [{"name": "memos-net", "aliases": ["postgres"]}],
        "ports": [{"internal": 5432, "external": 25432, "ip": "127.0.0.1"}],
        "volumes": [{"volumeName": "memos-pgdata", "containerPath": "/var/lib/postgresql"}],
        "labels": labels("dev"),
        "stopTimeout": 60,
        "destroyGraceSeconds": 60,
    }
    # The superuser password is delivered as a file, never as an environment variable.
    assert server.inputs["uploads"] == [
        {
            "file": "/run/secrets/postgres-superuser-password",
            "content": password.mock_outputs["result"],
            "permissions": "0400",
            "owner": "0",
            "group": "0",
        },
        {"file": "/docker-entrypoint-initdb.d/10-extensions.sql", "content": INIT_SQL, "permissions": "0444"},
    ]
    assert server.inputs["image"] == image.mock_outputs["imageId"]


def test_database_publishes_no_port_in_prod(prod_run: StackRun) -> None:
    server = prod_run.by_name("database-server")
    assert "ports" not in server.inputs or server.inputs["ports"] == []


def test_database_container_is_deleted_before_its_replacement_and_healthcheck_edits_replace(dev_run: StackRun) -> None:
    options = dev_run.by_name("database-server").options
    assert options["delete_before_replace"] is True
    assert options["replace_on_changes"] == ["healthcheck", "tmpfs"]
    assert options["ignore_changes"] == ["uploads"]


def test_passwords_are_generated_alphanumeric_and_rotate_by_generation(dev_run: StackRun) -> None:
    for role in ("app", "superuser"):
        password = dev_run.by_name(f"database-{role}-password")
        assert password.inputs == {
            "length": 32,
            "special": False,
            "minLower": 1,
            "minUpper": 1,
            "minNumeric": 1,
            "keepers": {"generation": "1"},
        }


def test_role_job_runs_psql_inside_the_database_container(dev_run: StackRun) -> None:
    job = dev_run.by_name("database-role-job")
    server = dev_run.by_name("database-server")
    assert without(job.inputs, "stdin") == {
        "create": f"{LOCAL_JOB_PREFIX} docker exec -i memos-postgres "
        "psql -v ON_ERROR_STOP=1 --no-psqlrc -q -U postgres -d memos",
        "triggers": [server.mock_id],
        "logging": "stderr",
    }
    assert "stdin" in job.secret_paths
    assert job.options["additional_secret_outputs"] == ["stderr", "stdout"]
    assert server.urn in job.options["dependencies"]


def test_role_job_sends_verifiers_not_passwords(dev_run: StackRun) -> None:
    stdin = dev_run.by_name("database-role-job").inputs["stdin"]
    for role in ("app", "superuser"):
        password = dev_run.by_name(f"database-{role}-password").mock_outputs["result"]
        assert password not in stdin
    assert stdin.count("PASSWORD 'SCRAM-SHA-256$4096:") == 2


def test_app_container_inputs(dev_run: StackRun) -> None:
    app = dev_run.by_name("app-server")
    image = dev_run.by_name("app-image")
    assert image.inputs == {"name": "hrygo/memos:0.51.0", "keepLocally": False}
    assert without(app.inputs, "image", "uploads") == {
        "name": "memos-app",
        "user": "10001:10001",
        "entrypoints": ["/bin/sh", "/usr/local/bin/memos-secret-env"],
        "envs": [
            "GOMEMLIMIT=460MiB",
            "MEMOS_AI_ENABLED=false",
            "MEMOS_DRIVER=postgres",
            "MEMOS_DSN_FILE=/run/memos-secrets/dsn",
            "MEMOS_INSTANCE_URL=http://localhost:5230",
            "MEMOS_MODE=prod",
            "MEMOS_PORT=5230",
            "TZ=UTC",
        ],
        "healthcheck": {
            "tests": ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:5230/healthz"],
            "interval": "5s",
            "timeout": "5s",
            "retries": 3,
            "startPeriod": "2m0s",
        },
        "wait": True,
        "waitTimeout": 300,
        "restart": "unless-stopped",
        "memory": 512,
        "memorySwap": 512,
        "logDriver": "json-file",
        "logOpts": {"max-size": "10m", "max-file": "3"},
        "networksAdvanced": [{"name": "memos-net", "aliases": ["memos"]}],
        "ports": [{"internal": 5230, "external": 5230, "ip": "127.0.0.1"}],
        "volumes": [{"volumeName": "memos-appdata", "containerPath": "/var/opt/memos"}],
        "securityOpts": ["no-new-privileges:true"],
        "capabilities": {"drops": ["ALL"]},
        "labels": labels("dev"),
        "stopTimeout": 30,
        "destroyGraceSeconds": 30,
    }
    app_password = dev_run.by_name("database-app-password").mock_outputs["result"]
    assert app.inputs["uploads"] == [
        {"file": "/usr/local/bin/memos-secret-env", "content": secret_env_wrapper(), "permissions": "0444"},
        {
            "file": "/run/memos-secrets/dsn",
            "content": f"postgres://memos:{app_password}@postgres:5432/memos?sslmode=disable",
            "permissions": "0400",
            "owner": "10001",
            "group": "10001",
        },
    ]
    assert app.inputs["image"] == image.mock_outputs["imageId"]


def test_app_with_fixed_name_and_port_is_deleted_before_replacement(dev_run: StackRun) -> None:
    options = dev_run.by_name("app-server").options
    assert options["delete_before_replace"] is True
    assert options["replace_on_changes"] == ["healthcheck", "tmpfs"]


def test_app_starts_only_after_the_database_is_healthy_and_its_role_exists(dev_run: StackRun) -> None:
    depends = dev_run.by_name("app-server").options["dependencies"]
    assert dev_run.by_name("database-server").urn in depends  # created with wait=True: healthy
    assert dev_run.by_name("database-role-job").urn in depends


def test_prod_app_gets_ai_env_and_key_files(prod_run: StackRun) -> None:
    app = prod_run.by_name("app-server")
    env = dict(entry.split("=", 1) for entry in app.inputs["envs"])
    assert env == {
        "GOMEMLIMIT": "460MiB",
        "MEMOS_AI_DEEPSEEK_API_KEY_FILE": "/run/memos-secrets/deepseek-api-key",
        "MEMOS_AI_DEEPSEEK_BASE_URL": "https://api.deepseek.com",
        "MEMOS_AI_EMBEDDING_MODEL": "BAAI/bge-m3",
        "MEMOS_AI_EMBEDDING_PROVIDER": "siliconflow",
        "MEMOS_AI_ENABLED": "true",
        "MEMOS_AI_LLM_MODEL": "deepseek-chat",
        "MEMOS_AI_LLM_PROVIDER": "deepseek",
        "MEMOS_AI_OLLAMA_BASE_URL": "http://host.docker.internal:11434",
        "MEMOS_AI_OPENAI_BASE_URL": "https://api.openai.com/v1",
        "MEMOS_AI_RERANK_MODEL": "BAAI/bge-reranker-v2-m3",
        "MEMOS_AI_SILICONFLOW_API_KEY_FILE": "/run/memos-secrets/siliconflow-api-key",
        "MEMOS_AI_SILICONFLOW_BASE_URL": "https://api.siliconflow.cn/v1",
        "MEMOS_DRIVER": "postgres",
        "MEMOS_DSN_FILE": "/run/memos-secrets/dsn",
        "MEMOS_INSTANCE_URL": "http://198.51.100.20:5230",
        "MEMOS_MODE": "prod",
        "MEMOS_PORT": "5230",
        "TZ": "Asia/Shanghai",
    }
    files = {u["file"]: u for u in app.inputs["uploads"]}
    assert files["/run/memos-secrets/deepseek-api-key"]["content"] == "marker-deepseek-key-8a2e7b"
    assert files["/run/memos-secrets/siliconflow-api-key"]["content"] == "marker-siliconflow-key-3f9c1d"
    for path in (
        "/run/memos-secrets/dsn",
        "/run/memos-secrets/deepseek-api-key",
        "/run/memos-secrets/siliconflow-api-key",
    ):
        assert (files[path]["permissions"], files[path]["owner"]) == ("0400", "10001")
    assert app.inputs["ports"] == [{"internal": 5230, "external": 5230, "ip": "0.0.0.0"}]


def test_every_secret_input_is_marked_secret(prod_run: StackRun) -> None:
    app = prod_run.by_name("app-server")
    uploads = app.inputs["uploads"]
    secret_files = {
        f"uploads[{i}].content" for i, u in enumerate(uploads) if u["file"].startswith("/run/memos-secrets/")
    }
    assert len(secret_files) == 3
    assert secret_files <= app.secret_paths
    assert "uploads[0].content" in prod_run.by_name("database-server").secret_paths
    assert "stdin" in prod_run.by_name("database-role-job").secret_paths


def test_children_are_parented_to_their_component(dev_run: StackRun) -> None:
    components = {r.name: r.urn for r in dev_run.resources.values() if r.type.startswith("memos:index:")}
    for resource in dev_run.resources.values():
        if resource.type.startswith("memos:index:") or resource.type.startswith("pulumi:providers:"):
            continue
        owner = resource.name.split("-", 1)[0]
        assert resource.parent == components[owner], resource.name


def test_every_docker_resource_uses_the_stack_provider(dev_run: StackRun, prod_run: StackRun) -> None:
    for run in (dev_run, prod_run):
        provider = run.by_name("docker")
        for resource in run.resources.values():
            if resource.type.startswith("docker:"):
                assert resource.options["provider"].startswith(provider.urn + "::"), resource.name


DEV_NAMES = {
    "docker",
    "network",
    "network-bridge",
    "volumes",
    "volumes-database",
    "volumes-app",
    "database",
    "database-image",
    "database-server",
    "database-role-job",
    "database-app-password",
    "database-superuser-password",
    "app",
    "app-image",
    "app-server",
    "volumes-backups",
    "backup",
    "backup-server",
    "backup-pre-upgrade-dump",
    "destroy-guard",
}


def test_child_names_are_pinned_in_dev(dev_run: StackRun) -> None:
    assert dev_run.names() == DEV_NAMES


def test_child_names_are_pinned_in_prod(prod_run: StackRun) -> None:
    assert prod_run.names() == DEV_NAMES | {
        "host",
        "host-vpc",
        "host-vswitch",
        "host-firewall",
        "host-rule-http",
        "host-rule-https",
        "host-rule-app",
        "host-rule-ssh-203-0-113-10-32",
        "host-admin-key",
        "host-ssh-host-key",
        "host-data-disk",
        "host-data-disk-attachment",
        "host-snapshot-policy",
        "host-snapshot-policy-attachment",
        "host-instance",
        "host-public-ip",
        "host-public-ip-association",
        "host-docker-ready",
        "alarms",
        "alarms-contact-ops-example-com",
        "alarms-contacts",
        "alarms-group",
        "alarms-group-instance",
        "alarms-cpu",
        "alarms-memory",
        "alarms-data-disk",
        "alarms-healthz",
        "alarms-healthz-down",
        "alarms-host-state",
    }


#: The host's memory split the planner exports (MiB): 2048 = 320 + 128 + 512 + 64 + 1024.
MEMORY_PLAN_2C2G = {"host": 2048, "os": 320, "docker": 128, "app": 512, "proxy": 0, "backup": 64, "database": 1024}


def test_dev_stack_outputs(dev_run: StackRun) -> None:
    app_password = dev_run.by_name("database-app-password").mock_outputs["result"]
    outputs = dict(dev_run.outputs)
    assert outputs.pop("db_settings") == DEV_POSTGRES_SETTINGS
    assert outputs.pop("db_extensions_expected") == {"vector": "0.8.6", "btree_gist": "any version"}
    assert outputs == {
        "app_url": "http://localhost:5230",
        "db_endpoint": "127.0.0.1:25432",
        "db_container": "memos-postgres",
        "backup_container": "memos-backup",
        "app_container": "memos-app",
        "app_dsn": f"postgres://memos:{app_password}@postgres:5432/memos?sslmode=disable",
        "memory_plan": MEMORY_PLAN_2C2G,
    }
    # The DSN is there for `tools.verify`, and only as a secret.
    assert dev_run.output_secrets == {"app_dsn"}


def test_prod_stack_outputs(prod_run: StackRun) -> None:
    outputs = dict(prod_run.outputs)
    assert len(outputs.pop("cloud_init_sha256")) == 64
    assert outputs.pop("app_dsn").startswith("postgres://memos:")
    assert outputs.pop("db_settings")["maintenance_work_mem"] == "208MB"
    assert outputs.pop("db_extensions_expected") == {"vector": "0.8.6", "btree_gist": "any version"}
    assert outputs == {
        "app_url": "http://198.51.100.20:5230",
        "public_ip": "198.51.100.20",
        # The same pinned options as the provider's, without BatchMode (an operator may type a passphrase).
        "ssh_command": shlex.join(["ssh", *SSH_OPTS[2:], "root@198.51.100.20"]),
        "ssh_known_hosts": f"198.51.100.20 {HOST_KEY}",
        "docker_host": "ssh://root@198.51.100.20",
        "db_container": "memos-postgres",
        "backup_container": "memos-backup",
        "app_container": "memos-app",
        "memory_plan": MEMORY_PLAN_2C2G,
    }
    assert prod_run.output_secrets == {"app_dsn"}
