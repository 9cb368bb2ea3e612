"""The prod stack rehearsed on a real host: everything below the ECS instance, for real, over SSH.

`RehearsalDeployment` is a `Deployment` of the prod stack whose Docker host is the rehearsal host of
harness/rehearsal_host.py. The program runs on the mock engine (the Alibaba Cloud resources stay there,
the elastic IP answered as the host's address), and harness/realizer.py applies what it registered:
- the instance boots the user data the program rendered (as the engine would send it: a replacement
  keeps an ignored old `userData`), and a replacement boots a new instance on the same disk and address;
- the readiness command, the drain and every job run as written, through the system `ssh` client with
  the stack's own options (the pinned host key, the operator's key file);
- the docker provider's resources go through `ssh ... docker system dial-stdio` (harness/ssh_relay.py);
- images are loaded onto the host where it would pull them (no registry is reachable), and the
  copier's build runs on the host's own BuildKit over that connection, installing from the package index
  of harness/package_index.py.

The operator's SSH key is made here for the run (ed25519, in the run's own directory).
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker

from harness.deployment import Deployment
from harness.docker_daemon import CACHE_ROOT
from harness.mock_engine import StackRun, run_program
from harness.package_index import PackageIndex, download, read_pins, write_simple_index
from harness.realizer import Realizer
from harness.rehearsal_host import GATEWAY, DataDisk, RehearsalHost
from harness.standin_images import HOST_REFERENCE, StandIn, ensure_image
from lib.cloud_init import disk_serial

ROOT = Path(__file__).resolve().parent.parent
COPIER_REQUIREMENTS = (ROOT / "ops/copier/build-requirements.txt", ROOT / "ops/copier/requirements.txt")
#: The resources a replaced instance brings new ids to (the engine replaces its dependents with it).
INSTANCE_AND_DEPENDENTS = ("host-instance", "host-data-disk-attachment", "host-public-ip-association")


@dataclass
class OperatorKey:
    """The operator's SSH key pair: its public half goes into config, the file path into sshPrivateKeyPath."""

    path: Path

    @classmethod
    def create(cls, directory: Path) -> OperatorKey:
        path = directory / "operator_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "operator@rehearsal", "-f", str(path)],
                       check=True)  # fmt: skip
        return cls(path)

    @property
    def public(self) -> str:
        return (self.path.with_suffix(".pub")).read_text().strip()


@dataclass
class Rehearsal:
    """The host layer the realizer deploys prod to (the realizer's HostLayer)."""

    host: RehearsalHost
    image_source: docker.DockerClient

    @property
    def address(self) -> str:
        return self.host.address

    def instance_created(self, instance_id: str, user_data: str) -> None:
        self.host.boot(instance_id, user_data)

    def instance_replaced(self, instance_id: str, user_data: str) -> None:
        self.host.replace(instance_id, user_data)


def copier_index(root: Path | None = None) -> Path:
    """The copier's pinned packages as a Simple index directory (downloaded once into the test cache)."""
    pins = [pin for path in COPIER_REQUIREMENTS for pin in read_pins(path)]
    root = root or CACHE_ROOT / "copier-index"
    files = download(pins, root / "files")
    write_simple_index(files, root)
    return root


@dataclass
class RehearsalDeployment(Deployment):
    """The prod stack on the rehearsal host; `replace_instance()` is `pulumi up --replace` of the instance."""

    stack: str = "prod"
    key: OperatorKey | None = None
    host: RehearsalHost | None = None
    index: PackageIndex | None = None
    generations: dict[str, int] = field(default_factory=lambda: {})
    work: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mi-rehearsal-", dir="/tmp")))

    def __post_init__(self) -> None:
        self.key = OperatorKey.create(self.work)
        self.daemon_client = self.daemon.client()
        image = ensure_image(self.daemon_client, StandIn("host", HOST_REFERENCE))
        probe = run_program(self.stack, self._config(), secrets=self.secrets)
        disk = DataDisk.create(self.work, serial=disk_serial(probe.by_name("host-data-disk").mock_id))
        self.host = RehearsalHost(self.daemon_client, image, disk, public_key=self.key.public)
        try:
            self.host.ensure_network()
            self.index = PackageIndex(copier_index(), GATEWAY)
            super().__post_init__()
        except BaseException:
            self.close()
            raise

    def make_realizer(self) -> Realizer:
        assert self.host is not None
        return Realizer(self.daemon_client, docker_host=self.daemon.host,
                        host_layer=Rehearsal(self.host, self.daemon_client))  # fmt: skip

    def _config(self) -> dict[str, Any]:
        assert self.key is not None
        return {
            "sshPublicKey": self.key.public,
            "sshPrivateKeyPath": str(self.key.path),
            **({"pipIndexUrl": self.index.url} if self.index else {}),
            **self.overrides,
        }

    def run_program(self) -> StackRun:
        assert self.host is not None
        # The previous run stands for the state: ignored inputs keep their deployed values, as in the engine.
        return run_program(self.stack, self._config(), secrets=self.secrets, deployed=self.run,
                           public_ip=self.host.address, generations=self.generations)  # fmt: skip

    def replace_instance(self, **changes: Any) -> list[Any]:
        """`pulumi state unprotect` of the instance, then `pulumi up --replace` of it (the runbook's steps)."""
        self.realizer.unprotect("host-instance")
        for name in INSTANCE_AND_DEPENDENTS:
            self.generations[name] = self.generations.get(name, 0) + 1
        return self.up(**changes)

    def ssh(self, command: str) -> subprocess.CompletedProcess[str]:
        """`command` over the stack's own `ssh_command` output, as an operator runs it."""
        return subprocess.run(f"{self.outputs['ssh_command']} {command}", shell=True, capture_output=True,  # noqa: S602 (the stack's own command line)
                              text=True, check=False, timeout=300)  # fmt: skip

    def close(self) -> None:
        """Remove the host, its disk and network, the relay and the index; nothing is left behind."""
        if hasattr(self, "realizer"):
            self.realizer.close()
        if self.index is not None:
            self.index.stop()
        if self.host is not None:
            self.host.close()
        subprocess.run(["rm", "-rf", str(self.work)], check=False)
