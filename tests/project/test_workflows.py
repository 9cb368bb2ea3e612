"""The CI/CD workflows: actionlint and zizmor find nothing, and the rules that keep secrets safe hold.

.github/workflows/pr.yml checks every pull request: the test suite and, beside it, either `pulumi
preview` of prod turned into the change report, posted as one PR comment and gated on data at risk
(branches of this repository, when the cloud secrets exist), or the offline check and the offline
change report on the mock engine (everything else, forks included). .github/workflows/deploy.yml runs
`pulumi up` of prod from main, in the protected `production` environment, and verifies the stack.
.github/workflows/drift.yml refreshes and previews prod every night and keeps one issue about drift.
Both linters run for real; the structural rules read the parsed YAML, the jobs' `if:` conditions are
evaluated for each kind of PR, and the scripts that decide (the report, the comment, the gate, the
issue, the verify) run under bash with stand-ins for `pulumi`, `uv` and `gh`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
PR = WORKFLOWS / "pr.yml"
DEPLOY = WORKFLOWS / "deploy.yml"
DRIFT = WORKFLOWS / "drift.yml"
ALL = [PR, DEPLOY, DRIFT]
REPOSITORY = "owner/memos"
PREVIEWS = ROOT / "tests" / "tools" / "data"
MARKER = "<!-- memos-change-report -->"

SHA_PIN = re.compile(r"^(?P<action>[\w.-]+/[\w./-]+)@(?P<sha>[0-9a-f]{40})$")
VERSION_COMMENT = re.compile(r"^v\d+\.\d+\.\d+$")
EXACT_VERSION = re.compile(r"^\d+\.\d+\.\d+$")


def load(path: Path) -> dict[str, Any]:
    workflow = yaml.safe_load(path.read_text())
    assert isinstance(workflow, dict), f"{path.name} is not a YAML mapping"
    return workflow


def triggers(workflow: Mapping[Any, Any]) -> dict[str, Any]:
    """The `on:` mapping (YAML 1.1 reads the bare key `on` as True)."""
    on = workflow.get("on", workflow.get(True))
    if isinstance(on, str):
        return {on: None}
    if isinstance(on, list):
        return dict.fromkeys(on)
    assert isinstance(on, dict), "`on:` is missing"
    return on


def steps(workflow: Mapping[str, Any], job: str) -> list[dict[str, Any]]:
    return workflow["jobs"][job]["steps"]


def action_steps(workflow: Mapping[str, Any], action: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for job_id, job in workflow["jobs"].items():
        for step in job.get("steps", []):
            if str(step.get("uses", "")).split("@")[0] == action:
                yield job_id, step


def tool(name: str) -> str:
    """A dev-dependency tool: next to this interpreter (the project's .venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is required; it is a dev dependency of pyproject.toml (uv sync installs it)")
    return found


# --- A small evaluator for the `if:` expressions the workflows use ---------------------------------

TOKEN = re.compile(r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<op>==|!=|&&|\|\||!|\(|\)|,)|(?P<name>[A-Za-z_][\w.*-]*))")


Value = str | bool | list[str]


class Condition:
    """A GitHub Actions condition of `==`, `!=`, `&&`, `||`, `!`, parentheses, string literals,
    context paths and the calls `contains(list or string, item)` and `cancelled()`, evaluated against
    given context values (a call with no arguments is looked up as `name()`). A context path the caller
    did not give raises, so a new condition cannot pass these tests by accident."""

    def __init__(self, expression: str) -> None:
        self.expression = expression
        text = expression.strip()
        if text.startswith("${{") and text.endswith("}}"):
            text = text[3:-2]
        self.tokens: list[tuple[str, str]] = []
        position = 0
        while text[position:].strip():
            match = TOKEN.match(text, position)
            assert match is not None and match.lastgroup is not None, f"cannot read {text[position:]!r}"
            self.tokens.append((match.lastgroup, match.group(match.lastgroup)))
            position = match.end()

    def evaluate(self, context: Mapping[str, Value]) -> bool:
        return bool(self.value(context))

    def value(self, context: Mapping[str, Value]) -> Value:
        self.context = context
        self.index = 0
        value = self._either()
        assert self.index == len(self.tokens), f"trailing tokens in {self.expression!r}"
        return value

    def _take(self, op: str) -> bool:
        if self.index < len(self.tokens) and self.tokens[self.index] == ("op", op):
            self.index += 1
            return True
        return False

    def _either(self) -> Value:
        value = self._both()
        while self._take("||"):
            right = self._both()
            value = value or right
        return value

    def _both(self) -> Value:
        value = self._comparison()
        while self._take("&&"):
            right = self._comparison()
            value = value and right
        return value

    def _comparison(self) -> Value:
        left = self._unary()
        if self._take("=="):
            return left == self._unary()
        if self._take("!="):
            return left != self._unary()
        return left

    def _unary(self) -> Value:
        if self._take("!"):
            return not self._unary()
        if self._take("("):
            value = self._either()
            assert self._take(")"), f"unbalanced parentheses in {self.expression!r}"
            return value
        assert self.index < len(self.tokens), f"{self.expression!r} ends early"
        kind, token = self.tokens[self.index]
        self.index += 1
        if kind == "string":
            return token[1:-1].replace("''", "'")
        if token in ("true", "false"):
            return token == "true"
        assert kind == "name", f"unexpected {token!r} in {self.expression!r}"
        if self._take("("):
            return self._call(token)
        assert token in self.context, f"{self.expression!r} reads {token}, which this test does not model"
        return self.context[token]

    def _call(self, function: str) -> Value:
        arguments: list[Value] = []
        while not self._take(")"):
            if arguments:
                assert self._take(","), f"expected , in {self.expression!r}"
            arguments.append(self._either())
        if not arguments:
            key = f"{function}()"
            assert key in self.context, f"{self.expression!r} calls {key}, which this test does not model"
            return self.context[key]
        assert function == "contains" and len(arguments) == 2, f"{function} is not modelled"
        haystack, needle = arguments
        # GitHub compares case-insensitively; an array argument is searched for an equal item.
        if isinstance(haystack, list):
            return str(needle).lower() in [item.lower() for item in haystack]
        return str(needle).lower() in str(haystack).lower()


def evaluate(expression: str, context: Mapping[str, Value]) -> bool:
    return Condition(expression).evaluate(context)


def rendered(expression: str, context: Mapping[str, Value]) -> str:
    """An expression's value as GitHub puts it into `env:` (booleans as true/false)."""
    value = Condition(expression).value(context)
    return str(value).lower() if isinstance(value, bool) else str(value)


def strings(node: object) -> Iterator[str]:
    """Every string in a parsed YAML document, keys included."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, Mapping):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def pull_request_context(*, fork: bool, has_cloud_credentials: bool) -> dict[str, str]:
    return {
        "github.repository": REPOSITORY,
        "github.event.pull_request.head.repo.full_name": "someone/memos" if fork else REPOSITORY,
        "needs.credentials.outputs.has_cloud_credentials": "true" if has_cloud_credentials else "false",
    }


def runs(job: Mapping[str, Any], context: Mapping[str, Value]) -> bool:
    condition = job.get("if")
    return True if condition is None else evaluate(str(condition), context)


# --- Running a step's script ---------------------------------------------------------------------------

#: Stand-ins on PATH. `pulumi` prints $FAKE_PULUMI_JSON and exits $FAKE_PULUMI_STATUS; `uv run python ...`
#: runs this interpreter, or with $FAKE_UV_STATUS set prints $FAKE_UV_OUTPUT and exits with it; `gh`
#: answers `--jq` by running jq on $FAKE_GH_LIST. Each logs its arguments (and any body it sends).
FAKES = {
    "pulumi": f"""#!{sys.executable}
import json, os, sys
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps({{"tool": "pulumi", "argv": sys.argv[1:]}}) + "\\n")
path = os.environ.get("FAKE_PULUMI_JSON")
if path:
    sys.stdout.write(open(path).read())
sys.exit(int(os.environ.get("FAKE_PULUMI_STATUS", "0")))
""",
    "uv": f"""#!{sys.executable}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps({{"tool": "uv", "argv": args}}) + "\\n")
if "FAKE_UV_STATUS" in os.environ:
    print(os.environ.get("FAKE_UV_OUTPUT", ""))
    sys.exit(int(os.environ["FAKE_UV_STATUS"]))
assert args[:2] == ["run", "python"], args
os.execv(sys.executable, [sys.executable, *args[2:]])
""",
    "gh": f"""#!{sys.executable}
import json, os, subprocess, sys
args = sys.argv[1:]
call = {{"tool": "gh", "argv": args}}
for flag, value in zip(args, args[1:]):
    if flag == "-F" and value.startswith("body=@"):
        call["body"] = open(value.removeprefix("body=@")).read()
    if flag == "--body-file":
        call["body"] = open(value).read()
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(call) + "\\n")
if args[0] == "api" and "--jq" in args:
    query = args[args.index("--jq") + 1]
    answer = subprocess.run(["jq", "-r", query, os.environ["FAKE_GH_LIST"]], capture_output=True, text=True, check=True)
    sys.stdout.write(answer.stdout)
""",
}


@dataclass
class Ran:
    code: int
    stdout: str
    outputs: dict[str, str]
    summary: str
    calls: list[dict[str, Any]]

    def of(self, tool_name: str) -> list[dict[str, Any]]:
        return [call for call in self.calls if call["tool"] == tool_name]


def step_outputs(text: str) -> dict[str, str]:
    """$GITHUB_OUTPUT as the runner reads it: `key=value` lines and `key<<DELIMITER` blocks."""
    outputs: dict[str, str] = {}
    lines = iter(text.splitlines())
    for line in lines:
        key, heredoc, delimiter = line.partition("<<")
        if heredoc and "=" not in key:
            body: list[str] = []
            for body_line in lines:
                if body_line == delimiter:
                    break
                body.append(body_line)
            outputs[key] = "\n".join(body)
        else:
            key, _, value = line.partition("=")
            outputs[key] = value
    return outputs


def run_script(script: str, env: Mapping[str, str], tmp_path: Path, files: Mapping[str, str] | None = None) -> Ran:
    """A step's `run:` under bash as the runner starts it (`-eo pipefail`), with the stand-ins first on PATH."""
    if shutil.which("jq") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("jq is required (GitHub's runners have it)")
        pytest.skip("jq is not installed (GitHub's runners have it)")
    tmp_path.mkdir(parents=True, exist_ok=True)
    bin_dir, runner_temp = tmp_path / "bin", tmp_path / "runner-temp"
    bin_dir.mkdir(exist_ok=True)
    runner_temp.mkdir(exist_ok=True)
    for name, text in FAKES.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    for name, text in (files or {}).items():
        (runner_temp / name).write_text(text)
    output, summary, log = tmp_path / "output", tmp_path / "summary", tmp_path / "calls.jsonl"
    (tmp_path / "script.sh").write_text(script)
    full_env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "GITHUB_OUTPUT": str(output),
        "GITHUB_STEP_SUMMARY": str(summary),
        "RUNNER_TEMP": str(runner_temp),
        "GITHUB_REPOSITORY": REPOSITORY,
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_RUN_ID": "42",
        "FAKE_LOG": str(log),
        **env,
    }
    result = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(tmp_path / "script.sh")],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return Ran(
        code=result.returncode,
        stdout=result.stdout,
        outputs=step_outputs(output.read_text()) if output.exists() else {},
        summary=summary.read_text() if summary.exists() else "",
        calls=calls,
    )


def tool_output(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "tools.change_report", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )
    return result.stdout


def named_step(workflow: Path, job: str, name: str) -> dict[str, Any]:
    (step,) = (s for s in steps(load(workflow), job) if s.get("name") == name)
    return step


# --- The linters -------------------------------------------------------------------------------------


def test_actionlint_finds_nothing() -> None:
    # actionlint also runs shellcheck on every `run:` script when shellcheck is on PATH.
    result = subprocess.run(
        [tool("actionlint"), "-no-color", *map(str, ALL)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_zizmor_finds_nothing() -> None:
    # Offline audits only, with no config file: a deliberate exception must be an ignore comment,
    # with its reason, on the workflow line it concerns.
    result = subprocess.run(
        [tool("zizmor"), "--offline", "--no-config", "--format", "json", str(WORKFLOWS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    try:
        findings = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"zizmor exited {result.returncode} without JSON output:\n{result.stderr}")
    summary = [
        f"{finding['ident']}: {finding['desc']} "
        f"({Path(location['symbolic']['key']['Local']['verbatim_path']).name}:"
        f"{location['concrete']['location']['start_point']['row'] + 1})"
        for finding in findings
        for location in finding["locations"][:1]
    ]
    assert summary == []
    assert result.returncode == 0, result.stderr


# --- Pull requests -----------------------------------------------------------------------------------


def test_pull_requests_never_run_with_pull_request_target() -> None:
    for path in ALL:
        on = triggers(load(path))
        assert "pull_request_target" not in on and "workflow_run" not in on, path.name
    assert set(triggers(load(PR))) == {"pull_request"}


def test_fork_pull_requests_never_get_cloud_secrets() -> None:
    workflow = load(PR)
    preview = workflow["jobs"]["preview"]
    assert "github.event.pull_request.head.repo.full_name == github.repository" in " ".join(preview["if"].split())
    # Even if a fork's run somehow saw the secrets, the preview stays off for it.
    assert not runs(preview, pull_request_context(fork=True, has_cloud_credentials=True))
    # Every other job that names a secret only tests whether it is set.
    for job_id, job in workflow["jobs"].items():
        if job_id == "preview":
            continue
        uses = [use for text in strings(job) for use in re.findall(r"secrets\.\w+[^}]*", text)]
        assert all(re.fullmatch(r"secrets\.\w+ != ''\s*", use) for use in uses), (job_id, uses)


@pytest.mark.parametrize(
    ("fork", "has_cloud_credentials", "expected"),
    [
        (False, True, "preview"),
        (False, False, "offline-check"),
        (True, False, "offline-check"),
        (True, True, "offline-check"),
    ],
    ids=["branch with secrets", "branch without secrets", "fork", "fork that sees secrets"],
)
def test_exactly_one_of_preview_and_offline_check_runs(fork: bool, has_cloud_credentials: bool, expected: str) -> None:
    jobs = load(PR)["jobs"]
    context = pull_request_context(fork=fork, has_cloud_credentials=has_cloud_credentials)
    running = {job_id for job_id in ("preview", "offline-check") if runs(jobs[job_id], context)}
    assert running == {expected}
    assert runs(jobs["checks"], context)
    assert "credentials" in jobs["preview"]["needs"] and "credentials" in jobs["offline-check"]["needs"]


def test_cloud_credentials_are_detected_without_exposing_them() -> None:
    job = load(PR)["jobs"]["credentials"]
    assert job["outputs"] == {"has_cloud_credentials": "${{ steps.detect.outputs.has_cloud_credentials }}"}
    (step,) = job["steps"]
    assert step["env"] == {"HAS_CLOUD_CREDENTIALS": "${{ secrets.ALIBABA_CLOUD_ACCESS_KEY_ID != '' }}"}
    assert job["permissions"] == {}


def test_offline_check_runs_the_mock_engine_check() -> None:
    scripts = [step["run"] for step in steps(load(PR), "offline-check") if "run" in step]
    commands = [line.strip() for script in scripts for line in script.splitlines() if line.strip()]
    assert "python3 -m pip install --quiet --disable-pip-version-check uv" in commands
    assert commands.index("uv sync --frozen") < commands.index("uv run python -m tools.offline_check")


def test_checks_job_runs_exactly_the_test_script() -> None:
    job_steps = steps(load(PR), "checks")
    assert [step["run"] for step in job_steps if "run" in step] == ["./scripts/test"]
    (setup_python,) = (step for step in job_steps if str(step.get("uses", "")).startswith("actions/setup-python@"))
    assert setup_python["with"]["python-version"] == "3.11"


def test_a_label_change_reruns_the_checks_with_the_new_labels() -> None:
    on = triggers(load(PR))["pull_request"]
    assert set(on["types"]) == {"opened", "synchronize", "reopened", "labeled", "unlabeled"}


@pytest.mark.parametrize(
    ("preview", "status", "data_risk"),
    [
        ("preview-name-prefix-change.json", "0", "true"),
        ("preview-no-changes.json", "0", "false"),
        (None, "255", "unknown"),
    ],
    ids=["data at risk", "nothing at risk", "no usable preview"],
)
def test_the_preview_job_makes_the_report_and_says_whether_data_is_at_risk(
    preview: str | None, status: str, data_risk: str, tmp_path: Path
) -> None:
    step = named_step(PR, "preview", "Change report")
    assert step["env"] == {"PREVIEW_STATUS": "${{ steps.preview.outputs.status }}"}
    text = (PREVIEWS / preview).read_text() if preview else "error: could not load plugin for provider docker\n"
    ran = run_script(step["run"], {"PREVIEW_STATUS": status}, tmp_path, files={"preview.json": text})
    assert ran.code == 0
    assert ran.outputs["data_risk"] == data_risk
    if preview:
        report = tool_output(str(PREVIEWS / preview))
        assert ran.outputs["report"] == report.removesuffix("\n")
    else:
        report = "No change report: `pulumi preview` (exit 255) printed no usable JSON; see the job log.\n"
        assert ran.outputs["report"] == report.removesuffix("\n")
    assert ran.summary == report
    job = load(PR)["jobs"]["preview"]
    assert job["outputs"] == {
        "report": "${{ steps.report.outputs.report }}",
        "data_risk": "${{ steps.report.outputs.data_risk }}",
    }


@pytest.mark.parametrize("status", [0, 255])
def test_the_preview_keeps_its_exit_status_and_a_failed_preview_fails_the_job_after_the_report(
    status: int, tmp_path: Path
) -> None:
    step = named_step(PR, "preview", "pulumi preview --stack prod --json")
    env = {"FAKE_PULUMI_JSON": str(PREVIEWS / "preview-no-changes.json"), "FAKE_PULUMI_STATUS": str(status)}
    ran = run_script(step["run"], env, tmp_path)
    assert ran.code == 0
    assert ran.outputs == {"status": str(status)}
    assert (tmp_path / "runner-temp" / "preview.json").read_text() == (PREVIEWS / "preview-no-changes.json").read_text()
    job_steps = steps(load(PR), "preview")
    fail = named_step(PR, "preview", "Fail when the preview failed")
    assert job_steps.index(fail) == len(job_steps) - 1
    assert evaluate(fail["if"], {"steps.preview.outputs.status": str(status)}) == (status != 0)


def test_the_change_report_is_one_comment_created_once_and_edited_on_every_later_push(tmp_path: Path) -> None:
    job = load(PR)["jobs"]["report-comment"]
    (step,) = job["steps"]
    assert step["env"] == {
        "GH_TOKEN": "${{ github.token }}",
        "PR_NUMBER": "${{ github.event.pull_request.number }}",
        "REPORT": "${{ needs.preview.outputs.report }}",
    }
    others = [
        {"id": 3, "user": {"login": "github-actions[bot]"}, "body": "Tests passed"},
        {"id": 4, "user": {"login": "octocat"}, "body": f"{MARKER}\na person quoting the report"},
    ]
    env = {"GH_TOKEN": "token", "PR_NUMBER": "7", "REPORT": "### Change report: stack prod\n\nfirst push"}
    listing = tmp_path / "comments.json"
    listing.write_text(json.dumps(others))
    first = run_script(step["run"], {**env, "FAKE_GH_LIST": str(listing)}, tmp_path / "first-push")
    assert first.code == 0, first.stdout
    listed, posted = first.of("gh")
    assert listed["argv"][:3] == ["api", "--paginate", f"repos/{REPOSITORY}/issues/7/comments"]
    assert posted["argv"][:4] == ["api", "--method", "POST", f"repos/{REPOSITORY}/issues/7/comments"]
    assert posted["body"] == f"{MARKER}\n### Change report: stack prod\n\nfirst push\n"
    # The next push finds the comment the first one made by its marker, and edits it.
    listing.write_text(
        json.dumps([*others, {"id": 9, "user": {"login": "github-actions[bot]"}, "body": posted["body"]}])
    )
    second = run_script(step["run"], {**env, "REPORT": "second push", "FAKE_GH_LIST": str(listing)}, tmp_path / "next")
    assert second.code == 0, second.stdout
    _, edited = second.of("gh")
    assert edited["argv"][:4] == ["api", "--method", "PATCH", f"repos/{REPOSITORY}/issues/comments/9"]
    assert edited["body"] == f"{MARKER}\nsecond push\n"


def test_the_report_is_posted_after_a_failed_preview_too_but_not_when_there_is_none() -> None:
    job = load(PR)["jobs"]["report-comment"]
    assert job["needs"] == "preview"
    assert runs(job, {"cancelled()": False, "needs.preview.outputs.report": "### Change report: stack prod"})
    assert not runs(job, {"cancelled()": False, "needs.preview.outputs.report": ""})  # preview skipped (a fork)
    assert not runs(job, {"cancelled()": True, "needs.preview.outputs.report": "### Change report: stack prod"})


def test_the_job_with_the_cloud_secrets_cannot_write_and_the_job_that_writes_runs_no_code() -> None:
    jobs = load(PR)["jobs"]
    assert jobs["preview"]["permissions"] == {"contents": "read"}
    comment = jobs["report-comment"]
    assert comment["permissions"] == {"pull-requests": "write"}
    assert all("uses" not in step for step in comment["steps"]), "no checkout, no action: only gh"
    assert not any("secrets." in text for text in strings(comment))


@pytest.mark.parametrize(
    ("data_risk", "labels", "passes"),
    [
        ("false", [], True),
        ("true", [], False),
        ("true", ["bug", "allow-data-risk"], True),
        ("true", ["Allow-Data-Risk"], True),
        ("true", ["allow-data-risk-later"], False),
        ("unknown", [], False),
        ("unknown", ["allow-data-risk"], True),
    ],
    ids=[
        "nothing at risk",
        "data at risk",
        "data at risk, label",
        "label in other case",
        "another label",
        "no report",
        "no report, label",
    ],
)
def test_data_at_risk_fails_the_check_unless_the_pr_carries_the_allow_data_risk_label(
    data_risk: str, labels: list[str], passes: bool, tmp_path: Path
) -> None:
    job = load(PR)["jobs"]["data-risk"]
    assert job["needs"] == "preview"
    assert job["permissions"] == {}
    (step,) = job["steps"]
    assert step["env"]["DATA_RISK"] == "${{ needs.preview.outputs.data_risk }}"
    # The label reaches the script only as the expression's true/false, evaluated from the event.
    allowed = rendered(step["env"]["ALLOWED"], {"github.event.pull_request.labels.*.name": labels})
    ran = run_script(step["run"], {"DATA_RISK": data_risk, "ALLOWED": allowed}, tmp_path)
    assert (ran.code == 0) == passes, ran.stdout
    if not passes:
        assert "::error::" in ran.stdout and "allow-data-risk" in ran.stdout


def test_forks_get_the_offline_change_report_in_the_job_summary(tmp_path: Path) -> None:
    (step,) = (s for s in steps(load(PR), "offline-check") if "tools.change_report" in str(s.get("run", "")))
    assert (
        step["run"].strip()
        == 'uv run python -m tools.change_report --offline --stack prod | tee -a "$GITHUB_STEP_SUMMARY"'
    )
    ran = run_script(step["run"], {}, tmp_path)
    assert ran.code == 0
    assert ran.summary.startswith("### Change report: stack prod (offline)\n")
    assert "**No diff.**" in ran.summary


# --- Deploy ------------------------------------------------------------------------------------------


def test_deploy_runs_from_main_in_the_production_environment_one_at_a_time() -> None:
    workflow = load(DEPLOY)
    assert triggers(workflow) == {"push": {"branches": ["main"]}, "workflow_dispatch": None}
    assert workflow["concurrency"] == {"group": "deploy-prod", "cancel-in-progress": False}
    (job,) = workflow["jobs"].values()
    assert job["environment"] == "production"
    assert evaluate(job["if"], {"github.ref": "refs/heads/main"})
    assert not evaluate(job["if"], {"github.ref": "refs/heads/some-branch"})
    scripts = [step["run"] for step in job["steps"] if "run" in step]
    assert scripts[0] == "./scripts/test", "the test suite runs before anything else"


def pulumi_command(script: str) -> str:
    (line,) = (line.strip() for line in script.splitlines() if line.strip().startswith("pulumi "))
    return line


def test_the_pr_previews_prod_as_json_with_the_policy_pack() -> None:
    job_steps = steps(load(PR), "preview")
    step = named_step(PR, "preview", "pulumi preview --stack prod --json")
    command = pulumi_command(step["run"])
    assert command.startswith("pulumi preview --stack prod --policy-pack policy --non-interactive --json > ")
    assert step["env"]["PULUMI_BACKEND_URL"] == "${{ secrets.PULUMI_BACKEND_URL }}"
    assert step["env"]["PULUMI_CONFIG_PASSPHRASE"] == "${{ secrets.PULUMI_CONFIG_PASSPHRASE }}"
    # Before Pulumi runs: the program's and the policy pack's locked environments, the SSH key, the CLI.
    before = job_steps[: job_steps.index(step)]
    scripts = "\n".join(str(s.get("run", "")) for s in before)
    for command in ("uv sync --frozen\n", "uv sync --frozen --directory policy", "ssh-add"):
        assert command in scripts, command
    ((_, install),) = action_steps(load(PR), "pulumi/actions")
    assert install in before
    assert install["with"] == {"pulumi-version": "${{ env.PULUMI_CLI_VERSION }}"}, "the action only installs the CLI"


def test_deploy_runs_up_on_prod_with_the_policy_pack() -> None:
    workflow = load(DEPLOY)
    ((_, up),) = (pair for pair in action_steps(workflow, "pulumi/actions") if "command" in pair[1]["with"])
    assert up["with"] | {"command": "up", "refresh": False} == up["with"]
    assert up["with"]["stack-name"] == "prod"
    assert up["with"]["policyPacks"] == "policy"
    assert up["with"]["cloud-url"] == "${{ secrets.PULUMI_BACKEND_URL }}"
    assert up["env"]["PULUMI_CONFIG_PASSPHRASE"] == "${{ secrets.PULUMI_CONFIG_PASSPHRASE }}"
    job_steps = steps(workflow, "deploy")
    before = "\n".join(str(s.get("run", "")) for s in job_steps[: job_steps.index(up)])
    for command in ("uv sync --frozen\n", "uv sync --frozen --directory policy", "ssh-add"):
        assert command in before, command


def up_step(workflow: Mapping[str, Any]) -> dict[str, Any]:
    ((_, up),) = (pair for pair in action_steps(workflow, "pulumi/actions") if pair[1]["with"].get("command") == "up")
    return up


def test_deploy_puts_the_change_report_of_a_preview_before_the_up_in_the_job_summary(tmp_path: Path) -> None:
    workflow = load(DEPLOY)
    job_steps = steps(workflow, "deploy")
    step = named_step(DEPLOY, "deploy", "Change report of the deploy to the job summary")
    assert job_steps.index(step) < job_steps.index(up_step(workflow))
    command = pulumi_command(step["run"])
    assert command.startswith("pulumi preview --stack prod --policy-pack policy --non-interactive --json > ")
    assert step["env"]["PULUMI_CONFIG_PASSPHRASE"] == "${{ secrets.PULUMI_CONFIG_PASSPHRASE }}"
    preview = PREVIEWS / "preview-ai-key-rotation.json"
    ran = run_script(step["run"], {"FAKE_PULUMI_JSON": str(preview)}, tmp_path / "ok")
    assert ran.code == 0
    assert ran.summary == tool_output(str(preview))
    # A preview that fails stops the deploy before the up.
    failed = run_script(step["run"], {"FAKE_PULUMI_STATUS": "255"}, tmp_path / "failed")
    assert failed.code != 0


@pytest.mark.parametrize(
    ("status", "output"),
    [
        (0, "ok   database answers: as memos, PostgreSQL 18.1\n1 of 1 checks passed"),
        (1, "FAIL app /healthz: https://memos.example.com/healthz answered 502\n0 of 1 checks passed"),
    ],
    ids=["every check passes", "a check fails"],
)
def test_deploy_verifies_the_stack_after_the_up_and_fails_when_a_check_fails(
    status: int, output: str, tmp_path: Path
) -> None:
    workflow = load(DEPLOY)
    job_steps = steps(workflow, "deploy")
    step = named_step(DEPLOY, "deploy", "Verify the deployed stack")
    stop_agent = named_step(DEPLOY, "deploy", "Stop the SSH agent")
    # After the up, and while the SSH agent (verify's tunnel) still runs; only when the up succeeded.
    assert job_steps.index(up_step(workflow)) < job_steps.index(step) < job_steps.index(stop_agent)
    assert "if" not in step
    assert step["env"]["PULUMI_BACKEND_URL"] == "${{ secrets.PULUMI_BACKEND_URL }}"
    assert step["env"]["PULUMI_CONFIG_PASSPHRASE"] == "${{ secrets.PULUMI_CONFIG_PASSPHRASE }}"
    ran = run_script(step["run"], {"FAKE_UV_STATUS": str(status), "FAKE_UV_OUTPUT": output}, tmp_path)
    assert ran.code == status
    ((call),) = ran.of("uv")
    assert call["argv"] == ["run", "python", "-m", "tools.verify", "--stack", "prod"]
    assert ran.summary == f"### tools.verify --stack prod\n\n```\n{output}\n```\n"
    assert output in ran.stdout


def test_pulumi_plugins_are_cached_for_the_preview_only() -> None:
    ((job_id, cache),) = action_steps(load(PR), "actions/cache")
    assert job_id == "preview"
    assert cache["with"]["path"] == "~/.pulumi/plugins"
    assert "hashFiles('uv.lock', 'Pulumi.yaml')" in cache["with"]["key"]
    assert list(action_steps(load(DEPLOY), "actions/cache")) == []


def test_pulumi_cli_is_pinned_once_and_matches_the_locked_sdk() -> None:
    versions = {}
    for path in ALL:
        workflow = load(path)
        version = workflow["env"]["PULUMI_CLI_VERSION"]
        assert isinstance(version, str), f"{path.name}: PULUMI_CLI_VERSION must read as x.y.z, got {version!r}"
        assert EXACT_VERSION.fullmatch(version), f"{path.name}: {version!r} is not an exact version"
        versions[path.name] = version
        pulumi_steps = list(action_steps(workflow, "pulumi/actions"))
        assert pulumi_steps, path.name
        for _, step in pulumi_steps:
            assert step["with"]["pulumi-version"] == "${{ env.PULUMI_CLI_VERSION }}", path.name
    assert versions["pr.yml"] == versions["deploy.yml"] == versions["drift.yml"]
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    (sdk,) = (package["version"] for package in lock["package"] if package["name"] == "pulumi")
    assert versions["pr.yml"] == sdk, "bump PULUMI_CLI_VERSION in both workflows with the pulumi SDK in uv.lock"


# --- Drift -------------------------------------------------------------------------------------------

DRIFT_PREVIEW = "pulumi preview --refresh --expect-no-changes --stack prod --json"
DRIFT_TITLE = "Drift on stack prod"


def test_drift_runs_every_night_and_on_demand_one_at_a_time() -> None:
    workflow = load(DRIFT)
    on = triggers(workflow)
    assert set(on) == {"schedule", "workflow_dispatch"}
    ((entry),) = on["schedule"]
    assert len(entry["cron"].split()) == 5 and entry["cron"].endswith("* * *"), "once a day"
    assert workflow["concurrency"] == {"group": "drift-prod", "cancel-in-progress": False}


def test_drift_refreshes_and_previews_prod_with_the_read_only_key_only() -> None:
    step = named_step(DRIFT, "preview", DRIFT_PREVIEW)
    command = pulumi_command(step["run"])
    assert command.startswith("pulumi preview --refresh --expect-no-changes --stack prod --non-interactive --json > ")
    assert step["env"]["ALIBABA_CLOUD_ACCESS_KEY_ID"] == "${{ secrets.ALIBABA_CLOUD_READONLY_ACCESS_KEY_ID }}"
    assert step["env"]["ALIBABA_CLOUD_ACCESS_KEY_SECRET"] == "${{ secrets.ALIBABA_CLOUD_READONLY_ACCESS_KEY_SECRET }}"
    text = DRIFT.read_text()
    assert not re.search(r"secrets\.ALIBABA_CLOUD_ACCESS_KEY_(ID|SECRET)\b", text), "the deploy key never reaches drift"
    header = " ".join(line.lstrip("# ") for line in text.split("\nname:", 1)[0].splitlines())
    assert "Its RAM policy must be read-only" in header


def test_only_the_issue_job_may_write_issues_and_it_runs_no_code() -> None:
    jobs = load(DRIFT)["jobs"]
    assert set(jobs) == {"preview", "issue"}
    assert jobs["preview"]["permissions"] == {"contents": "read"}
    issue = jobs["issue"]
    assert issue["permissions"] == {"issues": "write"}
    assert issue["needs"] == "preview"
    assert all("uses" not in step for step in issue["steps"]), "no checkout, no action: only gh"
    assert not any("secrets." in text for text in strings(issue))
    assert jobs["preview"]["outputs"] == {
        "drift": "${{ steps.report.outputs.drift }}",
        "report": "${{ steps.report.outputs.report }}",
    }


@pytest.mark.parametrize(
    ("preview", "status", "drift"),
    [
        ("preview-no-changes.json", "0", "false"),
        ("preview-ai-key-rotation.json", "255", "true"),
        (None, "255", "error"),
        ("preview-no-changes.json", "255", "error"),
    ],
    ids=["clean", "drift", "no usable preview", "failed without changes"],
)
def test_drift_tells_changes_from_a_clean_stack_and_from_a_failed_preview(
    preview: str | None, status: str, drift: str, tmp_path: Path
) -> None:
    step = named_step(DRIFT, "preview", "Change report")
    text = (PREVIEWS / preview).read_text() if preview else "error: failed to refresh\n"
    ran = run_script(step["run"], {"PREVIEW_STATUS": status}, tmp_path, files={"drift.json": text})
    assert ran.code == 0
    assert ran.outputs["drift"] == drift
    if preview:
        assert ran.outputs["report"] == tool_output(str(PREVIEWS / preview)).removesuffix("\n")
    fail = named_step(DRIFT, "preview", "Fail when the preview failed without a report of changes")
    assert evaluate(fail["if"], {"steps.report.outputs.drift": drift}) == (drift == "error")
    assert runs(load(DRIFT)["jobs"]["issue"], {"needs.preview.outputs.drift": drift}) == (drift != "error")


def test_drift_opens_one_issue_edits_it_while_the_drift_lasts_and_closes_it_when_clean(tmp_path: Path) -> None:
    (step,) = load(DRIFT)["jobs"]["issue"]["steps"]
    assert step["env"] == {
        "GH_TOKEN": "${{ github.token }}",
        "DRIFT": "${{ needs.preview.outputs.drift }}",
        "REPORT": "${{ needs.preview.outputs.report }}",
        "TITLE": DRIFT_TITLE,
    }
    report = "### Change report: stack prod\n\n**Data at risk: 1 step.**"
    run_url = f"https://github.com/{REPOSITORY}/actions/runs/42"
    listing = tmp_path / "issues.json"
    open_issues: list[dict[str, Any]] = [
        {"number": 3, "title": DRIFT_TITLE, "pull_request": {"url": "a pull request with that title"}},
        {"number": 4, "title": f"{DRIFT_TITLE} (last year)"},
    ]

    def night(name: str, drift: str) -> list[dict[str, Any]]:
        listing.write_text(json.dumps(open_issues))
        env = {
            "GH_TOKEN": "token",
            "DRIFT": drift,
            "REPORT": report,
            "TITLE": DRIFT_TITLE,
            "FAKE_GH_LIST": str(listing),
        }
        ran = run_script(step["run"], env, tmp_path / name)
        assert ran.code == 0, ran.stdout
        (listed, *writes) = ran.of("gh")
        assert listed["argv"][:3] == ["api", "--paginate", f"repos/{REPOSITORY}/issues?state=open&per_page=100"]
        return writes

    (created,) = night("drift", "true")
    assert created["argv"][:6] == ["issue", "create", "--repo", REPOSITORY, "--title", DRIFT_TITLE]
    assert report in created["body"] and run_url in created["body"]
    open_issues.append({"number": 5, "title": DRIFT_TITLE})
    (edited,) = night("still-drift", "true")
    assert edited["argv"][:5] == ["issue", "edit", "5", "--repo", REPOSITORY]
    assert report in edited["body"]
    (closed,) = night("clean", "false")
    assert closed["argv"] == [
        "issue",
        "close",
        "5",
        "--repo",
        REPOSITORY,
        "--comment",
        f"The stack is clean again: {run_url}",
    ]
    open_issues.pop()
    assert night("still-clean", "false") == []


# --- Every workflow ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ALL, ids=lambda path: path.name)
def test_top_level_permissions_are_read_only(path: Path) -> None:
    workflow = load(path)
    assert workflow["permissions"] == {"contents": "read"}
    allowed_writes = {("pr.yml", "report-comment"): {"pull-requests"}, ("drift.yml", "issue"): {"issues"}}
    for job_id, job in workflow["jobs"].items():
        permissions = job.get("permissions", {})
        assert isinstance(permissions, dict), (path.name, job_id, permissions)
        writes = {scope for scope, level in permissions.items() if level == "write"}
        assert writes == allowed_writes.get((path.name, job_id), set()), (path.name, job_id)


@pytest.mark.parametrize("path", ALL, ids=lambda path: path.name)
def test_every_action_is_pinned_to_a_commit_sha_with_its_version(path: Path) -> None:
    text = path.read_text()
    workflow = load(path)
    uses = [step["uses"] for job in workflow["jobs"].values() for step in job.get("steps", []) if "uses" in step]
    uses += [job["uses"] for job in workflow["jobs"].values() if "uses" in job]
    assert uses
    for use in uses:
        assert SHA_PIN.fullmatch(use), f"{path.name}: {use} is not pinned to a full commit SHA"
        comments = re.findall(rf"uses: {re.escape(use)} # (\S+)", text)
        assert comments, f"{path.name}: {use} has no `# vX.Y.Z` comment naming its release"
        assert all(VERSION_COMMENT.fullmatch(comment) for comment in comments), (use, comments)


def test_each_action_is_pinned_to_the_same_release_everywhere() -> None:
    pins: dict[str, set[str]] = {}
    for path in ALL:
        for action, sha, version in re.findall(r"uses: ([\w./-]+)@([0-9a-f]{40}) # (\S+)", path.read_text()):
            pins.setdefault(action, set()).add(f"{sha} {version}")
    assert {action: len(releases) for action, releases in pins.items()} == dict.fromkeys(pins, 1), pins


@pytest.mark.parametrize("path", ALL, ids=lambda path: path.name)
def test_checkout_never_persists_the_token(path: Path) -> None:
    checkouts = list(action_steps(load(path), "actions/checkout"))
    assert checkouts
    for job_id, step in checkouts:
        assert step.get("with", {}).get("persist-credentials") is False, (path.name, job_id)


@pytest.mark.parametrize("path", ALL, ids=lambda path: path.name)
def test_run_scripts_never_interpolate_expressions(path: Path) -> None:
    # Event data, secrets and outputs reach a script only through `env:`, never as `${{ }}` text.
    for job_id, job in load(path)["jobs"].items():
        for step in job.get("steps", []):
            assert "${{" not in str(step.get("run", "")), (path.name, job_id, step.get("name"))


@pytest.mark.parametrize("path", ALL, ids=lambda path: path.name)
def test_secrets_reach_only_the_steps_that_use_them(path: Path) -> None:
    workflow = load(path)
    assert not any("secrets." in text for text in strings(workflow.get("env", {}))), "secrets in the workflow's env"
    for job_id, job in workflow["jobs"].items():
        outside_steps = {key: value for key, value in job.items() if key != "steps"}
        assert not any("secrets." in text for text in strings(outside_steps)), (path.name, job_id)
        for step in job.get("steps", []):
            assert "secrets." not in str(step.get("run", "")), (path.name, job_id, step.get("name"))
