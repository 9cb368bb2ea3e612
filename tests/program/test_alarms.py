"""CloudMonitor alarms of the prod stack: whole inputs, thresholds from config, who hears them.

The alarms run under the mock engine like every other resource, so what is checked is what the
program asks CloudMonitor for (metric names, dimensions, thresholds, contact group); whether
CloudMonitor raises them on a real host is not visible here. tests/ops/test_oss_upload.py sends the
backup-age metric through the SDK to a stand-in and shows the names agree.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pytest

from components.alarms import BACKUP_AGE_METRIC
from harness.mock_engine import ACCOUNT_ID, StackRun, run_program
from lib.cloud_names import SITE_MONITOR_TASK_NAME
from lib.policy_rules import ALARM_CONTACT, PolicyResource, evaluate
from ops.oss_upload import AGE_METRIC
from tests.conftest import PROD_SECRETS
from tools.offline_check import policy_resources

OSS = {"backupToOss": True}


def alarm(run: StackRun, role: str) -> dict[str, Any]:
    inputs = dict(run.by_name(f"alarms-{role}").inputs)
    inputs["metricDimensions"] = json.loads(inputs["metricDimensions"])
    return inputs


def expected(title: str, project: str, metric: str, dimensions: list[dict[str, str]], operator: str,
             threshold: str, statistics: str, period: int, times: int) -> dict[str, Any]:  # fmt: skip
    return {
        "name": f"memos-prod {title}",
        "project": project,
        "metric": metric,
        "metricDimensions": dimensions,
        "period": period,
        "contactGroups": ["memos-prod"],
        "escalationsCritical": {"comparisonOperator": operator, "statistics": statistics, "threshold": threshold,
                                "times": times},
        "silenceTime": 14400,
        "enabled": True,
    }  # fmt: skip


def test_every_address_is_a_contact_in_the_stacks_contact_group() -> None:
    run = run_program("prod", {"alertEmails": ["ops@example.com", "Night.Shift+memos@example.org"]},
                      secrets=PROD_SECRETS)  # fmt: skip
    assert run.by_name("alarms-contact-ops-example-com").inputs == {
        "alarmContactName": "memos-prod-ops-example-com",
        "describe": "Memos prod alarms",
        "channelsMail": "ops@example.com",
        "lang": "en",
    }
    assert run.by_name("alarms-contact-night-shift-memos-example-org").inputs["channelsMail"] == (
        "Night.Shift+memos@example.org"
    )
    assert run.by_name("alarms-contacts").inputs == {
        "alarmContactGroupName": "memos-prod",
        "describe": "Everyone who hears the Memos prod alarms",
        "contacts": ["memos-prod-ops-example-com", "memos-prod-night-shift-memos-example-org"],
    }
    assert run.by_name("alarms-group").inputs == {"monitorGroupName": "memos-prod", "contactGroups": ["memos-prod"]}
    assert run.by_name("alarms-group-instance").inputs == {
        "groupId": run.by_name("alarms-group").mock_id,
        "instances": [{"instanceId": run.by_name("host-instance").mock_id, "instanceName": "memos-host",
                       "regionId": "cn-hangzhou", "category": "ecs"}],
    }  # fmt: skip


def test_host_alarms_use_the_configured_thresholds(prod_run: StackRun) -> None:
    instance = prod_run.by_name("host-instance").mock_id
    host = [{"instanceId": instance}]
    assert alarm(prod_run, "cpu") == expected("host CPU", "acs_ecs_dashboard", "CPUUtilization", host, ">=", "90",
                                              "Average", 300, 3)  # fmt: skip
    assert alarm(prod_run, "memory") == expected("host memory", "acs_ecs_dashboard", "memory_usedutilization", host,
                                                 ">=", "90", "Average", 300, 3)  # fmt: skip
    assert alarm(prod_run, "data-disk") == expected(
        "data disk", "acs_ecs_dashboard", "vm.DiskUtilization", [{"instanceId": instance, "mountpoint": "/data"}],
        ">=", "85", "Average", 300, 1,
    )  # fmt: skip
    changed = run_program("prod", {"alarmCpuPercent": 75, "alarmMemoryPercent": 80, "alarmDataDiskPercent": 70},
                          secrets=PROD_SECRETS)  # fmt: skip
    thresholds = {
        role: alarm(changed, role)["escalationsCritical"]["threshold"] for role in ("cpu", "memory", "data-disk")
    }
    assert thresholds == {"cpu": "75", "memory": "80", "data-disk": "70"}


def test_the_public_healthz_is_probed_from_outside_and_alarms_when_unreachable(prod_run: StackRun) -> None:
    probe = prod_run.by_name("alarms-healthz")
    assert probe.inputs == {
        "taskName": "memos_prod_healthz",
        "taskType": "HTTP",
        "address": "http://198.51.100.20:5230/healthz",
        "interval": "1",
    }
    assert alarm(prod_run, "healthz-down") == expected(
        "app /healthz unreachable", "acs_networkmonitor", "Availability", [{"taskId": probe.mock_id}], "<", "80",
        "Availability", 60, 3,
    )  # fmt: skip
    behind_proxy = run_program("prod", {"domain": "notes.example.com", "acmeEmail": "ops@example.com"},
                               secrets=PROD_SECRETS)  # fmt: skip
    assert behind_proxy.by_name("alarms-healthz").inputs["address"] == "https://notes.example.com/healthz"


def test_a_stopped_or_restarted_host_is_an_event_mailed_to_the_group(prod_run: StackRun) -> None:
    assert prod_run.by_name("alarms-host-state").inputs == {
        "ruleName": "memos-prod-host-state",
        "description": "The Memos host was stopped, started or restarted",
        "groupId": prod_run.by_name("alarms-group").mock_id,
        "eventPattern": {"product": "ecs", "eventTypeLists": ["StatusNotification"],
                         "nameLists": ["Instance:StateChange"]},
        "contactParameters": [{"contactParametersId": "1", "contactGroupName": "memos-prod", "level": "4"}],
        "status": "ENABLED",
    }  # fmt: skip


def test_the_backup_age_alarms_after_26_hours_on_the_copiers_metric() -> None:
    run = run_program("prod", OSS, secrets=PROD_SECRETS)
    group = run.by_name("alarms-group").mock_id
    assert BACKUP_AGE_METRIC == AGE_METRIC
    assert alarm(run, "backup-age") == expected(
        "newest verified dump older than 26 h", f"acs_customMetric_{ACCOUNT_ID}", "memos_backup_age_hours",
        [{"groupId": group, "dimension": "stack=prod"}], ">", "26", "Maximum", 300, 1,
    )  # fmt: skip
    env = dict(entry.split("=", 1) for entry in run.by_name("backup-offsite").inputs["envs"])
    assert (env["CMS_GROUP_ID"], env["MEMOS_STACK"]) == (group, "prod")


def test_without_off_host_copies_there_is_no_backup_age_to_alarm_on(prod_run: StackRun) -> None:
    assert "alarms-backup-age" not in prod_run.names()


def test_dev_has_no_alarms(dev_run: StackRun) -> None:
    assert not [name for name in dev_run.names() if name.startswith("alarms")]


def test_the_destroy_guard_covers_the_alarms(prod_run: StackRun) -> None:
    guarded = set(prod_run.by_name("destroy-guard").options["dependencies"])
    assert {r.urn for r in prod_run.resources.values() if r.name.startswith("alarms-")} <= guarded


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"alertEmails": []}, "memos:alertEmails: is empty; prod alarms must reach someone"),
        ({"alertEmails": ["ops"]}, "memos:alertEmails: 'ops' is not an email address"),
        ({"alertEmails": ["a@example.com", "a@example.com"]}, "memos:alertEmails: lists an address twice"),
        ({"alarmCpuPercent": 0}, "memos:alarmCpuPercent: 0 is out of range"),
        ({"alarmDataDiskPercent": 101}, "memos:alarmDataDiskPercent: 101 is out of range"),
    ],
    ids=["no address", "not an address", "twice", "cpu 0", "disk 101"],
)
def test_bad_alarm_config_fails_with_one_line(overrides: dict[str, Any], fragment: str) -> None:
    with pytest.raises(pulumi.RunError) as raised:
        run_program("prod", overrides, secrets=PROD_SECRETS)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(fragment)


def test_the_policy_rule_refuses_a_prod_stack_whose_alarms_reach_nobody(prod_run: StackRun) -> None:
    resources = policy_resources(prod_run)
    assert [v for v in evaluate(resources) if v[0] == "prod-alarms-reach-someone"] == []
    silent = [r for r in resources if r.type != ALARM_CONTACT]
    assert evaluate(silent) == [(
        "prod-alarms-reach-someone",
        "stack prod runs a host but no alarm reaches anyone (no email contact in a contact group); "
        "set memos:alertEmails",
    )]  # fmt: skip
    # A contact that no group lists reaches nobody either.
    ungrouped = [
        PolicyResource(r.type, r.name, r.urn, {**r.props, "contacts": []}, r.protect)
        if r.type == "alicloud:cms/alarmContactGroup:AlarmContactGroup" else r
        for r in resources
    ]  # fmt: skip
    assert [name for name, _ in evaluate(ungrouped)] == ["prod-alarms-reach-someone"]


#: What the provider validates before any API call (terraform-provider-alicloud,
#: resource_alicloud_cms_alarm.go and resource_alicloud_cms_site_monitor.go).
ALARM_OPERATORS = {">", ">=", "<", "<=", "!=", "==", "GreaterThanYesterday", "LessThanYesterday",
                   "GreaterThanLastWeek", "LessThanLastWeek", "GreaterThanLastPeriod",
                   "LessThanLastPeriod"}  # fmt: skip
SITE_MONITOR_INTERVALS = {"1", "5", "15", "30", "60"}


def test_every_alarm_passes_the_providers_own_validation() -> None:
    run = run_program("prod", OSS, secrets=PROD_SECRETS)
    alarms = run.of_type("alicloud:cms/alarm:Alarm")
    assert len(alarms) == 5
    for resource in alarms:
        assert resource.inputs["escalationsCritical"]["comparisonOperator"] in ALARM_OPERATORS
        assert 300 <= resource.inputs["silenceTime"] <= 86400
        json.loads(resource.inputs["metricDimensions"])
    for resource in run.of_type("alicloud:cms/siteMonitor:SiteMonitor"):
        assert resource.inputs["interval"] in SITE_MONITOR_INTERVALS


def test_the_site_monitor_task_name_holds_only_what_createsitemonitor_accepts() -> None:
    # CreateSiteMonitor: 4-100 letters, digits, underscores (or Chinese characters); the provider checks
    # nothing, so a hyphen would pass the preview and fail the API call. A prefix with dashes too:
    run = run_program("prod", {"namePrefix": "team-notes"}, secrets=PROD_SECRETS)
    name = run.by_name("alarms-healthz").inputs["taskName"]
    assert name == "team_notes_prod_healthz"
    assert SITE_MONITOR_TASK_NAME.match(name)
