"""Post-deploy verification of a stack: the database, its extensions and settings, the app.

    ./scripts/dev uv run python -m tools.verify --stack dev    (the dev stack's backend and passphrase)
    uv run python -m tools.verify --stack prod

Reads the stack's outputs with `pulumi stack output --json --show-secrets` (so it needs the stack's
passphrase and backend, like any `pulumi` command), reaches the database (dev: the loopback port;
prod: an SSH tunnel to the database container, which publishes no port), and checks that the
database answers as the app's role, that `vector` and `btree_gist` exist at the expected versions,
that every live setting equals the memory plan, that the app's /healthz answers 200, and that the
last nightly dump succeeded. Prints one line per check and exits 1 if any failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from lib.images import ANY_VERSION


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def same_setting(live: str, planned: str) -> bool:
    """PostgreSQL prints floats in their shortest form (1.0 -> 1); everything else as set."""
    try:
        return float(live) == float(planned)
    except ValueError:
        return live == planned


def check_database(dsn: str, settings: Mapping[str, str], extensions: Mapping[str, str | None]) -> list[Check]:
    try:
        conn = psycopg.connect(dsn, connect_timeout=10)
    except psycopg.OperationalError as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else "no answer"
        return [Check("database answers", False, reason)]
    checks: list[Check] = []
    with conn:
        row = conn.execute("SELECT current_user, current_setting('server_version')").fetchone()
        user, version = (str(row[0]), str(row[1])) if row else ("?", "?")
        checks.append(Check("database answers", True, f"as {user}, PostgreSQL {version}"))
        installed = {str(name): str(ver) for name, ver in conn.execute("SELECT extname, extversion FROM pg_extension")}
        for name, wanted in sorted(extensions.items()):
            have = installed.get(name)
            if have is None:
                checks.append(Check(f"extension {name}", False, "not installed"))
            elif wanted is not None and have != wanted:
                checks.append(Check(f"extension {name}", False, f"version {have}, the image ships {wanted}"))
            else:
                checks.append(Check(f"extension {name}", True, f"version {have}"))
        drift: list[str] = []
        for name, planned in settings.items():
            row = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
            live = str(row[0]) if row else "?"
            if not same_setting(live, planned):
                drift.append(f"{name} is {live}, planned {planned}")
        checks.append(Check("settings equal the plan", not drift, "; ".join(drift) or f"all {len(settings)} settings"))
    return checks


def check_app(app_url: str) -> Check:
    url = app_url.rstrip("/") + "/healthz"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (the stack's own URL)
            return Check("app /healthz", response.status == 200, f"{url} answered {response.status}")
    except urllib.error.HTTPError as error:
        return Check("app /healthz", False, f"{url} answered {error.code}")
    except (urllib.error.URLError, OSError) as error:
        return Check("app /healthz", False, f"{url}: {getattr(error, 'reason', error)}")


#: `memos-backup health`'s two lines that carry a status file's "<epoch> <label> [<file>]"
#: (ops/container/memos-backup): "last dump: ..." and "the last dump failed (...)".
_STAMPED = re.compile(r"^(?P<head>last dump: |the last dump failed \()(?P<epoch>\d+) (?P<rest>.*?)(?P<close>\)?)$")


def age(seconds: float) -> str:
    """A short age: minutes under an hour, hours under two days, then days (rounded down)."""
    minutes = max(0, int(seconds // 60))
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} h"
    return f"{minutes // 1440} d"


def readable_health(line: str, now: float) -> str:
    """The backup container's health line with its epoch as a UTC time and an age.

    "last dump: 1796294177 scheduled memos-...dump" -> "last dump: 2026-12-01 18:00 UTC, 5 h ago
    (scheduled, memos-...dump)"; any other line is returned as it is.
    """
    match = _STAMPED.match(line)
    if match is None:
        return line
    epoch = int(match["epoch"])
    when = datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")
    details = ", ".join(match["rest"].split())
    if match["close"]:
        return f"{match['head']}{when}, {age(now - epoch)} ago, {details})"
    return f"{match['head']}{when}, {age(now - epoch)} ago ({details})"


def check_backups(shell_prefix: Sequence[str], backup_container: str, *, now: float | None = None) -> Check:
    remote = ["docker", "exec", backup_container, "/bin/sh", "/usr/local/bin/memos-backup", "health"]
    argv = [*shell_prefix, shlex.join(remote)] if shell_prefix else remote
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    detail = (result.stdout.strip() or result.stderr.strip() or f"exit {result.returncode}").splitlines()[-1]
    return Check("nightly backup", result.returncode == 0, readable_health(detail, time.time() if now is None else now))


def with_endpoint(dsn: str, host: str, port: int) -> str:
    """The program's DSN, pointed at an endpoint this machine can reach."""
    parts = urlsplit(dsn)
    credentials = parts.netloc.rsplit("@", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{credentials}@{host}:{port}"))


def stack_outputs(stack: str) -> dict[str, Any]:
    argv = ["pulumi", "stack", "output", "--json", "--show-secrets", "--stack", stack]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"`{shlex.join(argv)}` failed: {result.stderr.strip()}")
    return dict(json.loads(result.stdout))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tunnel_target(outputs: Mapping[str, Any], ssh: Sequence[str]) -> tuple[str, int]:
    """Where prod's database answers, as seen from the host: the RDS private endpoint, or the database
    container's address on the stack's network (it publishes no port)."""
    if "rds_endpoint" in outputs:
        host, _, port = str(outputs["rds_endpoint"]).rpartition(":")
        return host, int(port)
    # ssh joins its remote words with spaces for the host's shell: the template must stay one word.
    template = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
    inspect = [*ssh, shlex.join(["docker", "inspect", "-f", template, str(outputs["db_container"])])]
    return subprocess.run(inspect, capture_output=True, text=True, check=True, timeout=60).stdout.strip(), 5432


@contextlib.contextmanager
def database_endpoint(outputs: Mapping[str, Any]) -> Generator[tuple[str, int]]:
    """dev: the published loopback port; prod: an SSH tunnel through the host to the database."""
    if "db_endpoint" in outputs:
        host, _, port = str(outputs["db_endpoint"]).rpartition(":")
        yield host, int(port)
        return
    ssh = shlex.split(str(outputs["ssh_command"]))
    address, remote_port = tunnel_target(outputs, ssh)
    port = _free_port()
    tunnel = subprocess.Popen([*ssh[:-1], "-N", "-o", "ExitOnForwardFailure=yes",
                               "-L", f"127.0.0.1:{port}:{address}:{remote_port}", ssh[-1]])  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and tunnel.poll() is None:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.3)
        yield "127.0.0.1", port
    finally:
        tunnel.terminate()
        tunnel.wait(timeout=10)


def expected_versions(outputs: Mapping[str, Any]) -> dict[str, str | None]:
    """The extensions the stack expects, by name: a version, or None for any version. Stacks last
    deployed before the output was renamed still carry it as `db_extensions`, with null for any."""
    expected = outputs["db_extensions_expected"] if "db_extensions_expected" in outputs else outputs["db_extensions"]
    return {str(k): None if v in (None, ANY_VERSION) else str(v) for k, v in dict(expected).items()}


def verify(outputs: Mapping[str, Any]) -> list[Check]:
    """Every check that applies to the stack. On RDS there is no memory plan to compare (RDS sizes its
    own settings) and no dump container (RDS keeps its backups): those two checks are not made."""
    shell_prefix = shlex.split(str(outputs["ssh_command"])) if "ssh_command" in outputs else []
    with database_endpoint(outputs) as (host, port):
        checks = check_database(
            with_endpoint(str(outputs["app_dsn"]), host, port),
            {str(k): str(v) for k, v in dict(outputs.get("db_settings") or {}).items()},
            expected_versions(outputs),
        )
    if "db_settings" not in outputs:
        checks = [c for c in checks if c.name != "settings equal the plan"]
    checks.append(check_app(str(outputs["app_url"])))
    if "backup_container" in outputs:
        checks.append(check_backups(shell_prefix, str(outputs["backup_container"])))
    return checks


def report(checks: Sequence[Check]) -> int:
    for check in checks:
        print(f"{'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}")
    failed = [c for c in checks if not c.ok]
    print(f"{len(checks) - len(failed)} of {len(checks)} checks passed")
    return 1 if failed else 0


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.verify", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--stack", required=True, help="the Pulumi stack to verify, e.g. dev or prod")
    args = parser.parse_args(argv)
    return report(verify(stack_outputs(args.stack)))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
