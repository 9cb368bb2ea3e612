"""Names the cloud APIs accept where the provider checks nothing."""

from __future__ import annotations

import pytest

from lib.cloud_names import SITE_MONITOR_TASK_NAME, site_monitor_task_name


def test_a_site_monitor_task_name_turns_every_other_character_into_an_underscore() -> None:
    assert site_monitor_task_name("memos", "prod.eu-1", "healthz") == "memos_prod_eu_1_healthz"


def test_a_site_monitor_task_name_is_cut_to_the_apis_100_characters() -> None:
    name = site_monitor_task_name("memos", "s" * 120, "healthz")
    assert len(name) == 100
    assert SITE_MONITOR_TASK_NAME.match(name)


def test_a_name_shorter_than_the_apis_four_characters_is_refused() -> None:
    with pytest.raises(ValueError, match="is not a site monitoring task name"):
        site_monitor_task_name("a")
