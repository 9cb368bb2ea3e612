"""Names that Alibaba Cloud APIs accept, for the resources whose names the provider does not check.

CloudMonitor's CreateSiteMonitor documents TaskName as 4 to 100 characters of letters, digits,
underscores and Chinese characters (API reference, and ROS's ALIYUN::CMS::SiteMonitor constraint).
The Terraform provider pulumi-alicloud bridges declares `task_name` as a plain required string with no
ValidateFunc (alicloud/resource_alicloud_cms_site_monitor.go, v1.247.0), so a name with a hyphen
passes the preview and is refused only by the API call during `pulumi up`.
"""

from __future__ import annotations

import re

SITE_MONITOR_TASK_NAME = re.compile(r"^[A-Za-z0-9_\u4e00-\u9fff]{4,100}$")


def site_monitor_task_name(*parts: str) -> str:
    """A site monitoring task name from `parts` (e.g. the name prefix, the stack, the probe):
    every other character becomes an underscore, and the result is cut to 100 characters."""
    name = re.sub(r"[^A-Za-z0-9_\u4e00-\u9fff]", "_", "_".join(parts))[:100]
    if not SITE_MONITOR_TASK_NAME.match(name):
        raise ValueError(f"{name!r} is not a site monitoring task name (4-100 letters, digits or underscores)")
    return name
