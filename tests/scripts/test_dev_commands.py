"""Every dev command the docs give works from a new shell after `./scripts/dev-up`.

dev-up keeps the dev stack's state in `file://~` and encrypts its secrets with a passphrase it
generates; both are environment variables of one process, so a `pulumi` run from a new shell without
them asks for a Pulumi Cloud login (non-interactively: "PULUMI_ACCESS_TOKEN must be set for login
during non-interactive CLI sessions") and then for a passphrase nobody saw. The documented commands
are read from the README and the docs, run one by one from an environment that has neither
variable, and reach a `pulumi` stand-in that records what it was run with and, like the real CLI,
refuses to run without a backend. `docker` (dev-up's engine checks, the restore's `docker exec`)
and `uv` (`uv run` runs the command in the project's environment) are stand-ins too; no Docker
Engine is needed.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from harness.mock_engine import ROOT
from tests.support import stand_ins

#: The pages whose commands a dev user runs (README, configuration, operations, secrets).
PAGES = ("README.md", "docs/configuration.md", "docs/operations.md", "docs/secrets.md")
PULUMI = """
echo "$* | backend=${PULUMI_BACKEND_URL:-} passfile=${PULUMI_CONFIG_PASSPHRASE_FILE:-}" >>"$RECORD"
if [ -z "${PULUMI_BACKEND_URL:-}" ]; then
    echo "error: PULUMI_ACCESS_TOKEN must be set for login during non-interactive CLI sessions" >&2
    exit 255
fi
case "$1 $2 ${3:-}" in
    "stack output backup_container") echo memos-backup ;;
    "stack output app_container") echo memos-app ;;
    "stack output ssh_command") echo "error: current stack does not have output property 'ssh_command'" >&2; exit 255 ;;
    "stack output --json") echo "error: the stand-in has no outputs" >&2; exit 255 ;;
esac
exit 0
"""
DOCKER = """
echo "docker $*" >>"$RECORD"
case $1 in
    context) echo unix:///var/run/docker.sock ;;
    exec) echo "memos-20261124T180000Z-scheduled.dump" ;;
esac
"""
#: `uv run CMD ...` runs CMD from the project's environment (here the test's own .venv).
UV = f"""
[ "$1" = run ] || exit 0
shift
command=$1
shift
exec "{ROOT}/.venv/bin/$command" "$@"
"""


#: How a command starts, as opposed to a name in backticks (`./scripts/dev`, `--stack dev`).
COMMAND = re.compile(r"^(\./scripts/\S+|pulumi|uv) \S")


def documented_dev_commands() -> list[tuple[str, str]]:
    """(page, command) for every command on the pages that runs on the dev stack: the lines of the sh
    blocks and the inline commands that name it, and every dev-up."""
    found: list[tuple[str, str]] = []
    for page in PAGES:
        text = (ROOT / page).read_text()
        blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL)
        lines = [line.split(" # ")[0].strip() for block in blocks for line in block.splitlines()]
        prose = re.sub(r"```sh\n.*?```", "", text, flags=re.DOTALL)
        lines += [span for span in re.findall(r"`([^`\n]+)`", prose) if COMMAND.match(span)]
        for command in lines:
            dev = "--stack dev" in command or command.split(" ")[0] == "./scripts/dev-up"
            if dev and (page, command) not in found:
                found.append((page, command))
    return found


@pytest.fixture
def machine(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A user's machine with the stand-ins on PATH, a home, and no Pulumi variables at all."""
    record = tmp_path / "calls"
    record.touch()
    bin_dir = stand_ins(tmp_path / "bin", {"pulumi": PULUMI, "docker": DOCKER, "uv": UV})
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(home), "RECORD": str(record), "LANG": "C.UTF-8"}
    assert not [k for k in env if k.startswith("PULUMI_")]
    return env, record


def run(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        shlex.split(command), cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        check=False, timeout=120,
    )  # fmt: skip


def test_the_docs_give_dev_commands_only_through_the_dev_wrapper() -> None:
    commands = documented_dev_commands()
    pages = {page for page, _ in commands}
    assert pages == set(PAGES), f"no dev command found on {set(PAGES) - pages}"
    bare = [(page, c) for page, c in commands if not c.startswith(("./scripts/dev ", "./scripts/dev-up"))]
    assert bare == [], "a dev command without ./scripts/dev needs a backend and passphrase the shell does not have"


def test_every_documented_dev_command_reaches_pulumi_with_dev_ups_backend_and_passphrase(
    machine: tuple[dict[str, str], Path],
) -> None:
    env, record = machine
    up = run("./scripts/dev-up --yes", env)
    assert up.returncode == 0, up.stdout + up.stderr
    passfile = Path(env["HOME"]) / ".config/memos-infra/dev.passphrase"
    passphrase = passfile.read_text()
    assert len(passphrase) == 64
    expected = f"backend=file://~ passfile={passfile}"
    assert [line for line in record.read_text().splitlines() if not line.startswith("docker ")] == [
        f"install | {expected}",
        f"stack select dev --create | {expected}",
        f"up --stack dev --yes | {expected}",
    ]

    for page, command in documented_dev_commands():
        record.write_text("")
        result = run(command, dict(env))  # a new shell: nothing dev-up set is left
        calls = [line for line in record.read_text().splitlines() if not line.startswith("docker ")]
        assert calls, f"{page}: `{command}` never ran pulumi"
        for call in calls:
            assert call.endswith(f"| {expected}"), f"{page}: `{command}` ran `pulumi {call}`"
        if "tools.verify" in command:
            # verify got as far as the stack's outputs; what it then checks is tests/tools/test_verify.py's.
            assert "the stand-in has no outputs" in result.stderr, result.stderr
        else:
            assert result.returncode == 0, f"{page}: `{command}`: {result.stderr}"
        assert passfile.read_text() == passphrase, "the passphrase dev-up created must stay the stack's"


def test_no_dev_command_logs_the_user_in_or_out(machine: tuple[dict[str, str], Path]) -> None:
    env, record = machine
    assert run("./scripts/dev-up --yes", env).returncode == 0
    for _, command in documented_dev_commands():
        run(command, dict(env))
        assert not [line for line in record.read_text().splitlines() if line.startswith(("login", "logout"))]


def test_the_wrapper_leaves_a_backend_and_passphrase_the_user_chose(machine: tuple[dict[str, str], Path]) -> None:
    env, record = machine
    own = {**env, "PULUMI_BACKEND_URL": "s3://my-state", "PULUMI_CONFIG_PASSPHRASE_FILE": "/secure/dev.pass"}
    assert run("./scripts/dev pulumi stack ls", own).returncode == 0
    assert record.read_text().splitlines() == ["stack ls | backend=s3://my-state passfile=/secure/dev.pass"]
    assert not (Path(env["HOME"]) / ".config/memos-infra/dev.passphrase").exists()


def test_without_the_wrapper_a_new_shell_has_no_backend(machine: tuple[dict[str, str], Path]) -> None:
    # What a user saw before the docs ran dev commands through ./scripts/dev.
    env, _ = machine
    assert run("./scripts/dev-up --yes", env).returncode == 0
    bare = run("pulumi config set memos:aiEnabled true --stack dev", env)
    assert bare.returncode == 255
    assert "PULUMI_ACCESS_TOKEN must be set for login during non-interactive CLI sessions" in bare.stderr
