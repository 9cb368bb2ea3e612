"""How the operator's machine reaches the production host, and the shell it runs there.

One ssh argv (`ssh_argv`) is used by everyone who connects: the Docker provider (its `ssh_opts`), the
jobs that run `docker exec` on the host, the readiness gate and the drain, and the operator's
`ssh_command` output. The login key comes from the agent or from memos:sshPrivateKeyPath; Pulumi never
reads it. The host's own key is the one the program generated and handed to cloud-init: ssh is told
that key and no other (`KnownHostsCommand` prints it, no known-hosts file is read or written), so the
first connection to a new instance is as verified as every later one, on any machine that runs the
stack. The scripts are plain POSIX sh (checked with shellcheck and run under dash by the tests).
"""

from __future__ import annotations

import base64
import hashlib
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from lib.cloud_init import DATA_MOUNT, DOCKER_ROOT

#: Exit status of `ssh` itself (connection or authentication failure), never of the remote command.
SSH_FAILED = 255
#: ssh's own messages when the host does not prove it holds the pinned key.
_HOST_KEY_REFUSALS = (
    "Host key verification failed",
    "REMOTE HOST IDENTIFICATION HAS CHANGED",
    "no matching host key type found",
)
#: ssh's own messages for failures that are not "the host does not answer": these must not be skipped.
_SSH_REFUSALS = ("Permission denied", *_HOST_KEY_REFUSALS)
#: Containers the drain stopped, on the data disk that moves to the next instance (which starts them).
DRAINED_LIST = f"{DATA_MOUNT}/memos-drained-containers"
#: Where the operator learns what to do about a refused host key.
HOST_KEY_HELP = 'docs/operations.md, "The host\'s SSH key"'


@dataclass(frozen=True)
class SshTarget:
    """Who logs in to the host with which key, and the host key the host must prove it holds."""

    user: str
    #: Private key file on the operator's machine; empty uses the ssh agent.
    private_key_path: str
    #: The host's public key as an OpenSSH line without comment, e.g. "ssh-ed25519 AAAA...".
    host_key: str

    @property
    def known_hosts_line(self) -> str:
        """The pin for any host name (`*`), in known_hosts format."""
        return f"* {self.host_key}"

    @property
    def host_key_fingerprint(self) -> str:
        """`SHA256:...` as `ssh-keygen -l` prints it."""
        blob = base64.b64decode(self.host_key.split()[1])
        return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def ssh_options(target: SshTarget, *, batch: bool = True) -> list[str]:
    """Options for the system `ssh` client (OpenSSH 8.5 or later, for KnownHostsCommand).

    `KnownHostsCommand` is run without a shell (its argv is split by ssh and must start with an
    absolute path), and prints the pinned key for whatever host name is used; both known-hosts files
    are /dev/null, so nothing else is trusted and nothing is learned or written. Only the pinned key's
    algorithm is offered, and `StrictHostKeyChecking=yes` refuses any other key at the first contact.
    """
    settings = [
        *(["BatchMode=yes"] if batch else []),
        "StrictHostKeyChecking=yes",
        "UserKnownHostsFile=/dev/null",
        "GlobalKnownHostsFile=/dev/null",
        f"KnownHostsCommand=/bin/echo {target.known_hosts_line}",
        f"HostKeyAlgorithms={target.host_key.split()[0]}",
        "UpdateHostKeys=no",
        "ConnectTimeout=10",
        "ServerAliveInterval=30",
    ]
    if target.private_key_path:
        settings.append("IdentitiesOnly=yes")
    options = [arg for setting in settings for arg in ("-o", setting)]
    if target.private_key_path:
        options += ["-i", target.private_key_path]
    return options


def ssh_argv(target: SshTarget, address: str, *extra_options: str) -> list[str]:
    """`ssh <options> [extra] user@address`: add the remote command after it."""
    return ["ssh", *ssh_options(target), *extra_options, f"{target.user}@{address}"]


def operator_ssh_command(target: SshTarget, address: str) -> str:
    """An interactive `ssh` command for operators, with the same pinned host key."""
    return shlex.join(["ssh", *ssh_options(target, batch=False), f"{target.user}@{address}"])


def ready_script() -> str:
    """Runs on the host: wait for cloud-init, require Docker with its data root on the data disk, and
    start again what a drain of the previous instance stopped.

    `cloud-init status --wait` exits 0 when done, 1 on an unrecoverable error and (cloud-init 23.4
    and later) 2 when it finished with recoverable errors, e.g. a deprecated key: only 1 (or any other
    code) fails; with 2 the long status goes to stderr as a warning and the Docker check decides.
    The drain had to `docker stop` the containers (live-restore keeps them running without dockerd),
    which marks them stopped by hand, so their `unless-stopped` policy would not start them here.
    """
    return (
        "cloud-init status --wait >/dev/null; status=$?; "
        'if [ "$status" -eq 2 ]; then echo "cloud-init finished with recoverable errors:" >&2; '
        "cloud-init status --long >&2; "
        'elif [ "$status" -ne 0 ]; then cloud-init status --long; exit 1; fi; '
        f"root=$(docker info --format '{{{{.DockerRootDir}}}}') && "
        f'test "$root" = {DOCKER_ROOT} || {{ echo "docker data root is $root, not {DOCKER_ROOT}" >&2; exit 1; }}; '
        f"if [ -f {DRAINED_LIST} ]; then xargs -r docker start < {DRAINED_LIST} >/dev/null && rm -f {DRAINED_LIST}; fi"
    )


def _explain_host_key_refusal(target: SshTarget, address: str) -> str:
    """Shell that turns ssh's host-key failure (in $out, exit 255) into one line naming the fix."""
    refusals = " ".join(f"-e {shlex.quote(text)}" for text in _HOST_KEY_REFUSALS)
    message = (
        f"error: the host at {address} did not prove it holds this stack's SSH host key "
        f"({target.host_key.split()[0]} {target.host_key_fingerprint}), so nothing was sent to it: it is not the "
        "instance this stack created, or its host key was replaced (a stack deployed before host keys were "
        f"pinned adopts the key once); see {HOST_KEY_HELP}"
    )
    return (
        f'if [ "$status" -eq {SSH_FAILED} ] && printf \'%s\' "$out" | grep -q {refusals}; then '
        f"echo {shlex.quote(message)} >&2; exit 1; fi"
    )


def ready_command(target: SshTarget, address: str) -> str:
    """The readiness gate, run on the operator's machine: retry the connection while the host boots.

    ConnectionAttempts retries refused and timed-out connections only (10 s x 60 while the instance
    boots); a host key other than the pinned one fails at once, with one line saying so.
    """
    ssh = shlex.join([*ssh_argv(target, address, "-o", "ConnectionAttempts=60"), ready_script()])
    return (
        f"out=$({ssh} 2>&1); status=$?; printf '%s\\n' \"$out\"; "
        f'{_explain_host_key_refusal(target, address)}; exit "$status"'
    )


def drain_script() -> str:
    """Runs on the old host before its data disk is detached: stop Docker, unmount the disk.

    The running containers are listed on the data disk first, for the next instance to start them.
    """
    # live-restore keeps containers running without dockerd, so stop them first (PostgreSQL gets
    # the same grace period as on a normal replacement).
    return (
        f"docker ps -q > {DRAINED_LIST}.new && mv {DRAINED_LIST}.new {DRAINED_LIST} && "
        f"xargs -r docker stop -t 60 < {DRAINED_LIST} >/dev/null && "
        f"systemctl stop docker.socket docker.service containerd.service && sync && umount {DATA_MOUNT}"
    )


def drain_command(ssh: Sequence[str]) -> str:
    """The readiness command's delete step: drain the old host, or go on without it if it is dead.

    A host that does not answer within ssh's bounded connect (ConnectTimeout x ConnectionAttempts)
    cannot be drained, and insisting would block its own replacement. Then the step warns and
    succeeds: the disk is detached as after a power cut, which PostgreSQL's WAL and ext4's journal
    recover from. An authentication or host-key failure means the host may be alive: it fails.
    """
    command = shlex.join([*ssh[:1], "-o", "ConnectionAttempts=3", *ssh[1:], drain_script()])
    refusals = " ".join(f"-e {shlex.quote(text)}" for text in _SSH_REFUSALS)
    return (
        f"out=$({command} 2>&1); status=$?; printf '%s\\n' \"$out\"; "
        f'if [ "$status" -eq {SSH_FAILED} ] && ! printf \'%s\' "$out" | grep -q {refusals}; then '
        'echo "warning: the old host does not answer over SSH; detaching its data disk without a drain '
        '(PostgreSQL recovers as after a power cut)" >&2; exit 0; fi; '
        'exit "$status"'
    )
