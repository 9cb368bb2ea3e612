"""memos-oss-upload: copies each completed database dump to OSS and reports the age of the newest dump.

Runs in its own container beside memos-backup, built from ops/copier/ (the packages below, pinned and
hash-locked), with the dumps' volume mounted read-only at $BACKUP_DIR and a small writable $STATE_DIR.
Every $INTERVAL_SECONDS it uploads, oldest first, each `memos-YYYYmmddTHHMMSSZ[-label].dump` that has
no marker in $STATE_DIR/uploaded/ yet (`*.partial` files are still being written and are never
touched), and reports the age of the newest completed dump to CloudMonitor.

What Alibaba's maintained libraries do here, and what is ours:
- `alibabacloud-credentials` fetches and refreshes the ECS instance's RAM role credentials from the
  instance metadata service (hardened mode with a session token, falling back to normal mode).
- `alibabacloud-oss-v2` signs (V4), retries, uploads in parts above $PART_SIZE_MIB (so dumps of any
  size up to 10,000 parts, read from disk part by part), asks for server-side encryption (AES256)
  and compares the object's CRC-64 with the file's.
- `alibabacloud-cms20190101` sends the custom metric (PutCustomMetric) `memos_backup_age_hours`.
- Ours: which files to copy, the markers, the status file, the health rules, and keeping credentials
  out of every line printed.

    memos-oss-upload            upload forever, one pass every $INTERVAL_SECONDS
    memos-oss-upload --once     one pass; exit 0 if every completed dump is uploaded and the age
                                reported, 1 otherwise
    memos-oss-upload --health   exit 0 if the last pass succeeded, is younger than 3 intervals, and no
                                dump has waited more than 2 hours; otherwise print why and exit 1

Environment: OSS_BUCKET, OSS_REGION (e.g. cn-hangzhou) and OSS_ENDPOINT (e.g.
oss-cn-hangzhou-internal.aliyuncs.com; `http://` in front only for a local stand-in) are required for
uploads; OSS_PREFIX (memos/), BACKUP_DIR (/backups), STATE_DIR (/var/lib/memos-offsite),
INTERVAL_SECONDS (300), PART_SIZE_MIB (16). CMS_GROUP_ID (the CloudMonitor application group) turns
on the backup-age metric, sent to CMS_ENDPOINT (metrics.<region>.aliyuncs.com) with the dimension
stack=$MEMOS_STACK. RAM_ROLE_NAME names the instance's role (else the SDK asks the metadata service).
The SDKs honour HTTP_PROXY for plain-HTTP endpoints, which is how the test suite reaches its stand-ins.

After each pass $STATE_DIR/status.json is replaced atomically (see write_status). One line goes to
stdout per upload and per failure; credentials are never printed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import json
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Collection, Generator, Iterable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, Final, NoReturn, cast


def _stop(signum: int, frame: FrameType | None) -> NoReturn:
    """SIGTERM from `docker stop`. As PID 1 in its container the copier would ignore it without a handler
    (the kernel does not deliver a default-action signal to a PID namespace's init), so the handler is
    installed before the SDKs below take their second or so to import: a stop right after a start then
    ends at once instead of after the 30-second grace period and a kill."""
    raise SystemExit(0)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _stop)

import alibabacloud_oss_v2 as oss  # noqa: E402  # pyright: ignore[reportMissingTypeStubs]
from alibabacloud_cms20190101 import models as cms_models  # noqa: E402  # pyright: ignore[reportMissingTypeStubs]
from alibabacloud_cms20190101.client import Client as CmsClient  # noqa: E402  # pyright: ignore[reportMissingTypeStubs]
from alibabacloud_credentials.client import Client as CredentialClient  # noqa: E402  # pyright: ignore[reportMissingTypeStubs]
from alibabacloud_credentials.http import HttpOptions  # noqa: E402  # pyright: ignore[reportMissingTypeStubs]
from alibabacloud_credentials.provider import EcsRamRoleCredentialsProvider  # noqa: E402  # pyright: ignore[reportMissingTypeStubs]
from alibabacloud_tea_openapi import models as openapi_models  # noqa: E402  # pyright: ignore[reportMissingTypeStubs]

PROGRAM: Final = "memos-oss-upload"

#: A completed dump; memos-backup writes `<name>.partial` and renames it once pg_restore has read it.
DUMP_NAME: Final = re.compile(r"memos-(?P<taken>[0-9]{8}T[0-9]{6}Z)(-[a-z0-9-]+)?\.dump")
CONTENT_TYPE: Final = "application/octet-stream"
SERVER_SIDE_ENCRYPTION: Final = "AES256"
#: The custom metric CloudMonitor alarms on (components/alarms.py).
AGE_METRIC: Final = "memos_backup_age_hours"
#: OSS error codes that mean "these credentials are no longer valid": fetch new ones and retry once.
STALE_CREDENTIAL_CODES: Final = frozenset({"SecurityTokenExpired", "InvalidAccessKeyId", "InvalidSecurityToken"})
#: --health: a completed dump still not uploaded after this long makes the container unhealthy.
PENDING_LIMIT: Final = dt.timedelta(hours=2)
#: --health: the last pass must be younger than this many intervals.
STALE_INTERVALS: Final = 3
#: Metadata service timeouts (milliseconds, as the credentials library takes them).
METADATA_TIMEOUT_MS: Final = 5000
STATUS_FILE: Final = "status.json"
MARKER_DIR: Final = "uploaded"
MARKER_SUFFIX: Final = ".json"


class ConfigError(Exception):
    """An environment variable is missing or invalid."""


class LocalFileError(Exception):
    """A dump could not be read; only that file is affected."""


# ---------------------------------------------------------------------------------------------------------------------
# Configuration


@dataclasses.dataclass(frozen=True)
class Config:
    bucket: str
    region: str
    endpoint: str
    prefix: str
    backup_dir: Path
    state_dir: Path
    interval: int
    part_size: int
    role_name: str | None
    cms_group_id: str | None
    cms_endpoint: str
    stack: str


_BUCKET = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
_REGION = re.compile(r"[a-z]{2}-[a-z0-9-]+")
_ENDPOINT = re.compile(r"(https?://)?[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?")


def _integer(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = env.get(name, str(default))
    if not text.isdigit() or not low <= int(text) <= high:
        raise ConfigError(f"{name}={text!r} must be a whole number from {low} to {high}")
    return int(text)


def load_config(env: Mapping[str, str], *, need_oss: bool = True) -> Config:
    """The settings from the environment; uploads need the bucket, region and endpoint."""
    bucket = env.get("OSS_BUCKET", "")
    region = env.get("OSS_REGION", "")
    endpoint = env.get("OSS_ENDPOINT", "")
    if need_oss:
        if not _BUCKET.fullmatch(bucket):
            raise ConfigError(f"OSS_BUCKET={bucket!r} is not a bucket name (3-63 lowercase letters, digits, dashes)")
        if not _REGION.fullmatch(region):
            raise ConfigError(f"OSS_REGION={region!r} is not a region id such as cn-hangzhou")
        if not _ENDPOINT.fullmatch(endpoint):
            raise ConfigError(
                f"OSS_ENDPOINT={endpoint!r} is not a host name such as oss-cn-hangzhou-internal.aliyuncs.com"
            )
    prefix = env.get("OSS_PREFIX", "memos/")
    if prefix.startswith("/") or ".." in prefix.split("/"):
        raise ConfigError(f"OSS_PREFIX={prefix!r} must be a relative key prefix such as memos/")
    cms_endpoint = env.get("CMS_ENDPOINT", f"metrics.{region}.aliyuncs.com")
    if not _ENDPOINT.fullmatch(cms_endpoint):
        raise ConfigError(f"CMS_ENDPOINT={cms_endpoint!r} is not a host name such as metrics.cn-hangzhou.aliyuncs.com")
    group = env.get("CMS_GROUP_ID", "")
    if group and not group.isdigit():
        raise ConfigError(f"CMS_GROUP_ID={group!r} is not a CloudMonitor application group id")
    return Config(
        bucket=bucket,
        region=region,
        endpoint=endpoint,
        prefix=prefix,
        backup_dir=Path(env.get("BACKUP_DIR", "/backups")),
        state_dir=Path(env.get("STATE_DIR", "/var/lib/memos-offsite")),
        interval=_integer(env, "INTERVAL_SECONDS", 300, 10, 86400),
        part_size=_integer(env, "PART_SIZE_MIB", 16, 1, 1024) * 1024 * 1024,
        role_name=env.get("RAM_ROLE_NAME") or None,
        cms_group_id=group or None,
        cms_endpoint=cms_endpoint,
        stack=env.get("MEMOS_STACK", "prod"),
    )


def object_key(prefix: str, file_name: str) -> str:
    return f"{prefix}{file_name}"


# ---------------------------------------------------------------------------------------------------------------------
# Which dumps, and what was done with them


@dataclasses.dataclass(frozen=True)
class Dump:
    name: str
    size: int
    mtime: float


def is_completed_dump(name: str) -> bool:
    return DUMP_NAME.fullmatch(name) is not None


def taken_at(name: str) -> dt.datetime:
    """When a completed dump was taken, from its name (memos-backup names it by its UTC start)."""
    match = DUMP_NAME.fullmatch(name)
    if match is None:
        raise ValueError(f"{name} is not a completed dump")
    return dt.datetime.strptime(match["taken"], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)


def newest_dump_age_hours(dumps: Iterable[Dump], now: dt.datetime) -> float | None:
    """Hours since the newest completed (so verified) dump was taken; None when there is none."""
    taken = [taken_at(d.name) for d in dumps if is_completed_dump(d.name)]
    return None if not taken else max(0.0, (now - max(taken)).total_seconds() / 3600)


def choose_pending(dumps: Iterable[Dump], uploaded: Collection[str]) -> list[Dump]:
    """Completed dumps without an upload record, oldest first (the name holds the UTC time it was taken)."""
    return sorted((d for d in dumps if is_completed_dump(d.name) and d.name not in uploaded), key=lambda d: d.name)


def scan_dumps(backup_dir: Path) -> list[Dump]:
    """The regular files in the backup directory (symbolic links and subdirectories are ignored)."""
    dumps: list[Dump] = []
    with os.scandir(backup_dir) as entries:
        for entry in entries:
            if entry.is_file(follow_symlinks=False):
                info = entry.stat(follow_symlinks=False)
                dumps.append(Dump(entry.name, info.st_size, info.st_mtime))
    return dumps


def uploaded_names(state_dir: Path) -> set[str]:
    """The dumps recorded as uploaded: one marker file per dump in $STATE_DIR/uploaded/."""
    try:
        names = os.listdir(state_dir / MARKER_DIR)
    except FileNotFoundError:
        return set()
    return {n.removesuffix(MARKER_SUFFIX) for n in names if n.endswith(MARKER_SUFFIX) and not n.startswith(".")}


def write_atomic(path: Path, data: bytes) -> None:
    """Replace path with data so that a reader or a crash sees the old or the new content, never a mix."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def record_upload(state_dir: Path, record: Mapping[str, object]) -> None:
    markers = state_dir / MARKER_DIR
    markers.mkdir(parents=True, exist_ok=True)
    write_atomic(markers / f"{record['file']}{MARKER_SUFFIX}", (json.dumps(record, indent=1) + "\n").encode())


def iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(value: str) -> dt.datetime:
    return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def redact(text: str, secrets: Iterable[str]) -> str:
    """One printable line without any of the secrets, at most 500 characters."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    line = " ".join(text.split())
    return line if len(line) <= 500 else line[:497] + "..."


# ---------------------------------------------------------------------------------------------------------------------
# The cloud, through the SDKs


def _split_endpoint(endpoint: str) -> tuple[str, str]:
    """("https" | "http", host[:port]) of an endpoint written with or without a scheme."""
    scheme, _, host = endpoint.rpartition("://")
    return (scheme or "https"), host


class Cloud:
    """The RAM role's credentials and the OSS and CloudMonitor clients that use them."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.credentials = self._credentials()

    def _credentials(self) -> Any:
        timeouts = HttpOptions(connect_timeout=METADATA_TIMEOUT_MS, read_timeout=METADATA_TIMEOUT_MS)
        # Refreshed on use, 15 minutes before they expire (no background thread in a one-pass process).
        provider = EcsRamRoleCredentialsProvider(
            role_name=self.cfg.role_name,  # pyright: ignore[reportArgumentType] (None: ask the metadata service)
            http_options=timeouts,
            async_update_enabled=False,
        )
        return CredentialClient(provider=provider)

    def renew(self) -> None:
        """Forget the cached credentials: the next request fetches new ones."""
        self.credentials = self._credentials()

    def secrets(self) -> list[str]:
        """The current secret values, to keep them out of messages (empty when there are none yet)."""
        try:
            model = self.credentials.get_credential()
        except Exception:  # no credentials yet: nothing to redact
            return []
        return [str(model.access_key_secret or ""), str(model.security_token or "")]

    def _oss_credentials(self) -> Any:
        model = self.credentials.get_credential()
        return oss.credentials.Credentials(  # pyright: ignore[reportUnknownMemberType]
            access_key_id=model.access_key_id,
            access_key_secret=model.access_key_secret,
            security_token=model.security_token,
        )

    def oss_client(self) -> Any:
        config = oss.config.load_default()  # pyright: ignore[reportUnknownMemberType]
        config.credentials_provider = oss.credentials.CredentialsProviderFunc(  # pyright: ignore[reportUnknownMemberType]
            func=self._oss_credentials
        )
        config.region = self.cfg.region
        config.endpoint = self.cfg.endpoint
        config.signature_version = "v4"
        config.user_agent = PROGRAM
        return oss.Client(config)  # pyright: ignore[reportUnknownMemberType]

    def cms_client(self) -> Any:
        protocol, host = _split_endpoint(self.cfg.cms_endpoint)
        config = openapi_models.Config(
            credential=self.credentials, region_id=self.cfg.region, endpoint=host, protocol=protocol
        )
        return CmsClient(config)


@dataclasses.dataclass(frozen=True)
class Uploaded:
    key: str
    size: int
    etag: str
    crc64: str
    multipart: bool


def upload_dump(cloud: Cloud, path: Path) -> Uploaded:
    """One dump to `<prefix><name>`: PutObject below the part size, a multipart upload above it."""
    cfg = cloud.cfg
    key = object_key(cfg.prefix, path.name)
    try:
        size = path.stat().st_size
        with path.open("rb"):
            pass  # readable: an unreadable file is this file's problem, not the bucket's
    except OSError as error:
        raise LocalFileError(error.strerror or str(error)) from error
    uploader = cloud.oss_client().uploader(part_size=cfg.part_size, parallel_num=1, leave_parts_on_error=False)
    request = oss.PutObjectRequest(  # pyright: ignore[reportUnknownMemberType]
        bucket=cfg.bucket, key=key, content_type=CONTENT_TYPE, server_side_encryption=SERVER_SIDE_ENCRYPTION
    )
    result = uploader.upload_file(request, filepath=str(path))
    return Uploaded(
        key=key,
        size=size,
        etag=str(result.etag or ""),
        crc64=str(result.hash_crc64 or ""),
        multipart=bool(getattr(result, "upload_id", None)),
    )


def _service_code(error: BaseException) -> str | None:
    """The OSS error code inside whatever the SDK wrapped it in, if any."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        code = getattr(current, "code", None)
        if isinstance(code, str) and code:
            return code
        unwrap = getattr(current, "unwrap", None)
        inner = unwrap() if callable(unwrap) else None
        current = cast("BaseException | None", inner) if isinstance(inner, BaseException) else current.__cause__
    return None


def report_age(cloud: Cloud, group_id: str, age_hours: float, now: dt.datetime) -> None:
    """PutCustomMetric: the newest dump's age, as a raw value, in the stack's application group."""
    cfg = cloud.cfg
    metric = cms_models.PutCustomMetricRequestMetricList(
        group_id=group_id,
        metric_name=AGE_METRIC,
        dimensions=json.dumps({"stack": cfg.stack}, separators=(",", ":")),
        time=str(int(now.timestamp() * 1000)),
        type="0",
        values=json.dumps({"value": round(age_hours, 3)}, separators=(",", ":")),
    )
    response = cloud.cms_client().put_custom_metric(cms_models.PutCustomMetricRequest(metric_list=[metric]))
    code = str(getattr(response.body, "code", "200"))
    if code != "200":
        raise RuntimeError(f"PutCustomMetric answered {code}: {getattr(response.body, 'message', '')}")


# ---------------------------------------------------------------------------------------------------------------------
# One pass


@dataclasses.dataclass(frozen=True)
class PassResult:
    ok: bool
    uploaded: list[str]
    pending: list[Dump]
    error: str | None


def log(message: str) -> None:
    print(f"{iso(utc_now())} {PROGRAM}: {message}", flush=True)


def _upload_with_fresh_credentials(cloud: Cloud, path: Path) -> Uploaded:
    try:
        return upload_dump(cloud, path)
    except LocalFileError:
        raise
    except Exception as error:
        if _service_code(error) not in STALE_CREDENTIAL_CODES:
            raise
        cloud.renew()  # OSS says these credentials are no longer valid: fetch new ones, once
        return upload_dump(cloud, path)


@contextlib.contextmanager
def _pass_lock(state_dir: Path) -> Generator[None, None, None]:
    """One pass at a time per state directory (the loop and a manual --once may overlap)."""
    fd = os.open(state_dir / ".lock", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def run_pass(cfg: Config, cloud: Cloud, *, now: Any = utc_now) -> PassResult:
    """Upload every pending dump, oldest first, record each success, report the age, write the status file."""
    started: dt.datetime = now()
    uploaded: list[str] = []
    pending: list[Dump] = []
    errors: list[str] = []
    last_upload: dict[str, object] | None = None
    age: float | None = None
    try:
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        with _pass_lock(cfg.state_dir):
            dumps = scan_dumps(cfg.backup_dir)
            pending = choose_pending(dumps, uploaded_names(cfg.state_dir))
            for dump in list(pending):
                path = cfg.backup_dir / dump.name
                began = time.monotonic()
                try:
                    result = _upload_with_fresh_credentials(cloud, path)
                except LocalFileError as error:
                    if not path.exists():
                        pending.remove(dump)
                        log(f"skipped {dump.name}: deleted before it could be uploaded")
                        continue
                    errors.append(redact(f"{dump.name}: {error}", cloud.secrets()))
                    log(f"FAILED {errors[-1]}")
                    continue  # only this file is affected
                except Exception as error:  # the SDK's errors: the next files would meet the same refusal
                    errors.append(redact(f"{dump.name}: {type(error).__name__}: {error}", cloud.secrets()))
                    log(f"FAILED {errors[-1]}")
                    break
                record: dict[str, object] = {
                    "file": dump.name,
                    "bucket": cfg.bucket,
                    "key": result.key,
                    "size": result.size,
                    "etag": result.etag,
                    "crc64": result.crc64,
                    "multipart": result.multipart,
                    "uploaded_at": iso(now()),
                }
                log(
                    f"uploaded {dump.name} to oss://{cfg.bucket}/{result.key} ({result.size} bytes, "
                    f"{'multipart' if result.multipart else 'single request'}, CRC-64 {result.crc64}) "
                    f"in {time.monotonic() - began:.1f} s"
                )
                record_upload(cfg.state_dir, record)  # an OSError here fails the pass: the state dir is broken
                pending.remove(dump)
                uploaded.append(dump.name)
                last_upload = record
            age = newest_dump_age_hours(dumps, now())
            if cfg.cms_group_id is not None and age is not None:
                try:
                    report_age(cloud, cfg.cms_group_id, age, now())
                except Exception as error:
                    errors.append(redact(f"backup age metric: {type(error).__name__}: {error}", cloud.secrets()))
                    log(f"FAILED {errors[-1]}")
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        errors.append(redact(f"{where}{error.strerror or error}", cloud.secrets()))
        log(f"FAILED {errors[-1]}")
    except Exception as error:  # a bug must show in the status file, not end the loop
        errors.append(redact(f"internal error: {type(error).__name__}: {error}", cloud.secrets()))
        log(f"FAILED {errors[-1]}")
    error_text = "; ".join(errors) if errors else None
    status = build_status(
        previous=read_status(cfg.state_dir),
        cfg=cfg,
        started=started,
        finished=now(),
        error=error_text,
        uploaded=uploaded,
        last_upload=last_upload,
        pending=pending,
        age_hours=age,
    )
    try:
        write_status(cfg.state_dir, status)
    except OSError as error:
        message = f"cannot write the status file: {error.strerror or error}"
        log(f"FAILED {message}")
        error_text = f"{error_text}; {message}" if error_text else message
    return PassResult(ok=error_text is None, uploaded=uploaded, pending=pending, error=error_text)


# ---------------------------------------------------------------------------------------------------------------------
# Status file and health


def build_status(
    *,
    previous: Mapping[str, object] | None,
    cfg: Config,
    started: dt.datetime,
    finished: dt.datetime,
    error: str | None,
    uploaded: Sequence[str],
    last_upload: Mapping[str, object] | None,
    pending: Sequence[Dump],
    age_hours: float | None,
) -> dict[str, object]:
    """The status document; last_upload carries over from the previous pass when this one uploaded nothing."""
    if last_upload is None and previous is not None:
        last_upload = cast("Mapping[str, object] | None", previous.get("last_upload"))
    return {
        "version": 2,
        "destination": f"oss://{cfg.bucket}/{cfg.prefix}",
        "last_pass_started_at": iso(started),
        "last_pass_at": iso(finished),
        "last_pass_ok": error is None,
        "last_error": error,
        "uploaded_in_last_pass": list(uploaded),
        "last_upload": dict(last_upload) if last_upload is not None else None,
        "newest_dump_age_hours": None if age_hours is None else round(age_hours, 3),
        "pending": [
            {"file": d.name, "size": d.size, "completed_at": iso(dt.datetime.fromtimestamp(d.mtime, dt.UTC))}
            for d in pending
        ],
    }


def write_status(state_dir: Path, status: Mapping[str, object]) -> None:
    write_atomic(state_dir / STATUS_FILE, (json.dumps(status, indent=2) + "\n").encode())


def read_status(state_dir: Path) -> dict[str, object] | None:
    """The last status document, or None when there is none or it cannot be read."""
    try:
        document: object = json.loads((state_dir / STATUS_FILE).read_bytes())
    except (OSError, ValueError):
        return None
    return cast(dict[str, object], document) if isinstance(document, dict) else None


def health_problems(status: Mapping[str, object] | None, now: dt.datetime, interval: int) -> list[str]:
    """Why the uploader is unhealthy; empty when it is healthy."""
    if status is None:
        return ["no pass has completed yet (no readable status file)"]
    problems: list[str] = []
    last_pass = status.get("last_pass_at")
    try:
        age = (now - parse_timestamp(last_pass)).total_seconds() if isinstance(last_pass, str) else None
    except ValueError:
        age = None
    limit = STALE_INTERVALS * interval
    if age is None:
        problems.append("the status file has no valid last_pass_at")
    elif age > limit:
        problems.append(f"the last pass finished {age:.0f} s ago, more than 3 x INTERVAL_SECONDS ({limit} s)")
    last_error = status.get("last_error")
    if last_error is not None or status.get("last_pass_ok") is not True:
        problems.append(f"the last pass failed: {last_error}")
    late: list[tuple[str, str]] = []
    for item in cast("list[object]", status.get("pending") or []):
        if not isinstance(item, dict):
            continue
        entry = cast(dict[str, object], item)
        completed = entry.get("completed_at")
        try:
            overdue = isinstance(completed, str) and now - parse_timestamp(completed) > PENDING_LIMIT
        except ValueError:
            overdue = True
        if overdue:
            late.append((str(entry.get("file")), str(completed)))
    if late:
        name, completed = min(late)
        problems.append(
            f"{len(late)} dump(s) not uploaded within 2 h of completion, the oldest {name} (completed {completed})"
        )
    return problems


def check_health(cfg: Config, now: dt.datetime | None = None) -> int:
    status = read_status(cfg.state_dir)
    problems = health_problems(status, utc_now() if now is None else now, cfg.interval)
    if problems:
        for problem in problems:
            print(f"unhealthy: {problem}")
        return 1
    assert status is not None  # noqa: S101 (no problems means there is a status)
    pending = cast("list[object]", status.get("pending") or [])
    print(f"healthy: last pass at {status.get('last_pass_at')}, {len(pending)} dump(s) pending")
    return 0


# ---------------------------------------------------------------------------------------------------------------------
# Entry point


def serve(cfg: Config, cloud: Cloud) -> NoReturn:
    signal.signal(signal.SIGTERM, _stop)
    log(f"copying {cfg.backup_dir}/memos-*.dump to oss://{cfg.bucket}/{cfg.prefix} every {cfg.interval} s")
    while True:
        run_pass(cfg, cloud)
        time.sleep(cfg.interval)


USAGE: Final = f"usage: {PROGRAM} [--once | --health]"


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    if args not in ([], ["--once"], ["--health"]):
        print(USAGE, file=sys.stderr)
        return 2
    try:
        cfg = load_config(os.environ if env is None else env, need_oss=args != ["--health"])
    except ConfigError as error:
        print(f"{PROGRAM}: {error}", file=sys.stderr)
        return 2
    if args == ["--health"]:
        return check_health(cfg)
    # The SDKs log their own failures through `logging` (the credentials client with a stream handler of
    # its own, a traceback per refresh, unredacted). Each failure already reaches the output as one
    # redacted line of ours, so no SDK record is printed.
    logging.disable(logging.CRITICAL)
    cloud = Cloud(cfg)
    if args == ["--once"]:
        return 0 if run_pass(cfg, cloud).ok else 1
    serve(cfg, cloud)


if __name__ == "__main__":
    sys.exit(main())
