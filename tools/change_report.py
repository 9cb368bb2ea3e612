"""The change report of a `pulumi preview --json`: what a change does to data and to uptime, in plain words.

Every step of the preview goes into one group:

- **data at risk**: a replace or delete of something that holds data or identity: a Docker volume,
  the data disk (and its attachment: a replaced attachment moves the disk), the RDS instance or its
  database, the OSS bucket, the elastic IP, or the ECS instance itself (drain and disk move);
- **restarts**: containers replaced or deleted, each named, with whether the app is unavailable
  meanwhile (a container with a fixed name or host port is deleted before its replacement is
  created; behind the proxy the app has neither, so its replacement starts first), and the in-place
  updates that restart something (an ECS instance type or image, an RDS major version);
- **other changes**: every other create, replace or delete;
- **in-place updates**;
- **unchanged**: a count (the preview's change summary; the real CLI lists no step for most of them).

The Markdown puts the first two groups on top and says why each step happens when the step tells:
its `detailedDiff` keys (`diff: ~name`), else its `diffReasons`, else the inputs whose old and new
values differ. Only operations, types, resource names and property names are printed, never a
property's value: the one value shown is a resource's own `name` input, and only when it is a plain
identifier (a secret shows as `[secret]` in the preview and is never one).

`--offline` runs the program on the mock engine instead (no cloud, no state), as the offline check
does: it cannot compute a diff, so it lists the resources that hold data and their protection.

    pulumi preview --stack prod --json > preview.json
    uv run python -m tools.change_report preview.json
    uv run python -m tools.change_report --fail-on-data-risk < preview.json   # exit 1: data at risk
    uv run python -m tools.change_report --fail-on-changes drift.json         # exit 1: any change
    uv run python -m tools.change_report --offline --stack prod

Exit status: 0, or 1 for `--fail-on-data-risk`/`--fail-on-changes`, or 2 for input that is not a
preview (one line on stderr naming the problem and the fix).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pulumi

from harness.mock_engine import Registered, run_program
from lib.errors import ConfigError
from settings import SECRET_KEYS
from tools.offline_check import PLACEHOLDER

#: What the engine puts in a preview for a value known only once the step runs.
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
#: GitHub refuses a comment or issue body over 65,536 characters; the report stays below with room
#: for the workflow's own lines.
COMMENT_LIMIT = 60_000

#: The real CLI (v3.276.0, real-run/) prints one `replace` step per replaced resource; the engine's
#: own step kinds for the two halves of a replacement are folded into it.
REPLACE_OPS = frozenset({"replace", "create-replacement", "delete-replaced"})
#: What loses a resource: its replacement or its deletion.
REMOVING = frozenset({"replace", "delete"})
UNCHANGED_OPS = frozenset({"same", "read", "refresh"})

#: A `name` input or resource name printed as it is: a plain identifier, nothing that needs escaping.
PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}")
#: A property path printed as it is (`name`, `envs[3]`, `healthcheck.interval`, `labels["a.b"]`).
PLAIN_PATH = re.compile(r"[A-Za-z0-9_.\[\]\"*-]{1,120}")

VOLUME = "docker:index/volume:Volume"
CONTAINER = "docker:index/container:Container"
INSTANCE = "alicloud:ecs/instance:Instance"
RDS_INSTANCE = "alicloud:rds/instance:Instance"
STACK = "pulumi:pulumi:Stack"
DIFF_MARKS = {"add": "+", "add-replace": "+", "delete": "-", "delete-replace": "-"}


class ReportError(Exception):
    """Input that is not a preview: one line naming the problem and the fix."""


@dataclass(frozen=True)
class Holder:
    """A kind of resource that holds data or identity, and what replacing or deleting it means."""

    kind: str
    holds: str
    on_replace: str
    on_delete: str
    #: A replacement deletes the old one with what it holds (unless it is retained on delete).
    deletes_old: bool = True


DISK = "alicloud:ecs/ecsDisk:EcsDisk"
ATTACHMENT = "alicloud:ecs/ecsDiskAttachment:EcsDiskAttachment"
GONE = "its data goes with it"

#: What replacing or deleting each stateful type loses or moves.
STATEFUL: Mapping[str, Holder] = {
    VOLUME: Holder("volume", "its data", "the new volume starts empty", GONE),
    DISK: Holder(
        "data disk",
        "Docker's data root on the host: the database, the app's files and the dumps",
        "the new disk starts empty",
        GONE,
    ),
    ATTACHMENT: Holder(
        "data disk attachment",
        "where the data disk is attached",
        "the disk is detached and attached again (it moves): Docker and every container stop meanwhile",
        "the disk is detached from the host: Docker's data root leaves with it",
        deletes_old=False,
    ),
    RDS_INSTANCE: Holder(
        "RDS instance", "the managed database server and all its data", "the new instance starts empty", GONE
    ),
    "alicloud:rds/database:Database": Holder(
        "RDS database", "the app's database on RDS", "the new database starts empty", GONE
    ),
    "alicloud:oss/bucket:Bucket": Holder(
        "OSS bucket", "the offsite copies of the dumps", "the new bucket starts empty", "the copies go with it"
    ),
    "alicloud:ecs/eipAddress:EipAddress": Holder(
        "elastic IP",
        "the host's public address",
        "the new address is a different IP: DNS records and allow-lists that name the old one break",
        "the address is released: DNS records and allow-lists that name it break",
        deletes_old=False,
    ),
    INSTANCE: Holder(
        "ECS instance",
        "the host",
        "the old host is drained (every container stops), its data disk is detached and moved to the new "
        "instance, its system disk is lost, and the app is down until the new host is ready",
        "the host is drained and deleted: the app is down",
        deletes_old=False,
    ),
}

#: What each volume holds, by the stable role in its resource name (`volumes-<role>`).
VOLUME_ROLES: Mapping[str, str] = {
    "volumes-database": "the database's data",
    "volumes-app": "the app's data directory",
    "volumes-backups": "the local database dumps",
    "volumes-proxy": "the proxy's TLS certificates",
    "volumes-offsite": "the offsite copier's state",
}


@dataclass(frozen=True)
class Role:
    """A container of the program: what it is, and what its absence means to users."""

    what: str
    while_down: str


CONTAINER_ROLES: Mapping[str, Role] = {
    "app-server": Role("the app", "**the app is unavailable** until its replacement is healthy"),
    "database-server": Role("the database", "the app cannot reach its database until the replacement is healthy"),
    "proxy-server": Role("the HTTPS proxy", "**the site is unreachable** until the replacement is up"),
    "backup-server": Role("the nightly dumps", "no dump runs meanwhile"),
    "backup-offsite": Role("the offsite copier", "no copy is made meanwhile"),
}

#: In-place updates that restart something (pulumi-alicloud: a type change stops and starts the
#: instance, an image change replaces its system disk in place; an RDS `engine_version` change runs
#: UpgradeDBInstanceMajorVersion with an immediate switch-over). The instance ignores `userData`.
UPDATE_RESTARTS: Mapping[tuple[str, str], str] = {
    (INSTANCE, "instanceType"): "stops the host, changes its type and starts it again: every container restarts",
    (INSTANCE, "imageId"): (
        "replaces the host's system disk from the new image in place: what is on the system disk is lost and "
        "the host restarts (the data disk stays)"
    ),
    (RDS_INSTANCE, "engineVersion"): (
        "upgrades PostgreSQL's major version in place with an immediate switch-over: the database is briefly "
        "unavailable"
    ),
}


@dataclass(frozen=True)
class Change:
    """One resource's step, reduced to what the report may print."""

    op: str
    type: str
    name: str
    #: The `name` input before and after, when it is a plain identifier.
    current: str | None
    proposed: str | None
    protected: bool
    retained: bool
    #: Why, in the preview's words (`diff: ~name`), or "" when the step does not say.
    why: str
    #: Top-level properties in the diff.
    properties: frozenset[str]
    #: A container with a fixed name or host port: deleted before its replacement is created.
    fixed: bool


@dataclass(frozen=True)
class Report:
    stack: str
    data_at_risk: tuple[str, ...]
    restarts: tuple[str, ...]
    other: tuple[str, ...]
    updates: tuple[str, ...]
    unchanged: int
    errors: int
    downtime: bool

    @property
    def changes(self) -> int:
        return len(self.data_at_risk) + len(self.restarts) + len(self.other) + len(self.updates)


# --- Reading the preview ------------------------------------------------------------------------------


def _mapping(value: object) -> dict[str, object]:
    return cast("dict[str, object]", value) if isinstance(value, dict) else {}


def _items(value: object) -> list[object]:
    return cast("list[object]", value) if isinstance(value, list) else []


def _strings(value: object) -> list[str]:
    return [item for item in _items(value) if isinstance(item, str)]


def load_preview(text: str, source: str) -> dict[str, object]:
    """The parsed preview, or a ReportError saying what `source` is instead."""
    fix = "give what `pulumi preview --json` prints (e.g. pulumi preview --stack prod --json > preview.json)"
    try:
        document: object = json.loads(text)
    except json.JSONDecodeError as error:
        raise ReportError(f"{source} is not JSON ({error.msg} at line {error.lineno}); {fix}") from None
    preview = _mapping(document)
    if not isinstance(preview.get("steps"), list):
        what = "a JSON object without a `steps` list" if isinstance(document, dict) else "not a JSON object"
        if "resources" in preview or "deployment" in preview:
            what += " (it looks like `pulumi stack export` output)"
        raise ReportError(f"{source} is {what}, not a preview; {fix}")
    for index, step in enumerate(_items(preview["steps"])):
        fields = _mapping(step)
        if not isinstance(fields.get("op"), str) or not isinstance(fields.get("urn"), str):
            raise ReportError(f"{source}: step {index} has no `op` and `urn`, so this is not a preview; {fix}")
    return preview


def urn_parts(urn: str) -> tuple[str, str, str]:
    """(stack, type, name) of `urn:pulumi:<stack>::<project>::<parent type>$<type>::<name>`."""
    head, _, rest = urn.partition("::")
    _project, _, rest = rest.partition("::")
    qualified, _, name = rest.partition("::")
    return head.removeprefix("urn:pulumi:"), qualified.rsplit("$", 1)[-1], name


def plain_name(value: object) -> str | None:
    if isinstance(value, str) and value != UNKNOWN and PLAIN_NAME.fullmatch(value):
        return value
    return None


def _path(path: str) -> str:
    return path if PLAIN_PATH.fullmatch(path) else "(a property)"


def _top(path: str) -> str:
    return re.split(r"[.\[]", path, maxsplit=1)[0]


def _has_unknown(value: object) -> bool:
    if isinstance(value, str):
        return value == UNKNOWN
    return any(_has_unknown(item) for item in [*_mapping(value).values(), *_items(value)])


def why(step: Mapping[str, object], old: Mapping[str, object], new: Mapping[str, object]) -> tuple[str, frozenset[str]]:
    """The step's own reason, as property names with +/-/~ for added, removed, changed."""
    detailed = _mapping(step.get("detailedDiff"))
    if detailed:
        marks = [f"{DIFF_MARKS.get(str(_mapping(d).get('kind')), '~')}{_path(p)}" for p, d in sorted(detailed.items())]
        return "diff: " + ", ".join(marks), frozenset(_top(p) for p in detailed)
    reasons = _strings(step.get("diffReasons"))
    if reasons:
        return "diff: " + ", ".join(f"~{_path(r)}" for r in sorted(reasons)), frozenset(_top(r) for r in reasons)
    if not old or not new:
        return "", frozenset()
    keys = sorted((set(old) | set(new)) - {"__defaults"})
    differing = [key for key in keys if old.get(key) != new.get(key)]
    if not differing:
        return "", frozenset()
    words = ", ".join(f"{_path(k)} (known only at deploy)" if _has_unknown(new.get(k)) else _path(k) for k in differing)
    return f"inputs that differ: {words}", frozenset(differing)


def fixed_name_or_port(inputs: Mapping[str, object]) -> bool:
    """A container whose name or a host port the program sets (not a default the engine filled in)."""
    if "name" in inputs and "name" not in _strings(inputs.get("__defaults")):
        return True
    for port in _items(inputs.get("ports")):
        fields = _mapping(port)
        if "external" in fields and "external" not in _strings(fields.get("__defaults")):
            return True
    return False


def changes(preview: Mapping[str, object]) -> list[Change]:
    """Every step but the stack's and the unchanged ones, one per resource, in the preview's order."""
    found: dict[str, Change] = {}
    for raw in _items(preview.get("steps")):
        step = _mapping(raw)
        op, urn = str(step["op"]), str(step["urn"])
        old_state, new_state = _mapping(step.get("oldState")), _mapping(step.get("newState"))
        _, urn_type, name = urn_parts(urn)
        typ = str(new_state.get("type") or old_state.get("type") or urn_type)
        if op in UNCHANGED_OPS or typ == STACK:
            continue
        old, new = _mapping(old_state.get("inputs")), _mapping(new_state.get("inputs"))
        reason, properties = why(step, old, new)
        change = Change(
            op="replace" if op in REPLACE_OPS else op,
            type=typ,
            name=name,
            current=plain_name(old.get("name")),
            proposed=plain_name(new.get("name")),
            protected=old_state.get("protect") is True or new_state.get("protect") is True,
            retained=old_state.get("retainOnDelete") is True or new_state.get("retainOnDelete") is True,
            why=reason,
            properties=properties,
            fixed=fixed_name_or_port(new or old),
        )
        earlier = found.get(urn)
        if earlier is None or (not earlier.why and change.why):
            found[urn] = change
    return list(found.values())


def unchanged_count(preview: Mapping[str, object]) -> int:
    summary = _mapping(preview.get("changeSummary"))
    same = summary.get("same")
    if isinstance(same, int):
        return same
    return sum(1 for step in _items(preview.get("steps")) if _mapping(step).get("op") == "same")


def error_count(preview: Mapping[str, object]) -> int:
    return sum(1 for d in _items(preview.get("diagnostics")) if _mapping(d).get("severity") == "error")


# --- Sorting the steps ----------------------------------------------------------------------------------


def _code(name: str) -> str:
    return f"`{name}`" if PLAIN_NAME.fullmatch(name) else f"`{re.sub(r'[^A-Za-z0-9_.@-]', '?', name)[:128]}`"


def named(change: Change) -> str:
    """The resource as users know it: its `name` input (old, and new when it changes), else its resource name."""
    current = change.current or change.proposed
    if current is None:
        return _code(change.name)
    if change.proposed and change.proposed != current:
        return f"{_code(current)} (new name {_code(change.proposed)})"
    return _code(current)


def kind_of(typ: str) -> str:
    """`docker:index/network:Network` -> "network", `alicloud:ecs/securityGroupRule:...` -> "security group rule"."""
    last = typ.rsplit(":", 1)[-1]
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", last).lower() or typ


def _because(change: Change) -> str:
    return f" Why: {change.why}." if change.why else " The preview gives no reason."


def data_risk_line(change: Change, holder: Holder) -> str:
    verb = "replaces" if change.op == "replace" else "deletes"
    holds = VOLUME_ROLES.get(change.name, holder.holds) if change.type == VOLUME else holder.holds
    if change.op == "replace":
        consequence = holder.on_replace
        if holder.deletes_old and change.retained:
            consequence += "; the old one leaves the stack but is kept (retain on delete)"
        elif holder.deletes_old:
            consequence += ", and the old one is deleted"
    else:
        consequence = "it leaves the stack but is kept (retain on delete)" if change.retained else holder.on_delete
    line = f"**{verb} {holder.kind} {named(change)}**: {holds}. {consequence[0].upper()}{consequence[1:]}."
    line += _because(change)
    if change.protected:
        line += (
            " It is protected: `pulumi up` refuses this step, but only when it reaches it, after the merge"
            " and after the steps before it have run."
        )
    return line


def restart_line(change: Change) -> tuple[str, bool]:
    """The line for a replaced or deleted container, and whether the app is unavailable meanwhile."""
    role = CONTAINER_ROLES.get(change.name)
    what = f" ({role.what})" if role else ""
    if change.op != "replace":
        return f"**deletes container {named(change)}**{what}.{_because(change)}", change.name == "app-server"
    if change.fixed:
        effect = "it has a fixed name or host port, so the old container is deleted before the new one is created"
        if role:
            effect += f": {role.while_down}"
        down = change.name in ("app-server", "proxy-server")
    else:
        effect = "the new container starts before the old one stops"
        if change.name == "app-server":
            effect += " (behind the proxy): no downtime"
        down = False
    return f"**replaces container {named(change)}**{what}: {effect}.{_because(change)}", down


def other_line(change: Change) -> str:
    verbs = {"replace": "replaces", "delete": "deletes", "create": "creates", "update": "updates"}
    verb = verbs.get(change.op, f"{change.op}:")
    return f"{verb} {kind_of(change.type)} {named(change)} ({change.type}).{_because(change)}"


def classify(found: Iterable[Change], *, stack: str, unchanged: int, errors: int) -> Report:
    """Sort the steps into the report's groups."""
    risk: list[str] = []
    restarts: list[str] = []
    other: list[str] = []
    updates: list[str] = []
    downtime = False
    for change in found:
        holder = STATEFUL.get(change.type)
        if holder is not None and change.op in REMOVING:
            risk.append(data_risk_line(change, holder))
        elif change.type == CONTAINER and change.op in REMOVING:
            line, down = restart_line(change)
            restarts.append(line)
            downtime = downtime or down
        elif change.op == "update" and any((change.type, p) in UPDATE_RESTARTS for p in change.properties):
            effects = [
                UPDATE_RESTARTS[(change.type, p)]
                for p in sorted(change.properties)
                if (change.type, p) in UPDATE_RESTARTS
            ]
            kind = holder.kind if holder else kind_of(change.type)
            restarts.append(f"**updates {kind} {named(change)}**: {'; '.join(effects)}.{_because(change)}")
            downtime = True
        elif change.op == "update":
            updates.append(other_line(change))
        else:
            other.append(other_line(change))
    return Report(stack, tuple(risk), tuple(restarts), tuple(other), tuple(updates), unchanged, errors, downtime)


def report_of(preview: Mapping[str, object]) -> Report:
    steps = [_mapping(step) for step in _items(preview.get("steps"))]
    stack = urn_parts(str(steps[0]["urn"]))[0] if steps else "?"
    return classify(changes(preview), stack=stack, unchanged=unchanged_count(preview), errors=error_count(preview))


# --- Markdown ---------------------------------------------------------------------------------------


def _count(n: int, one: str) -> str:
    return f"{n} {one}" if n == 1 else f"{n} {one}s"


def headline(report: Report) -> str:
    if report.data_at_risk:
        first = f"**Data at risk: {_count(len(report.data_at_risk), 'step')}.**"
    else:
        first = "Nothing that holds data is replaced or deleted."
    counts = (
        f"Restarts: {len(report.restarts)}. Other changes: {len(report.other)}. "
        f"In-place updates: {len(report.updates)}. Unchanged: {report.unchanged}."
    )
    down = " **The app is briefly unavailable.**" if report.downtime else ""
    return f"{first}{down} {counts}"


def _section(title: str, lines: Sequence[str], empty: str) -> list[str]:
    return [f"#### {title}", "", *([f"- {line}" for line in lines] or [empty]), ""]


def render(report: Report, limit: int = COMMENT_LIMIT) -> str:
    """The report as Markdown, cut to `limit` characters by dropping the last lines of the later groups."""
    groups = [list(report.restarts), list(report.other), list(report.updates)]
    hidden = 0
    while True:
        text = _render(report, groups, hidden)
        if len(text) <= limit or not any(groups):
            return text
        for group in reversed(groups):
            if group:
                group.pop()
                hidden += 1
                break


def _render(report: Report, groups: Sequence[Sequence[str]], hidden: int) -> str:
    restarts, other, updates = groups
    lines = [f"### Change report: stack {report.stack}", "", headline(report), ""]
    if report.errors:
        lines += [
            f"The preview reported {_count(report.errors, 'error')} and may have stopped early: "
            "this list can be incomplete (the messages are in the preview's `diagnostics`).",
            "",
        ]
    lines += _section(
        "Data at risk",
        report.data_at_risk,
        "None: no volume, disk, database, bucket, address or host is replaced or deleted.",
    )
    lines += _section("Restarts", restarts, "None: no container is replaced.")
    lines += _section("Other changes", other, "") if other else []
    lines += _section("In-place updates", updates, "") if updates else []
    if hidden:
        lines += [f"… and {_count(hidden, 'more step')} not shown here (the comment's size limit).", ""]
    lines += ["#### Unchanged", "", f"{_count(report.unchanged, 'resource')}."]
    return "\n".join(lines) + "\n"


# --- Offline: what the mock engine can say ----------------------------------------------------------


def _yes(value: object) -> str:
    return "yes" if value is True else "no"


def offline_lines(stack: str, resources: Iterable[Registered]) -> list[str]:
    """The stateful resources the program declares and their protection; the containers' replacement order."""
    stateful: list[str] = []
    containers: list[str] = []
    for r in resources:
        name = plain_name(r.inputs.get("name"))
        label = f"{_code(name)} ({r.name})" if name else _code(r.name)
        holder = STATEFUL.get(r.type)
        if holder is not None:
            holds = VOLUME_ROLES.get(r.name, holder.holds) if r.type == VOLUME else holder.holds
            stateful.append(
                f"| {label} | {holder.kind} | {holds} | {_yes(r.options.get('protect'))}"
                f" | {_yes(r.options.get('retain_on_delete'))} |"
            )
        elif r.type == CONTAINER:
            role = CONTAINER_ROLES.get(r.name)
            if r.options.get("delete_before_replace") is True:
                order = "the old one stops first" + (f": {role.while_down}" if role else "")
            else:
                order = "the new one starts before the old one stops"
            containers.append(f"| {label} | {role.what if role else ''} | {order} |")
    return [
        f"### Change report: stack {stack} (offline)",
        "",
        "**No diff.** This run has no cloud credentials and no state (a fork, or a repository without the"
        " cloud secrets), so it cannot say what this change replaces, deletes or restarts. What the program"
        " declares, run on the mock engine:",
        "",
        "#### Resources that hold data",
        "",
        "| resource | kind | holds | protected | retained on delete |",
        "|---|---|---|---|---|",
        *stateful,
        "",
        "A protected resource makes `pulumi up` refuse its replacement or deletion, but only when the step runs.",
        "",
        "#### Containers, if replaced",
        "",
        "| container | role | on replacement |",
        "|---|---|---|",
        *containers,
    ]


def offline_report(stack: str) -> str:
    try:
        run = run_program(stack, secrets=dict.fromkeys(SECRET_KEYS, PLACEHOLDER))
    except (pulumi.RunError, ConfigError) as error:
        raise ReportError(f"the program stops on stack {stack}: {error}") from None
    return "\n".join(offline_lines(stack, run.resources.values())) + "\n"


# --- Command line -----------------------------------------------------------------------------------


def read_preview(path: str) -> dict[str, object]:
    source = "stdin" if path == "-" else path
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as error:
        raise ReportError(
            f"cannot read {source}: {error.strerror}; give the file `pulumi preview --json` wrote"
        ) from None
    return load_preview(text, source)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.change_report", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("preview", nargs="?", default="-", help="`pulumi preview --json` output (default: stdin)")
    parser.add_argument("--fail-on-data-risk", action="store_true", help="exit 1 when any step puts data at risk")
    parser.add_argument("--fail-on-changes", action="store_true", help="exit 1 when any step changes anything")
    parser.add_argument("--offline", action="store_true", help="no preview: the program on the mock engine")
    parser.add_argument("--stack", help="with --offline: the stack config to run, e.g. prod")
    args = parser.parse_args(argv)
    try:
        if args.offline:
            if not args.stack or args.preview != "-":
                raise ReportError(
                    "--offline runs the program itself: give --stack (e.g. --stack prod) and no preview file"
                )
            print(offline_report(str(args.stack)), end="")
            return 0
        report = report_of(read_preview(str(args.preview)))
    except ReportError as error:
        print(error, file=sys.stderr)
        return 2
    print(render(report), end="")
    failed = (args.fail_on_data_risk and report.data_at_risk) or (args.fail_on_changes and report.changes)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
