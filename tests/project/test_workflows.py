"""The CI/CD workflows: actionlint and zizmor find nothing, and the rules that keep secrets safe hold.

.github/workflows/pr.yml checks every pull request: the test suite and, beside it, either `pulumi
preview` of prod (branches of this repository, when the cloud secrets exist) or the offline check on
the mock engine (everything else, forks included). .github/workflows/deploy.yml runs `pulumi up` of prod
from main, in the protected `production` environment. Both linters run for real; the structural
rules read the parsed YAML, and the jobs' `if:` conditions are evaluated for each kind of PR.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
PR = WORKFLOWS / "pr.yml"
DEPLOY = WORKFLOWS / "deploy.yml"
REPOSITORY = "owner/memos"

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

TOKEN = re.compile(r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<op>==|!=|&&|\|\||!|\(|\))|(?P<name>[A-Za-z_][\w.-]*))")


class Condition:
    """A GitHub Actions condition of `==`, `!=`, `&&`, `||`, `!`, parentheses, string literals and
    context paths, evaluated against given context values. A context path the caller did not give
    raises, so a new condition cannot pass these tests by accident."""

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

    def evaluate(self, context: Mapping[str, str]) -> bool:
        self.context = context
        self.index = 0
        value = self._either()
        assert self.index == len(self.tokens), f"trailing tokens in {self.expression!r}"
        return bool(value)

    def _take(self, op: str) -> bool:
        if self.index < len(self.tokens) and self.tokens[self.index] == ("op", op):
            self.index += 1
            return True
        return False

    def _either(self) -> str | bool:
        value = self._both()
        while self._take("||"):
            right = self._both()
            value = value or right
        return value

    def _both(self) -> str | bool:
        value = self._comparison()
        while self._take("&&"):
            right = self._comparison()
            value = value and right
        return value

    def _comparison(self) -> str | bool:
        left = self._unary()
        if self._take("=="):
            return left == self._unary()
        if self._take("!="):
            return left != self._unary()
        return left

    def _unary(self) -> str | bool:
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
        assert token in self.context, f"{self.expression!r} reads {token}, which this test does not model"
        return self.context[token]


def evaluate(expression: str, context: Mapping[str, str]) -> bool:
    return Condition(expression).evaluate(context)


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


def runs(job: Mapping[str, Any], context: Mapping[str, str]) -> bool:
    condition = job.get("if")
    return True if condition is None else evaluate(str(condition), context)


# --- The linters -------------------------------------------------------------------------------------


def test_actionlint_finds_nothing() -> None:
    # actionlint also runs shellcheck on every `run:` script when shellcheck is on PATH.
    result = subprocess.run(
        [tool("actionlint"), "-no-color", str(PR), str(DEPLOY)],
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
    for path in (PR, DEPLOY):
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


def test_pulumi_runs_the_prod_stack_with_the_policy_pack() -> None:
    expected = {
        "pr.yml": ("preview", {"command": "preview", "comment-on-pr": True}),
        "deploy.yml": ("deploy", {"command": "up", "refresh": False}),
    }
    for path in (PR, DEPLOY):
        workflow = load(path)
        ((job_id, step),) = action_steps(workflow, "pulumi/actions")
        want_job, want_inputs = expected[path.name]
        assert job_id == want_job, path.name
        assert step["with"] | want_inputs == step["with"], path.name
        assert step["with"]["stack-name"] == "prod"
        assert step["with"]["policyPacks"] == "policy"
        assert step["with"]["cloud-url"] == "${{ secrets.PULUMI_BACKEND_URL }}"
        assert step["env"]["PULUMI_CONFIG_PASSPHRASE"] == "${{ secrets.PULUMI_CONFIG_PASSPHRASE }}"
        # Before Pulumi runs: the program's and the policy pack's locked environments, and the SSH key.
        job_steps = steps(workflow, job_id)
        before = "\n".join(str(s.get("run", "")) for s in job_steps[: job_steps.index(step)])
        for command in ("uv sync --frozen\n", "uv sync --frozen --directory policy", "ssh-add"):
            assert command in before, (path.name, command)
    (_, preview) = next(action_steps(load(PR), "pulumi/actions"))
    assert preview["with"]["github-token"] == "${{ secrets.GITHUB_TOKEN }}"


def test_pulumi_plugins_are_cached_for_the_preview_only() -> None:
    ((job_id, cache),) = action_steps(load(PR), "actions/cache")
    assert job_id == "preview"
    assert cache["with"]["path"] == "~/.pulumi/plugins"
    assert "hashFiles('uv.lock', 'Pulumi.yaml')" in cache["with"]["key"]
    assert list(action_steps(load(DEPLOY), "actions/cache")) == []


def test_pulumi_cli_is_pinned_once_and_matches_the_locked_sdk() -> None:
    versions = {}
    for path in (PR, DEPLOY):
        workflow = load(path)
        version = workflow["env"]["PULUMI_CLI_VERSION"]
        assert isinstance(version, str), f"{path.name}: PULUMI_CLI_VERSION must read as x.y.z, got {version!r}"
        assert EXACT_VERSION.fullmatch(version), f"{path.name}: {version!r} is not an exact version"
        versions[path.name] = version
        pulumi_steps = list(action_steps(workflow, "pulumi/actions"))
        assert pulumi_steps, path.name
        for _, step in pulumi_steps:
            assert step["with"]["pulumi-version"] == "${{ env.PULUMI_CLI_VERSION }}", path.name
    assert versions["pr.yml"] == versions["deploy.yml"]
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    (sdk,) = (package["version"] for package in lock["package"] if package["name"] == "pulumi")
    assert versions["pr.yml"] == sdk, "bump PULUMI_CLI_VERSION in both workflows with the pulumi SDK in uv.lock"


# --- Both workflows ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [PR, DEPLOY], ids=lambda path: path.name)
def test_top_level_permissions_are_read_only(path: Path) -> None:
    workflow = load(path)
    assert workflow["permissions"] == {"contents": "read"}
    allowed_writes = {("pr.yml", "preview"): {"pull-requests"}}
    for job_id, job in workflow["jobs"].items():
        permissions = job.get("permissions", {})
        assert isinstance(permissions, dict), (path.name, job_id, permissions)
        writes = {scope for scope, level in permissions.items() if level == "write"}
        assert writes == allowed_writes.get((path.name, job_id), set()), (path.name, job_id)


@pytest.mark.parametrize("path", [PR, DEPLOY], ids=lambda path: path.name)
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
    for path in (PR, DEPLOY):
        for action, sha, version in re.findall(r"uses: ([\w./-]+)@([0-9a-f]{40}) # (\S+)", path.read_text()):
            pins.setdefault(action, set()).add(f"{sha} {version}")
    assert {action: len(releases) for action, releases in pins.items()} == dict.fromkeys(pins, 1), pins


@pytest.mark.parametrize("path", [PR, DEPLOY], ids=lambda path: path.name)
def test_checkout_never_persists_the_token(path: Path) -> None:
    checkouts = list(action_steps(load(path), "actions/checkout"))
    assert checkouts
    for job_id, step in checkouts:
        assert step.get("with", {}).get("persist-credentials") is False, (path.name, job_id)


@pytest.mark.parametrize("path", [PR, DEPLOY], ids=lambda path: path.name)
def test_run_scripts_never_interpolate_expressions(path: Path) -> None:
    # Event data, secrets and outputs reach a script only through `env:`, never as `${{ }}` text.
    for job_id, job in load(path)["jobs"].items():
        for step in job.get("steps", []):
            assert "${{" not in str(step.get("run", "")), (path.name, job_id, step.get("name"))


@pytest.mark.parametrize("path", [PR, DEPLOY], ids=lambda path: path.name)
def test_secrets_reach_only_the_steps_that_use_them(path: Path) -> None:
    workflow = load(path)
    assert not any("secrets." in text for text in strings(workflow.get("env", {}))), "secrets in the workflow's env"
    for job_id, job in workflow["jobs"].items():
        outside_steps = {key: value for key, value in job.items() if key != "steps"}
        assert not any("secrets." in text for text in strings(outside_steps)), (path.name, job_id)
        for step in job.get("steps", []):
            assert "secrets." not in str(step.get("run", "")), (path.name, job_id, step.get("name"))
