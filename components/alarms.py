"""CloudMonitor alarms for the production host, mailed to the addresses in `memos:alertEmails`.

Creates one alarm contact per address and a contact group of them; an application group holding the
instance (its events and the backup-age metric belong to it); alarms on the host's CPU (hypervisor
metric), memory and data-disk usage (CloudMonitor agent metrics, thresholds from config); an HTTP
probe of the app's public `/healthz` from CloudMonitor's site monitoring, which fails when the host,
Docker, the app or the network is down, with an alarm on its availability; an event rule for the
instance's state changes (stopped, started, restarted); and, with off-host copies, an alarm when the
newest verified dump, reported by the copier as a custom metric, is older than 26 hours.

Metric names and dimensions follow CloudMonitor's metric reference: `acs_ecs_dashboard`
CPUUtilization / memory_usedutilization (instanceId) and vm.DiskUtilization (instanceId,
mountpoint), `acs_networkmonitor` Availability (taskId), and `acs_customMetric_<account id>` with
`groupId` and a `key=value` dimension string for custom metrics.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_alicloud as alicloud

from lib.cloud_init import DATA_MOUNT
from lib.cloud_names import site_monitor_task_name
from settings import AlarmSettings

#: The copier's custom metric (ops/oss_upload.py AGE_METRIC) and when it alarms.
BACKUP_AGE_METRIC = "memos_backup_age_hours"
BACKUP_AGE_LIMIT_HOURS = 26
#: Availability (percent of probe points that got an answer) below which /healthz alarms.
HEALTHZ_AVAILABILITY_PERCENT = 80
#: While an alarm stays raised, it mails again after this long (CloudMonitor's range: 300-86400 s).
REMIND_SECONDS = 4 * 3600
#: Contact parameter level 4: notify by email.
EMAIL_LEVEL = "4"


@dataclass(frozen=True)
class HostAlarmsArgs:
    """Inputs of HostAlarms."""

    #: Addresses and thresholds from stack config.
    alarms: AlarmSettings
    name_prefix: str
    stack: str
    #: Region of the instance (alicloud:region).
    region: str
    instance_id: pulumi.Input[str]
    instance_name: str
    #: Public URL of the app's health endpoint, probed from outside.
    health_url: pulumi.Input[str]
    #: Whether the copier reports the backup age (only with off-host copies).
    backup_age: bool


def contact_key(email: str) -> str:
    """A stable name part for an address: lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", email.lower()).strip("-")


def _dimensions(*entries: Mapping[str, pulumi.Input[str]]) -> pulumi.Output[str]:
    return pulumi.Output.all(*[pulumi.Output.all(**dict(entry)) for entry in entries]).apply(
        lambda resolved: json.dumps(list(resolved))
    )


class HostAlarms(pulumi.ComponentResource):
    """Who hears about the host, and on what."""

    #: The application group (the copier's CMS_GROUP_ID).
    group_id: pulumi.Output[str]
    contact_group_name: pulumi.Output[str]

    def __init__(self, name: str, args: HostAlarmsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("memos:index:HostAlarms", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        label = f"{args.name_prefix}-{args.stack}"
        settings = args.alarms

        contacts = [
            alicloud.cms.AlarmContact(
                f"{name}-contact-{contact_key(email)}",
                alarm_contact_name=f"{label}-{contact_key(email)}"[:40],
                describe=f"Memos {args.stack} alarms",
                channels_mail=email,
                lang="en",
                opts=child,
            )
            for email in settings.emails
        ]
        group = alicloud.cms.AlarmContactGroup(
            f"{name}-contacts",
            alarm_contact_group_name=label,
            describe=f"Everyone who hears the Memos {args.stack} alarms",
            contacts=[contact.alarm_contact_name for contact in contacts],
            opts=child,
        )
        contact_groups = [group.alarm_contact_group_name]
        monitor_group = alicloud.cms.MonitorGroup(
            f"{name}-group",
            monitor_group_name=label,
            contact_groups=contact_groups,
            opts=child,
        )
        alicloud.cms.MonitorGroupInstances(
            f"{name}-group-instance",
            group_id=monitor_group.id,
            instances=[
                alicloud.cms.MonitorGroupInstancesInstanceArgs(
                    instance_id=args.instance_id,
                    instance_name=args.instance_name,
                    region_id=args.region,
                    category="ecs",
                )
            ],
            opts=child,
        )

        def alarm(role: str, title: str, *, project: pulumi.Input[str], metric: str,
                  dimensions: pulumi.Input[str], operator: str, threshold: int, statistics: str,
                  period: int, times: int) -> None:  # fmt: skip
            alicloud.cms.Alarm(
                f"{name}-{role}",
                name=f"{label} {title}",
                project=project,
                metric=metric,
                metric_dimensions=dimensions,
                period=period,
                contact_groups=contact_groups,
                escalations_critical=alicloud.cms.AlarmEscalationsCriticalArgs(
                    comparison_operator=operator, statistics=statistics, threshold=str(threshold), times=times
                ),
                silence_time=REMIND_SECONDS,
                enabled=True,
                opts=child,
            )

        host = {"instanceId": args.instance_id}
        alarm("cpu", "host CPU", project="acs_ecs_dashboard", metric="CPUUtilization", dimensions=_dimensions(host),
              operator=">=", threshold=settings.cpu_percent, statistics="Average", period=300, times=3)  # fmt: skip
        alarm("memory", "host memory", project="acs_ecs_dashboard", metric="memory_usedutilization",
              dimensions=_dimensions(host), operator=">=", threshold=settings.memory_percent, statistics="Average",
              period=300, times=3)  # fmt: skip
        alarm("data-disk", "data disk", project="acs_ecs_dashboard", metric="vm.DiskUtilization",
              dimensions=_dimensions({**host, "mountpoint": DATA_MOUNT}), operator=">=",
              threshold=settings.data_disk_percent, statistics="Average", period=300, times=1)  # fmt: skip

        probe = alicloud.cms.SiteMonitor(
            f"{name}-healthz",
            # CreateSiteMonitor takes letters, digits and underscores only (lib/cloud_names.py).
            task_name=site_monitor_task_name(args.name_prefix, args.stack, "healthz"),
            task_type="HTTP",
            address=args.health_url,
            interval="1",
            opts=child,
        )
        alarm("healthz-down", "app /healthz unreachable", project="acs_networkmonitor", metric="Availability",
              dimensions=_dimensions({"taskId": probe.id}), operator="<", threshold=HEALTHZ_AVAILABILITY_PERCENT,
              statistics="Availability", period=60, times=3)  # fmt: skip

        alicloud.cms.EventRule(
            f"{name}-host-state",
            rule_name=f"{label}-host-state",
            description="The Memos host was stopped, started or restarted",
            group_id=monitor_group.id,
            event_pattern=alicloud.cms.EventRuleEventPatternArgs(
                product="ecs", event_type_lists=["StatusNotification"], name_lists=["Instance:StateChange"]
            ),
            contact_parameters=[
                alicloud.cms.EventRuleContactParameterArgs(
                    contact_parameters_id="1", contact_group_name=group.alarm_contact_group_name, level=EMAIL_LEVEL
                )
            ],
            status="ENABLED",
            opts=child,
        )

        if args.backup_age:
            account = alicloud.get_account()
            alarm("backup-age", f"newest verified dump older than {BACKUP_AGE_LIMIT_HOURS} h",
                  project=f"acs_customMetric_{account.id}", metric=BACKUP_AGE_METRIC,
                  dimensions=_dimensions({"groupId": monitor_group.id, "dimension": f"stack={args.stack}"}),
                  operator=">", threshold=BACKUP_AGE_LIMIT_HOURS, statistics="Maximum", period=300,
                  times=1)  # fmt: skip

        self.group_id = monitor_group.id
        self.contact_group_name = group.alarm_contact_group_name
        self.register_outputs({"group_id": self.group_id, "contact_group_name": self.contact_group_name})
