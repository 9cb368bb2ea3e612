"""The app container's shell pieces, run under a real BusyBox, as in the Alpine-based image.

The entrypoint wrapper turns `<NAME>_FILE` into `<NAME>` and execs the image's entrypoint; the
healthcheck is BusyBox `wget`. Both are run here with BusyBox's own `sh` and `wget` applets.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.mock_engine import StackRun
from lib.app_env import HEALTH_URL, IMAGE_ENTRYPOINT, secret_env_wrapper
from tests.support import HealthEndpoint

BUSYBOX = shutil.which("busybox")
if BUSYBOX is None:  # pragma: no cover - the test script installs it
    pytest.fail("busybox is required (Debian/Ubuntu: apt-get install busybox); ./scripts/test installs it")


def run_wrapper(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the wrapper with the image's entrypoint path pointed at a stand-in that prints its env."""
    fake_entrypoint = tmp_path / "entrypoint.sh"
    fake_entrypoint.write_text('#!/bin/sh\necho "args: $*"\nenv | sort\n')
    fake_entrypoint.chmod(0o755)
    wrapper = tmp_path / "memos-secret-env"
    wrapper.write_text(secret_env_wrapper().replace(IMAGE_ENTRYPOINT[0], str(fake_entrypoint)))
    return subprocess.run(
        [str(BUSYBOX), "sh", str(wrapper)],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        check=False,
    )


def test_wrapper_reads_each_key_file_into_its_variable_and_runs_the_entrypoint(tmp_path: Path) -> None:
    (tmp_path / "deepseek").write_text("sk-value with spaces and $dollar\n")
    (tmp_path / "siliconflow").write_text("sf-value")
    result = run_wrapper(
        tmp_path,
        {
            "MEMOS_AI_DEEPSEEK_API_KEY_FILE": str(tmp_path / "deepseek"),
            "MEMOS_AI_SILICONFLOW_API_KEY_FILE": str(tmp_path / "siliconflow"),
            "MEMOS_DSN_FILE": "/run/memos-secrets/dsn",
        },
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"args: {IMAGE_ENTRYPOINT[1]}"
    assert "MEMOS_AI_DEEPSEEK_API_KEY=sk-value with spaces and $dollar" in lines
    assert "MEMOS_AI_SILICONFLOW_API_KEY=sf-value" in lines
    # The _FILE variables are consumed, the DSN file is left for the image's own entrypoint.
    assert not any(line.startswith("MEMOS_AI_DEEPSEEK_API_KEY_FILE=") for line in lines)
    assert "MEMOS_DSN_FILE=/run/memos-secrets/dsn" in lines
    assert not any(line.startswith("MEMOS_AI_OPENAI_API_KEY") for line in lines)


def test_wrapper_refuses_a_key_set_both_ways(tmp_path: Path) -> None:
    (tmp_path / "openai").write_text("from-file")
    result = run_wrapper(
        tmp_path,
        {
            "MEMOS_AI_OPENAI_API_KEY": "direct",
            "MEMOS_AI_OPENAI_API_KEY_FILE": str(tmp_path / "openai"),
        },
    )
    assert result.returncode == 1
    assert "both MEMOS_AI_OPENAI_API_KEY and MEMOS_AI_OPENAI_API_KEY_FILE are set" in result.stderr
    assert "args:" not in result.stdout


def test_wrapper_stops_on_a_missing_key_file(tmp_path: Path) -> None:
    result = run_wrapper(tmp_path, {"MEMOS_AI_DEEPSEEK_API_KEY_FILE": str(tmp_path / "absent")})
    assert result.returncode == 1
    assert "missing or unreadable" in result.stderr


@pytest.fixture
def health_server() -> Iterator[HealthEndpoint]:
    endpoint = HealthEndpoint()
    yield endpoint
    endpoint.close()


@pytest.fixture(scope="module")
def rendered_healthcheck(dev_run: StackRun) -> list[str]:
    """The app container's healthcheck exactly as the program renders it."""
    tests = dev_run.by_name("app-server").inputs["healthcheck"]["tests"]
    assert tests[0] == "CMD"
    return list(tests[1:])


def busybox_healthcheck(command: list[str], port: int) -> int:
    """Run the rendered healthcheck with BusyBox, against the local stand-in server's port."""
    argv = [arg.replace(HEALTH_URL, HEALTH_URL.replace(":5230/", f":{port}/")) for arg in command]
    assert argv[0] == "wget"
    return subprocess.run([str(BUSYBOX), *argv], check=False).returncode


def test_healthcheck_passes_on_200(health_server: HealthEndpoint, rendered_healthcheck: list[str]) -> None:
    assert busybox_healthcheck(rendered_healthcheck, health_server.port) == 0


def test_healthcheck_fails_on_503(health_server: HealthEndpoint, rendered_healthcheck: list[str]) -> None:
    health_server.status = 503
    assert busybox_healthcheck(rendered_healthcheck, health_server.port) == 1


def test_healthcheck_fails_when_nothing_listens(rendered_healthcheck: list[str]) -> None:
    endpoint = HealthEndpoint()
    endpoint.close()
    assert busybox_healthcheck(rendered_healthcheck, endpoint.port) == 1
