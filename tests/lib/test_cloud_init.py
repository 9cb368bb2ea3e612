"""The host's cloud-config: valid per cloud-init's own schema, and its disk script safe on real shells.

`cloud-init schema` (Debian's cloud-init) validates the document; shellcheck lints the embedded
script; the script itself runs under dash against stand-in `lsblk`, `blkid`, `mkfs.ext4`, `mount`
and `mountpoint`, to show that it formats only a blank disk and mounts it by UUID.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.mock_engine import host_key_outputs
from lib.cloud_init import INSTALL_DOCKER_SCRIPT, MOUNT_SCRIPT, CloudInitInputs, render
from tests.support import stand_ins

_HOST_KEY = host_key_outputs("test-host-key")
INPUTS = CloudInitInputs(
    data_disk_serial="bp1mockdisk0001",
    registry_mirrors=("https://docker.m.daocloud.io",),
    docker_ce_mirror="https://mirrors.aliyun.com/docker-ce",
    swap_mb=1024,
    host_key_private=_HOST_KEY["privateKeyOpenssh"],
    host_key_public=" ".join(_HOST_KEY["publicKeyOpenssh"].split()[:2]),
)


def required(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is required (Debian/Ubuntu: apt-get install {tool}); ./scripts/test installs it")
    return path


def cloud_init_schema(tmp_path: Path, document: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "user-data.yaml"
    path.write_text(document)
    return subprocess.run(
        [required("cloud-init"), "schema", "-c", str(path)], capture_output=True, text=True, check=False
    )


def test_the_rendered_cloud_config_passes_cloud_inits_schema(tmp_path: Path) -> None:
    result = cloud_init_schema(tmp_path, render(INPUTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid cloud-config" in result.stdout


def test_the_validator_rejects_a_broken_document(tmp_path: Path) -> None:
    broken = yaml.safe_load(render(INPUTS))
    broken["swap"]["size"] = {"not": "a size"}
    result = cloud_init_schema(tmp_path, "#cloud-config\n" + yaml.safe_dump(broken))
    assert result.returncode != 0


def document() -> dict[str, Any]:
    text = render(INPUTS)
    assert text.startswith("#cloud-config\n")
    return yaml.safe_load(text)


def files() -> dict[str, str]:
    return {f["path"]: f["content"] for f in document()["write_files"]}


def test_docker_daemon_config() -> None:
    assert json.loads(files()["/etc/docker/daemon.json"]) == {
        "data-root": "/data/docker",
        "live-restore": True,
        "log-driver": "json-file",
        "log-opts": {"max-size": "10m", "max-file": "3"},
        "registry-mirrors": ["https://docker.m.daocloud.io"],
    }


def test_docker_refuses_to_start_without_the_data_disk() -> None:
    assert files()["/etc/systemd/system/docker.service.d/10-data-disk.conf"] == "[Unit]\nRequiresMountsFor=/data\n"


def test_docker_is_installed_from_the_mirror_only_after_the_disk_is_mounted() -> None:
    runcmd = document()["runcmd"]
    assert runcmd == [
        [MOUNT_SCRIPT, "bp1mockdisk0001"],
        ["sysctl", "--system"],
        ["systemctl", "daemon-reload"],
        [INSTALL_DOCKER_SCRIPT, "https://mirrors.aliyun.com/docker-ce", "9DC858229FC7DD38854AE2D88D81803C0EBFCD88"],
    ]
    assert "packages" not in document()


def test_swap_file_is_sized_from_config() -> None:
    assert document()["swap"] == {"filename": "/swapfile", "size": 1024 * 1024 * 1024, "maxsize": 1024 * 1024 * 1024}
    no_swap = yaml.safe_load(render(CloudInitInputs("bp1x", (), "https://mirrors.aliyun.com/docker-ce", 0)))
    assert "swap" not in no_swap


def test_without_mirrors_daemon_json_has_no_mirror_key() -> None:
    text = render(CloudInitInputs("bp1x", (), "https://mirrors.aliyun.com/docker-ce", 0))
    daemon = json.loads(
        next(f["content"] for f in yaml.safe_load(text)["write_files"] if f["path"].endswith("daemon.json"))
    )
    assert "registry-mirrors" not in daemon


@pytest.mark.parametrize("path", [MOUNT_SCRIPT, INSTALL_DOCKER_SCRIPT])
def test_the_host_scripts_pass_shellcheck(tmp_path: Path, path: str) -> None:
    script = tmp_path / "script.sh"
    script.write_text(files()[path])
    result = subprocess.run(
        [required("shellcheck"), "-s", "sh", str(script)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout


class FakeHost:
    """Stand-ins for the block-device tools, recording what the script did."""

    def __init__(self, root: Path, *, signature: str | None, uuid: str | None) -> None:
        self.root = root
        self.bin = root / "bin"
        self.log = root / "calls.log"
        self.fstab = root / "fstab"
        self.fstab.write_text("# fstab\n")
        self.mount_point = root / "data"
        device = "/dev/vdb"
        tools = {
            "lsblk": f'echo "/dev/vda "; echo "{device} bp1mockdisk0001"',
            # blkid -p exits 2 when the device carries no signature at all.
            "blkid": (
                'if [ "$1" = "-p" ]; then '
                + ("exit 0" if signature else "exit 2")
                + "; fi; "
                + (f'echo "{uuid}"' if uuid else 'echo ""')
            ),
            "mkfs.ext4": 'echo "mkfs $*" >> "$LOG"',
            "mount": 'echo "mount $*" >> "$LOG"',
            "mountpoint": "exit 1",
            "sleep": "exit 0",
        }
        stand_ins(self.bin, tools)

    def run(self) -> subprocess.CompletedProcess[str]:
        script = self.root / "mount.sh"
        script.write_text(files()[MOUNT_SCRIPT])
        env = {
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "LOG": str(self.log),
            "MEMOS_DATA_MOUNT": str(self.mount_point),
            "MEMOS_FSTAB": str(self.fstab),
        }
        return subprocess.run(
            [required("dash"), str(script), "bp1mockdisk0001"], env=env, capture_output=True, text=True, check=False
        )

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


def test_a_blank_disk_is_formatted_then_mounted_by_uuid(tmp_path: Path) -> None:
    host = FakeHost(tmp_path, signature=None, uuid="1111-2222")
    result = host.run()
    assert result.returncode == 0, result.stderr
    assert host.calls() == ["mkfs -q -L memos-data /dev/vdb", f"mount {host.mount_point}"]
    assert f"UUID=1111-2222 {host.mount_point} ext4 defaults,nofail 0 2" in host.fstab.read_text()
    assert (host.mount_point / "docker").is_dir()


def test_a_disk_with_a_filesystem_is_never_formatted(tmp_path: Path) -> None:
    host = FakeHost(tmp_path, signature="ext4", uuid="3333-4444")
    result = host.run()
    assert result.returncode == 0, result.stderr
    assert host.calls() == [f"mount {host.mount_point}"]
    # Running it again (every boot) adds no second fstab line.
    host.run()
    assert host.fstab.read_text().count("UUID=3333-4444") == 1


def test_a_disk_with_an_unknown_signature_is_left_alone(tmp_path: Path) -> None:
    host = FakeHost(tmp_path, signature="gpt", uuid=None)
    result = host.run()
    assert result.returncode == 1
    assert "refusing to touch it" in result.stderr
    assert host.calls() == []


class FakeApt:
    """Stand-ins for curl, gpg, dpkg, apt-get and systemctl, for the Docker install script."""

    def __init__(self, root: Path, *, served_fingerprint: str) -> None:
        self.root = root
        self.bin = root / "bin"
        self.etc = root / "apt"
        self.log = root / "calls.log"
        self.os_release = root / "os-release"
        self.os_release.write_text('NAME="Ubuntu"\nVERSION_CODENAME=noble\n')
        tools = {
            # curl ... -o FILE URL: write a stand-in key where -o points.
            "curl": 'while [ "$1" != "-o" ]; do shift; done; echo key > "$2"; echo "curl $3" >> "$LOG"',
            "gpg": f'echo "pub:-:4096:1:8D81803C0EBFCD88:::::::scESA:"; echo "fpr:::::::::{served_fingerprint}:"',
            "dpkg": "echo amd64",
            "apt-get": 'echo "apt-get $*" >> "$LOG"',
            "systemctl": 'echo "systemctl $*" >> "$LOG"',
        }
        stand_ins(self.bin, tools)

    def run(self) -> subprocess.CompletedProcess[str]:
        script = self.root / "install.sh"
        script.write_text(files()[INSTALL_DOCKER_SCRIPT])
        env = {
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "LOG": str(self.log),
            "MEMOS_APT_ETC": str(self.etc),
            "MEMOS_OS_RELEASE": str(self.os_release),
        }
        argv = [required("dash"), str(script), "https://mirrors.aliyun.com/docker-ce", FINGERPRINT]
        return subprocess.run(argv, env=env, capture_output=True, text=True, check=False)

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


FINGERPRINT = "9DC858229FC7DD38854AE2D88D81803C0EBFCD88"


def test_docker_is_installed_from_the_mirror_with_dockers_key(tmp_path: Path) -> None:
    apt = FakeApt(tmp_path, served_fingerprint=FINGERPRINT)
    result = apt.run()
    assert result.returncode == 0, result.stderr
    assert (apt.etc / "sources.list.d" / "docker.list").read_text() == (
        f"deb [arch=amd64 signed-by={apt.etc}/keyrings/docker.asc] "
        "https://mirrors.aliyun.com/docker-ce/linux/ubuntu noble stable\n"
    )
    assert apt.calls() == [
        "curl https://mirrors.aliyun.com/docker-ce/linux/ubuntu/gpg",
        "apt-get update -q",
        "apt-get install -y -q --no-install-recommends docker-ce docker-ce-cli containerd.io",
        "systemctl enable --now docker",
    ]


def test_a_mirror_serving_another_key_installs_nothing(tmp_path: Path) -> None:
    apt = FakeApt(tmp_path, served_fingerprint="0" * 40)
    result = apt.run()
    assert result.returncode == 1
    assert "refusing to install" in result.stderr
    assert apt.calls() == ["curl https://mirrors.aliyun.com/docker-ce/linux/ubuntu/gpg"]
    assert not (apt.etc / "keyrings" / "docker.asc").exists()
    assert not (apt.etc / "sources.list.d" / "docker.list").exists()


def test_the_host_key_is_the_only_one_cloud_init_installs() -> None:
    document = yaml.safe_load(render(INPUTS))
    assert document["ssh_keys"] == {
        "ed25519_private": INPUTS.host_key_private,
        "ed25519_public": INPUTS.host_key_public,
    }
    assert document["ssh_genkeytypes"] == ["ed25519"]
    assert document["ssh_deletekeys"] is True
    without = yaml.safe_load(render(CloudInitInputs("bp1x", (), "https://mirrors.aliyun.com/docker-ce", 0)))
    assert "ssh_keys" not in without
