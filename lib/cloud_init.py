"""The production host's cloud-config, built as data and dumped with a YAML library.

On first boot it: writes /etc/docker/daemon.json (registry mirrors, log rotation, live-restore, data
root on the data disk); waits for the separately attached data disk, formats it only if it carries no
filesystem or partition table, and mounts it by UUID; makes Docker refuse to start unless that disk
is mounted; creates a swap file; and only then installs Docker CE from a mirror reachable in mainland
China, trusting only Docker's signing key by fingerprint. It also installs the SSH host key the program
generated (and no other), so the operator's first connection is verified against a key it already
knows: that private key is the document's one secret (README, "The host's SSH key").

Docker keeps all its state (containers, volumes, images) under the data disk, so an instance built
from this document on a fresh system disk finds the previous containers and restarts them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

DATA_MOUNT = "/data"
DOCKER_ROOT = f"{DATA_MOUNT}/docker"
#: Fingerprint of Docker's apt signing key (download.docker.com/linux/ubuntu/gpg), which the mirror
#: republishes unchanged; the install script refuses any other key.
DOCKER_APT_KEY_FINGERPRINT = "9DC858229FC7DD38854AE2D88D81803C0EBFCD88"
DOCKER_PACKAGES = ("docker-ce", "docker-ce-cli", "containerd.io")
MOUNT_SCRIPT = "/usr/local/sbin/memos-mount-data-disk"
INSTALL_DOCKER_SCRIPT = "/usr/local/sbin/memos-install-docker"

_INSTALL_DOCKER_SCRIPT = f"""\
#!/bin/sh
# Installs Docker CE from the mirror $1, trusting only the signing key whose fingerprint is $2.
# The key is fetched with curl's own retries: the public address may be attached a few seconds
# after boot. MEMOS_APT_ETC and MEMOS_OS_RELEASE override two paths for the test suite.
set -eu
mirror="$1"
fingerprint="$2"
apt_etc="${{MEMOS_APT_ETC:-/etc/apt}}"
os_release="${{MEMOS_OS_RELEASE:-/etc/os-release}}"
keyring="$apt_etc/keyrings/docker.asc"
mkdir -p "$apt_etc/keyrings" "$apt_etc/sources.list.d"
curl -fsSL --retry 30 --retry-delay 2 --retry-all-errors --connect-timeout 5 \\
  -o "$keyring.new" "$mirror/linux/ubuntu/gpg"
if ! gpg --show-keys --with-colons "$keyring.new" | grep -q "^fpr:*$fingerprint:"; then
  rm -f "$keyring.new"
  echo "the key served by $mirror is not Docker's ($fingerprint); refusing to install" >&2
  exit 1
fi
mv "$keyring.new" "$keyring"
chmod 0644 "$keyring"
# shellcheck source=/dev/null
codename=$(. "$os_release" && echo "$VERSION_CODENAME")
echo "deb [arch=$(dpkg --print-architecture) signed-by=$keyring] $mirror/linux/ubuntu $codename stable" \\
  > "$apt_etc/sources.list.d/docker.list"
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends {" ".join(DOCKER_PACKAGES)}
systemctl enable --now docker
"""

_MOUNT_SCRIPT = f"""\
#!/bin/sh
# Mounts the data disk whose serial number is $1 on {DATA_MOUNT}. Waits for it to be attached (the
# disk is attached after the instance boots), creates a filesystem only when the device carries
# no signature at all, and records it in /etc/fstab by UUID. MEMOS_DATA_MOUNT and MEMOS_FSTAB
# override the two paths (the test suite runs the script against stand-ins).
set -eu
serial="$1"
mount_point="${{MEMOS_DATA_MOUNT:-{DATA_MOUNT}}}"
fstab="${{MEMOS_FSTAB:-/etc/fstab}}"
device=""
waited=0
while [ -z "$device" ]; do
  device=$(lsblk -dnpo NAME,SERIAL | awk -v serial="$serial" '$2 == serial {{ print $1 }}')
  if [ -z "$device" ]; then
    if [ "$waited" -ge 600 ]; then
      echo "data disk with serial $serial is not attached after 600 s" >&2
      exit 1
    fi
    sleep 2
    waited=$((waited + 2))
  fi
done
if ! blkid -p "$device" >/dev/null 2>&1; then
  mkfs.ext4 -q -L memos-data "$device"
fi
uuid=$(blkid -s UUID -o value "$device")
if [ -z "$uuid" ]; then
  echo "$device has a signature but no filesystem UUID; refusing to touch it" >&2
  exit 1
fi
mkdir -p "$mount_point"
grep -q "^UUID=$uuid " "$fstab" || echo "UUID=$uuid $mount_point ext4 defaults,nofail 0 2" >> "$fstab"
mountpoint -q "$mount_point" || mount "$mount_point"
mkdir -p "$mount_point/docker"
"""


@dataclass(frozen=True)
class CloudInitInputs:
    #: Serial number of the data disk as the guest sees it (the disk id without "d-").
    data_disk_serial: str
    registry_mirrors: Sequence[str]
    docker_ce_mirror: str
    swap_mb: int
    #: The host's SSH key pair in OpenSSH format (private: secret); cloud-init's `ssh_keys` installs it.
    host_key_private: str = ""
    host_key_public: str = ""


def daemon_json(registry_mirrors: Sequence[str]) -> dict[str, Any]:
    """/etc/docker/daemon.json: logs rotate, containers survive a daemon restart, data on the data disk."""
    config: dict[str, Any] = {
        "data-root": DOCKER_ROOT,
        "live-restore": True,
        "log-driver": "json-file",
        "log-opts": {"max-size": "10m", "max-file": "3"},
    }
    if registry_mirrors:
        config["registry-mirrors"] = list(registry_mirrors)
    return config


def disk_serial(disk_id: str) -> str:
    """The serial number the guest reports for an Alibaba Cloud disk: its id without the `d-` prefix."""
    return disk_id.removeprefix("d-")


def cloud_config(inputs: CloudInitInputs) -> dict[str, Any]:
    config: dict[str, Any] = {
        "write_files": [
            {
                "path": "/etc/docker/daemon.json",
                "permissions": "0644",
                "content": json.dumps(daemon_json(inputs.registry_mirrors), indent=2, sort_keys=True) + "\n",
            },
            {
                # Docker must never start with its data root on the system disk.
                "path": "/etc/systemd/system/docker.service.d/10-data-disk.conf",
                "permissions": "0644",
                "content": f"[Unit]\nRequiresMountsFor={DATA_MOUNT}\n",
            },
            {
                "path": "/etc/sysctl.d/90-memos.conf",
                "permissions": "0644",
                # Swap is the host's last resort: containers have no swap of their own.
                "content": "vm.swappiness = 10\n",
            },
            {"path": MOUNT_SCRIPT, "permissions": "0755", "content": _MOUNT_SCRIPT},
            {"path": INSTALL_DOCKER_SCRIPT, "permissions": "0755", "content": _INSTALL_DOCKER_SCRIPT},
        ],
        "runcmd": [
            [MOUNT_SCRIPT, inputs.data_disk_serial],
            ["sysctl", "--system"],
            ["systemctl", "daemon-reload"],
            [INSTALL_DOCKER_SCRIPT, inputs.docker_ce_mirror, DOCKER_APT_KEY_FINGERPRINT],
        ],
        # Key-only logins: the admin key arrives through the ECS key pair, not through user data.
        "ssh_pwauth": False,
    }
    if inputs.host_key_private:
        # The host proves this key, which the operator's ssh already pins; generate no other kind (the
        # list may not be empty, and a key type already written is not generated again).
        # cloud-init's ssh module runs before sshd starts (cloud-init.service: Before=sshd.service).
        key_type = inputs.host_key_public.split()[0].removeprefix("ssh-")
        config["ssh_keys"] = {
            f"{key_type}_private": inputs.host_key_private,
            f"{key_type}_public": inputs.host_key_public,
        }
        config["ssh_genkeytypes"] = [key_type]
        config["ssh_deletekeys"] = True
    if inputs.swap_mb:
        config["swap"] = {
            "filename": "/swapfile",
            "size": inputs.swap_mb * 1024 * 1024,
            "maxsize": inputs.swap_mb * 1024 * 1024,
        }
    return config


class _Dumper(yaml.SafeDumper):
    """Writes multi-line strings (file contents) as literal blocks, so the user data reads as files."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)  # pyright: ignore[reportUnknownMemberType]


_Dumper.add_representer(str, _represent_str)


def render(inputs: CloudInitInputs) -> str:
    """The user data document: `#cloud-config` and the YAML dump of cloud_config()."""
    body = yaml.dump(cloud_config(inputs), Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1000)
    return "#cloud-config\n" + body
