"""The change report: real previews recorded from the real CLI (tests/tools/data/), and prod-like steps
built in their shape, sorted into data at risk, restarts, other changes, in-place updates and unchanged.
"""

from __future__ import annotations

import copy
import io
import json
import re
from itertools import count
from pathlib import Path
from typing import Any

import pytest

from tools import change_report
from tools.change_report import COMMENT_LIMIT, UNKNOWN, load_preview, render, report_of
from tools.offline_check import PLACEHOLDER

DATA = Path(__file__).parent / "data"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "pull-request-checks.md"
DOCKER_PROVIDER = "urn:pulumi:prod::memos::pulumi:providers:docker::docker::355cdeb3-e919-49b2-9fc0-8e9934fcfcae"
ALICLOUD_PROVIDER = "urn:pulumi:prod::memos::pulumi:providers:alicloud::default_3_86_1::1c5e3a6c-6d0b-4c47-9a3b"


def recorded(name: str) -> dict[str, Any]:
    return json.loads((DATA / f"preview-{name}.json").read_text())


def report_text(preview: dict[str, Any]) -> str:
    return render(report_of(load_preview(json.dumps(preview), "preview.json")))


def section(text: str, title: str) -> str:
    """The lines under `#### title`, up to the next heading."""
    match = re.search(rf"^#### {re.escape(title)}\n\n(.*?)(?=^#### |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    assert match, f"no section {title!r} in:\n{text}"
    return match.group(1).strip()


def step(
    op: str,
    typ: str,
    name: str,
    inputs: dict[str, Any],
    *,
    new_inputs: dict[str, Any] | None = None,
    diff: dict[str, str] | None = None,
    protect: bool = False,
    retain: bool = False,
    parent: str = "memos:index:EcsHost",
) -> dict[str, Any]:
    """A prod step in the shape the real CLI prints (see preview-name-prefix-change.json)."""
    urn = f"urn:pulumi:prod::memos::{parent}${typ}::{name}"
    provider = DOCKER_PROVIDER if typ.startswith("docker:") else ALICLOUD_PROVIDER
    old: dict[str, Any] = {
        "urn": urn,
        "custom": True,
        "id": f"{name}-id",
        "type": typ,
        "inputs": inputs,
        "outputs": dict(inputs),
        "parent": f"urn:pulumi:prod::memos::{parent}::host",
        "provider": provider,
    }
    if protect:
        old["protect"] = True
    if retain:
        old["retainOnDelete"] = True
    result: dict[str, Any] = {"op": op, "urn": urn, "provider": provider, "oldState": old}
    if op != "delete":
        new = {key: value for key, value in old.items() if key not in ("id", "outputs")}
        new["inputs"] = new_inputs if new_inputs is not None else inputs
        result["newState"] = new
    if diff:
        result["diffReasons"] = sorted(diff)
        result["detailedDiff"] = {key: {"kind": kind, "inputDiff": True} for key, kind in diff.items()}
        if op == "replace":
            result["replaceReasons"] = sorted(k for k, kind in diff.items() if kind.endswith("-replace"))
    else:
        result["detailedDiff"] = None
    return result


def prod_preview(*steps: dict[str, Any], same: int = 40) -> dict[str, Any]:
    stack = {
        "op": "same",
        "urn": "urn:pulumi:prod::memos::pulumi:pulumi:Stack::memos-prod",
        "oldState": {"urn": "urn:pulumi:prod::memos::pulumi:pulumi:Stack::memos-prod", "type": "pulumi:pulumi:Stack"},
        "newState": {"urn": "urn:pulumi:prod::memos::pulumi:pulumi:Stack::memos-prod", "type": "pulumi:pulumi:Stack"},
        "detailedDiff": None,
    }
    ops: dict[str, int] = {"same": same}
    for s in steps:
        ops[s["op"]] = ops.get(s["op"], 0) + 1
    return {"config": {}, "steps": [stack, *steps], "diagnostics": [], "changeSummary": ops}


# --- The recorded previews -------------------------------------------------------------------------


def test_a_preview_without_changes_puts_nothing_at_risk_and_counts_every_resource_unchanged(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert change_report.main(["--fail-on-data-risk", "--fail-on-changes", str(DATA / "preview-no-changes.json")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("### Change report: stack dev\n")
    assert "Nothing that holds data is replaced or deleted." in out
    assert section(out, "Data at risk").startswith("None:")
    assert section(out, "Restarts") == "None: no container is replaced."
    assert section(out, "Unchanged") == "21 resources."  # the CLI prints one step; its summary counts 21


def test_rotating_an_ai_key_replaces_only_the_app_and_says_it_is_briefly_down() -> None:
    text = report_text(recorded("ai-key-rotation"))
    assert section(text, "Data at risk").startswith("None:")
    assert section(text, "Restarts") == (
        "- **replaces container `memos-app`** (the app): it has a fixed name or host port, so the old container is"
        " deleted before the new one is created: **the app is unavailable** until its replacement is healthy."
        " Why: diff: ~uploads."
    )
    assert "**The app is briefly unavailable.**" in text
    assert section(text, "Unchanged") == "20 resources."
    assert "#### Other changes" not in text and "#### In-place updates" not in text


def test_a_name_prefix_change_puts_the_volumes_at_risk(capsys: pytest.CaptureFixture[str]) -> None:
    assert change_report.main(["--fail-on-data-risk", str(DATA / "preview-name-prefix-change.json")]) == 1
    risk = section(capsys.readouterr().out, "Data at risk").splitlines()
    assert risk == [
        "- **replaces volume `memos-appdata` (new name `memosx-appdata`)**: the app's data directory."
        " The new volume starts empty, and the old one is deleted. Why: diff: ~name.",
        "- **replaces volume `memos-pgdata` (new name `memosx-pgdata`)**: the database's data."
        " The new volume starts empty, and the old one is deleted. Why: diff: ~name.",
        "- **replaces volume `memos-backups` (new name `memosx-backups`)**: the local database dumps."
        " The new volume starts empty, and the old one is deleted. Why: diff: ~name.",
    ]


def test_a_name_prefix_change_restarts_every_container_and_names_each() -> None:
    text = report_text(recorded("name-prefix-change"))
    restarts = section(text, "Restarts").splitlines()
    names = [re.match(r"- \*\*replaces container `([^`]+)`", line) for line in restarts]
    assert [m.group(1) for m in names if m] == ["memos-postgres", "memos-backup", "memos-app"]
    assert text.count("**the app is unavailable**") == 1
    assert section(text, "Other changes").splitlines() == [
        "- replaces network `memos-net` (new name `memosx-net`) (docker:index/network:Network). Why: diff: ~name.",
        "- replaces command `database-role-job` (command:local:Command). Why: inputs that differ: create,"
        " triggers (known only at deploy).",
    ]
    assert section(text, "In-place updates") == (
        "- updates command `backup-pre-upgrade-dump` (command:local:Command). Why: diff: ~create."
    )
    assert section(text, "Unchanged") == "12 resources."
    assert text.splitlines()[2] == (
        "**Data at risk: 3 steps.** **The app is briefly unavailable.** Restarts: 3. Other changes: 2."
        " In-place updates: 1. Unchanged: 12."
    )


def test_a_step_without_a_diff_of_its_own_names_the_inputs_that_differ() -> None:
    # The real CLI gives the containers replaced through a renamed volume no detailedDiff at all.
    restarts = section(report_text(recorded("name-prefix-change")), "Restarts")
    assert restarts.count("Why: inputs that differ: name, networksAdvanced, volumes.") == 3


def test_the_report_reads_the_preview_from_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO((DATA / "preview-name-prefix-change.json").read_text()))
    assert change_report.main([]) == 0
    assert "replaces volume `memos-pgdata`" in capsys.readouterr().out


def test_fail_on_changes_exits_1_on_any_change_and_0_on_none(capsys: pytest.CaptureFixture[str]) -> None:
    assert change_report.main(["--fail-on-changes", str(DATA / "preview-ai-key-rotation.json")]) == 1
    assert change_report.main(["--fail-on-changes", str(DATA / "preview-no-changes.json")]) == 0
    assert change_report.main(["--fail-on-data-risk", str(DATA / "preview-ai-key-rotation.json")]) == 0
    capsys.readouterr()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("state-dev-after-up.json", "is a JSON object without a `steps` list (it looks like `pulumi stack export`"),
        ("Updating (dev):\n  pulumi:pulumi:Stack memos-dev\n", "is not JSON (Expecting value at line 1)"),
        ('[{"op": "same"}]', "is not a JSON object, not a preview"),
        ('{"steps": [{"op": "same"}]}', "step 0 has no `op` and `urn`, so this is not a preview"),
    ],
    ids=["a stack export", "the text preview", "a JSON list", "a step without a urn"],
)
def test_input_that_is_not_a_preview_is_refused_in_one_line_with_the_fix(
    content: str, problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = DATA / content if content.endswith(".json") else tmp_path / "preview.json"
    if not content.endswith(".json"):
        path.write_text(content)
    assert change_report.main([str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert problem in line
    assert line.endswith(
        "give what `pulumi preview --json` prints (e.g. pulumi preview --stack prod --json > preview.json)"
    )


def test_a_missing_file_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "preview.json"
    assert change_report.main([str(missing)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == f"cannot read {missing}: No such file or directory; give the file `pulumi preview --json` wrote"


# --- Prod-like steps --------------------------------------------------------------------------------


def test_replacing_the_host_puts_the_disk_the_database_the_address_and_the_instance_at_risk() -> None:
    preview = prod_preview(
        step("replace", "alicloud:ecs/instance:Instance", "host-instance", {"instanceName": "memos-host"},
             diff={"vswitchId": "update-replace"}, protect=True),
        step("replace", "alicloud:ecs/ecsDisk:EcsDisk", "host-data-disk", {"diskName": "memos-data"},
             diff={"zoneId": "update-replace"}, protect=True, retain=True),
        step("replace", "alicloud:ecs/ecsDiskAttachment:EcsDiskAttachment", "host-data-disk-attachment", {},
             diff={"instanceId": "update-replace"}),
        step("replace", "alicloud:ecs/eipAddress:EipAddress", "host-public-ip", {"addressName": "memos-ip"},
             diff={"isp": "update-replace"}, protect=True),
        step("replace", "alicloud:rds/instance:Instance", "rds-instance", {"instanceName": "memos-pg"},
             diff={"zoneId": "update-replace"}, protect=True, retain=True, parent="memos:index:RdsDatabase"),
        step("replace", "alicloud:rds/database:Database", "rds-database", {"dataBaseName": "memos"},
             diff={"instanceId": "update-replace"}, parent="memos:index:RdsDatabase"),
    )  # fmt: skip
    risk = section(report_text(preview), "Data at risk").splitlines()
    assert [line.split("**")[1] for line in risk] == [
        "replaces ECS instance `host-instance`",
        "replaces data disk `host-data-disk`",
        "replaces data disk attachment `host-data-disk-attachment`",
        "replaces elastic IP `host-public-ip`",
        "replaces RDS instance `rds-instance`",
        "replaces RDS database `rds-database`",
    ]
    instance, disk, attachment, address, rds, database = risk
    assert "its data disk is detached and moved to the new instance" in instance
    assert "Why: diff: ~vswitchId." in instance
    assert "The new disk starts empty; the old one leaves the stack but is kept (retain on delete)." in disk
    assert "The disk is detached and attached again (it moves)" in attachment
    assert "DNS records and allow-lists that name the old one break" in address
    assert "the managed database server and all its data" in rds
    assert "The new database starts empty, and the old one is deleted." in database
    protected = "It is protected: `pulumi up` refuses this step, but only when it reaches it, after the merge"
    assert [protected in line for line in risk] == [True, True, False, True, True, False]


def test_deleting_a_volume_puts_its_data_at_risk(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    volume = step("delete", "docker:index/volume:Volume", "volumes-proxy", {"name": "memos-caddy"},
                  parent="memos:index:DataVolumes")  # fmt: skip
    path = tmp_path / "preview.json"
    path.write_text(json.dumps(prod_preview(volume)))
    assert change_report.main(["--fail-on-data-risk", str(path)]) == 1
    assert section(capsys.readouterr().out, "Data at risk") == (
        "- **deletes volume `memos-caddy`**: the proxy's TLS certificates. Its data goes with it."
        " The preview gives no reason."
    )


def test_a_protected_and_retained_volume_says_up_stops_only_when_it_gets_there() -> None:
    volume = step("replace", "docker:index/volume:Volume", "volumes-database", {"name": "memos-pgdata"},
                  new_inputs={"name": "memosx-pgdata"}, diff={"name": "update-replace"}, protect=True, retain=True,
                  parent="memos:index:DataVolumes")  # fmt: skip
    assert section(report_text(prod_preview(volume)), "Data at risk") == (
        "- **replaces volume `memos-pgdata` (new name `memosx-pgdata`)**: the database's data. The new volume"
        " starts empty; the old one leaves the stack but is kept (retain on delete). Why: diff: ~name."
        " It is protected: `pulumi up` refuses this step, but only when it reaches it, after the merge and"
        " after the steps before it have run."
    )


def test_the_app_behind_the_proxy_is_replaced_without_downtime() -> None:
    (app,) = (copy.deepcopy(s) for s in recorded("ai-key-rotation")["steps"] if s["op"] == "replace")
    for state in (app["oldState"], app["newState"]):
        del state["inputs"]["name"]
        state["inputs"]["ports"] = []
    text = report_text({"steps": [app], "changeSummary": {"replace": 1, "same": 30}})
    assert section(text, "Restarts") == (
        "- **replaces container `app-server`** (the app): the new container starts before the old one stops"
        " (behind the proxy): no downtime. Why: diff: ~uploads."
    )
    assert "briefly unavailable" not in text


def test_a_name_the_engine_filled_in_is_not_a_fixed_name() -> None:
    (app,) = (s for s in recorded("ai-key-rotation")["steps"] if s["op"] == "replace")
    inputs = app["newState"]["inputs"]
    assert change_report.fixed_name_or_port(inputs)
    autonamed = {**inputs, "__defaults": [*inputs["__defaults"], "name"], "ports": []}
    assert not change_report.fixed_name_or_port(autonamed)
    port_only = {key: value for key, value in inputs.items() if key != "name"}
    assert change_report.fixed_name_or_port(port_only)


@pytest.mark.parametrize(
    ("typ", "prop", "words"),
    [
        ("alicloud:ecs/instance:Instance", "imageId", "replaces the host's system disk from the new image in place"),
        ("alicloud:ecs/instance:Instance", "instanceType", "stops the host, changes its type and starts it again"),
        ("alicloud:rds/instance:Instance", "engineVersion", "upgrades PostgreSQL's major version in place"),
    ],
)
def test_an_in_place_update_that_restarts_the_host_or_the_database_is_a_restart(
    typ: str, prop: str, words: str
) -> None:
    text = report_text(prod_preview(step("update", typ, "thing", {}, diff={prop: "update"})))
    restart = section(text, "Restarts")
    assert words in restart and f"Why: diff: ~{prop}." in restart
    assert "#### In-place updates" not in text
    assert "**The app is briefly unavailable.**" in text


def test_the_halves_of_one_replacement_are_reported_once() -> None:
    volume = step("replace", "docker:index/volume:Volume", "volumes-app", {"name": "memos-appdata"},
                  diff={"name": "update-replace"}, parent="memos:index:DataVolumes")  # fmt: skip
    halves = [{**volume, "op": "create-replacement"}, volume, {**volume, "op": "delete-replaced"}]
    assert len(section(report_text(prod_preview(*halves)), "Data at risk").splitlines()) == 1


def test_a_preview_that_reported_errors_says_the_list_may_be_incomplete() -> None:
    preview = recorded("no-changes")
    preview["diagnostics"] = [{"message": "error: program failed", "severity": "error"}]
    text = report_text(preview)
    assert "The preview reported 1 error and may have stopped early" in text
    assert "program failed" not in text


def test_a_long_report_is_cut_to_fit_a_comment_but_keeps_every_step_at_risk() -> None:
    volume = step("delete", "docker:index/volume:Volume", "volumes-database", {"name": "memos-pgdata"},
                  parent="memos:index:DataVolumes")  # fmt: skip
    rules = [step("update", "alicloud:ecs/securityGroupRule:SecurityGroupRule", f"host-rule-{n}", {},
                  diff={"description": "update"}) for n in range(2000)]  # fmt: skip
    text = report_text(prod_preview(*rules, volume))
    assert len(text) <= COMMENT_LIMIT
    assert "**deletes volume `memos-pgdata`**" in text
    hidden = int(re.search(r"… and (\d+) more steps not shown here", text).group(1))  # type: ignore[union-attr]
    assert hidden + section(text, "In-place updates").count("\n- ") + 1 == 2000


# --- No secret or other value reaches the report -----------------------------------------------------

#: The strings the report reads: operations, URNs and types, diff kinds, property names, `name` inputs.
READ = re.compile(r"(^|\.)(op|urn|type|parent|provider|kind|inputs\.name|__defaults\[\d+\]|\w+Reasons\[\d+\])$")


def poisoned(node: Any, path: str, canaries: count[int]) -> Any:
    """Every string the report does not read replaced by a unique canary."""
    if isinstance(node, dict):
        return {key: poisoned(value, f"{path}.{key}" if path else key, canaries) for key, value in node.items()}
    if isinstance(node, list):
        return [poisoned(value, f"{path}[{i}]", canaries) for i, value in enumerate(node)]
    if isinstance(node, str) and not READ.search(path):
        return f"canary{next(canaries)}"
    return node


@pytest.mark.parametrize("name", ["no-changes", "ai-key-rotation", "name-prefix-change"])
def test_no_value_from_the_preview_reaches_the_report(name: str) -> None:
    preview = recorded(name)
    preview["diagnostics"] = [{"message": "leaked message", "severity": "error", "urn": preview["steps"][0]["urn"]}]
    canaries = count()
    text = report_text(poisoned(preview, "", canaries))
    assert next(canaries) > 50, "the canaries reached the config, the inputs, the outputs and the diagnostics"
    assert "canary" not in text
    assert "[secret]" not in text
    assert text.count("- **replaces") == report_text(recorded(name)).count("- **replaces")


@pytest.mark.parametrize("value", ["[secret]", UNKNOWN, "memos`app", "<img src=x>", "x" * 200])
def test_a_secret_unknown_or_unusual_name_is_replaced_by_the_resource_name(value: str) -> None:
    preview = recorded("ai-key-rotation")
    for s in preview["steps"]:
        for state in ("oldState", "newState"):
            if "inputs" in s.get(state, {}):
                s[state]["inputs"]["name"] = value
    restarts = section(report_text(preview), "Restarts")
    assert restarts.startswith("- **replaces container `app-server`** (the app)")
    assert value not in restarts


# --- Offline -------------------------------------------------------------------------------------------


def test_the_offline_report_lists_what_holds_data_and_its_protection_and_says_it_has_no_diff(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert change_report.main(["--offline", "--stack", "prod"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("### Change report: stack prod (offline)\n")
    assert "**No diff.**" in out and "it cannot say what this change replaces, deletes or restarts" in out
    rows = section(out, "Resources that hold data")
    assert "| `memos-pgdata` (volumes-database) | volume | the database's data | yes | yes |" in rows
    assert (
        "| `host-data-disk` | data disk |" in rows
        and "| `host-instance` | ECS instance | the host | yes | no |" in rows
    )
    assert "| `memos-app` (app-server) | the app | the old one stops first: **the app is unavailable**" in out
    assert PLACEHOLDER not in out


def test_the_offline_report_of_dev_shows_its_volumes_unprotected(capsys: pytest.CaptureFixture[str]) -> None:
    assert change_report.main(["--offline", "--stack", "dev"]) == 0
    assert "| `memos-pgdata` (volumes-database) | volume | the database's data | no | no |" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--offline"], ["--offline", "--stack", "prod", "preview.json"]])
def test_offline_takes_a_stack_and_no_preview(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert change_report.main(argv) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == "--offline runs the program itself: give --stack (e.g. --stack prod) and no preview file"


# --- The docs -------------------------------------------------------------------------------------------


def test_the_sample_in_the_docs_is_what_the_tool_prints_for_the_recorded_name_prefix_change() -> None:
    text = DOCS.read_text()
    match = re.search(r"<!-- sample: (\S+) -->\n\n````markdown\n(.*?)````\n", text, flags=re.DOTALL)
    assert match, "docs/pull-request-checks.md has no sample block"
    assert match.group(1) == "tests/tools/data/preview-name-prefix-change.json"
    assert match.group(2) == report_text(recorded("name-prefix-change"))
