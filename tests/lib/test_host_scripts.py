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

from lib.host_scripts import drain_command, drain_script, ready_script
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


@pytest.mark.parametrize("script", ["ready", "drain"])
def test_the_host_commands_pass_shellcheck(tmp_path: Path, script: str) -> None:
    path = tmp_path / "command.sh"
    path.write_text((ready_script() if script == "ready" else drain_command(SSH_ARGV)) + "\n")
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.fail("shellcheck is required (apt-get install shellcheck); ./scripts/test installs it")
    result = subprocess.run(
        [shellcheck, "-s", "sh", "-S", "warning", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout
