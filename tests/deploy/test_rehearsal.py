"""The prod stack on a rehearsal host: a real Linux host that boots the program's user data, reached over SSH.

One host serves the whole module, as one ECS instance serves a stack: the scenarios run in file order,
each on what the one before left (a fresh deploy, a second `up`, a rotation, an upgrade, a restore, a
reboot, the copier and a new copier recipe, the proxy, a host key that changed, a host from before
keys were pinned adopting the stack's key, the instance's replacement, drained and then dead, and
last the HNSW build under the database's memory limit).
harness/rehearsal_host.py says what the host honours and where it differs from an ECS instance;
harness/rehearsal.py how the stack reaches it.

What this tier cannot show, beyond the Docker tier's list (the Pulumi CLI, the provider plugins' own
code): Alibaba Cloud itself (the cloud resources stay on the mock engine; the firewall, the key pair, the
disk attachment and the elastic IP are stood in for by the host's fixed address and loop device), ECS's
metadata service and RAM role credentials, Docker CE's install from the mirror, Ubuntu's cloud-init and
Docker versions, a pull from a registry (images are loaded as a pull would leave them), swap (kernel-
wide), and Let's Encrypt (the proxy scenario uses Caddy's internal CA).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import tarfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest
import yaml

from components import backup as backup_component
from components.backup import BACKUP_DIR
from harness.cloud_standin import CloudStandIn
from harness.deployment import UPGRADE_RELEASE, http_get, run_in
from harness.docker_daemon import PrivateDockerd
from harness.realizer import RealizeError
from harness.rehearsal import RehearsalDeployment
from harness.rehearsal_host import GATEWAY, seed_user_data
from lib.cloud_init import INSTALL_DOCKER_SCRIPT
from tests.conftest import PROD_SECRETS
from tests.support import completed_dumps, fake_pulumi, insert_memos, manual_dump, ops, pins, stack_export

pytestmark = pytest.mark.rehearsal
ROOT = Path(__file__).resolve().parents[2]
OPERATOR_KNOWN_HOSTS = Path("/root/.ssh/known_hosts")


def known_hosts_state() -> str | None:
    return OPERATOR_KNOWN_HOSTS.read_text() if OPERATOR_KNOWN_HOSTS.exists() else None


@pytest.fixture(scope="module")
def prod(rehearsal_dockerd: PrivateDockerd) -> Iterator[RehearsalDeployment]:
    deployment = RehearsalDeployment(rehearsal_dockerd, secrets=dict(PROD_SECRETS))
    known_hosts = known_hosts_state()
    yield deployment
    deployment.close()
    # No connection of the whole module learned or wrote a host key anywhere.
    assert known_hosts_state() == known_hosts


def host_of(prod: RehearsalDeployment) -> Any:
    assert prod.host is not None
    return prod.host


def app_url(prod: RehearsalDeployment) -> str:
    return f"http://{host_of(prod).address}:5230/healthz"


def wait_for(check: Any, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, docker.errors.DockerException):
            pass
        time.sleep(1)
    raise AssertionError(f"{what} within {timeout} s")


def healthy(prod: RehearsalDeployment) -> bool:
    names = [str(prod.outputs[n]) for n in ("db_container", "app_container")]
    return all(prod.client.containers.get(n).attrs["State"].get("Health", {}).get("Status") == "healthy" for n in names)


def test_the_seeded_user_data_is_the_programs_with_only_the_docker_install_replaced() -> None:
    from harness.mock_engine import run_program

    document = str(run_program("prod", secrets=PROD_SECRETS).by_name("host-instance").inputs["userData"])
    program, seeded = yaml.safe_load(document), yaml.safe_load(seed_user_data(document))
    assert {k: v for k, v in seeded.items() if k != "write_files"} == {
        k: v for k, v in program.items() if k != "write_files"
    }
    differ = [f["path"] for f, g in zip(program["write_files"], seeded["write_files"], strict=True) if f != g]
    assert differ == [INSTALL_DOCKER_SCRIPT]


def test_a_fresh_prod_deploy_comes_up_healthy_over_ssh_with_dockers_data_on_the_data_disk(
    prod: RehearsalDeployment,
) -> None:
    steps = prod.up()
    host = host_of(prod)
    assert {s.op for s in steps} == {"create"}
    assert healthy(prod)
    assert prod.container("backup_container").attrs["State"]["Running"]
    # cloud-init formatted and mounted the data disk, and Docker keeps everything on it.
    assert host.run("findmnt -n -o SOURCE,FSTYPE /data")[1].split() == [host.disk.device, "ext4"]
    assert prod.client.info()["DockerRootDir"] == "/data/docker"
    for volume in ("memos-pgdata", "memos-appdata", "memos-backups"):
        assert prod.client.volumes.get(volume).attrs["Mountpoint"].startswith("/data/docker/volumes/")
    assert "RequiresMountsFor=/data" in host.run("cat /etc/systemd/system/docker.service.d/10-data-disk.conf")[1]
    assert http_get(app_url(prod)) == (200, b"Service ready.")
    # The host holds exactly the program's host key, and the swap file did not reach this machine.
    assert host.run("ls /etc/ssh/ | grep ssh_host_")[1].split() == ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"]
    with open("/proc/swaps") as swaps:
        assert "/swapfile" not in swaps.read()
    assert prod.sql("SELECT tableowner FROM pg_tables WHERE tablename = 'memo'") == ["memos"]


def test_a_second_up_changes_nothing(prod: RehearsalDeployment) -> None:
    before = {str(c.name): str(c.id) for c in prod.client.containers.list(all=True)}
    steps = prod.up()
    assert {s.op for s in steps} == {"same"}, [s for s in steps if s.op != "same"]
    assert {str(c.name): str(c.id) for c in prod.client.containers.list(all=True)} == before


def test_rotating_an_ai_key_replaces_only_the_app(prod: RehearsalDeployment) -> None:
    insert_memos(prod, 12)
    database = prod.container("db_container").id
    steps = prod.up(siliconflowApiKey="sk-sf-rotated-on-the-host-19b2")
    assert {n: o for n, o in ops(steps).items() if o != "same"} == {"app-server": "replace"}
    assert prod.container("db_container").id == database
    assert (
        prod.app_status()["key_sha256"]["siliconflow"]
        == hashlib.sha256(b"sk-sf-rotated-on-the-host-19b2").hexdigest()[:16]
    )
    assert prod.sql("SELECT count(*) FROM memo") == ["12"]


def test_an_app_upgrade_takes_its_dump_before_the_old_app_stops(prod: RehearsalDeployment) -> None:
    backup = prod.container("backup_container")
    listing = f"ls {BACKUP_DIR}/*-pre-upgrade.dump 2>/dev/null"
    before = set(run_in(backup, ["sh", "-c", listing])[1].split())
    steps = prod.up(appImage=UPGRADE_RELEASE)
    changed = [s.name for s in steps if s.op != "same"]
    assert changed.index("backup-pre-upgrade-dump") < changed.index("app-server")
    [dump] = sorted(set(run_in(backup, ["sh", "-c", listing])[1].split()) - before)
    dumped_at = int(run_in(backup, ["stat", "-c", "%Y", dump])[1])
    assert dumped_at <= next(s for s in steps if s.name == "app-server").started
    assert "TABLE DATA public memo " in run_in(backup, ["pg_restore", "--list", dump])[1]
    assert prod.app_status()["release"] == UPGRADE_RELEASE.rsplit(":", 1)[1]


def test_scripts_restore_and_tools_verify_work_against_prod_over_its_ssh_command(
    prod: RehearsalDeployment, tmp_path: Path
) -> None:
    dump = manual_dump(prod)
    prod.sql("DELETE FROM memo WHERE id % 2 = 0")
    fake_pulumi(tmp_path / "bin", "prod", dict(prod.outputs))
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    restored = subprocess.run([str(ROOT / "scripts/restore"), "--stack", "prod", dump, "--yes"], env=env,
                              capture_output=True, text=True, check=False, timeout=600)  # fmt: skip
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert prod.sql("SELECT count(*) FROM memo") == ["12"]
    wait_for(lambda: healthy(prod), "the app is healthy again after the restore")
    verified = subprocess.run([str(ROOT / ".venv/bin/python"), "-m", "tools.verify", "--stack", "prod"], env=env,
                              cwd=ROOT, capture_output=True, text=True, check=False, timeout=300)  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "FAIL" not in verified.stdout
    assert re.search(r"^ok\s+database answers: as memos, PostgreSQL 18", verified.stdout, re.M), verified.stdout


def test_after_the_host_restarts_every_container_comes_back_with_its_data(prod: RehearsalDeployment) -> None:
    host = host_of(prod)
    started = time.monotonic()
    host.restart()
    wait_for(lambda: healthy(prod), "the database and the app are healthy after the reboot")
    print(f"reboot to a healthy stack: {time.monotonic() - started:.1f} s")
    # dockerd, sshd and the disk came back by themselves: the fstab line by UUID, Docker after /data.
    assert host.run("findmnt -n -o SOURCE /data")[1].strip() == host.disk.device
    assert prod.container("backup_container").attrs["State"]["Running"]
    assert prod.sql("SELECT count(*) FROM memo") == ["12"]
    assert http_get(app_url(prod))[0] == 200
    assert {s.op for s in prod.up()} == {"same"}


def test_the_copier_image_is_built_on_the_host_over_ssh_and_uploads_a_real_dump(prod: RehearsalDeployment) -> None:
    """The build runs on the host's own BuildKit through the provider's SSH connection, installing the
    locked packages from the package index the host reaches (the stand-in for Alibaba's mirror)."""
    assert prod.index is not None
    steps = ops(prod.up(backupToOss=True))
    assert steps["backup-offsite-image"] == "create"
    assert prod.run is not None
    image_name = str(prod.run.by_name("backup-offsite-image").inputs["imageName"])
    log = prod.realizer.build_logs["backup-offsite-image"]
    build_args = prod.run.by_name("backup-offsite-image").inputs["build"]["args"]
    assert build_args["PIP_INDEX_URL"] == prod.index.url.rstrip("/")
    assert build_args["PIP_TRUSTED_HOST"] == GATEWAY
    assert log.count(f'pip install --index-url "{build_args["PIP_INDEX_URL"]}" --require-hashes') == 2
    assert any(path.startswith("/files/alibabacloud_oss_v2-") for path in prod.index.requests)
    listing = (
        "import json, importlib.metadata as m; "
        "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
    )
    output = prod.client.containers.run(image_name, ["-c", listing], entrypoint="python", network_mode="none",
                                        remove=True)  # fmt: skip
    installed = {re.sub(r"[-_.]+", "-", k).lower(): v for k, v in json.loads(output).items() if k != "pip"}
    assert installed == {
        re.sub(r"[-_.]+", "-", k).lower(): v for k, v in pins(ROOT / "ops/copier/requirements.txt").items()
    }
    copier = prod.client.containers.get(str(prod.run.by_name("backup-offsite").inputs["name"]))
    assert copier.attrs["State"]["Running"]
    env = dict(item.split("=", 1) for item in copier.attrs["Config"]["Env"])
    backup = prod.container("backup_container")
    wait_for(lambda: completed_dumps(backup), "the backup container took a dump", timeout=120)
    cloud = CloudStandIn(bucket=env["OSS_BUCKET"], region=env["OSS_REGION"])
    issued = cloud.issue("STS.copier-on-the-host")
    proxy = cloud.start(GATEWAY)
    try:
        [volume] = [m["Name"] for m in copier.attrs["Mounts"] if m["Destination"] == BACKUP_DIR]
        # On the host's default bridge, as the stack's copier runs; the proxy stands in for OSS, CloudMonitor
        # and the metadata service's credentials.
        once = prod.client.containers.run(
            image_name, ["--once"], detach=True,
            environment={**env, "HTTP_PROXY": proxy,
                         "OSS_ENDPOINT": f"http://oss-{env['OSS_REGION']}-internal.aliyuncs.com",
                         "CMS_ENDPOINT": f"http://metrics.{env['OSS_REGION']}.aliyuncs.com", "CMS_GROUP_ID": "4242"},
            volumes={volume: {"bind": BACKUP_DIR, "mode": "ro"},
                     "copier-once-state": {"bind": env["STATE_DIR"], "mode": "rw"}},
        )  # fmt: skip
        result = once.wait(timeout=180)
        printed = once.logs().decode(errors="replace")
        once.remove()
    finally:
        cloud.stop()
    assert result["StatusCode"] == 0, printed
    assert {key: stored.body for key, stored in cloud.objects.items()} == {
        f"{env['OSS_PREFIX']}{name}": body for name, body in completed_dumps(backup).items()
    }
    assert [m["MetricName"] for m in cloud.metrics] == ["memos_backup_age_hours"]
    assert not cloud.refused
    assert issued.secret not in printed and issued.token not in printed
    # As PID 1 the copier ignores SIGTERM until it has a handler; a stop right after a start must still
    # end at once (it used to wait out the 30 s grace period for the kill).
    early = prod.client.containers.run(image_name, environment=env, detach=True)
    time.sleep(0.2)
    started = time.monotonic()
    early.stop(timeout=30)
    stopped_in = time.monotonic() - started
    early.reload()
    assert early.attrs["State"]["ExitCode"] == 0, early.logs().decode(errors="replace")
    assert stopped_in < 5
    early.remove()
    assert {s.op for s in prod.up()} == {"same"}


def test_a_new_copier_recipe_builds_again_on_the_host_and_replaces_only_the_copier(
    prod: RehearsalDeployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A changed copier (here its script) is a new content-addressed tag: the provider's Update builds
    it on the host, the copier container is replaced for the new image, nothing else moves; the old image
    is removed from the host once nothing uses it. A change elsewhere in ops/ builds nothing, and going
    back to the old recipe gives back the old tag."""
    assert prod.run is not None
    first = str(prod.run.by_name("backup-offsite-image").inputs["imageName"])
    project = tmp_path / "project"
    shutil.copytree(ROOT / "ops", project / "ops")
    monkeypatch.setattr(prod.realizer, "project_dir", project)
    monkeypatch.setattr(backup_component, "COPIER_CONTEXT", project / "ops")
    restore_script = project / "ops/container/memos-restore"
    restore_script.write_text(restore_script.read_text() + "\n# elsewhere in ops/\n")
    (project / "ops/__pycache__").mkdir(exist_ok=True)
    (project / "ops/__pycache__/written-by-a-test-run.pyc").write_bytes(b"\0")
    assert {s.op for s in prod.up()} == {"same"}

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
    second = str(prod.run.by_name("backup-offsite-image").inputs["imageName"])
    assert second != first
    rebuilt = {"backup-offsite-image": "update", "backup-offsite": "replace", "backup-offsite-image-prune": "replace"}
    assert {s.name: s.op for s in steps if s.op != "same"} == rebuilt
    prod.client.images.get(second)
    with pytest.raises(docker.errors.ImageNotFound):
        prod.client.images.get(first)
    prod.client.images.get(in_use)
    [prune] = [a for a in prod.realizer.applied.values() if a.registered.name == "backup-offsite-image-prune"]
    assert sorted(str(prune.outputs["stdout"]).splitlines()) == [f"kept {in_use} (still in use)", f"removed {first}"]
    holder.remove()

    monkeypatch.undo()
    steps = prod.up()
    assert {s.name: s.op for s in steps if s.op != "same"} == rebuilt
    assert prod.run is not None
    assert str(prod.run.by_name("backup-offsite-image").inputs["imageName"]) == first
    assert {s.op for s in prod.up()} == {"same"}


def test_the_proxy_serves_the_domain_over_https_from_the_host(prod: RehearsalDeployment) -> None:
    """Caddy gets its internal CA (`local_certs`) because no ACME CA is reachable: this shows routing, TLS
    termination on the host's public ports and the health gate, not certificate issuance."""
    steps = ops(prod.up(domain="memos.example.test", acmeEmail="ops@example.test"))
    assert steps["proxy-server"] == "create"
    assert prod.run is not None
    proxy = prod.client.containers.get(str(prod.run.by_name("proxy-server").inputs["name"]))
    assert proxy.attrs["State"]["Health"]["Status"] == "healthy"
    caddyfile = run_in(proxy, ["cat", "/etc/caddy/Caddyfile"])[1].replace("{\n", "{\n\tlocal_certs\n", 1)
    reload = f"cat > /tmp/Caddyfile <<'EOF'\n{caddyfile}EOF\ncaddy reload --config /tmp/Caddyfile --adapter caddyfile"
    assert run_in(proxy, ["sh", "-c", reload])[0] == 0
    root = ""
    wait_for(lambda: run_in(proxy, ["cat", "/data/caddy/pki/authorities/local/root.crt"])[0] == 0, "Caddy's CA")
    root = run_in(proxy, ["cat", "/data/caddy/pki/authorities/local/root.crt"])[1]
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ssl.create_default_context(cadata=root)))
    address = host_of(prod).address
    original = socket.getaddrinfo

    def resolve(host: str, *args: Any, **kwargs: Any) -> Any:
        return original(address if host == "memos.example.test" else host, *args, **kwargs)

    socket.getaddrinfo = resolve  # pyright: ignore[reportAttributeAccessIssue]
    body = b""
    try:
        for _ in range(30):
            try:
                with opener.open("https://memos.example.test/healthz", timeout=5) as response:
                    body = response.read()
                    break
            except (OSError, ssl.SSLError):
                time.sleep(1)
    finally:
        socket.getaddrinfo = original
    assert body == b"Service ready."
    # Behind the proxy the app publishes no port on the host any more.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((address, 5230), timeout=3).close()


def test_a_host_answering_with_another_key_is_refused_with_one_line_and_nothing_is_sent(
    prod: RehearsalDeployment,
) -> None:
    host = host_of(prod)
    assert prod.run is not None
    host.run("cp /etc/ssh/ssh_host_ed25519_key /root/pinned && cp /etc/ssh/ssh_host_ed25519_key.pub /root/pinned.pub")
    assert host.run("rm /etc/ssh/ssh_host_ed25519_key* && ssh-keygen -q -t ed25519 -N '' "
                    "-f /etc/ssh/ssh_host_ed25519_key && systemctl restart ssh")[0] == 0  # fmt: skip
    try:
        gate = prod.realizer.run_shell(str(prod.run.by_name("host-docker-ready").inputs["create"]))
        assert gate.returncode == 1
        [line] = gate.stderr.splitlines()
        assert line.startswith(f"error: the host at {host.address} did not prove it holds this stack's SSH host key")
        assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in gate.stdout
        assert "cloud-init" not in gate.stdout  # the readiness script never ran
        # The provider's own connection is refused the same way: no Docker call gets through.
        with pytest.raises((RealizeError, docker.errors.DockerException, OSError)):
            prod.up()
        assert prod.realizer.relay is not None
        assert any("Host key verification failed" in f for f in prod.realizer.relay.failures)
    finally:
        host.run("mv /root/pinned /etc/ssh/ssh_host_ed25519_key && "
                 "mv /root/pinned.pub /etc/ssh/ssh_host_ed25519_key.pub && systemctl restart ssh")  # fmt: skip
    assert {s.op for s in prod.up()} == {"same"}


def fake_pulumi_with_export(bin_dir: Path, prod: RehearsalDeployment) -> Path:
    """A `pulumi` for tools.adopt_host_key: `stack export --show-secrets` answers a state from before the
    host key existed until `up --target <the key's URN>` has run, then the state with it; `config get
    memos:sshPrivateKeyPath` answers the operator's key. Every call is appended to calls.log."""
    assert prod.run is not None and prod.key is not None
    bin_dir.mkdir()
    (bin_dir / "before.json").write_text(json.dumps(stack_export(prod.run, without=["host-ssh-host-key"])))
    (bin_dir / "after.json").write_text(json.dumps(stack_export(prod.run)))
    urn = prod.run.by_name("host-ssh-host-key").urn
    script = bin_dir / "pulumi"
    script.write_text(
        "#!/bin/sh\n"
        f'cd "{bin_dir}" && echo "$*" >> calls.log\n'
        'case "$*" in\n'
        '  "stack export --show-secrets --stack prod") [ -f created ] && exec cat after.json; exec cat before.json ;;\n'
        f"  'up --stack prod --target {urn} --yes --skip-preview') touch created; exit 0 ;;\n"  # the URN has a $
        f'  "config get memos:sshPrivateKeyPath --stack prod") echo "{prod.key.path}"; exit 0 ;;\n'
        "esac\n"
        "exit 2\n"
    )
    script.chmod(0o755)
    return bin_dir / "calls.log"


def test_a_host_deployed_before_keys_were_pinned_adopts_the_stacks_key_without_a_reboot(
    prod: RehearsalDeployment, tmp_path: Path
) -> None:
    """The host as a stack from before the pinned key left it: the keys its first boot generated, one of
    them learned by the operator's ssh on first use. What this cannot show: the real CLI's targeted up
    (the fake only records it) and Ubuntu's socket-activated sshd (Debian's ssh.service restarts here)."""
    host = host_of(prod)
    assert prod.run is not None and host.container is not None
    pinned = " ".join(str(prod.run.by_name("host-ssh-host-key").mock_outputs["publicKeyOpenssh"]).split()[:2])
    started = {str(c.name): c.attrs["State"]["StartedAt"] for c in prod.client.containers.list()}
    host.container.reload()
    booted = host.container.attrs["State"]["StartedAt"]
    calls = fake_pulumi_with_export(tmp_path / "bin", prod)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}

    def adopt(*trust: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(ROOT / ".venv/bin/python"), "-m", "tools.adopt_host_key", "--stack", "prod",
                               *trust], env=env, cwd=ROOT, capture_output=True, text=True, check=False,
                              timeout=120)  # fmt: skip

    host.run("mkdir -p /root/pinned && cp /etc/ssh/ssh_host_ed25519_key* /root/pinned/")
    try:
        assert host.run("rm -f /etc/ssh/ssh_host_* && ssh-keygen -q -A && systemctl restart ssh")[0] == 0
        scanned = subprocess.run(["ssh-keyscan", "-T", "10", "-t", "ecdsa", host.address], capture_output=True,
                                 text=True, check=True)  # fmt: skip
        old_known_hosts = tmp_path / "memos-prod.known_hosts"
        old_known_hosts.write_text(scanned.stdout)
        gate = prod.realizer.run_shell(str(prod.run.by_name("host-docker-ready").inputs["create"]))
        assert gate.returncode == 1  # what the next `pulumi up` would meet

        keys_before = host.run("cat /etc/ssh/ssh_host_*_key.pub")[1]
        wrong = adopt("--fingerprint", "SHA256:" + "A" * 43)
        assert wrong.returncode == 1
        [line] = wrong.stderr.splitlines()
        assert line.startswith(f"error: the host at {host.address} offers no key with fingerprint SHA256:AAAA")
        assert host.run("cat /etc/ssh/ssh_host_*_key.pub")[1] == keys_before
        # Nor the state: the key is made only after the login with today's trust worked.
        assert not [call for call in calls.read_text().splitlines() if call.startswith("up ")]

        adopted = adopt("--known-hosts", str(old_known_hosts))
        assert adopted.returncode == 0, adopted.stdout + adopted.stderr
    finally:
        if host.run("cat /etc/ssh/ssh_host_ed25519_key.pub")[1].strip() != pinned:  # failed half-way: as it was
            host.run("rm -f /etc/ssh/ssh_host_* && cp /root/pinned/* /etc/ssh/ && systemctl restart ssh")
        host.run("rm -rf /root/pinned")
    assert f"up --stack prod --target {prod.run.by_name('host-ssh-host-key').urn} --yes --skip-preview" in (
        calls.read_text().splitlines()
    )
    assert host.run("ls /etc/ssh/ | grep ssh_host_")[1].split() == ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"]
    assert host.run("cat /etc/ssh/ssh_host_ed25519_key.pub")[1].strip() == pinned
    # No reboot, no container restarted, and the next up passes the gate and changes nothing.
    host.container.reload()
    assert host.container.attrs["State"]["StartedAt"] == booted
    assert {str(c.name): c.attrs["State"]["StartedAt"] for c in prod.client.containers.list()} == started
    assert {s.op for s in prod.up()} == {"same"}
    again = adopt("--known-hosts", str(old_known_hosts))
    assert again.returncode == 0
    assert "already answers with the stack's key" in again.stdout


def test_replacing_the_instance_drains_the_old_host_and_the_new_one_boots_its_first_cloud_init(
    prod: RehearsalDeployment,
) -> None:
    host = host_of(prod)
    # A changed cloud-init is not applied to the running instance (it would reboot it)...
    assert {s.op for s in prod.up(swapMb=512)} == {"same"}
    assert prod.run is not None
    assert any("cloud-init has changed but is not applied" in w for w in prod.run.warnings)
    first = host.boots[0].user_data
    steps = prod.replace_instance()
    assert ops(steps)["host-instance"] == "replace"
    assert ops(steps)["host-docker-ready"] == "replace"
    drain = prod.realizer.delete_outputs["host-docker-ready"]
    assert drain.returncode == 0, drain.stdout + drain.stderr
    # ... and the drain ran on the old instance before its disk left it: Docker stopped, /data unmounted.
    old, new = host.boots[-2], host.boots[-1]
    assert (old.alive_at_detach, old.mounted_at_detach) == (True, False)
    # The engine creates the replacement with the ignored old user data: the first cloud-init again.
    assert new.user_data == first
    wait_for(lambda: healthy(prod), "the stack is healthy on the new instance")
    assert prod.container("backup_container").attrs["State"]["Running"]
    assert prod.sql("SELECT count(*) FROM memo") == ["12"]
    assert host.run("cat /data/memos-drained-containers 2>/dev/null")[0] != 0  # started and cleared
    assert {s.op for s in prod.up()} == {"same"}


def test_with_the_old_host_dead_the_replacement_warns_and_goes_on_and_a_rollout_boots_the_new_cloud_init(
    prod: RehearsalDeployment,
) -> None:
    host = host_of(prod)
    host.power_off()
    steps = prod.replace_instance(cloudInitRollout=True)
    assert ops(steps)["host-instance"] == "replace"
    drain = prod.realizer.delete_outputs["host-docker-ready"]
    assert "warning: the old host does not answer over SSH; detaching its data disk without a drain" in drain.stderr
    assert host.boots[-2].alive_at_detach is False
    # With memos:cloudInitRollout the new instance boots the document as the program renders it now.
    assert yaml.safe_load(host.boots[-1].user_data)["swap"]["size"] == 512 * 1024 * 1024
    wait_for(lambda: healthy(prod), "the stack is healthy after the power cut")
    assert prod.sql("SELECT count(*) FROM memo") == ["12"]
    logs = prod.container("db_container").logs().decode(errors="replace")
    assert "database system was interrupted" in logs or "not properly shut down" in logs


def memory_cgroup(container_id: str) -> Path:
    """A container's memory cgroup as this machine's kernel keeps it: the rehearsal host's own containers
    sit below the host's cgroup, where its dockerd made them."""
    found = [path for path in Path("/sys/fs/cgroup/memory").rglob(f"*{container_id}*") if path.is_dir()]
    assert len(found) == 1, found
    return found[0]


def cgroup_counters(directory: Path, name: str) -> dict[str, int]:
    return {key: int(value) for key, value in (line.split() for line in (directory / name).read_text().splitlines())}


def test_the_databases_hnsw_build_fits_its_memory_limit_on_the_2_gib_host(prod: RehearsalDeployment) -> None:
    """The index build over the plan's expected embeddings, in the database container under the limit the
    plan gave it, on the host limited to 2 GiB with everything else of the stack running (the proxy and
    the copier included). The page cache counts against a cgroup v1 limit too and is reclaimed at it, so
    the peak that matters is resident plus shared memory (shared_buffers, the parallel build's /dev/shm),
    sampled from the kernel's memory.stat during the build. Last in the module: it leaves the rows."""
    assert prod.run is not None
    rows = int(prod.run.config["memos:expectedEmbeddings"])
    db = prod.container("db_container")
    limit_mib = db.attrs["HostConfig"]["Memory"] // (1024 * 1024)
    assert limit_mib == prod.run.by_name("database-server").inputs["memory"]
    cgroup = memory_cgroup(str(db.id))
    host = host_of(prod)
    assert host.container is not None
    host_cgroup = next(p for p in cgroup.parents if str(host.container.id) in p.name)
    host_limit_mib = int((host_cgroup / "memory.limit_in_bytes").read_text()) // (1024 * 1024)
    assert host_limit_mib == 2048
    prod.sql("DROP INDEX idx_memo_embedding")
    insert_memos(prod, rows)
    peak = {"bytes": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            stat = cgroup_counters(cgroup, "memory.stat")
            peak["bytes"] = max(peak["bytes"], stat["total_rss"] + stat["total_shmem"])
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
    assert cgroup_counters(cgroup, "memory.oom_control").get("oom_kill", 0) == 0
    # Nothing else on the box was killed for it either.
    assert cgroup_counters(host_cgroup, "memory.oom_control").get("oom_kill", 0) == 0
    logs = db.logs().decode(errors="replace")
    assert "no longer fits into maintenance_work_mem" not in logs
    assert "out of memory" not in logs.lower()
    peak_mib = peak["bytes"] // (1024 * 1024)
    print(f"HNSW build over {rows} rows: {took:.1f} s, peak rss+shmem {peak_mib} MiB of a {limit_mib} MiB limit")
    assert 0 < peak_mib < limit_mib
    assert prod.sql("SELECT count(*) FROM memo") == [str(rows + 12)]
    assert healthy(prod)
