"""scripts/restore: the operator's one restore command, with stand-in `pulumi`, `docker` and `ssh`.

The database side of a restore (memos-restore in the backup container) is proven on a real server
in test_backup_restore.py; this checks the orchestration around it: what runs, in which order, on
which host, and what happens when something fails.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness.mock_engine import ROOT
from tests.support import stand_ins

SCRIPT = ROOT / "scripts" / "restore"


def stage(tmp_path: Path, *, outputs: dict[str, str], restore_fails: bool = False) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    log = tmp_path / "calls.log"
    cases = "\n".join(f'  {key}) echo "{value}" ;;' for key, value in outputs.items())
    tools = {
        "pulumi": f'case "$3" in\n{cases}\n  *) exit 1 ;;\nesac',
        "docker": (
            f'echo "docker $*" >> "{log}"\n'
            + ('case "$*" in *memos-restore*) exit 1 ;; esac\n' if restore_fails else "")
            + 'case "$*" in *" list") echo memos-20261124T180000Z-scheduled.dump ;; esac'
        ),
        # ssh runs the remote command locally, as the host would.
        "ssh": f'echo "ssh $*" >> "{log}"\nwhile [ "$1" != "root@198.51.100.20" ]; do shift; done; shift\n"$@"',
    }
    stand_ins(bin_dir, tools)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "LOG": str(log)}


def run(env: dict[str, str], *args: str, answer: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], env=env, input=answer, capture_output=True, text=True, check=False)


def calls(env: dict[str, str]) -> list[str]:
    path = Path(env["LOG"])
    return path.read_text().splitlines() if path.exists() else []


DEV = {"backup_container": "memos-backup", "app_container": "memos-app"}
PROD = {**DEV, "ssh_command": "ssh -o 'UserKnownHostsFile=~/.ssh/memos-prod.known_hosts' root@198.51.100.20"}


def test_without_a_dump_it_lists_them(tmp_path: Path) -> None:
    env = stage(tmp_path, outputs=DEV)
    result = run(env, "--stack", "dev")
    assert result.returncode == 0
    assert result.stdout.strip() == "memos-20261124T180000Z-scheduled.dump"


def test_a_restore_dumps_first_stops_the_app_restores_and_starts_it(tmp_path: Path) -> None:
    env = stage(tmp_path, outputs=DEV)
    result = run(env, "--stack", "dev", "memos-20261124T180000Z-scheduled.dump", "--yes")
    assert result.returncode == 0, result.stderr
    assert calls(env) == [
        "docker exec memos-backup /bin/sh /usr/local/bin/memos-backup run pre-restore",
        "docker stop memos-app",
        "docker exec memos-backup /bin/sh /usr/local/bin/memos-restore memos-20261124T180000Z-scheduled.dump",
        "docker start memos-app",
    ]


def test_in_prod_every_step_runs_on_the_host_over_ssh(tmp_path: Path) -> None:
    env = stage(tmp_path, outputs=PROD)
    assert run(env, "--stack", "prod", "memos-20261124T180000Z-scheduled.dump", "--yes").returncode == 0
    steps = calls(env)
    assert steps[0::2] == [
        "ssh -o UserKnownHostsFile=~/.ssh/memos-prod.known_hosts root@198.51.100.20 docker exec memos-backup "
        "/bin/sh /usr/local/bin/memos-backup run pre-restore",
        "ssh -o UserKnownHostsFile=~/.ssh/memos-prod.known_hosts root@198.51.100.20 docker stop memos-app",
        "ssh -o UserKnownHostsFile=~/.ssh/memos-prod.known_hosts root@198.51.100.20 docker exec memos-backup "
        "/bin/sh /usr/local/bin/memos-restore memos-20261124T180000Z-scheduled.dump",
        "ssh -o UserKnownHostsFile=~/.ssh/memos-prod.known_hosts root@198.51.100.20 docker start memos-app",
    ]


@pytest.mark.parametrize("answer", ["", "prod\n", "yes\n"])
def test_without_the_stack_name_typed_back_nothing_happens(tmp_path: Path, answer: str) -> None:
    env = stage(tmp_path, outputs=DEV)
    result = run(env, "--stack", "dev", "memos-20261124T180000Z-scheduled.dump", answer=answer)
    assert result.returncode == 1
    assert calls(env) == []


def test_typing_the_stack_name_confirms(tmp_path: Path) -> None:
    env = stage(tmp_path, outputs=DEV)
    assert run(env, "--stack", "dev", "memos-20261124T180000Z-scheduled.dump", answer="dev\n").returncode == 0
    assert len(calls(env)) == 4


def test_a_failed_restore_leaves_the_app_stopped_and_points_at_the_safety_dump(tmp_path: Path) -> None:
    env = stage(tmp_path, outputs=DEV, restore_fails=True)
    result = run(env, "--stack", "dev", "memos-20261124T180000Z-scheduled.dump", "--yes")
    assert result.returncode == 1
    assert "the app stays stopped" in result.stderr
    assert "docker start memos-app" not in calls(env)
