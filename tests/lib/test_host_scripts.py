"""The host commands as the shell runs them: the readiness gate and the drain of a replaced host.

Both run under dash (the strictest common /bin/sh) against stand-ins on PATH: `cloud-init` and
`docker` for the readiness script as it runs on the host, `ssh` for the drain command as it runs on
the operator's machine. The stand-ins reproduce the documented exit codes only: `cloud-init status
--wait` 0 (done), 1 (unrecoverable error), 2 (done with recoverable errors, cloud-init 23.4+); ssh
255 for its own failures with its own messages. They cannot show a real host's timing or messages
from other cloud-init or OpenSSH versions.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from lib.host_scripts import DRAINED_LIST, SshTarget, drain_command, drain_script, ready_command, ready_script
from tests.support import stand_ins


def dash() -> str:
    path = shutil.which("dash")
    if path is None:
        pytest.fail("dash is required (apt-get install dash); ./scripts/test installs it")
    return path


def run_ready(
    tmp_path: Path, *, status_code: int, docker_root: str = "/data/docker"
) -> subprocess.CompletedProcess[str]:
    bin_dir = stand_ins(
        tmp_path / "bin",
        {
            "cloud-init": (
                f'if [ "$2" = "--wait" ]; then echo status: done; exit {status_code}; fi; '
                'echo "extended_status: degraded done"; echo "recoverable_errors: WARNING: deprecated key"'
            ),
            "docker": f"echo {docker_root}",
        },
    )
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    return subprocess.run([dash(), "-c", ready_script()], env=env, capture_output=True, text=True, check=False)


def test_cloud_init_done_and_docker_on_the_data_disk_is_ready(tmp_path: Path) -> None:
    result = run_ready(tmp_path, status_code=0)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_recoverable_cloud_init_errors_are_a_warning_not_a_failure(tmp_path: Path) -> None:
    result = run_ready(tmp_path, status_code=2)
    assert result.returncode == 0
    assert result.stderr.splitlines() == [
        "cloud-init finished with recoverable errors:",
        "extended_status: degraded done",
        "recoverable_errors: WARNING: deprecated key",
    ]


@pytest.mark.parametrize("status_code", [1, 3])
def test_an_unrecoverable_cloud_init_error_fails_with_its_long_status(tmp_path: Path, status_code: int) -> None:
    result = run_ready(tmp_path, status_code=status_code)
    assert result.returncode == 1
    assert "extended_status: degraded done" in result.stdout


def test_recoverable_errors_still_need_docker_on_the_data_disk(tmp_path: Path) -> None:
    result = run_ready(tmp_path, status_code=2, docker_root="/var/lib/docker")
    assert result.returncode == 1
    assert "docker data root is /var/lib/docker, not /data/docker" in result.stderr


SSH_ARGV = ["ssh", "-o", "BatchMode=yes", "root@198.51.100.20"]


def run_drain(tmp_path: Path, ssh_body: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    log = tmp_path / "ssh.log"
    bin_dir = stand_ins(tmp_path / "bin", {"ssh": f'printf "%s\\n" "$@" > "{log}"\n{ssh_body}'})
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    result = subprocess.run(
        [dash(), "-c", drain_command(SSH_ARGV)], env=env, capture_output=True, text=True, check=False
    )
    return result, log.read_text().splitlines()


def test_a_reachable_host_is_drained_over_ssh_with_a_bounded_connect(tmp_path: Path) -> None:
    result, argv = run_drain(tmp_path, "echo stopped; exit 0")
    assert result.returncode == 0
    assert result.stdout == "stopped\n"
    assert argv == ["-o", "ConnectionAttempts=3", "-o", "BatchMode=yes", "root@198.51.100.20", drain_script()]


@pytest.mark.parametrize(
    "message",
    [
        "ssh: connect to host 198.51.100.20 port 22: Connection timed out",
        "ssh: connect to host 198.51.100.20 port 22: No route to host",
        "ssh: connect to host 198.51.100.20 port 22: Connection refused",
    ],
)
def test_a_dead_host_does_not_block_its_own_replacement(tmp_path: Path, message: str) -> None:
    result, _ = run_drain(tmp_path, f'echo "{message}" >&2; exit 255')
    assert result.returncode == 0
    assert message in result.stdout
    assert "the old host does not answer over SSH; detaching its data disk without a drain" in result.stderr


@pytest.mark.parametrize(
    "message",
    [
        "root@198.51.100.20: Permission denied (publickey).",
        "Host key verification failed.",
        "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @",
    ],
)
def test_a_host_that_answers_but_refuses_us_stops_the_replacement(tmp_path: Path, message: str) -> None:
    result, _ = run_drain(tmp_path, f'echo "{message}" >&2; exit 255')
    assert result.returncode == 255
    assert "without a drain" not in result.stderr


def test_a_drain_that_fails_on_the_host_stops_the_replacement(tmp_path: Path) -> None:
    result, _ = run_drain(tmp_path, 'echo "umount: /data: target is busy." >&2; exit 32')
    assert result.returncode == 32
    assert "umount: /data: target is busy." in result.stdout


TARGET = SshTarget("root", "", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGPG8dWvCwJs2by0GxILY4aZMEpQWRovKlg9dvByvj3p")


def run_ready_command(tmp_path: Path, ssh_body: str) -> subprocess.CompletedProcess[str]:
    bin_dir = stand_ins(tmp_path / "bin", {"ssh": ssh_body})
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    command = ready_command(TARGET, "198.51.100.20")
    return subprocess.run([dash(), "-c", command], env=env, capture_output=True, text=True, check=False)


@pytest.mark.parametrize(
    "message",
    [
        "Host key verification failed.",
        "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @",
        "Unable to negotiate with 198.51.100.20 port 22: no matching host key type found. Their offer: ssh-rsa",
    ],
)
def test_a_host_without_the_pinned_key_fails_the_gate_with_one_line_naming_the_fix(
    tmp_path: Path, message: str
) -> None:
    result = run_ready_command(tmp_path, f'echo "{message}" >&2; exit 255')
    assert result.returncode == 1
    assert message in result.stdout
    assert result.stderr == (
        "error: the host at 198.51.100.20 did not prove it holds this stack's SSH host key (ssh-ed25519 "
        "SHA256:" + TARGET.host_key_fingerprint.removeprefix("SHA256:") + "), so nothing was sent to it: it is not "
        "the instance this stack created, or its host key was replaced (a stack deployed before host keys were "
        'pinned adopts the key once); see docs/operations.md, "The host\'s SSH key"\n'
    )


def test_other_ssh_failures_and_the_remote_status_pass_through_the_gate(tmp_path: Path) -> None:
    assert run_ready_command(tmp_path, 'echo "Permission denied (publickey)." >&2; exit 255').returncode == 255
    assert run_ready_command(tmp_path, "echo docker is not running; exit 1").returncode == 1
    assert run_ready_command(tmp_path, "exit 0").returncode == 0


def test_the_fingerprint_is_the_one_ssh_keygen_prints(tmp_path: Path) -> None:
    (tmp_path / "key.pub").write_text(TARGET.host_key + "\n")
    printed = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(tmp_path / "key.pub")], capture_output=True, text=True, check=True
    )
    assert printed.stdout.split()[1] == TARGET.host_key_fingerprint


def test_a_new_host_starts_what_the_drain_of_the_old_one_stopped(tmp_path: Path) -> None:
    calls = tmp_path / "docker.log"
    listed = tmp_path / "drained"
    listed.write_text("c0ffee01\nc0ffee02\n")
    bin_dir = stand_ins(
        tmp_path / "bin",
        {
            "cloud-init": "exit 0",
            "docker": f'if [ "$1" = info ]; then echo /data/docker; else echo "$@" >> "{calls}"; fi',
        },
    )
    script = ready_script().replace(DRAINED_LIST, str(listed))
    result = subprocess.run([dash(), "-c", script], env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, capture_output=True,
                            text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert calls.read_text().splitlines() == ["start c0ffee01 c0ffee02"]
    assert not listed.exists()


@pytest.mark.parametrize("script", ["ready", "ready command", "drain"])
def test_the_host_commands_pass_shellcheck(tmp_path: Path, script: str) -> None:
    path = tmp_path / "command.sh"
    text = {
        "ready": ready_script(),
        "ready command": ready_command(TARGET, "198.51.100.20"),
        "drain": drain_command(SSH_ARGV),
    }[script]
    path.write_text(text + "\n")
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.fail("shellcheck is required (apt-get install shellcheck); ./scripts/test installs it")
    result = subprocess.run(
        [shellcheck, "-s", "sh", "-S", "warning", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout
