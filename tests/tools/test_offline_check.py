"""The offline check: every stack through the mock engine, the policy rules and the memory budget."""

from __future__ import annotations

import pytest

from lib import policy_rules
from tools import offline_check


def test_every_stack_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert offline_check.main([]) == 0
    out = capsys.readouterr().out
    assert "stack dev" in out
    assert "stack prod" in out
    assert out.count("  OK") == 2
    assert "database worst case" in out


def test_a_policy_violation_fails_the_check_and_says_which(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Treat dev like prod: its volumes are deliberately unprotected, so the rule must fire.
    monkeypatch.setattr(policy_rules, "PROTECTED_STACKS", frozenset({"prod", "dev"}))
    assert offline_check.main(["dev"]) == 1
    out = capsys.readouterr().out
    assert "FAIL policy stateful-resources-protected: volumes-database holds data but is not protected" in out


def test_an_invalid_stack_config_fails_the_check(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = offline_check.stack_config
    monkeypatch.setattr(offline_check, "stack_config", lambda stack: {**real(stack), "memos:dbMaxConnections": "400"})
    assert offline_check.main(["dev"]) == 1
    assert "memos:dbMaxConnections" in capsys.readouterr().out


def test_an_unknown_stack_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert offline_check.main(["staging"]) == 2
    assert "no Pulumi.<stack>.yaml for: staging" in capsys.readouterr().err
