"""The dev stack on a real Docker Engine: deploys, second runs, rotations, upgrades, backups and restarts.

Each scenario runs the program on the mock engine with a stack config, and harness/realizer.py applies
what it registered to a private dockerd the way the docker provider does (its docstring lists what
that reproduces and from which source). The images are the stand-ins of harness/standin_images.py.
Prod's stack, which reaches its host over SSH, runs on the rehearsal host (tests/deploy/test_rehearsal.py).

What this tier cannot show: the Pulumi CLI itself (preview, refresh, the state file, the secrets
provider), the provider plugin's own code (its behaviour is reproduced from its source), the real Memos
binary (the stand-in honours its external contract only), and an Engine newer than Debian's 20.10.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import shutil
import stat
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from harness.deployment import UPGRADE_RELEASE, Deployment, docker_env, http_get, run_in
from harness.docker_daemon import PrivateDockerd
from harness.mock_engine import StackRun, run_program
from harness.realizer import RealizeError, buildkit_cli, container_diff, context_files, render_read
from tests.support import container_ids, fake_pulumi, insert_memos, manual_dump, ops, same_setting

pytestmark = pytest.mark.docker
ROOT = Path(__file__).resolve().parents[2]
AI_KEYS = {"siliconflowApiKey": "sk-sf-first-8d1c", "deepseekApiKey": "sk-ds-first-42aa"}


@pytest.fixture
def dev(on_dockerd: PrivateDockerd) -> Iterator[Deployment]:
    deployment = Deployment(on_dockerd, "dev")
    yield deployment
    deployment.destroy()


def test_a_fresh_dev_deploy_with_the_default_config_brings_up_a_healthy_stack(dev: Deployment) -> None:
    steps = dev.up()
    assert set(ops(steps).values()) == {"create"}
    for name in ("db_container", "app_container"):
        assert dev.container(name).attrs["State"]["Health"]["Status"] == "healthy"
    assert dev.container("backup_container").attrs["State"]["Running"]
    assert http_get("http://127.0.0.1:5230/healthz") == (200, b"Service ready.")
    assert set(dev.sql("SELECT extname FROM pg_extension")) >= {"vector", "btree_gist"}
    # The app's own first start created its schema, with the HNSW indexes, as the app's role.
    assert dev.sql("SELECT tableowner FROM pg_tables WHERE tablename = 'memo'") == ["memos"]
    assert len(dev.sql("SELECT 1 FROM pg_indexes WHERE indexdef LIKE '%USING hnsw%'")) == 2
    assert dev.sql(
        "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls "
        "FROM pg_roles WHERE rolname = 'memos'"
    ) == ["f|f|f|f|f"]
    assert dev.sql("SELECT datname FROM pg_database WHERE datdba = 'memos'::regrole") == ["memos"]
    for name, value in dev.outputs["db_settings"].items():
        shown = dev.sql(f"SELECT current_setting('{name}')")[0]
        assert same_setting(shown, value), f"{name}: SHOW gives {shown}, the plan says {value}"
    secrets = dev.secret_values()
    for container in dev.client.containers.list(all=True):
        inspected = json.dumps(dev.client.api.inspect_container(str(container.id)))
        leaked = [s for s in secrets if s in inspected]
        assert not leaked, f"docker inspect {container.name} shows a secret"


def test_a_second_up_reads_back_every_container_as_its_inputs_and_changes_nothing(dev: Deployment) -> None:
    dev.up()
    for applied in dev.realizer.applied.values():
        if applied.registered.type != "docker:index/container:Container":
            continue
        read = render_read(dev.client.api.inspect_container(applied.real_id), applied.inputs)
        drift = container_diff({**applied.inputs, **read}, applied.inputs, set(read))
        assert drift == [], {k: (read.get(k), applied.inputs.get(k)) for k in drift}
    before = container_ids(dev)
    steps = dev.up()
    assert set(ops(steps).values()) == {"same"}, [s for s in steps if s.op != "same"]
    assert container_ids(dev) == before


def with_inputs(run: StackRun, name: str, **changes: Any) -> StackRun:
    """`run` with some inputs of one resource changed: what the program sent before its fixes."""
    resources = dict(run.resources)
    original = run.by_name(name)
    resources[original.urn] = dataclasses.replace(original, inputs={**original.inputs, **changes})
    return dataclasses.replace(run, resources=resources)


def test_docker_refuses_uploads_into_a_read_only_container_so_such_a_stack_cannot_deploy(
    dev: Deployment,
) -> None:
    run = with_inputs(run_program("dev"), "backup-server", readOnly=True)
    with pytest.raises(RealizeError, match="container rootfs is marked read-only"):
        dev.realizer.apply(run)


@pytest.mark.parametrize(
    "healthcheck",
    [{"startPeriod": "120s"}, {"startInterval": "2s"}],
    ids=["a duration not in Go's form", "start_interval on an Engine before API 1.44"],
)
def test_a_healthcheck_that_does_not_read_back_as_written_replaces_the_database_on_every_up(
    dev: Deployment, healthcheck: dict[str, str]
) -> None:
    plain = run_program("dev")
    changed = plain.by_name("database-server").inputs["healthcheck"] | healthcheck
    run = with_inputs(plain, "database-server", healthcheck=changed)
    dev.realizer.apply(run)
    steps = {s.name: s for s in dev.realizer.apply(run)}
    assert steps["database-server"].op == "replace"
    assert steps["database-server"].changed == ("healthcheck",)
    assert steps["database-role-job"].op == "replace"


def test_rotating_an_ai_key_replaces_only_the_app_and_the_app_reads_the_new_key(dev: Deployment) -> None:
    dev.up(aiEnabled=True, **AI_KEYS)
    insert_memos(dev, 20)
    status = dev.app_status()
    assert status["ai"] | {"reason": ""} == {
        "enabled": True, "embedding": True, "chat": True, "rerank": True, "intent": True, "reason": ""
    }  # fmt: skip
    before = container_ids(dev)
    steps = dev.up(siliconflowApiKey="sk-sf-rotated-77e0")
    changed = {name: op for name, op in ops(steps).items() if op != "same"}
    assert changed == {"app-server": "replace"}
    after = container_ids(dev)
    assert after["memos-postgres"] == before["memos-postgres"]
    assert after["memos-backup"] == before["memos-backup"]
    assert dev.app_status()["key_sha256"]["siliconflow"] == hashlib.sha256(b"sk-sf-rotated-77e0").hexdigest()[:16]
    assert dev.sql("SELECT count(*) FROM memo") == ["20"]
    for container in dev.client.containers.list(all=True):
        inspected = json.dumps(dev.client.api.inspect_container(str(container.id)))
        assert "sk-sf-rotated-77e0" not in inspected
        assert "sk-ds-first-42aa" not in inspected


def test_rotating_the_database_password_refuses_the_old_one_and_keeps_the_data(dev: Deployment) -> None:
    dev.up()
    insert_memos(dev, 10)
    old_dsn = str(dev.outputs["app_dsn"])
    db_id = dev.container("db_container").id
    steps = dev.up(dbPasswordGeneration=2)
    new_dsn = str(dev.outputs["app_dsn"])
    assert new_dsn != old_dsn
    # A new stdin is an update for pulumi-command (only `triggers` replace), and its Update runs the
    # create command again: the role job re-sets the passwords in the running server.
    assert ops(steps)["database-role-job"] == "update"
    assert ops(steps)["app-server"] == "replace"
    assert ops(steps)["database-server"] == "same"
    assert dev.container("db_container").id == db_id
    port = dev.outputs["db_endpoint"].rsplit(":", 1)[1]

    def local(dsn: str) -> str:
        return re.sub(r"@postgres:5432/", f"@127.0.0.1:{port}/", dsn)

    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(local(old_dsn)).close()
    with psycopg.connect(local(new_dsn)) as connection:
        assert connection.execute("SELECT count(*) FROM memo").fetchone() == (10,)
    assert dev.container("app_container").attrs["State"]["Health"]["Status"] == "healthy"


def test_an_app_upgrade_takes_a_verified_dump_before_the_old_app_stops(dev: Deployment) -> None:
    dev.up()
    insert_memos(dev, 5)
    old_app = dev.container("app_container").id
    backup = dev.container("backup_container")
    dumps = "ls /backups/*-pre-upgrade.dump"
    before = set(run_in(backup, ["sh", "-c", dumps])[1].split())
    steps = dev.up(appImage=UPGRADE_RELEASE)
    names = [s.name for s in steps if s.op != "same"]
    assert names.index("backup-pre-upgrade-dump") < names.index("app-server")
    assert dev.app_status()["release"] == UPGRADE_RELEASE.rsplit(":", 1)[1]
    assert dev.container("app_container").id != old_app
    listing = sorted(set(run_in(backup, ["sh", "-c", dumps])[1].split()) - before)
    assert len(listing) == 1, listing
    code, contents = run_in(backup, ["pg_restore", "--list", listing[0]])
    assert code == 0
    assert "TABLE DATA public memo " in contents
    dumped_at = run_in(backup, ["stat", "-c", "%Y", listing[0]])[1].strip()
    app_step = next(s for s in steps if s.name == "app-server")
    assert int(dumped_at) <= app_step.started


def test_a_dump_restored_with_scripts_restore_brings_back_rows_and_the_hnsw_index(
    dev: Deployment, tmp_path: Path, on_dockerd: PrivateDockerd
) -> None:
    dev.up()
    insert_memos(dev, 30)
    dump = manual_dump(dev)
    dev.sql("DELETE FROM memo WHERE id % 2 = 0")
    dev.sql("DROP INDEX idx_memo_embedding")
    assert dev.sql("SELECT count(*) FROM memo") == ["15"]
    fake_pulumi(tmp_path / "bin", "dev", dict(dev.outputs))
    env = docker_env(on_dockerd) | {"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    result = subprocess.run(
        [str(ROOT / "scripts/restore"), "--stack", "dev", dump, "--yes"],
        env=env, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert dev.sql("SELECT count(*) FROM memo") == ["30"]
    assert dev.sql("SELECT indexdef FROM pg_indexes WHERE indexname = 'idx_memo_embedding'") == [
        "CREATE INDEX idx_memo_embedding ON public.memo USING hnsw (embedding vector_cosine_ops) "
        "WITH (m='16', ef_construction='64')"
    ]
    dev.wait_healthy([str(dev.outputs["app_container"])])
    assert http_get("http://127.0.0.1:5230/healthz")[0] == 200


def test_after_the_daemon_restarts_every_container_is_back_healthy_with_its_data(
    dev: Deployment, on_dockerd: PrivateDockerd
) -> None:
    dev.up()
    insert_memos(dev, 7)
    on_dockerd.restart()
    dev.reconnect()
    dev.wait_healthy([str(dev.outputs["db_container"]), str(dev.outputs["app_container"])])
    assert dev.container("backup_container").attrs["State"]["Running"]
    assert dev.sql("SELECT count(*) FROM memo") == ["7"]
    assert http_get("http://127.0.0.1:5230/healthz")[0] == 200
    assert set(ops(dev.up()).values()) == {"same"}


def test_stopping_the_backup_container_ends_its_schedule_at_once_instead_of_being_killed(dev: Deployment) -> None:
    dev.up()
    backup = dev.container("backup_container")
    started = time.monotonic()
    backup.stop(timeout=30)
    took = time.monotonic() - started
    backup.reload()
    print(f"docker stop of the backup container: {took:.2f} s")
    assert backup.attrs["State"]["ExitCode"] == 0
    assert took < 10, f"docker stop took {took:.1f} s"


def test_dev_up_hands_pulumi_the_engine_of_the_docker_clis_current_context(
    on_dockerd: PrivateDockerd, tmp_path: Path
) -> None:
    """scripts/dev-up with the real docker CLI and this daemon behind a named context, as Docker
    Desktop or Colima set one up; `pulumi` is a stand-in that records what it was run with (the CLI
    cannot be installed here, so what `pulumi up` then does is the other scenarios' subject)."""
    config = tmp_path / "docker-config"
    env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_HOST", "DOCKER_CONTEXT")}
    env |= {"DOCKER_CONFIG": str(config), "HOME": str(tmp_path / "home")}
    created = subprocess.run(
        ["docker", "context", "create", "desktop-like", "--docker", f"host={on_dockerd.host}"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "pulumi-calls"
    stand_in = bin_dir / "pulumi"
    stand_in.write_text(
        f'#!/bin/sh\necho "$* | DOCKER_HOST=${{DOCKER_HOST:-}} DOCKER_CONTEXT=${{DOCKER_CONTEXT:-}}" >> {record}\n'
    )
    stand_in.chmod(0o755)
    env |= {"DOCKER_CONTEXT": "desktop-like", "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    result = subprocess.run(
        [str(ROOT / "scripts/dev-up"), "--yes"], env=env, capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    engine = f"DOCKER_HOST={on_dockerd.host} DOCKER_CONTEXT="
    assert record.read_text().splitlines() == [
        f"install | {engine}",
        f"stack select dev --create | {engine}",
        f"up --stack dev --yes | {engine}",
    ]
    passphrase = tmp_path / "home/.config/memos-infra/dev.passphrase"
    assert stat.S_IMODE(passphrase.stat().st_mode) == 0o600
    assert len(passphrase.read_text()) == 64


def test_the_realizers_build_context_is_the_one_docker_itself_makes_from_the_ignore_file(
    on_dockerd: PrivateDockerd, tmp_path: Path
) -> None:
    """The realizer filters the copier's context with its own reading of the ignore file (as the provider
    does with moby's pattern matcher); BuildKit, a second implementation of the same rules, is given the
    unfiltered context and the same ignore file, and what it copies must be the same set of files."""
    context = tmp_path / "ops"
    shutil.copytree(ROOT / "ops", context)
    (context / "__pycache__").mkdir(exist_ok=True)
    (context / "__pycache__/written-by-a-test-run.pyc").write_bytes(b"\0")
    probe = context / "copier/probe.Dockerfile"
    probe.write_text("FROM scratch\nCOPY . /context/\n")
    shutil.copyfile(ROOT / "ops/copier/Dockerfile.dockerignore", context / "copier/probe.Dockerfile.dockerignore")
    env = {**docker_env(on_dockerd), "DOCKER_BUILDKIT": "1"}
    build = [buildkit_cli(), "build", "-q", "-f", "copier/probe.Dockerfile", "-t", "memos-infra-test/probe", "."]
    subprocess.run(build, cwd=context, env=env, check=True, capture_output=True)
    client = on_dockerd.client()
    container = client.containers.create("memos-infra-test/probe", command=["none"])
    try:
        archive, _ = container.get_archive("/context")
        with tarfile.open(fileobj=io.BytesIO(b"".join(archive))) as tar:
            copied = {m.name.removeprefix("context/") for m in tar.getmembers() if m.isfile()}
    finally:
        container.remove()
        client.images.remove("memos-infra-test/probe")
    # BuildKit adds the Dockerfile and the ignore file to what it sends; the provider does too.
    extras = {"copier/probe.Dockerfile", "copier/probe.Dockerfile.dockerignore"}
    assert copied - extras == set(context_files(context, probe)) == {
        "copier/build-requirements.txt", "copier/requirements.txt", "oss_upload.py"
    }  # fmt: skip
