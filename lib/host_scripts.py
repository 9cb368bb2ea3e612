"""How the operator's machine reaches the production host, and the shell it runs there.

One ssh argv (`ssh_argv`) is used by everyone who connects: the Docker provider (its `ssh_opts`), the
jobs that run `docker exec` on the host, the readiness gate and the drain, and the operator's
`ssh_command` output. The key comes from the agent or from memos:sshPrivateKeyPath; Pulumi never reads
it. The scripts are plain POSIX sh (checked with shellcheck and run under dash by the tests).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from lib.cloud_init import DATA_MOUNT, DOCKER_ROOT

#: Exit status of `ssh` itself (connection or authentication failure), never of the remote command.
SSH_FAILED = 255
#: ssh's own messages for failures that are not "the host does not answer": these must not be skipped.
_SSH_REFUSALS = ("Permission denied", "Host key verification failed", "REMOTE HOST IDENTIFICATION HAS CHANGED")


@dataclass(frozen=True)
class SshTarget:
    """Who logs in to the host, with which key, and which known-hosts file pins the host's key."""

    user: str
    #: Private key file on the operator's machine; empty uses the ssh agent.
    private_key_path: str
    #: The stack name (keeps this stack's host keys apart from others').
    stack: str

    @property
    def known_hosts_file(self) -> str:
        return f"~/.ssh/memos-{self.stack}.known_hosts"


def ssh_options(target: SshTarget) -> list[str]:
    """Options for the system `ssh` client, shared by the Docker provider and the host commands.

    A new instance's host key is accepted on first contact (the readiness command forgets the
    previous instance's key when it runs for a new one) and pinned from then on, in a file of this
    stack's own.
    """
    settings = [
        "BatchMode=yes",
        "StrictHostKeyChecking=accept-new",
        f"UserKnownHostsFile={target.known_hosts_file}",
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
    """An interactive `ssh` command for operators, using this stack's pinned host key."""
    options = ["-o", f"UserKnownHostsFile={target.known_hosts_file}"]
    if target.private_key_path:
        options += ["-i", target.private_key_path]
    return shlex.join(["ssh", *options, f"{target.user}@{address}"])


def forget_host_key_command(target: SshTarget, address: str) -> str:
    """Drop `address` from the stack's known-hosts file (a new instance answers with a new key)."""
    return (
        f'mkdir -p "$HOME/.ssh" && {{ ssh-keygen -R {shlex.quote(address)} '
        f'-f "$HOME/.ssh/memos-{target.stack}.known_hosts" >/dev/null 2>&1 || true; }}'
    )


def ready_script() -> str:
    """Runs on the host: wait for cloud-init, then require Docker with its data root on the data disk.

    `cloud-init status --wait` exits 0 when done, 1 on an unrecoverable error and (cloud-init 23.4
    and later) 2 when it finished with recoverable errors, e.g. a deprecated key: only 1 (or any other
    code) fails; with 2 the long status goes to stderr as a warning and the Docker check decides.
    """
    return (
        "cloud-init status --wait >/dev/null; status=$?; "
        'if [ "$status" -eq 2 ]; then echo "cloud-init finished with recoverable errors:" >&2; '
        "cloud-init status --long >&2; "
        'elif [ "$status" -ne 0 ]; then cloud-init status --long; exit 1; fi; '
        f"root=$(docker info --format '{{{{.DockerRootDir}}}}') && "
        f'test "$root" = {DOCKER_ROOT} || {{ echo "docker data root is $root, not {DOCKER_ROOT}" >&2; exit 1; }}'
    )


def ready_command(target: SshTarget, address: str) -> str:
    """The readiness gate, run on the operator's machine: retry the connection while the host boots."""
    ssh = shlex.join(ssh_argv(target, address, "-o", "ConnectionAttempts=60"))
    return f"{forget_host_key_command(target, address)} && {ssh} {shlex.quote(ready_script())}"


def drain_script() -> str:
    """Runs on the old host before its data disk is detached: stop Docker, unmount the disk."""
    # live-restore keeps containers running without dockerd, so stop them first (PostgreSQL gets
    # the same grace period as on a normal replacement).
    return (
        "docker ps -q | xargs -r docker stop -t 60 && "
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
        f"out=$({command} 2>&1); status=$?; printf '%s\n' \"$out\"; "
        f'if [ "$status" -eq {SSH_FAILED} ] && ! printf \'%s\' "$out" | grep -q {refusals}; then '
        'echo "warning: the old host does not answer over SSH; detaching its data disk without a drain '
        '(PostgreSQL recovers as after a power cut)" >&2; exit 0; fi; '
        'exit "$status"'
    )
