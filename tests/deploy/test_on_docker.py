"""The stack on a real Docker Engine: deploys, second runs, rotations, upgrades, backups and restarts.

Each scenario runs the program on the mock engine with a stack config, and harness/realizer.py applies
what it registered to a private dockerd the way the docker provider does (its docstring lists what
that reproduces and from which source). The images are the stand-ins of harness/standin_images.py.

What this tier cannot show: the Pulumi CLI itself (preview, refresh, the state file, the secrets
provider), the provider plugin's own code (its behaviour is reproduced from its source), ssh to a real
ECS host (prod's containers run on the local daemon, the ssh prefix dropped), the real Memos binary
(the stand-in honours its external contract only), an Engine newer than Debian's 20.10, and Let's
Encrypt (no CA is reachable: the proxy scenario says what it uses instead).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import shutil
import socket
import ssl
import stat
import subprocess
import tarfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.models.containers
import psycopg
import pytest

from components import backup as backup_component
from components.backup import BACKUP_DIR
from harness.cloud_standin import CloudStandIn
from harness.deployment import UPGRADE_RELEASE, Deployment, docker_env, http_get, reachable_pip_index, run_in
from harness.docker_daemon import PrivateDockerd
from harness.mock_engine import StackRun, run_program
from harness.realizer import RealizeError, buildkit_cli, container_diff, context_files, render_read
from tests.conftest import PROD_SECRETS
from tests.support import container_ids, fake_pulumi, insert_memos, ops, pins, same_setting

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
    assert ops(steps)["database-role-job"] == "replace"
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
    backup = dev.container("backup_container")
    code, made = run_in(backup, ["/bin/sh", "/usr/local/bin/memos-backup", "run", "manual"])
    assert code == 0, made
    dump = re.search(r"(memos-\S+-manual\.dump)", made)
    assert dump is not None
    dev.sql("DELETE FROM memo WHERE id % 2 = 0")
    dev.sql("DROP INDEX idx_memo_embedding")
    assert dev.sql("SELECT count(*) FROM memo") == ["15"]
    fake_pulumi(tmp_path / "bin", "dev", dict(dev.outputs))
    env = docker_env(on_dockerd) | {"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    result = subprocess.run(
        [str(ROOT / "scripts/restore"), "--stack", "dev", dump[1], "--yes"],
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


@pytest.fixture
def prod_with_domain(on_dockerd: PrivateDockerd) -> Iterator[Deployment]:
    deployment = Deployment(
        on_dockerd, "prod", overrides={"domain": "memos.example.test", "acmeEmail": "ops@example.test"},
        secrets=dict(PROD_SECRETS),
    )  # fmt: skip
    yield deployment
    deployment.destroy()


def test_prods_database_builds_the_hnsw_index_of_its_expected_embeddings_inside_its_memory_limit(
    prod_with_domain: Deployment,
) -> None:
    """The build runs in the database container under its real cgroup v1 limit. The page cache counts
    against that limit too and is reclaimed at it, so the peak that matters is resident plus shared
    memory (shared_buffers, the parallel build's /dev/shm), sampled from memory.stat during the build."""
    prod = prod_with_domain
    prod.up()
    assert prod.run is not None
    rows = int(prod.run.config["memos:expectedEmbeddings"])
    db = prod.container("db_container")
    limit_mib = db.attrs["HostConfig"]["Memory"] // (1024 * 1024)
    assert limit_mib == prod.run.by_name("database-server").inputs["memory"]
    cgroup = Path(f"/sys/fs/cgroup/memory/docker/{db.id}")
    prod.sql("DROP INDEX idx_memo_embedding")
    insert_memos(prod, rows)
    peak = {"bytes": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            stat = dict(line.split() for line in (cgroup / "memory.stat").read_text().splitlines())
            peak["bytes"] = max(peak["bytes"], int(stat["total_rss"]) + int(stat["total_shmem"]))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.monotonic()
    try:
        prod.sql(
            "CREATE INDEX idx_memo_embedding ON memo USING hnsw (embedding vector_cosine_ops) "
            "WITH (m = 16, ef_construction = 64)"
        )
    finally:
        done.set()
        sampler.join()
    took = time.monotonic() - started
    db.reload()
    assert not db.attrs["State"]["OOMKilled"]
    assert db.attrs["RestartCount"] == 0
    oom = dict(line.split() for line in (cgroup / "memory.oom_control").read_text().splitlines())
    assert oom.get("oom_kill", "0") == "0"
    logs = db.logs().decode(errors="replace")
    assert "no longer fits into maintenance_work_mem" not in logs
    assert "out of memory" not in logs.lower()
    peak_mib = peak["bytes"] // (1024 * 1024)
    print(f"HNSW build over {rows} rows: {took:.1f} s, peak rss+shmem {peak_mib} MiB of a {limit_mib} MiB limit")
    assert 0 < peak_mib < limit_mib
    assert prod.sql("SELECT count(*) FROM memo") == [str(rows)]


def test_prods_proxy_is_healthy_and_forwards_the_domain_to_the_app(prod_with_domain: Deployment) -> None:
    """Let's Encrypt cannot be reached here, so Caddy gets its internal CA (`local_certs`) added to the
    Caddyfile the program uploads; the test then trusts that CA. It cannot show ACME issuance, the
    HTTP-01 challenge or renewal, only the proxy's routing, TLS termination and health gating."""
    prod = prod_with_domain
    prod.up()
    assert prod.run is not None
    proxy = prod.client.containers.get(str(prod.run.by_name("proxy-server").inputs["name"]))
    assert proxy.attrs["State"]["Health"]["Status"] == "healthy"
    # Swap in the internal CA and reload Caddy through its own command (admin API on loopback).
    caddyfile = run_in(proxy, ["cat", "/etc/caddy/Caddyfile"])[1]
    local = caddyfile.replace("{\n", "{\n\tlocal_certs\n", 1)
    code, reloaded = run_in(proxy, ["sh", "-c", f"cat > /tmp/Caddyfile <<'EOF'\n{local}EOF\n"
                                             "caddy reload --config /tmp/Caddyfile --adapter caddyfile"])  # fmt: skip
    assert code == 0, reloaded
    root = None
    for _ in range(30):
        code, found = run_in(proxy, ["cat", "/data/caddy/pki/authorities/local/root.crt"])
        if code == 0:
            root = found
            break
        time.sleep(1)
    assert root, "Caddy's internal CA did not appear"
    context = ssl.create_default_context(cadata=root)
    handler = urllib.request.HTTPSHandler(context=context)
    opener = urllib.request.build_opener(handler)
    request = urllib.request.Request("https://memos.example.test/healthz")
    # Resolve the domain to this machine's loopback, where the proxy publishes 443.
    original = socket.getaddrinfo

    def loopback(host: str, *args: object, **kwargs: object) -> object:
        return original("127.0.0.1" if host == "memos.example.test" else host, *args, **kwargs)  # type: ignore[arg-type]

    socket.getaddrinfo = loopback  # type: ignore[assignment]
    try:
        body = b""
        for _ in range(20):
            try:
                with opener.open(request, timeout=5) as response:
                    body = response.read()
                    break
            except (OSError, ssl.SSLError):
                time.sleep(1)
    finally:
        socket.getaddrinfo = original
    assert body == b"Service ready."
    redirect = subprocess.run(
        ["python3", "-c", "import http.client as h; c=h.HTTPConnection('127.0.0.1', 80, timeout=5); "
         "c.request('GET', '/', headers={'Host': 'memos.example.test'}); r=c.getresponse(); "
         "print(r.status, r.getheader('Location'))"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert redirect.stdout.split() == ["308", "https://memos.example.test/"]


# --------------------------------------------------------------------------------------------------------------------
# The off-site copier: its image built on the host by the program, then run for real


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture
def prod_with_copier(on_dockerd: PrivateDockerd) -> Iterator[Deployment]:
    deployment = Deployment(
        on_dockerd, "prod", overrides={"backupToOss": True, "pipIndexUrl": reachable_pip_index()},
        secrets=dict(PROD_SECRETS),
    )  # fmt: skip
    yield deployment
    deployment.destroy()


def completed_dumps(backup: docker.models.containers.Container) -> dict[str, bytes]:
    """name -> content of every completed dump in the backup container's directory."""
    names = [n for n in run_in(backup, ["ls", BACKUP_DIR])[1].split() if re.fullmatch(r"memos-\d{8}T\d{6}Z.*\.dump", n)]
    found: dict[str, bytes] = {}
    for name in names:
        archive, _ = backup.get_archive(f"{BACKUP_DIR}/{name}")
        with tarfile.open(fileobj=io.BytesIO(b"".join(archive))) as tar:
            member = tar.extractfile(name)
            assert member is not None
            found[name] = member.read()
    return found


def copier_env(container: docker.models.containers.Container) -> dict[str, str]:
    return dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])


def test_prods_copier_is_built_on_the_host_from_its_locked_recipe_and_uploads_a_real_dump_through_the_sdk(
    prod_with_copier: Deployment,
) -> None:
    """The realizer builds ops/copier/ as the provider would (BuildKit, the context the ignore file lets
    through, the program's build args) on the Python 3.13 stand-in base, with the package index set to
    one this machine reaches. Then the built image, with no network of its own, holds exactly the locked
    distributions, and run once on the host network it uploads the dump the backup container really took
    to the OSS stand-in, which accepts only V4 signatures it recomputed. What this cannot show: the
    official base image (the stand-in's docstring lists the differences), Alibaba's PyPI mirror, a build
    over ssh on the ECS host, and real OSS."""
    prod = prod_with_copier
    steps = ops(prod.up())
    assert steps["backup-offsite-image"] == "create"
    assert prod.run is not None
    image_name = str(prod.run.by_name("backup-offsite-image").inputs["imageName"])
    log = prod.realizer.build_logs["backup-offsite-image"]
    # Both hash-locked installs from the configured index (the step is CACHED when an earlier run built it).
    assert log.count(f'pip install --index-url "{reachable_pip_index()}" --require-hashes') == 2
    image = prod.client.images.get(image_name)
    assert image.attrs["Config"]["User"] == "65534:65534"
    assert image.attrs["Config"]["Entrypoint"] == ["python", "/usr/local/bin/memos-oss-upload"]

    # Nothing is installed at start: without any network the image already has every locked package.
    listing = "import json, sys, importlib.metadata as m; print(json.dumps([sys.version_info[:2], " \
              "{d.metadata['Name']: d.version for d in m.distributions()}]))"  # fmt: skip
    output = prod.client.containers.run(image_name, ["-c", listing], entrypoint="python", network_mode="none",
                                        remove=True)  # fmt: skip
    version, installed = json.loads(output)
    assert version == [3, 13]
    installed = {normal(name): v for name, v in installed.items() if normal(name) != "pip"}
    assert installed == {normal(name): v for name, v in pins(ROOT / "ops/copier/requirements.txt").items()}
    assert "setuptools" not in installed

    # The copier of the stack runs as nobody and writes its status into its own volume.
    copier = prod.client.containers.get(str(prod.run.by_name("backup-offsite").inputs["name"]))
    assert copier.attrs["State"]["Running"]
    env = copier_env(copier)
    state = env["STATE_DIR"]
    deadline = time.monotonic() + 120
    code, text = 1, ""
    while time.monotonic() < deadline:
        code, text = run_in(copier, ["python", "-c", f"print(open('{state}/status.json').read())"])
        if code == 0:
            break
        time.sleep(2)
    assert code == 0, text
    assert run_in(copier, ["stat", "-c", "%u", f"{state}/status.json"]) == (0, "65534\n")

    # The backup container's dumps (the pre-upgrade command took one too), once completed.
    backup = prod.container("backup_container")
    deadline = time.monotonic() + 120
    while not completed_dumps(backup) and time.monotonic() < deadline:
        time.sleep(2)
    assert completed_dumps(backup), "the backup container took no dump"

    cloud = CloudStandIn(bucket=env["OSS_BUCKET"], region=env["OSS_REGION"])
    issued = cloud.issue("STS.copier-in-its-image")
    proxy = cloud.start()
    try:
        [volume] = [m["Name"] for m in copier.attrs["Mounts"] if m["Destination"] == BACKUP_DIR]
        once = prod.client.containers.run(
            image_name, ["--once"], network_mode="host", detach=True,
            environment={**env, "HTTP_PROXY": proxy, "OSS_ENDPOINT": f"http://oss-{env['OSS_REGION']}-internal.aliyuncs.com",
                         "CMS_ENDPOINT": f"http://metrics.{env['OSS_REGION']}.aliyuncs.com", "CMS_GROUP_ID": "4242"},
            # A new volume for its state, as the stack's own: it takes the image directory's owner.
            volumes={volume: {"bind": BACKUP_DIR, "mode": "ro"}, "copier-once-state": {"bind": state, "mode": "rw"}},
        )  # fmt: skip
        result = once.wait(timeout=120)
        printed = once.logs().decode(errors="replace")
        once.remove()
    finally:
        cloud.stop()
    assert result["StatusCode"] == 0, printed
    dumps = completed_dumps(backup)
    assert {key: stored.body for key, stored in cloud.objects.items()} == {
        f"{env['OSS_PREFIX']}{name}": body for name, body in dumps.items()
    }
    assert [m["MetricName"] for m in cloud.metrics] == ["memos_backup_age_hours"]
    assert not cloud.refused
    assert issued.secret not in printed and issued.token not in printed

    # As PID 1 the copier ignores SIGTERM until it has a handler; one stop right after a start must
    # still end at once (it used to wait out the 30 s grace period for the kill).
    early = prod.client.containers.run(image_name, environment=env, network=copier.attrs["HostConfig"]["NetworkMode"],
                                       detach=True)  # fmt: skip
    time.sleep(0.2)
    started = time.monotonic()
    early.stop(timeout=30)
    stopped_in = time.monotonic() - started
    early.reload()
    assert early.attrs["State"]["ExitCode"] == 0, early.logs().decode(errors="replace")
    assert stopped_in < 5
    early.remove()

    # A second up builds nothing and touches nothing.
    assert set(ops(prod.up()).values()) == {"same"}


def test_a_new_copier_recipe_builds_again_and_replaces_only_the_copier(
    prod_with_copier: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A changed copier (here its script) is a new content-addressed tag: the provider's Update builds
    it, the copier container is replaced for the new image, nothing else moves; the old image is removed
    from the host once nothing uses it. A change elsewhere in ops/ builds nothing."""
    prod = prod_with_copier
    prod.up()
    assert prod.run is not None
    before = str(prod.run.by_name("backup-offsite-image").inputs["imageName"])
    project = tmp_path / "project"
    shutil.copytree(ROOT / "ops", project / "ops")
    prod.realizer.project_dir = project
    monkeypatch.setattr(backup_component, "COPIER_CONTEXT", project / "ops")
    (project / "ops/container/memos-restore").write_text(
        (project / "ops/container/memos-restore").read_text() + "\n# elsewhere in ops/\n"
    )
    (project / "ops/__pycache__").mkdir(exist_ok=True)
    (project / "ops/__pycache__/written-by-a-test-run.pyc").write_bytes(b"\0")
    assert set(ops(prod.up()).values()) == {"same"}

    # An older copier image a container still uses (an operator's one-off run, say) must stay.
    in_use = "memos-oss-copier:still-in-use"
    empty = io.BytesIO()
    tarfile.open(fileobj=empty, mode="w").close()
    prod.client.api.import_image_from_data(empty.getvalue(), repository="memos-oss-copier", tag="still-in-use")  # pyright: ignore[reportUnknownMemberType]
    holder = prod.client.containers.create(in_use, command=["none"])

    script = project / "ops/oss_upload.py"
    script.write_text(script.read_text() + "\n# a new copier release\n")
    steps = prod.up()
    assert prod.run is not None
    after = str(prod.run.by_name("backup-offsite-image").inputs["imageName"])
    assert after != before
    changed = {s.name: s.op for s in steps if s.op != "same"}
    assert changed == {"backup-offsite-image": "update", "backup-offsite": "replace",
                       "backup-offsite-image-prune": "replace"}  # fmt: skip
    prod.client.images.get(after)
    with pytest.raises(docker.errors.ImageNotFound):
        prod.client.images.get(before)
    prod.client.images.get(in_use)
    [prune] = [a for a in prod.realizer.applied.values() if a.registered.name == "backup-offsite-image-prune"]
    assert sorted(prune.outputs["stdout"].splitlines()) == [f"kept {in_use} (still in use)", f"removed {before}"]
    holder.remove()


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
