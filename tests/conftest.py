"""Shared fixtures: the program run through the mock engine for each stack config."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools.mock_engine import StackRun, run_program  # noqa: E402

#: Stand-ins for real API keys: unique strings the leak tests search for everywhere.
SECRET_MARKERS = {
    "siliconflowApiKey": "marker-siliconflow-key-3f9c1d",
    "deepseekApiKey": "marker-deepseek-key-8a2e7b",
    "openaiApiKey": "marker-openai-key-51d0aa",
}
#: The keys the prod stack's default providers (siliconflow embeddings, deepseek chat) need.
PROD_SECRETS = {k: SECRET_MARKERS[k] for k in ("siliconflowApiKey", "deepseekApiKey")}


@pytest.fixture(scope="module")
def dev_run() -> StackRun:
    return run_program("dev")


@pytest.fixture(scope="module")
def prod_run() -> StackRun:
    return run_program("prod", secrets=PROD_SECRETS)
