"""memos-oss-upload: copies each completed database dump to an OSS bucket with the ECS instance's RAM role.

Runs in its own container (python:3.13-alpine, standard library only) beside memos-backup, with the
dumps' volume mounted read-only at $BACKUP_DIR and a small writable $STATE_DIR. Every
$INTERVAL_SECONDS it uploads, oldest first, each `memos-YYYYmmddTHHMMSSZ[-label].dump` that has no marker in
$STATE_DIR/uploaded/ yet (`*.partial` files are still being written and are never touched), with the
OSS PutObject API: virtual-hosted `https://<bucket>.<endpoint>/<prefix><file>`, signed with OSS
signature V1 (HMAC-SHA1) from the RAM role's temporary credentials (instance metadata service,
refreshed before they expire), `Content-MD5` so OSS rejects a corrupted body, and
`x-oss-server-side-encryption: AES256`. The body is streamed from disk, never held in memory.

    memos-oss-upload            upload forever, one pass every $INTERVAL_SECONDS
    memos-oss-upload --once     one pass; exit 0 if every completed dump is uploaded, 1 otherwise
    memos-oss-upload --health   exit 0 if the last pass succeeded, is younger than 3 intervals, and no
                                dump has waited more than 2 hours; otherwise print why and exit 1

Environment: OSS_BUCKET and OSS_ENDPOINT (required for uploads), OSS_PREFIX (memos/), BACKUP_DIR
(/backups), STATE_DIR (/var/lib/memos-offsite), METADATA_URL (http://100.100.100.200),
INTERVAL_SECONDS (300), OSS_SCHEME (https; http only for a local test double) and OSS_CONNECT_ADDRESS
(host:port to connect to instead of resolving <bucket>.<endpoint>; for tests and troubleshooting, the
Host header, TLS name and signature stay those of the bucket).

After each pass $STATE_DIR/status.json is replaced atomically (see write_status). One line goes to
stdout per upload and per failure; credentials and signatures are never printed.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import email.utils
import fcntl
import hashlib
import hmac
import http.client
import json
import os
import re
import signal
import socket
import ssl
import sys
import time
import urllib.parse
from collections.abc import Callable, Collection, Generator, Iterable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import BinaryIO, Final, NoReturn, cast

PROGRAM: Final = "memos-oss-upload"
USER_AGENT: Final = "memos-oss-upload/1"

#: A completed dump; memos-backup writes `<name>.partial` and renames it once pg_restore has read it.
DUMP_NAME: Final = re.compile(r"memos-[0-9]{8}T[0-9]{6}Z(-[a-z0-9-]+)?\.dump")
CONTENT_TYPE: Final = "application/octet-stream"
SERVER_SIDE_ENCRYPTION: Final = "AES256"
#: PutObject's size limit; larger objects need a multipart upload, which this program does not do.
MAX_PUT_BYTES: Final = 5 * 1024**3
CHUNK_BYTES: Final = 256 * 1024
#: Credentials this close to their Expiration are fetched again before the next request.
REFRESH_MARGIN: Final = dt.timedelta(minutes=15)
#: --health: a completed dump still not uploaded after this long makes the container unhealthy.
PENDING_LIMIT: Final = dt.timedelta(hours=2)
#: --health: the last pass must be younger than this many intervals.
STALE_INTERVALS: Final = 3
METADATA_TIMEOUT: Final = 5.0
OSS_TIMEOUT: Final = 60.0
METADATA_TOKEN_TTL: Final = "300"  # noqa: S105 (seconds, not a secret)
STATUS_FILE: Final = "status.json"
MARKER_DIR: Final = "uploaded"
MARKER_SUFFIX: Final = ".json"


class ConfigError(Exception):
    """An environment variable is missing or invalid."""


class CredentialError(Exception):
    """The metadata service did not give usable RAM role credentials."""


class UploadError(Exception):
    """OSS or the network rejected an upload."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class LocalFileError(Exception):
    """A dump could not be read; only that file is affected."""


# ---------------------------------------------------------------------------------------------------------------------
# Configuration


@dataclasses.dataclass(frozen=True)
class Config:
    bucket: str
    endpoint: str
    prefix: str
    backup_dir: Path
    state_dir: Path
    metadata_url: str
    interval: int
    scheme: str
    connect_address: tuple[str, int] | None


_BUCKET = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
_HOST_PORT = re.compile(r"(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::(?P<port>[0-9]{1,5}))?")


def _host_port(value: str, name: str) -> tuple[str, int | None]:
    match = _HOST_PORT.fullmatch(value)
    if match is None:
        raise ConfigError(f"{name}={value!r} is not host or host:port (no scheme, no path)")
    port = match.group("port")
    return match.group("host"), int(port) if port else None


def load_config(env: Mapping[str, str], *, need_oss: bool = True) -> Config:
    """The configuration from the environment; OSS_BUCKET/OSS_ENDPOINT are required only with need_oss."""
    bucket = env.get("OSS_BUCKET", "")
    endpoint = env.get("OSS_ENDPOINT", "")
    if need_oss:
        if not _BUCKET.fullmatch(bucket):
            raise ConfigError(f"OSS_BUCKET={bucket!r} is not a bucket name (3-63 of a-z, 0-9, -)")
        _host_port(endpoint, "OSS_ENDPOINT")
    prefix = env.get("OSS_PREFIX", "memos/")
    if prefix.startswith(("/", "\\")) or any(ord(c) < 0x20 or c == "\x7f" for c in prefix):
        raise ConfigError(f"OSS_PREFIX={prefix!r} must not start with / or \\ nor contain control characters")
    raw_interval = env.get("INTERVAL_SECONDS", "300")
    try:
        interval = int(raw_interval)
    except ValueError:
        interval = 0
    if interval < 1:
        raise ConfigError(f"INTERVAL_SECONDS={raw_interval!r} is not a positive whole number")
    scheme = env.get("OSS_SCHEME", "https")
    if scheme not in ("https", "http"):
        raise ConfigError(f"OSS_SCHEME={scheme!r} is neither https nor http")
    metadata_url = env.get("METADATA_URL", "http://100.100.100.200").rstrip("/")
    parts = urllib.parse.urlsplit(metadata_url)
    if parts.scheme != "http" or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(f"METADATA_URL={metadata_url!r} is not an http:// URL")
    connect_address: tuple[str, int] | None = None
    raw_connect = env.get("OSS_CONNECT_ADDRESS", "")
    if raw_connect:
        host, port = _host_port(raw_connect, "OSS_CONNECT_ADDRESS")
        if port is None:
            raise ConfigError(f"OSS_CONNECT_ADDRESS={raw_connect!r} needs a port (host:port)")
        connect_address = (host, port)
    return Config(
        bucket=bucket,
        endpoint=endpoint,
        prefix=prefix,
        backup_dir=Path(env.get("BACKUP_DIR", "/backups")),
        state_dir=Path(env.get("STATE_DIR", "/var/lib/memos-offsite")),
        metadata_url=metadata_url,
        interval=interval,
        scheme=scheme,
        connect_address=connect_address,
    )


# ---------------------------------------------------------------------------------------------------------------------
# OSS signature V1 (pure)


def object_key(prefix: str, file_name: str) -> str:
    """The object key of a dump: the prefix as configured (normally ending in /) and the file name."""
    return prefix + file_name


def object_path(key: str) -> str:
    """The request path of an object in virtual-hosted style: the key percent-encoded as UTF-8, / kept."""
    return "/" + urllib.parse.quote(key, safe="/")


def canonicalized_oss_headers(headers: Mapping[str, str]) -> str:
    """The x-oss-* headers, names lower-cased, sorted by name, each as `name:value` plus a newline."""
    oss_headers = sorted((name.lower(), value) for name, value in headers.items() if name.lower().startswith("x-oss-"))
    return "".join(f"{name}:{value}\n" for name, value in oss_headers)


def canonicalized_resource(bucket: str, key: str) -> str:
    """`/<bucket>/<key>` with the key as is (not percent-encoded); PutObject has no sub-resources."""
    return f"/{bucket}/{key}"


def _header(headers: Mapping[str, str], name: str) -> str:
    for header, value in headers.items():
        if header.lower() == name:
            return value
    return ""


def string_to_sign(method: str, headers: Mapping[str, str], bucket: str, key: str) -> str:
    """VERB, Content-MD5, Content-Type, Date, then the canonicalized OSS headers and resource."""
    return "\n".join(
        [
            method,
            _header(headers, "content-md5"),
            _header(headers, "content-type"),
            _header(headers, "date"),
            canonicalized_oss_headers(headers) + canonicalized_resource(bucket, key),
        ]
    )


def signature(access_key_secret: str, text: str) -> str:
    """Base64 of HMAC-SHA1 over the UTF-8 string to sign, keyed with the AccessKeySecret."""
    digest = hmac.new(access_key_secret.encode(), text.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def authorization(
    access_key_id: str, access_key_secret: str, *, method: str, headers: Mapping[str, str], bucket: str, key: str
) -> str:
    """The Authorization header value `OSS <AccessKeyId>:<Signature>`."""
    return f"OSS {access_key_id}:{signature(access_key_secret, string_to_sign(method, headers, bucket, key))}"


def http_date(when: float) -> str:
    """RFC 1123 date in GMT, independent of the locale."""
    return email.utils.formatdate(when, usegmt=True)


def put_headers(creds: Credentials, bucket: str, key: str, *, content_md5: str, size: int, date: str) -> dict[str, str]:
    """Every header of the PutObject request, Authorization included."""
    headers = {
        "Date": date,
        "Content-Type": CONTENT_TYPE,
        "Content-Length": str(size),
        "Content-MD5": content_md5,
        "x-oss-security-token": creds.security_token,
        "x-oss-server-side-encryption": SERVER_SIDE_ENCRYPTION,
    }
    headers["Authorization"] = authorization(
        creds.access_key_id, creds.access_key_secret, method="PUT", headers=headers, bucket=bucket, key=key
    )
    return headers


# ---------------------------------------------------------------------------------------------------------------------
# Credentials


@dataclasses.dataclass(frozen=True)
class Credentials:
    access_key_id: str = dataclasses.field(repr=False)
    access_key_secret: str = dataclasses.field(repr=False)
    security_token: str = dataclasses.field(repr=False)
    expiration: dt.datetime

    def secrets(self) -> tuple[str, str, str]:
        """The strings that must never reach a log line or the status file."""
        return (self.access_key_id, self.access_key_secret, self.security_token)


def parse_timestamp(value: str) -> dt.datetime:
    """An ISO 8601 time as an aware UTC datetime (a time without an offset is taken as UTC)."""
    parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def parse_credentials(body: str | bytes) -> Credentials:
    """The metadata service's credentials document; CredentialError (naming no secret) if unusable."""
    try:
        document: object = json.loads(body)
    except ValueError:
        raise CredentialError("credentials document is not JSON") from None
    if not isinstance(document, dict):
        raise CredentialError("credentials document is not a JSON object")
    fields = cast(dict[str, object], document)
    code = fields.get("Code")
    if code != "Success":
        raise CredentialError(f"metadata service answered Code={code!r}")
    values: dict[str, str] = {}
    for name in ("AccessKeyId", "AccessKeySecret", "SecurityToken", "Expiration"):
        value = fields.get(name)
        if not isinstance(value, str) or not value.strip():
            raise CredentialError(f"credentials document has no {name}")
        values[name] = value.strip()
    try:
        expiration = parse_timestamp(values["Expiration"])
    except ValueError:
        raise CredentialError(f"credentials Expiration {values['Expiration']!r} is not an ISO 8601 time") from None
    return Credentials(
        access_key_id=values["AccessKeyId"],
        access_key_secret=values["AccessKeySecret"],
        security_token=values["SecurityToken"],
        expiration=expiration,
    )


def needs_refresh(creds: Credentials | None, now: dt.datetime, margin: dt.timedelta = REFRESH_MARGIN) -> bool:
    """True when there are no credentials or they expire within the margin."""
    return creds is None or creds.expiration - now <= margin


def _metadata_request(base_url: str, method: str, path: str, headers: Mapping[str, str]) -> tuple[int, bytes]:
    parts = urllib.parse.urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=METADATA_TIMEOUT)
    try:
        conn.request(method, parts.path + path, headers=dict(headers))
        response = conn.getresponse()
        return response.status, response.read(64 * 1024)
    finally:
        conn.close()


def fetch_credentials(metadata_url: str) -> Credentials:
    """The RAM role's current credentials from the instance metadata service.

    Uses the hardened mode (a session token from PUT /latest/api/token) when the service gives one,
    and the normal mode otherwise.
    """
    headers: dict[str, str] = {}
    try:
        status, body = _metadata_request(
            metadata_url, "PUT", "/latest/api/token", {"X-aliyun-ecs-metadata-token-ttl-seconds": METADATA_TOKEN_TTL}
        )
        token = body.decode("ascii", "replace").strip()
        if status == 200 and token and token.isprintable():
            headers["X-aliyun-ecs-metadata-token"] = token
    except (OSError, http.client.HTTPException):
        pass  # normal mode; a metadata service that is down fails just below with a clear message
    base = "/latest/meta-data/ram/security-credentials/"
    try:
        status, body = _metadata_request(metadata_url, "GET", base, headers)
        if status != 200:
            raise CredentialError(f"metadata {base} answered HTTP {status} (is a RAM role attached to the instance?)")
        lines = body.decode("utf-8", "replace").split()
        role = lines[0] if lines else ""
        if not re.fullmatch(r"[A-Za-z0-9._@+=,-]{1,64}", role):
            raise CredentialError(f"metadata {base} gave no RAM role name")
        status, body = _metadata_request(metadata_url, "GET", base + urllib.parse.quote(role), headers)
        if status != 200:
            raise CredentialError(f"metadata {base}{role} answered HTTP {status}")
    except (OSError, http.client.HTTPException) as error:
        raise CredentialError(f"metadata service {metadata_url} unreachable: {error}") from None
    return parse_credentials(body)


class CredentialSource:
    """Caches the role's credentials and fetches new ones before they expire."""

    def __init__(self, metadata_url: str, fetch: Callable[[str], Credentials] = fetch_credentials) -> None:
        self._metadata_url = metadata_url
        self._fetch = fetch
        self._cached: Credentials | None = None

    def get(self, now: dt.datetime) -> Credentials:
        """Cached credentials, or fresh ones when they expire within REFRESH_MARGIN.

        When the metadata service fails during a refresh, credentials still valid for another minute
        are used meanwhile; without them the error is raised.
        """
        cached = self._cached
        if not needs_refresh(cached, now):
            assert cached is not None  # noqa: S101 (needs_refresh is true for None)
            return cached
        try:
            creds = self._fetch(self._metadata_url)
            if creds.expiration <= now:
                raise CredentialError(
                    f"metadata service gave credentials that expired at {iso(creds.expiration)} (is the clock right?)"
                )
        except CredentialError:
            if cached is not None and cached.expiration - now > dt.timedelta(minutes=1):
                return cached
            raise
        self._cached = creds
        return creds

    def invalidate(self) -> None:
        self._cached = None


# ---------------------------------------------------------------------------------------------------------------------
# Dumps and state


@dataclasses.dataclass(frozen=True)
class Dump:
    name: str
    size: int
    mtime: float


def is_completed_dump(name: str) -> bool:
    return DUMP_NAME.fullmatch(name) is not None


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


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def redact(text: str, secrets: Iterable[str]) -> str:
    """One printable line without any of the secrets, at most 500 characters."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    line = "".join(c if c.isprintable() else " " for c in text)
    return line[:500]


# ---------------------------------------------------------------------------------------------------------------------
# Upload


_tls: ssl.SSLContext | None = None


def _tls_context() -> ssl.SSLContext:
    global _tls  # noqa: PLW0603 (one context, loaded once, for the life of the process)
    if _tls is None:
        _tls = ssl.create_default_context()
    return _tls


def _connection(cfg: Config) -> http.client.HTTPConnection:
    """A connection to <bucket>.<endpoint>; with OSS_CONNECT_ADDRESS the socket goes there instead."""
    host, port = _host_port(cfg.endpoint, "OSS_ENDPOINT")
    virtual_host = f"{cfg.bucket}.{host}"
    https = cfg.scheme == "https"
    port = port or (443 if https else 80)
    conn = (
        http.client.HTTPSConnection(virtual_host, port, timeout=OSS_TIMEOUT, context=_tls_context())
        if https
        else http.client.HTTPConnection(virtual_host, port, timeout=OSS_TIMEOUT)
    )
    if cfg.connect_address is not None:
        sock = socket.create_connection(cfg.connect_address, timeout=OSS_TIMEOUT)
        conn.sock = _tls_context().wrap_socket(sock, server_hostname=virtual_host) if https else sock
    return conn


def file_md5(path: Path) -> tuple[str, int]:
    """Base64 MD5 (the Content-MD5 form) and size of a file, read in chunks."""
    digest = hashlib.md5()  # noqa: S324 (Content-MD5 is an integrity check that OSS requires MD5 for)
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return base64.b64encode(digest.digest()).decode("ascii"), size


_XML_FIELD = re.compile(r"<(Code|Message|RequestId)>([^<]{0,300})</\1>")


def _oss_error(status: int, reason: str, body: bytes, request_id: str | None) -> UploadError:
    """Code, Message and RequestId of an OSS error (its other fields may echo the string to sign)."""
    fields = dict(_XML_FIELD.findall(body.decode("utf-8", "replace")))
    code = fields.get("Code")
    text = f"HTTP {status} {code or reason}"
    if fields.get("Message"):
        text += f": {fields['Message']}"
    request_id = fields.get("RequestId") or request_id
    if request_id:
        text += f" (request id {request_id})"
    return UploadError(text, status=status, code=code)


@dataclasses.dataclass(frozen=True)
class Uploaded:
    key: str
    size: int
    content_md5: str
    etag: str


def upload_dump(cfg: Config, creds: Credentials, path: Path, *, now: float | None = None) -> Uploaded:
    """PutObject of one dump, streamed from disk; UploadError if OSS or the network did not take it."""
    key = object_key(cfg.prefix, path.name)
    try:
        content_md5, size = file_md5(path)
        handle = path.open("rb")
    except OSError as error:
        raise LocalFileError(f"cannot read {path}: {error.strerror or error}") from None
    with handle:
        if size > MAX_PUT_BYTES:
            raise LocalFileError(f"{path.name} is {size} bytes, more than PutObject takes (5 GiB)")
        headers = put_headers(
            creds,
            cfg.bucket,
            key,
            content_md5=content_md5,
            size=size,
            date=http_date(time.time() if now is None else now),
        )
        try:
            conn = _connection(cfg)
        except (OSError, http.client.HTTPException) as error:
            raise UploadError(f"cannot connect to OSS: {error}") from None
        try:
            return _send(conn, handle, headers=headers, key=key, size=size, content_md5=content_md5)
        finally:
            conn.close()


def _send(
    conn: http.client.HTTPConnection,
    handle: BinaryIO,
    *,
    headers: Mapping[str, str],
    key: str,
    size: int,
    content_md5: str,
) -> Uploaded:
    sent_error: BaseException | None = None
    try:
        conn.putrequest("PUT", object_path(key), skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.putheader("User-Agent", USER_AGENT)
        conn.endheaders()
        digest = hashlib.md5()  # noqa: S324 (see file_md5)
        sent = 0
        while sent < size:
            chunk = handle.read(min(CHUNK_BYTES, size - sent))
            if not chunk:
                break
            digest.update(chunk)
            conn.send(chunk)
            sent += len(chunk)
        if sent != size or base64.b64encode(digest.digest()).decode("ascii") != content_md5:
            raise LocalFileError(f"{key.rsplit('/', 1)[-1]} changed while it was being uploaded")
    except (OSError, http.client.HTTPException) as error:
        sent_error = error  # OSS may have answered early (e.g. 403) and closed; read that answer below
    try:
        response = conn.getresponse()
        body = response.read(64 * 1024)
    except (OSError, http.client.HTTPException) as error:
        raise UploadError(f"network error: {sent_error or error}") from None
    if response.status != 200:
        raise _oss_error(response.status, response.reason, body, response.getheader("x-oss-request-id"))
    if sent_error is not None:
        raise UploadError(f"network error: {sent_error}")
    return Uploaded(key=key, size=size, content_md5=content_md5, etag=(response.getheader("ETag") or "").strip('"'))


# ---------------------------------------------------------------------------------------------------------------------
# One pass


#: OSS answers these when it no longer accepts the credentials; they are fetched again and the file retried once.
STALE_CREDENTIAL_CODES: Final = frozenset({"SecurityTokenExpired", "InvalidAccessKeyId"})


@dataclasses.dataclass(frozen=True)
class PassResult:
    ok: bool
    uploaded: list[str]
    pending: list[Dump]
    error: str | None


def log(message: str) -> None:
    print(f"{iso(utc_now())} {PROGRAM}: {message}", flush=True)


def _upload_with_fresh_credentials(
    cfg: Config, source: CredentialSource, path: Path, now: Callable[[], dt.datetime], secrets: set[str]
) -> Uploaded:
    creds = source.get(now())
    secrets.update(creds.secrets())
    try:
        return upload_dump(cfg, creds, path)
    except UploadError as error:
        if error.status == 403:
            source.invalidate()  # whatever OSS disliked, the next attempt starts from fresh credentials
        if error.code not in STALE_CREDENTIAL_CODES:
            raise
        fresh = source.get(now())
        secrets.update(fresh.secrets())
        if fresh.access_key_id == creds.access_key_id and fresh.security_token == creds.security_token:
            raise
        return upload_dump(cfg, fresh, path)


@contextlib.contextmanager
def _pass_lock(state_dir: Path) -> Generator[None, None, None]:
    """One pass at a time per state directory (the loop and a manual --once may overlap)."""
    fd = os.open(state_dir / ".lock", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def run_pass(cfg: Config, source: CredentialSource, *, now: Callable[[], dt.datetime] = utc_now) -> PassResult:
    """Upload every pending dump, oldest first, record each success, and write the status file."""
    started = now()
    uploaded: list[str] = []
    pending: list[Dump] = []
    errors: list[str] = []
    last_upload: dict[str, object] | None = None
    secrets: set[str] = set()
    try:
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        with _pass_lock(cfg.state_dir):
            pending = choose_pending(scan_dumps(cfg.backup_dir), uploaded_names(cfg.state_dir))
            for dump in list(pending):
                path = cfg.backup_dir / dump.name
                began = time.monotonic()
                try:
                    result = _upload_with_fresh_credentials(cfg, source, path, now, secrets)
                except LocalFileError as error:
                    if not path.exists():
                        pending.remove(dump)
                        log(f"skipped {dump.name}: deleted before it could be uploaded")
                        continue
                    errors.append(redact(f"{dump.name}: {error}", secrets))
                    log(f"FAILED {errors[-1]}")
                    continue  # only this file is affected
                except (CredentialError, UploadError) as error:
                    errors.append(redact(f"{dump.name}: {error}", secrets))
                    log(f"FAILED {errors[-1]}")
                    break  # the next files would meet the same refusal
                record: dict[str, object] = {
                    "file": dump.name,
                    "bucket": cfg.bucket,
                    "key": result.key,
                    "size": result.size,
                    "content_md5": result.content_md5,
                    "etag": result.etag,
                    "uploaded_at": iso(now()),
                }
                log(
                    f"uploaded {dump.name} to oss://{cfg.bucket}/{result.key} "
                    f"({result.size} bytes, Content-MD5 {result.content_md5}) in {time.monotonic() - began:.1f} s"
                )
                record_upload(cfg.state_dir, record)  # an OSError here fails the pass: the state dir is broken
                pending.remove(dump)
                uploaded.append(dump.name)
                last_upload = record
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        errors.append(redact(f"{where}{error.strerror or error}", secrets))
        log(f"FAILED {errors[-1]}")
    except Exception as error:  # a bug must show in the status file, not end the loop
        errors.append(redact(f"internal error: {type(error).__name__}: {error}", secrets))
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
) -> dict[str, object]:
    """The status document; last_upload carries over from the previous pass when this one uploaded nothing."""
    if last_upload is None and previous is not None:
        last_upload = cast("Mapping[str, object] | None", previous.get("last_upload"))
    return {
        "version": 1,
        "destination": f"oss://{cfg.bucket}/{cfg.prefix}",
        "last_pass_started_at": iso(started),
        "last_pass_at": iso(finished),
        "last_pass_ok": error is None,
        "last_error": error,
        "uploaded_in_last_pass": list(uploaded),
        "last_upload": dict(last_upload) if last_upload is not None else None,
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


def _stop(signum: int, frame: FrameType | None) -> NoReturn:
    """SIGTERM from `docker stop`: as PID 1 the default action would be ignored."""
    raise SystemExit(0)


def serve(cfg: Config, source: CredentialSource) -> NoReturn:
    signal.signal(signal.SIGTERM, _stop)
    log(f"copying {cfg.backup_dir}/memos-*.dump to oss://{cfg.bucket}/{cfg.prefix} every {cfg.interval} s")
    while True:
        run_pass(cfg, source)
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
    source = CredentialSource(cfg.metadata_url)
    if args == ["--once"]:
        return 0 if run_pass(cfg, source).ok else 1
    serve(cfg, source)


if __name__ == "__main__":
    sys.exit(main())
