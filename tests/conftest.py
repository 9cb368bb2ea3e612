"""Shared fixtures: the program run through the mock engine for each stack config."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.docker_daemon import (  # noqa: E402
    DaemonUnavailableError,
    PrivateDockerd,
    start_private_dockerd,
    unavailable_reason,
)
from harness.mock_engine import StackRun, run_program  # noqa: E402

#: Stand-ins for real API keys: unique strings the leak tests search for everywhere.
SECRET_MARKERS = {
    "siliconflowApiKey": "marker-siliconflow-key-3f9c1d",
    "deepseekApiKey": "marker-deepseek-key-8a2e7b",
    "openaiApiKey": "marker-openai-key-51d0aa",
}
#: The keys the prod stack's default providers (siliconflow embeddings, deepseek chat) need.
PROD_SECRETS = {k: SECRET_MARKERS[k] for k in ("siliconflowApiKey", "deepseekApiKey")}


#: The whole-stack files, the suite's largest units of work. They go first in the collection so that
#: with `--dist loadfile --no-loadscope-reorder` (scripts/test) each of the two workers starts with one.
#: (xdist's `loadgroup` would say this with a marker, but it does nothing under pytest 9: it renames
#: `item._nodeid`, which pytest 9 no longer reads.)
WHOLE_STACK_FILES = ("tests/deploy/test_rehearsal.py", "tests/deploy/test_on_docker.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return WHOLE_STACK_FILES.index(path) if path in WHOLE_STACK_FILES else len(WHOLE_STACK_FILES)

    items.sort(key=rank)  # stable: each file keeps its own order (the rehearsal's scenarios build on each other)


@pytest.fixture(scope="module")
def dev_run() -> StackRun:
    return run_program("dev")


@pytest.fixture(scope="module")
def prod_run() -> StackRun:
    return run_program("prod", secrets=PROD_SECRETS)


def _private_dockerd(data_root_name: str) -> Iterator[PrivateDockerd]:
    """A private Docker Engine on its own data root, stopped by its pid at the end of the session.

    In CI (CI=true) an engine that cannot start fails the tier with its one-line reason; on a
    contributor's machine without root or without dockerd the tier is skipped with that reason.
    """
    reason = unavailable_reason()
    daemon: PrivateDockerd | None = None
    run_dir = Path(tempfile.mkdtemp(prefix="mi-", dir="/tmp"))  # short: the socket path has a limit
    if reason is None:
        try:
            daemon = start_private_dockerd(run_dir, data_root_name=data_root_name)
        except DaemonUnavailableError as error:
            reason = str(error)
    if daemon is None:
        shutil.rmtree(run_dir, ignore_errors=True)
        if os.environ.get("CI"):
            pytest.fail(f"the Docker tier cannot run: {reason}", pytrace=False)
        pytest.skip(str(reason))
    daemon.clear()
    yield daemon
    daemon.clear()
    daemon.close()
    shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def dockerd() -> Iterator[PrivateDockerd]:
    """The Docker tier's private Engine (the dev stack's Docker host)."""
    yield from _private_dockerd("docker-root")


@pytest.fixture(scope="session")
def rehearsal_dockerd() -> Iterator[PrivateDockerd]:
    """The private Engine the rehearsal host runs on (its own data root, so it runs beside the tier's)."""
    yield from _private_dockerd("rehearsal-root")


@pytest.fixture
def on_dockerd(dockerd: PrivateDockerd, monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivateDockerd]:
    """The private daemon, empty but for its cached images, as the program's Docker host."""
    dockerd.clear()
    monkeypatch.setenv("DOCKER_HOST", dockerd.host)
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    yield dockerd
    dockerd.clear()
