"""A private Docker Engine for the test suite: started by the tests, stopped by its pid.

The daemon gets its own data root (kept between runs, so the images built for the tests are cached),
its own exec root, pid file and socket, and `--bridge=none --iptables=false --ip6tables=false`, so it
never fights a daemon the user already runs over `docker0` or the iptables chains. It starts its own
containerd under its exec root. User-defined bridge networks, published loopback ports (through
Docker's userland proxy), memory limits, healthchecks and the archive API all work on it.

What it cannot show: the default `bridge` network does not exist on it (see harness/realizer.py for what
that changes), and it is Debian's Engine 20.10 (API 1.41), older than most developers' Docker.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import docker
import docker.errors

#: Data root kept between runs: the images the tests build live here.
CACHE_ROOT = Path(os.environ.get("MEMOS_TEST_CACHE", "/var/cache/memos-infra-test"))
START_TIMEOUT_SECONDS = 60
STOP_TIMEOUT_SECONDS = 30


class DaemonUnavailableError(Exception):
    """The private daemon cannot run here; the message is one line saying why."""


def dockerd_path() -> str | None:
    """dockerd on PATH, or in the sbin directories a non-login root shell may lack."""
    return shutil.which("dockerd", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")


def unavailable_reason() -> str | None:
    """Why a private daemon cannot be started on this machine, or None when it can."""
    if os.geteuid() != 0:
        return "the Docker tier needs root (it starts a private dockerd); run ./scripts/test as root"
    if dockerd_path() is None:
        return "dockerd is not installed (./scripts/test installs Debian's docker.io where apt-get exists)"
    if not Path("/sys/fs/cgroup").exists():
        return "no /sys/fs/cgroup: Docker cannot limit memory here"
    return None


@dataclass
class PrivateDockerd:
    """One running private daemon."""

    run_dir: Path
    data_root: Path
    process: subprocess.Popen[bytes]
    #: Held while the daemon runs: two daemons must never share a data root.
    lock: IO[bytes]

    @property
    def socket(self) -> Path:
        return self.run_dir / "docker.sock"

    @property
    def host(self) -> str:
        """The value for DOCKER_HOST."""
        return f"unix://{self.socket}"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def log_path(self) -> Path:
        return self.run_dir / "dockerd.log"

    def client(self, *, timeout: int = 600) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.host, timeout=timeout)

    def clear(self) -> None:
        """Remove every container, user-defined network and volume; keep the images (the cache)."""
        client = self.client()
        for container in client.containers.list(all=True):
            container.remove(force=True, v=True)
        for network in client.networks.list():
            if network.name not in ("bridge", "host", "none"):
                network.remove()
        for volume in client.volumes.list():
            volume.remove(force=True)

    def stop(self) -> None:
        """SIGTERM by pid (the daemon stops its containers and its containerd), SIGKILL if it hangs."""
        if self.process.poll() is not None:
            return
        os.kill(self.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)

    def close(self) -> None:
        """Stop the daemon and release the data root."""
        self.stop()
        self.lock.close()

    def restart(self) -> None:
        """Stop the daemon and start it again on the same roots and socket (containers survive)."""
        self.stop()
        self.process = _spawn(self.run_dir, self.data_root)
        _wait_until_ready(self)


def _spawn(run_dir: Path, data_root: Path) -> subprocess.Popen[bytes]:
    log = (run_dir / "dockerd.log").open("ab")
    return subprocess.Popen(
        [
            dockerd_path() or "dockerd",
            f"--data-root={data_root}",
            f"--exec-root={run_dir / 'exec'}",
            f"--pidfile={run_dir / 'dockerd.pid'}",
            f"--host=unix://{run_dir / 'docker.sock'}",
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            "--storage-driver=overlay2",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _wait_until_ready(daemon: PrivateDockerd) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if daemon.process.poll() is not None:
            tail = daemon.log_path.read_text(errors="replace").strip().splitlines()[-1:]
            raise DaemonUnavailableError(f"dockerd exited with {daemon.process.returncode}: {' '.join(tail)}")
        if daemon.socket.exists():
            try:
                daemon.client(timeout=5).ping()
            except docker.errors.DockerException:
                pass
            else:
                return
        time.sleep(0.2)
    daemon.stop()
    raise DaemonUnavailableError(f"dockerd did not answer on {daemon.socket} within {START_TIMEOUT_SECONDS} s")


def start_private_dockerd(run_dir: Path, *, data_root_name: str = "docker-root") -> PrivateDockerd:
    """Start a private daemon whose socket, pid file and exec root live in `run_dir`, on the cached data
    root `data_root_name` (the Docker tier's and the rehearsal's daemons each have their own, so the two
    run side by side).

    `run_dir` must be short: the socket path has to fit a unix socket address (108 bytes).
    """
    reason = unavailable_reason()
    if reason:
        raise DaemonUnavailableError(reason)
    run_dir.mkdir(parents=True, exist_ok=True)
    data_root = CACHE_ROOT / data_root_name
    data_root.mkdir(parents=True, exist_ok=True)
    lock = (CACHE_ROOT / f"{data_root_name}.lock").open("wb")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise DaemonUnavailableError(f"another test run holds {data_root}; wait for it to finish") from None
    daemon = PrivateDockerd(run_dir=run_dir, data_root=data_root, process=_spawn(run_dir, data_root), lock=lock)
    try:
        _wait_until_ready(daemon)
    except DaemonUnavailableError:
        lock.close()
        raise
    return daemon
