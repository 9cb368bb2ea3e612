"""Pure pieces of the ApsaraDB RDS for PostgreSQL database: names, the backup window, the DSN, the
extension job's script.

Facts from the Terraform alicloud provider that pulumi-alicloud bridges (alicloud/extension_rds.go,
resource_alicloud_db_backup_policy.go, resource_alicloud_rds_account.go): a backup window is one of
the whole-hour slots "00:00Z-01:00Z" ... "23:00Z-24:00Z"; account names match
`^[a-z][a-z0-9_]{0,61}[a-z0-9]$`. From Alibaba Cloud's pgvector guide for RDS PostgreSQL: the
`vector` extension needs major version 14 or later and is created by a privileged account.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

from lib.database_sql import EXTENSIONS_SQL

RDS_PORT = 5432
#: The privileged account: used only by the extension job, never by the app.
ADMIN_ACCOUNT = "memos_admin"
_ACCOUNT = re.compile(r"^[a-z][a-z0-9_]{0,61}[a-z0-9]$")
#: Storage types the RDS data sources accept as a filter: `db_instance_storage_type` of both
#: get_instance_engines and get_instance_classes is StringInSlice of these (alicloud/data_source_alicloud_
#: db_instance_engines.go and ..._classes.go, v1.247.0), while the instance itself also takes
#: general_essd (resource_alicloud_db_instance.go). Any other value fails the invoke before any API call.
LOOKUP_STORAGE_TYPES = ("cloud_ssd", "local_ssd", "cloud_essd", "cloud_essd2", "cloud_essd3")


def backup_window(hour_utc: int) -> str:
    """The RDS backup slot that starts at `hour_utc` (memos:backupTimeUtc's hour): "18:00Z-19:00Z"."""
    if not 0 <= hour_utc <= 23:
        raise ValueError(f"hour {hour_utc} is not 0-23")
    return f"{hour_utc:02d}:00Z-{hour_utc + 1:02d}:00Z"


def rds_dsn(*, user: str, password: str, host: str, port: int, database: str) -> str:
    """The app's DSN to the RDS private endpoint, encrypted (RDS serves its cloud certificate).

    sslmode=require encrypts without verifying the server certificate: the endpoint is reached only
    inside the VPC, and verifying would need Alibaba's CA file in the app container.
    """
    if not password.isalnum():
        raise ValueError("the app password must be alphanumeric to sit in a DSN unescaped")
    if not _ACCOUNT.match(user):
        raise ValueError(f"{user!r} is not an RDS account name")
    return f"postgres://{user}:{password}@{host}:{port}/{database}?sslmode=require"


def extension_job_command(*, image: str, host: str, port: int, database: str, user: str) -> list[str]:
    """`docker run` on the ECS host that creates the extensions as the privileged account.

    The password is the first line of the job's stdin: BusyBox/dash `read` takes exactly that line and
    leaves the SQL that follows for psql, so the password is on no command line and in no container
    config (`docker inspect`), only in psql's own environment inside a container that exits at once.
    """
    script = (
        "IFS= read -r PGPASSWORD && export PGPASSWORD && exec psql -v ON_ERROR_STOP=1 --no-psqlrc -q "
        f'"host={host} port={port} dbname={database} user={user} sslmode=require"'
    )
    return ["docker", "run", "--rm", "-i", "--network", "host", "--entrypoint", "/bin/sh", image, "-c", script]


def extension_job_stdin(password: str) -> str:
    """What the extension job reads: the password line, then the SQL."""
    if "\n" in password:
        raise ValueError("a password line cannot hold a newline")
    return f"{password}\n{EXTENSIONS_SQL}"


def _gib(value: object) -> int:
    """A size the provider prints with fmt.Sprint of the API's number: "20", "20.0" or 20."""
    try:
        return int(Decimal(str(value)))
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a storage size") from None


def storage_ranges(value: object) -> list[tuple[int, int]]:
    """(min, max) GiB of an instance class's `storageRanges`, however the lookup hands it over.

    The provider declares `storage_range` as a TypeMap with a resource Elem and fills it with one
    {min, max, step} map per class (data_source_alicloud_db_instance_classes.go, v1.247.0), while the
    SDK's schema calls it a list (`storage_ranges`): read one object or a list of them.
    """
    items: list[object]
    if value is None:
        items = []
    elif isinstance(value, Mapping):
        items = [value]
    elif isinstance(value, list):
        items = list(value)  # pyright: ignore[reportUnknownArgumentType]
    else:
        raise ValueError(f"{value!r} is not a storage range or a list of them")
    ranges: list[tuple[int, int]] = []
    for item in items:
        if not isinstance(item, Mapping) or "min" not in item or "max" not in item:
            raise ValueError(f"{item!r} is not a storage range")
        ranges.append((_gib(item["min"]), _gib(item["max"])))  # pyright: ignore[reportUnknownArgumentType]
    return ranges
