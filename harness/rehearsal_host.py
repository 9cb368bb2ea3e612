"""A rehearsal host for the prod stack: a real Linux system that boots the program's user data.

It stands in for the ECS instance, its data disk and its elastic IP, and honours what the program
relies on from them (PLATFORM_FACTS.md, Alibaba Cloud's ECS documentation for key pairs, data disks
and user data):
- **The instance**: a container of the image `harness/standin_images.py` builds (Debian bookworm with
  systemd as PID 1, OpenSSH's server, cloud-init 22.4, Debian's docker.io 20.10), on a private Docker
  daemon of its own (`rehearsal-root`), with all capabilities this machine grants, no seccomp filter, a
  private cgroup namespace whose hierarchies it mounts read-write (as a VM's systemd finds them), its
  own /run, a 2048 MiB memory limit without swap (the 2C2G box), and `SIGRTMIN+3` as its stop signal,
  so `docker restart` is a clean systemd shutdown and boot. Nested containers run on its own dockerd,
  with its own default bridge and iptables, in its own network namespace.
- **The elastic IP**: a fixed address on a bridge network of that daemon (10.203.0.0/24, no NAT, no
  route out), reachable only from this machine; a replaced instance gets the same address.
- **The data disk**: a sparse file on a loop device passed into the instance, with a serial number that
  the instance's udev database reports as an ECS disk's (the disk id without `d-`); a replacement gets
  the same device, with what the old instance left on it.
- **User data**: the document the program rendered for the instance, as a NoCloud seed
  (/var/lib/cloud/seed/nocloud), with the instance id and the key pair's public key in the seed's
  meta-data, where ECS's metadata service would serve them.

What differs from a real ECS instance, each named where it happens:
1. Docker's package install (the issue allows it): the user data's `memos-install-docker` script is
   replaced by one that enables the preinstalled docker.io (`seed_user_data`); nothing else in the
   document changes, and a test checks that.
2. What needs the ECS metadata service: the instance id, host name and the key pair's public key come
   from the NoCloud meta-data instead; no RAM role credentials exist (the copier's uploads go to the OSS
   stand-in, harness/cloud_standin.py).
3. What a container cannot do to this machine's kernel: the swap file is created but `swapon` fails on
   the container's overlay root (swap would be machine-wide), and kernel-wide sysctls (vm.swappiness) are
   refused by the read-only /proc/sys; network ones apply to the instance's own namespace.
4. What systemd does not do inside a container: it does not mount fstab's block devices, and no udev
   runs; two units in the image stand in (harness/standins/host/): one records the disk's serial in
   the udev database, one runs `mount -a -t ext4` at local-fs.target. The fstab line itself is the one
   the program's mount script writes.
5. Ubuntu 24.04 (what prod pins) ships cloud-init 24.x and Docker CE 27+; this is cloud-init 22.4 and
   Docker 20.10 (API 1.41), so `cloud-init status --wait` never exits 2 (recoverable errors) here.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors
import docker.models.containers
import yaml
from docker.types import IPAMConfig, IPAMPool

from lib.cloud_init import INSTALL_DOCKER_SCRIPT

HERE = Path(__file__).resolve().parent
NETWORK = "mi-rehearsal"
SUBNET = "10.203.0.0/24"
GATEWAY = "10.203.0.1"
ADDRESS = "10.203.0.10"
#: The 2C2G box's memory, for the whole instance (the OS, Docker and every container in it).
MEMORY_MIB = 2048
#: Stand-in for memos-install-docker (difference 1 in the module docstring).
INSTALL_STANDIN = HERE / "standins" / "host" / "install-docker"


def seed_user_data(document: str) -> str:
    """The program's user data with its Docker install replaced by the stand-in's, nothing else."""
    if not document.startswith("#cloud-config\n"):
        raise ValueError("the user data is not a #cloud-config document")
    config = yaml.safe_load(document)
    [install] = [f for f in config["write_files"] if f["path"] == INSTALL_DOCKER_SCRIPT]
    install["content"] = INSTALL_STANDIN.read_text()
    return "#cloud-config\n" + yaml.safe_dump(config, sort_keys=False, width=1000)


@dataclass
class DataDisk:
    """A sparse file on a loop device: the ECS data disk, with the serial number the guest sees."""

    path: Path
    device: str
    serial: str

    @classmethod
    def create(cls, directory: Path, *, serial: str, size_gib: int = 8) -> DataDisk:
        path = directory / "data-disk.img"
        with path.open("wb") as image:
            image.truncate(size_gib * 1024**3)
        device = subprocess.run(["losetup", "--find", "--show", str(path)], capture_output=True, text=True,
                                check=True).stdout.strip()  # fmt: skip
        return cls(path=path, device=device, serial=serial)

    def detach(self) -> None:
        subprocess.run(["losetup", "--detach", self.device], check=False, capture_output=True)
        self.path.unlink(missing_ok=True)


@dataclass
class Boot:
    """One instance's life on the rehearsal host, for the tests to read."""

    instance_id: str
    user_data: str
    #: Whether the data disk was still mounted in this instance when it was detached (None: not yet).
    mounted_at_detach: bool | None = None
    #: Whether the instance was still running when its disk was detached (False: it had died first).
    alive_at_detach: bool | None = None


@dataclass
class RehearsalHost:
    """The instance, its disk and its address; `boot` starts an instance, `replace` a new one."""

    client: docker.DockerClient
    image: str
    disk: DataDisk
    #: The operator's public key: the ECS key pair's, served to the instance as meta-data.
    public_key: str
    work: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mi-host-", dir="/tmp")))
    boots: list[Boot] = field(default_factory=lambda: [])
    container: docker.models.containers.Container | None = None

    address: str = ADDRESS

    def ensure_network(self) -> None:
        try:
            self.client.networks.get(NETWORK)
        except docker.errors.NotFound:
            # Another bridge on this machine with the same subnet would take the host's address.
            routes = subprocess.run(["ip", "-4", "route", "show", SUBNET], capture_output=True, text=True, check=False)
            if routes.stdout.strip():
                raise RuntimeError(
                    f"{SUBNET} is already routed on this machine ({routes.stdout.strip()}); free it"
                ) from None
            pool = IPAMPool(subnet=SUBNET, gateway=GATEWAY)
            self.client.networks.create(NETWORK, driver="bridge", ipam=IPAMConfig(pool_configs=[pool]))

    def boot(self, instance_id: str, user_data: str) -> None:
        """Start an instance with `user_data` (as the engine sends it) on the disk and the address."""
        if self.container is not None:
            raise RuntimeError("an instance is running; replace it")
        self.ensure_network()
        seed = self.work / instance_id / "seed"
        seed.mkdir(parents=True)
        (seed / "user-data").write_text(seed_user_data(user_data))
        (seed / "meta-data").write_text(
            yaml.safe_dump(
                {"instance-id": instance_id, "local-hostname": "memos-host", "public-keys": [self.public_key]}
            )
        )
        hardware = self.work / instance_id / "hardware"
        hardware.mkdir()
        (hardware / "data-disk").write_text(f"{self.disk.device} {self.disk.serial}\n")
        api = self.client.api
        host_config = api.create_host_config(
            # Every capability this machine grants (CAP_SYS_RESOURCE is outside its bounding set, and
            # Docker refuses --privileged here), no seccomp filter: systemd, mount, dockerd, iptables.
            cap_add=["ALL"],
            cap_drop=["SYS_RESOURCE"],
            security_opt=["seccomp=unconfined", "apparmor=unconfined"],
            cgroupns="private",
            devices=[f"{self.disk.device}:{self.disk.device}:rwm"],
            tmpfs={"/run": "", "/run/lock": ""},
            binds={
                str(seed): {"bind": "/var/lib/cloud/seed/nocloud", "mode": "ro"},
                str(hardware): {"bind": "/etc/rehearsal", "mode": "ro"},
            },
            mem_limit=f"{MEMORY_MIB}m",
            memswap_limit=f"{MEMORY_MIB}m",
        )
        networking = api.create_networking_config({NETWORK: api.create_endpoint_config(ipv4_address=self.address)})
        created = api.create_container(
            self.image, name=f"mi-rehearsal-{instance_id}", hostname="memos-host", host_config=host_config,
            networking_config=networking, stop_signal="SIGRTMIN+3",
        )  # fmt: skip
        api.start(created["Id"])
        self.container = self.client.containers.get(created["Id"])
        self.boots.append(Boot(instance_id=instance_id, user_data=user_data))

    def run(self, command: str) -> tuple[int, str]:
        """A command on the instance's console (not over SSH), for the tests' own checks."""
        if self.container is None:
            raise RuntimeError("no instance is running")
        result = self.container.exec_run(["sh", "-c", command])
        output = result.output
        return int(result.exit_code or 0), output.decode(errors="replace") if isinstance(output, bytes) else ""

    def data_mounted(self) -> bool:
        return self.run("findmnt -n /data")[0] == 0

    def detach(self) -> None:
        """The disk leaves the instance (EcsDiskAttachment deleted), and the instance is deleted."""
        if self.container is None:
            return
        self.container.reload()
        alive = self.container.status == "running"
        self.boots[-1].alive_at_detach = alive
        self.boots[-1].mounted_at_detach = self.data_mounted() if alive else False
        self.container.remove(force=True)
        self.container = None

    def replace(self, instance_id: str, user_data: str) -> None:
        """A new instance in place of the old one: same disk, same address."""
        self.detach()
        self.boot(instance_id, user_data)

    def restart(self, *, timeout: int = 120) -> None:
        """A reboot: systemd shuts down cleanly (SIGRTMIN+3) and boots again; /run is empty again."""
        if self.container is None:
            raise RuntimeError("no instance is running")
        self.container.restart(timeout=timeout)

    def power_off(self) -> None:
        """The instance dies (no shutdown, nothing flushed or unmounted) and stops answering."""
        if self.container is not None:
            self.container.kill()

    def wait_for_ssh(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.run("systemctl is-active ssh")[1].strip() == "active":
                return
            time.sleep(0.5)
        raise RuntimeError(f"sshd did not start on the rehearsal host within {timeout} s")

    def close(self) -> None:
        """Remove the instance and the network, detach the loop device, delete the files."""
        with contextlib.suppress(docker.errors.DockerException):
            if self.container is not None:
                self.container.remove(force=True)
        self.container = None
        with contextlib.suppress(docker.errors.DockerException):
            self.client.networks.get(NETWORK).remove()
        self.disk.detach()
        shutil.rmtree(self.work, ignore_errors=True)
