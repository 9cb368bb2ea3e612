"""A local socket that carries the Docker API to a remote host the way the docker provider reaches it.

For `host = "ssh://user@address"` the provider (kreuzwerker/terraform-provider-docker v4, its
`ssh_opts` handed to docker/cli's connhelper `GetConnectionHelperWithSSHOpts`) runs, for every
connection it opens, the system client as

    ssh <ssh_opts> [-o ConnectTimeout=30 unless set] -l <user> -- <address> docker system dial-stdio

and speaks HTTP over that process's stdin and stdout. `SshRelay` listens on a unix socket and does
exactly that for each connection it accepts, so the Docker SDK and the docker CLI (for builds) reach the
remote Engine through the stack's own ssh options: its pinned host key, its key file, its timeouts. A
refused host key or login fails the connection as it fails the provider (ssh's message is kept, see
`failures`).

What it cannot show: the provider's own connection reuse and retries; each accepted connection here is
one ssh process, as each of the provider's dials is.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path


def dial_stdio_argv(ssh_options: Sequence[str], user: str, address: str) -> list[str]:
    """The provider's command line for one connection to `user@address`."""
    options = list(ssh_options)
    if not any(o.startswith("ConnectTimeout=") for o in options):
        options += ["-o", "ConnectTimeout=30"]
    return ["ssh", *options, "-l", user, "--", address, "docker", "system", "dial-stdio"]


class SshRelay:
    """Relays each connection to its own `ssh ... docker system dial-stdio` process."""

    def __init__(self, ssh_options: Sequence[str], user: str, address: str) -> None:
        self.argv = dial_stdio_argv(ssh_options, user, address)
        self._dir = Path(tempfile.mkdtemp(prefix="mi-ssh-", dir="/tmp"))
        self.socket_path = self._dir / "docker.sock"
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(self.socket_path))
        self._server.listen(16)
        self._processes: list[subprocess.Popen[bytes]] = []
        #: ssh's stderr of every connection that failed, newest last.
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket_path}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                connection, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        process = subprocess.Popen(
            self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0
        )
        with self._lock:
            self._processes.append(process)
        stdin, stdout, stderr = process.stdin, process.stdout, process.stderr
        if stdin is None or stdout is None or stderr is None:
            raise RuntimeError("ssh was started without pipes")

        def upstream() -> None:
            with contextlib.suppress(OSError, ValueError):
                while data := connection.recv(65536):
                    stdin.write(data)
                    stdin.flush()
            with contextlib.suppress(OSError, ValueError):
                stdin.close()

        sender = threading.Thread(target=upstream, daemon=True)
        sender.start()
        with contextlib.suppress(OSError, ValueError):
            while data := stdout.read(65536):
                connection.sendall(data)
        # ssh's verdict is recorded before the client sees the connection end.
        code = process.wait()
        message = stderr.read().decode(errors="replace").strip()
        if code != 0 and message:
            self.failures.append(message)
        with contextlib.suppress(OSError):
            connection.shutdown(socket.SHUT_RDWR)
        connection.close()
        with self._lock:
            self._processes.remove(process)

    def close(self) -> None:
        """Stop accepting, end every ssh process it started, remove the socket."""
        self._closed = True
        self._server.close()
        with self._lock:
            processes = list(self._processes)
        for process in processes:
            process.kill()
            process.wait()
        self.socket_path.unlink(missing_ok=True)
        self._dir.rmdir()
