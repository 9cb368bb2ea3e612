"""Give a host deployed before host keys were pinned the key the program now pins, without a reboot.

    uv run python -m tools.adopt_host_key --stack prod [--known-hosts FILE | --fingerprint SHA256:...]

Stacks deployed before the program generated the host's SSH key trusted the host on first use: ssh
learned whatever key answered into ~/.ssh/memos-<stack>.known_hosts. The program now makes the key
(the protected `tls.PrivateKey` of the host component), hands it to cloud-init and pins it in every
ssh. A running instance never reads new user data (cloud-init's `ssh_keys` runs once per instance,
and the instance ignores user-data changes), so on such a stack the next `pulumi up` would stop at the
readiness gate: the host does not hold the pinned key. This tool installs that key on the host:

1. it reads the stack from `pulumi stack export --show-secrets` (the stack's passphrase is needed, as
   for any `pulumi` command);
2. it logs in trusting only the key the host answers with today: the one in the old known-hosts file,
   or one whose fingerprint the operator read on the instance's console. It never learns a key, and
   if this login fails nothing has changed anywhere;
3. it creates the key in the state if it is not there yet (`pulumi up --target` of the key alone:
   nothing else is touched);
4. on the host it checks sshd's configuration with the new key, makes it the host's only key (as
   cloud-init's `ssh_deletekeys` does on a new instance) and restarts sshd: the session it runs in,
   the containers and the instance keep running;
5. it logs in again with the program's own pinned options, which must now pass.

Run again on an adopted host, it says so and changes nothing. Prints one line per step; a failure is
one line naming what to fix, and exits 1.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lib.host_scripts import SshTarget, ssh_argv

#: The key's type and name under the host component (components/ecs_host.py).
KEY_TYPE = "tls:index/privateKey:PrivateKey"
HOST_COMPONENT = "memos:index:EcsHost"
KEY_NAME_SUFFIX = "-ssh-host-key"
#: Pulumi's marker for a secret value in an exported deployment (apitype.SecretV1's signature key).
SECRET_SIG = "4dabf18193072939515e22adb298388d"
#: The known-hosts file the program's ssh options used before the key was pinned.
OLD_KNOWN_HOSTS = "~/.ssh/memos-{stack}.known_hosts"

#: Runs on the host as root, the new private key on stdin and the public line as $1.
INSTALL_SCRIPT = r"""set -eu
umask 077
sshd=$(command -v sshd || echo /usr/sbin/sshd)
new=$(mktemp -d /etc/ssh/memos-host-key.XXXXXX)
trap 'rm -rf "$new"' EXIT
cat > "$new/ssh_host_ed25519_key"
printf '%s\n' "$1" > "$new/ssh_host_ed25519_key.pub"
chmod 0600 "$new/ssh_host_ed25519_key"
chmod 0644 "$new/ssh_host_ed25519_key.pub"
test "$(ssh-keygen -y -f "$new/ssh_host_ed25519_key" | cut -d' ' -f1,2)" = "$1" \
  || { echo "the private key does not match its public half" >&2; exit 1; }
"$sshd" -t -h "$new/ssh_host_ed25519_key"
rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub
mv "$new/ssh_host_ed25519_key" "$new/ssh_host_ed25519_key.pub" /etc/ssh/
"$sshd" -t
for unit in ssh.service sshd.service; do systemctl try-restart "$unit" 2>/dev/null || true; done
"""


DESCRIPTION = "Install the stack's pinned SSH host key on a host deployed before keys were pinned."


class AdoptError(Exception):
    """One line for the operator: what is wrong and what to do."""


@dataclass(frozen=True)
class StackKey:
    urn: str
    private: str
    #: "ssh-ed25519 AAAA..." without comment.
    public: str


def _pulumi(args: Sequence[str], *, capture: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["pulumi", *args], capture_output=capture, text=True, check=False)
    except FileNotFoundError:
        raise AdoptError("the pulumi CLI is not on PATH; install it (see the README's prerequisites)") from None


def _unsecret(value: Any) -> Any:
    """A value from `stack export --show-secrets`: secrets are {SECRET_SIG: ..., "plaintext": JSON}."""
    if isinstance(value, dict) and SECRET_SIG in value:
        secret: Mapping[str, Any] = value  # pyright: ignore[reportUnknownVariableType]
        if "plaintext" not in secret:
            raise AdoptError("the export holds the secret still encrypted; run with the stack's passphrase set")
        return json.loads(str(secret["plaintext"]))
    return value


def export(stack: str) -> list[dict[str, Any]]:
    done = _pulumi(["stack", "export", "--show-secrets", "--stack", stack])
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise AdoptError(f"pulumi stack export --stack {stack} failed: {last}")
    deployment = json.loads(done.stdout).get("deployment") or {}
    return list(deployment.get("resources") or [])


def key_urn(resources: Sequence[Mapping[str, Any]], stack: str) -> str:
    """Where the key lives (or will): below the host component, named after it."""
    hosts = [r for r in resources if r.get("type") == HOST_COMPONENT]
    if not hosts:
        raise AdoptError(f"stack {stack} has no host ({HOST_COMPONENT}): nothing to adopt")
    head, _, name = str(hosts[0]["urn"]).rpartition("::")
    prefix, _, qualified_type = head.rpartition("::")
    return f"{prefix}::{qualified_type}${KEY_TYPE}::{name}{KEY_NAME_SUFFIX}"


def stack_key(resources: Sequence[Mapping[str, Any]], urn: str) -> StackKey | None:
    for resource in resources:
        if resource.get("urn") == urn:
            outputs = resource.get("outputs") or {}
            private = str(_unsecret(outputs.get("privateKeyOpenssh", "")))
            public = " ".join(str(_unsecret(outputs.get("publicKeyOpenssh", ""))).split()[:2])
            if not private or not public:
                raise AdoptError(f"{urn} has no OpenSSH key in the state; run `pulumi refresh` and try again")
            return StackKey(urn=urn, private=private, public=public)
    return None


def login(resources: Sequence[Mapping[str, Any]], stack: str) -> tuple[str, str]:
    """(user, address) from the stack's docker_host output, ssh://user@address."""
    for resource in resources:
        if resource.get("type") == "pulumi:pulumi:Stack":
            docker_host = str(_unsecret((resource.get("outputs") or {}).get("docker_host", "")))
            if docker_host.startswith("ssh://") and "@" in docker_host:
                user, _, address = docker_host.removeprefix("ssh://").partition("@")
                return user, address
    raise AdoptError(f"stack {stack} has no docker_host output: deploy it once (`pulumi up --stack {stack}`) first")


def private_key_path(stack: str) -> str:
    done = _pulumi(["config", "get", "memos:sshPrivateKeyPath", "--stack", stack])
    return done.stdout.strip() if done.returncode == 0 else ""


def trusted_today(address: str, known_hosts: Path | None, fingerprint: str | None, work: Path) -> Path:
    """A known-hosts file holding only the key the host is already trusted with."""
    if fingerprint is None:
        assert known_hosts is not None
        if not known_hosts.is_file():
            raise AdoptError(
                f"{known_hosts} does not exist: read the host's key fingerprint on its console "
                "(`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`) and pass it as --fingerprint SHA256:..."
            )
        return known_hosts
    scanned = subprocess.run(["ssh-keyscan", "-T", "10", address], capture_output=True, text=True, check=False)
    matching: list[str] = []
    for line in scanned.stdout.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        candidate = work / "candidate"
        candidate.write_text(line + "\n")
        listed = subprocess.run(["ssh-keygen", "-lf", str(candidate)], capture_output=True, text=True, check=False)
        if listed.returncode == 0 and listed.stdout.split()[1:2] == [fingerprint]:
            matching.append(line)
    if not matching:
        raise AdoptError(
            f"the host at {address} offers no key with fingerprint {fingerprint}: "
            "check the fingerprint on the instance's console; nothing was changed"
        )
    trusted = work / "trusted"
    trusted.write_text("\n".join(matching) + "\n")
    return trusted


def old_trust_options(known_hosts: Path, identity: str) -> list[str]:
    settings = [
        "BatchMode=yes",
        "StrictHostKeyChecking=yes",
        f"UserKnownHostsFile={known_hosts}",
        "GlobalKnownHostsFile=/dev/null",
        "UpdateHostKeys=no",
        "ConnectTimeout=10",
    ]
    if identity:
        settings.append("IdentitiesOnly=yes")
    options = [arg for setting in settings for arg in ("-o", setting)]
    return [*options, "-i", identity] if identity else options


def _last_line(done: subprocess.CompletedProcess[str]) -> str:
    return (done.stderr.strip().splitlines() or ["(no message)"])[-1]


def adopt(stack: str, *, known_hosts: Path | None, fingerprint: str | None, say: Callable[[str], None] = print) -> None:
    resources = export(stack)
    urn = key_urn(resources, stack)
    key = stack_key(resources, urn)
    user, address = login(resources, stack)
    identity = private_key_path(stack)
    if key is not None:
        target = SshTarget(user=user, private_key_path=identity, host_key=key.public)
        pinned = subprocess.run([*ssh_argv(target, address), "true"], capture_output=True, text=True, check=False)
        if pinned.returncode == 0:
            say(f"ok the host at {address} already answers with the stack's key {target.host_key_fingerprint}")
            return
    with tempfile.TemporaryDirectory(prefix="memos-adopt-") as work:
        # The trust of today first: a wrong file or fingerprint changes nothing, not even the state.
        trusted = trusted_today(address, known_hosts, fingerprint, Path(work))
        old_login = ["ssh", *old_trust_options(trusted, identity), f"{user}@{address}"]
        checked = subprocess.run([*old_login, "true"], capture_output=True, text=True, check=False)
        if checked.returncode != 0:
            message = _last_line(checked)
            raise AdoptError(f"cannot log in to {user}@{address} with the host key trusted today: {message}")
        say(f"ok logged in to {user}@{address}, trusting only the host key in {fingerprint or trusted}")
        if key is None:
            say(f"creating the host key in stack {stack}: pulumi up --target {urn}")
            created = _pulumi(["up", "--stack", stack, "--target", urn, "--yes", "--skip-preview"], capture=False)
            if created.returncode != 0:
                raise AdoptError(f"pulumi up --target {urn} failed (its output is above)")
            key = stack_key(export(stack), urn)
            if key is None:
                raise AdoptError(f"{urn} is still not in stack {stack} after the targeted up")
        target = SshTarget(user=user, private_key_path=identity, host_key=key.public)
        remote = f"sh -c {shlex.quote(INSTALL_SCRIPT)} memos-adopt-host-key {shlex.quote(key.public)}"
        if user != "root":
            remote = f"sudo -n {remote}"
        installed = subprocess.run([*old_login, remote], input=key.private, capture_output=True, text=True,
                                   check=False)  # fmt: skip
    if installed.returncode != 0:
        raise AdoptError(f"installing the key on {address} failed, the host keeps its key: {_last_line(installed)}")
    say(f"ok the host's only SSH key is now the stack's {target.host_key_fingerprint}; sshd restarted")
    verified = subprocess.run([*ssh_argv(target, address), "true"], capture_output=True, text=True, check=False)
    if verified.returncode != 0:
        raise AdoptError(f"the host does not answer with the pinned key after the install: {_last_line(verified)}")
    say(
        f"ok the pinned ssh options reach the host; run `pulumi up --stack {stack}` (the preview warns that cloud-init "
        "changed until the instance is next replaced: the running host already has what it adds)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.adopt_host_key", description=DESCRIPTION)
    parser.add_argument("--stack", required=True)
    trust = parser.add_mutually_exclusive_group()
    trust.add_argument(
        "--known-hosts", type=Path, help=f"the host's key as trusted until now (default {OLD_KNOWN_HOSTS})"
    )
    trust.add_argument("--fingerprint", help="SHA256:... of the host's current key, read on its console")
    args = parser.parse_args(argv)
    known_hosts = args.known_hosts
    if known_hosts is None and args.fingerprint is None:
        known_hosts = Path(OLD_KNOWN_HOSTS.format(stack=args.stack)).expanduser()
    try:
        adopt(args.stack, known_hosts=known_hosts, fingerprint=args.fingerprint)
    except AdoptError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
