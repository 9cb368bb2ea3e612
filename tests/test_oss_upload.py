"""The off-host backup uploader (ops/oss_upload.py), checked against Alibaba's own SDK and run for real.

What is checked:
- Its OSS V1 signature equals the Authorization header that Alibaba's official SDK (`oss2.StsAuth`)
  computes for the same PutObject request, for keys with spaces, `+`, `%`, `&`, non-ASCII and nested
  prefixes, and the worked example of the OSS API documentation.
- The pure parts: canonicalized headers and resource, credential parsing and refresh, the choice of
  dumps to upload, and the health rules.
- End to end: `python ops/oss_upload.py --once` / `--health` run as subprocesses against two fakes
  started here, a metadata service (hardened mode with a session token, or normal mode) and an OSS
  endpoint that re-reads every body against its Content-MD5 and checks every Authorization header
  with `oss2`'s signer (it takes a PutObject sent by the SDK itself and refuses a wrong signature), so
  a request it accepts is one real OSS would authenticate. Checked there: keys, Host, security token,
  SSE AES256, Content-MD5 and body of each dump; `.partial` and foreign files left alone; a second
  pass uploads nothing; a refused upload fails the pass and the healthcheck with a reason and without
  leaking credentials; credentials are refreshed before they expire and replaced when OSS calls them
  expired; HTTPS verifies the bucket's certificate; a dump larger than the container's memory limit
  is streamed; SIGTERM stops the loop cleanly.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import hashlib
import http.server
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

with warnings.catch_warnings():  # oss2 2.19 has docstrings with invalid escapes
    warnings.simplefilter("ignore", DeprecationWarning)
    import oss2
    import oss2.http
    import oss2.utils

from ops import oss_upload
from ops.oss_upload import (
    Credentials,
    CredentialSource,
    Dump,
    canonicalized_oss_headers,
    canonicalized_resource,
    choose_pending,
    health_problems,
    needs_refresh,
    object_path,
    parse_credentials,
    put_headers,
)

PROGRAM = Path(oss_upload.__file__).resolve()
BUCKET = "memos-backup-test"
ENDPOINT = "oss-cn-hangzhou-internal.aliyuncs.com"
NOW = dt.datetime(2025, 3, 1, 12, 0, 0, tzinfo=dt.UTC)


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324 (Content-MD5)


def oss2_authorization(headers: Mapping[str, str], bucket: str, key: str, creds: FakeCreds) -> str:
    """The Authorization header Alibaba's SDK puts on this request (its Date pinned to the request's)."""
    lower = {k.lower(): v for k, v in headers.items()}
    signed = {k: v for k, v in lower.items() if k in ("content-md5", "content-type") or k.startswith("x-oss-")}
    request = oss2.http.Request("PUT", f"http://{bucket}.{ENDPOINT}/", headers=signed)
    with mock.patch.object(oss2.utils, "http_date", return_value=lower["date"]):
        oss2.StsAuth(creds.key_id, creds.secret, creds.token)._sign_request(request, bucket, key)
    assert request.headers["x-oss-security-token"] == creds.token
    return request.headers["authorization"]


# --------------------------------------------------------------------------------------------------------------------
# The signature against the official SDK and the documentation


@dataclass(frozen=True)
class FakeCreds:
    key_id: str
    secret: str
    token: str
    expires: dt.datetime = NOW + dt.timedelta(hours=6)

    def document(self) -> dict[str, str]:
        return {
            "AccessKeyId": self.key_id,
            "AccessKeySecret": self.secret,
            "SecurityToken": self.token,
            "Expiration": self.expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "LastUpdated": NOW.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "Code": "Success",
        }

    def real(self) -> Credentials:
        return Credentials(self.key_id, self.secret, self.token, self.expires)


STS = FakeCreds(
    "STS.NUgYrLnoC37mZZCNnAbez2Ezq", "9Qm7ZzYyS+d2q/4bo1pKVx3dFg7kHn8eXHuRsv6rZ1k=", "CAIS+token/with=chars&more"
)


@pytest.mark.parametrize(
    ("bucket", "key"),
    [
        (BUCKET, "memos/memos-20250301T030000Z.dump"),
        ("memos-prod-2", "backups/db 2025+03/memos-20250301T030000Z.dump"),
        (BUCKET, "备份/ä%20&=?#~!'()*/memos-20250301T030000Z.dump"),
        ("a1b", "memos-20250301T030000Z.dump"),
    ],
)
def test_signature_matches_official_sdk_for_sts_put_object(bucket: str, key: str) -> None:
    date = "Sat, 01 Mar 2025 12:00:00 GMT"
    ours = put_headers(STS.real(), bucket, key, content_md5=md5_b64(b"dump"), size=4, date=date)
    assert ours["Authorization"] == oss2_authorization(ours, bucket, key, STS)
    assert ours["Authorization"].startswith(f"OSS {STS.key_id}:")
    assert ours["x-oss-security-token"] == STS.token
    assert ours["x-oss-server-side-encryption"] == "AES256"


def test_signature_matches_the_oss_documentation_example() -> None:
    # The worked example of the OSS API reference ("Include a signature in the Authorization header").
    headers = {
        "Content-MD5": "ODBGOERFMDMzQTczRUY3NUE3NzA5QzdFNUYzMDQxNEM=",
        "Content-Type": "text/html",
        "Date": "Thu, 17 Nov 2005 18:49:58 GMT",
        "Host": "oss-example.oss-cn-hangzhou.aliyuncs.com",
        "X-OSS-Meta-Author": "foo@bar.com",
        "X-OSS-Magic": "abracadabra",
    }
    value = oss_upload.authorization(
        "44CF9590006BF252F707",
        "OtxrzxIsfpFjA7SwPzILwy8Bw21TLhquhboDYROV",
        method="PUT",
        headers=headers,
        bucket="oss-example",
        key="nelson",
    )
    assert value == "OSS 44CF9590006BF252F707:26NBxoKdsyly4EDv6inkoDft/yA="


def test_canonicalized_headers_are_only_x_oss_lowercased_and_sorted() -> None:
    headers = {
        "X-OSS-Server-Side-Encryption": "AES256",
        "Content-Type": "application/octet-stream",
        "x-oss-security-token": "t",
        "X-Oss-Meta-A": "1",
        "Date": "x",
    }
    expected = "x-oss-meta-a:1\nx-oss-security-token:t\nx-oss-server-side-encryption:AES256\n"
    assert canonicalized_oss_headers(headers) == expected
    assert canonicalized_oss_headers({"Content-MD5": "x"}) == ""


def test_resource_keeps_the_raw_key_while_the_path_is_percent_encoded() -> None:
    key = "memos/db 1+1/é.dump"
    assert canonicalized_resource("b", key) == "/b/memos/db 1+1/é.dump"
    assert object_path(key) == "/memos/db%201%2B1/%C3%A9.dump"
    assert urllib.parse.unquote(object_path(key)[1:]) == key


# --------------------------------------------------------------------------------------------------------------------
# Credentials, pending dumps, health


def test_credentials_document_parses_with_an_aware_expiration() -> None:
    creds = parse_credentials(json.dumps(STS.document()))
    assert (creds.access_key_id, creds.access_key_secret, creds.security_token) == (STS.key_id, STS.secret, STS.token)
    assert creds.expiration == NOW + dt.timedelta(hours=6)
    assert STS.secret not in repr(creds)
    assert STS.token not in repr(creds)


@pytest.mark.parametrize(
    "change",
    [
        {"Code": "Failed"},
        {"AccessKeySecret": ""},
        {"SecurityToken": None},
        {"Expiration": "tomorrow"},
    ],
)
def test_unusable_credentials_are_rejected_without_echoing_secrets(change: dict[str, object]) -> None:
    document: dict[str, object] = {**STS.document(), **change}
    with pytest.raises(oss_upload.CredentialError) as raised:
        parse_credentials(json.dumps(document))
    assert STS.secret not in str(raised.value)
    assert STS.token not in str(raised.value)


def test_credentials_are_refreshed_within_fifteen_minutes_of_expiry() -> None:
    soon = FakeCreds("STS.a", "s", "t", NOW + dt.timedelta(minutes=14)).real()
    later = FakeCreds("STS.b", "s", "t", NOW + dt.timedelta(minutes=16)).real()
    assert needs_refresh(None, NOW)
    assert needs_refresh(soon, NOW)
    assert not needs_refresh(later, NOW)

    fetched = [later, FakeCreds("STS.c", "s", "t", NOW + dt.timedelta(hours=6)).real()]
    source = CredentialSource("http://unused", fetch=lambda _url: fetched.pop(0))
    assert source.get(NOW).access_key_id == "STS.b"
    assert source.get(NOW + dt.timedelta(seconds=30)).access_key_id == "STS.b"  # cached
    assert source.get(NOW + dt.timedelta(minutes=2)).access_key_id == "STS.c"  # refreshed before expiry


def test_already_expired_credentials_are_refused() -> None:
    expired = FakeCreds("STS.a", "s", "t", NOW - dt.timedelta(seconds=1)).real()
    source = CredentialSource("http://unused", fetch=lambda _url: expired)
    with pytest.raises(oss_upload.CredentialError, match="expired"):
        source.get(NOW)


def test_credentials_still_valid_are_kept_while_the_metadata_service_fails() -> None:
    calls: list[str] = []

    def flaky(_url: str) -> Credentials:
        calls.append("fetch")
        if len(calls) == 1:
            return FakeCreds("STS.a", "s", "t", NOW + dt.timedelta(minutes=20)).real()
        raise oss_upload.CredentialError("metadata service unreachable")

    source = CredentialSource("http://unused", fetch=flaky)
    assert source.get(NOW).access_key_id == "STS.a"
    assert source.get(NOW + dt.timedelta(minutes=10)).access_key_id == "STS.a"  # 10 min left: keep using them
    with pytest.raises(oss_upload.CredentialError, match="unreachable"):
        source.get(NOW + dt.timedelta(minutes=19, seconds=30))  # 30 s left: too late to start an upload
    assert len(calls) == 3


def test_pending_dumps_are_completed_unrecorded_and_oldest_first() -> None:
    dumps = [
        Dump("memos-20250302T030000Z.dump", 10, 3.0),
        Dump("memos-20250301T030000Z-pre-upgrade.dump", 10, 2.0),
        Dump("memos-20250228T030000Z.dump", 10, 1.0),
        Dump("memos-20250303T030000Z.dump.partial", 10, 4.0),
        Dump(".last-success", 10, 4.0),
        Dump("memos-manual.dump", 10, 4.0),
    ]
    pending = choose_pending(dumps, uploaded={"memos-20250228T030000Z.dump"})
    assert [d.name for d in pending] == ["memos-20250301T030000Z-pre-upgrade.dump", "memos-20250302T030000Z.dump"]


def status(
    *, last_pass: dt.datetime, error: str | None = None, pending_since: dt.datetime | None = None
) -> dict[str, object]:
    pending = (
        []
        if pending_since is None
        else [{"file": "memos-x.dump", "size": 1, "completed_at": oss_upload.iso(pending_since)}]
    )
    return {
        "last_pass_at": oss_upload.iso(last_pass),
        "last_pass_ok": error is None,
        "last_error": error,
        "pending": pending,
    }


def test_health_requires_a_recent_successful_pass_and_nothing_pending_for_two_hours() -> None:
    minute = dt.timedelta(minutes=1)
    assert health_problems(status(last_pass=NOW - minute), NOW, 300) == []
    assert health_problems(status(last_pass=NOW, pending_since=NOW - 119 * minute), NOW, 300) == []
    assert health_problems(None, NOW, 300) == ["no pass has completed yet (no readable status file)"]
    [stale] = health_problems(status(last_pass=NOW - 16 * minute), NOW, 300)
    assert "900 s" in stale
    [failed] = health_problems(status(last_pass=NOW, error="memos-x.dump: HTTP 403 AccessDenied"), NOW, 300)
    assert "403 AccessDenied" in failed
    [late] = health_problems(status(last_pass=NOW, pending_since=NOW - 121 * minute), NOW, 300)
    assert "memos-x.dump" in late


# --------------------------------------------------------------------------------------------------------------------
# Fakes: the metadata service and OSS


class _Quiet(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class FakeMetadata:
    """The ECS metadata service: a role, and credentials served in order (the last one repeats)."""

    credentials: list[FakeCreds]
    hardened: bool = True
    role: str = "memos-offsite"
    token: str = "metadata-session-token"
    credential_fetches: int = 0
    server: http.server.ThreadingHTTPServer = field(init=False)

    def __post_init__(self) -> None:
        fake = self

        class Handler(_Quiet):
            def do_PUT(self) -> None:
                if not fake.hardened or self.path != "/latest/api/token":
                    self._answer(404, b"")
                elif self.headers.get("X-aliyun-ecs-metadata-token-ttl-seconds", "").isdigit():
                    self._answer(200, fake.token.encode())
                else:
                    self._answer(400, b"")

            def do_GET(self) -> None:
                if fake.hardened and self.headers.get("X-aliyun-ecs-metadata-token") != fake.token:
                    self._answer(401, b"")
                elif self.path == "/latest/meta-data/ram/security-credentials/":
                    self._answer(200, fake.role.encode())
                elif self.path == f"/latest/meta-data/ram/security-credentials/{fake.role}":
                    creds = fake.credentials[min(fake.credential_fetches, len(fake.credentials) - 1)]
                    fake.credential_fetches += 1
                    self._answer(200, json.dumps(creds.document()).encode())
                else:
                    self._answer(404, b"")

            def _answer(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@dataclass
class Put:
    host: str
    key: str
    headers: dict[str, str]
    body: bytes | None  # kept when small
    body_md5: str
    length: int
    answer: int
    code: str


@dataclass
class FakeOss:
    """An OSS endpoint that authenticates like OSS: Content-MD5 against the body, the signature with oss2."""

    known: list[FakeCreds]
    expired_tokens: set[str] = field(default_factory=set[str])
    refuse_with: int | None = None
    tls: ssl.SSLContext | None = None
    puts: list[Put] = field(default_factory=list[Put])
    server: http.server.ThreadingHTTPServer = field(init=False)

    def __post_init__(self) -> None:
        fake = self

        class Handler(_Quiet):
            def do_PUT(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                key = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path[1:])
                length = int(headers.get("content-length", "0"))
                digest, kept, left = hashlib.md5(), bytearray(), length  # noqa: S324
                while left:
                    chunk = self.rfile.read(min(left, 1 << 20))
                    if not chunk:
                        break
                    digest.update(chunk)
                    left -= len(chunk)
                    if len(kept) < 1 << 20:
                        kept += chunk
                body_md5 = base64.b64encode(digest.digest()).decode()
                answer, code = fake.judge(headers, key, body_md5, left)
                fake.puts.append(
                    Put(
                        headers.get("host", ""),
                        key,
                        headers,
                        bytes(kept) if length <= 1 << 20 else None,
                        body_md5,
                        length,
                        answer,
                        code,
                    )
                )
                if answer == 200:
                    self.send_response(200)
                    self.send_header("ETag", f'"{base64.b64decode(body_md5).hex().upper()}"')
                    self.send_header("x-oss-request-id", "REQ-OK")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                error = (
                    f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                    "<Message>refused by the fake</Message>"
                    f"<RequestId>REQ-{code}</RequestId><HostId>{BUCKET}.{ENDPOINT}</HostId>"
                    f"<OSSAccessKeyId>{headers.get('authorization', '')}</OSSAccessKeyId>"
                    f"<StringToSign>PUT\n{headers.get('x-oss-security-token', '')}</StringToSign></Error>"
                ).encode()
                self.send_response(answer)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(error)))
                self.end_headers()
                self.wfile.write(error)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if self.tls is not None:
            self.server.socket = self.tls.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def judge(self, headers: dict[str, str], key: str, body_md5: str, missing: int) -> tuple[int, str]:  # noqa: PLR0911
        """The answer of OSS, one check after the other."""
        if missing or headers.get("content-md5") != body_md5:
            return 400, "InvalidDigest"
        if headers.get("host") != f"{BUCKET}.{ENDPOINT}":
            return 400, "InvalidBucketName"
        date = email.utils.parsedate_to_datetime(headers.get("date", "Thu, 01 Jan 1970 00:00:00 GMT"))
        if abs((dt.datetime.now(dt.UTC) - date).total_seconds()) > 900:
            return 403, "RequestTimeTooSkewed"
        key_id = headers.get("authorization", "").removeprefix("OSS ").split(":")[0]
        creds = next((c for c in self.known if c.key_id == key_id), None)
        if creds is None:
            return 403, "InvalidAccessKeyId"
        if headers.get("authorization") != oss2_authorization(headers, BUCKET, key, creds):
            return 403, "SignatureDoesNotMatch"
        if creds.token in self.expired_tokens:
            return 403, "SecurityTokenExpired"
        if self.refuse_with is not None:
            return self.refuse_with, "AccessDenied"
        return 200, ""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def accepted(self) -> list[Put]:
        return [p for p in self.puts if p.answer == 200]


def make_tls(directory: Path) -> tuple[Path, ssl.SSLContext]:
    """A test CA (its PEM file) and a server context with a certificate for *.<ENDPOINT> that it signed."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "memos test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),  # keyCertSign, cRLSign
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"*.{ENDPOINT}")]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(f"*.{ENDPOINT}")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return ca_file, context


def fresh(name: str, hours: float = 6) -> FakeCreds:
    return FakeCreds(
        f"STS.{name}",
        f"secret-{name}-Zx9/+=",
        f"token-{name}-CAIS/+=",
        dt.datetime.now(dt.UTC) + dt.timedelta(hours=hours),
    )


@dataclass
class World:
    tmp: Path
    metadata: FakeMetadata
    oss: FakeOss

    @property
    def backups(self) -> Path:
        return self.tmp / "backups"

    @property
    def state(self) -> Path:
        return self.tmp / "state"

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONDONTWRITEBYTECODE": "1",
            "OSS_BUCKET": BUCKET,
            "OSS_ENDPOINT": ENDPOINT,
            "OSS_SCHEME": "http",
            "OSS_CONNECT_ADDRESS": self.oss.address,
            "BACKUP_DIR": str(self.backups),
            "STATE_DIR": str(self.state),
            "METADATA_URL": self.metadata.url,
            **extra,
        }

    def run(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(PROGRAM), *args],
            env=self.env(**extra),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def dump(self, name: str, data: bytes, age_hours: float = 1) -> Path:
        path = self.backups / name
        path.write_bytes(data)
        when = time.time() - age_hours * 3600
        os.utime(path, (when, when))
        return path

    def status(self) -> dict[str, Any]:
        return json.loads((self.state / "status.json").read_text())


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    creds = fresh("one")
    metadata = FakeMetadata([creds])
    oss = FakeOss([creds])
    (tmp_path / "backups").mkdir()
    yield World(tmp_path, metadata, oss)
    metadata.server.shutdown()
    oss.server.shutdown()


def test_fake_oss_accepts_the_official_sdk_and_refuses_a_wrong_signature(world: World) -> None:
    # The fake is the judge of the end-to-end tests: it must take what Alibaba's SDK sends, and only that.
    creds = world.oss.known[0]
    proxies = {"http": f"http://{world.oss.address}"}  # the SDK's own URL, sent to the fake
    headers = {"Content-MD5": md5_b64(b"sdk body"), "x-oss-server-side-encryption": "AES256"}
    sdk = oss2.Bucket(
        oss2.StsAuth(creds.key_id, creds.secret, creds.token), f"http://{ENDPOINT}", BUCKET, proxies=proxies
    )
    sdk.put_object("memos/by the sdk+1.dump", b"sdk body", headers=headers)
    wrong = oss2.Bucket(
        oss2.StsAuth(creds.key_id, "not-the-secret", creds.token), f"http://{ENDPOINT}", BUCKET, proxies=proxies
    )
    with pytest.raises(oss2.exceptions.OssError):
        wrong.put_object("memos/by the sdk+1.dump", b"sdk body", headers=headers)
    assert [(p.key, p.answer, p.code) for p in world.oss.puts] == [
        ("memos/by the sdk+1.dump", 200, ""),
        ("memos/by the sdk+1.dump", 403, "SignatureDoesNotMatch"),
    ]


OLDER = "memos-20250301T030000Z.dump"
NEWER = "memos-20250302T030000Z.dump"


def two_dumps_and_a_partial(world: World) -> dict[str, bytes]:
    bodies = {OLDER: os.urandom(70_000), NEWER: os.urandom(300_001)}
    world.dump(NEWER, bodies[NEWER], age_hours=1)  # written first, so directory order is not name order
    world.dump(OLDER, bodies[OLDER], age_hours=25)
    world.dump("memos-20250303T030000Z.dump.partial", b"half a dump")
    (world.backups / ".last-success").write_text("1740798000 scheduled memos-20250302T030000Z.dump\n")
    return bodies


def assert_no_secret_in(text: str, *creds: FakeCreds) -> None:
    for c in creds:
        assert c.secret not in text
        assert c.token not in text
    assert "OSS STS." not in text  # no Authorization value, hence no signature


# --------------------------------------------------------------------------------------------------------------------
# End to end


@pytest.mark.parametrize("hardened", [True, False], ids=["hardened-metadata", "normal-metadata"])
def test_once_uploads_each_completed_dump_signed_encrypted_and_md5_checked(world: World, hardened: bool) -> None:
    world.metadata.hardened = hardened
    bodies = two_dumps_and_a_partial(world)
    result = world.run("--once")
    assert result.returncode == 0, result.stdout + result.stderr
    creds = world.metadata.credentials[0]
    puts = world.oss.accepted()
    assert [p.key for p in puts] == [f"memos/{OLDER}", f"memos/{NEWER}"]  # oldest first, nothing else
    assert len(world.oss.puts) == 2
    for put, name in zip(puts, [OLDER, NEWER], strict=True):
        assert put.host == f"{BUCKET}.{ENDPOINT}"
        assert put.body == bodies[name]
        assert put.headers["content-md5"] == md5_b64(bodies[name])
        assert put.headers["x-oss-security-token"] == creds.token
        assert put.headers["x-oss-server-side-encryption"] == "AES256"
        assert put.headers["authorization"].startswith(f"OSS {creds.key_id}:")
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert f"uploaded {OLDER} to oss://{BUCKET}/memos/{OLDER}" in lines[0]
    assert_no_secret_in(result.stdout + result.stderr, creds)
    status = world.status()
    assert status["last_pass_ok"] is True
    assert status["last_error"] is None
    assert status["pending"] == []
    assert status["uploaded_in_last_pass"] == [OLDER, NEWER]
    assert status["last_upload"]["file"] == NEWER
    assert sorted(p.name for p in (world.state / "uploaded").iterdir()) == [f"{OLDER}.json", f"{NEWER}.json"]


def test_second_pass_uploads_nothing_new_and_health_passes(world: World) -> None:
    two_dumps_and_a_partial(world)
    assert world.run("--once").returncode == 0
    again = world.run("--once")
    assert again.returncode == 0, again.stdout
    assert again.stdout == ""
    assert len(world.oss.puts) == 2
    assert world.status()["last_upload"] is not None  # carried over from the pass that uploaded
    health = world.run("--health", OSS_BUCKET="", OSS_ENDPOINT="")  # the healthcheck needs no OSS settings
    assert health.returncode == 0, health.stdout
    assert health.stdout.startswith("healthy:")


def test_new_dump_is_uploaded_by_the_next_pass(world: World) -> None:
    two_dumps_and_a_partial(world)
    assert world.run("--once").returncode == 0
    world.dump("memos-20250303T030000Z.dump", b"the third dump")
    assert world.run("--once").returncode == 0
    assert [p.key for p in world.oss.accepted()][-1] == "memos/memos-20250303T030000Z.dump"
    assert len(world.oss.puts) == 3


def test_refused_upload_fails_the_pass_and_the_healthcheck_with_a_reason(world: World) -> None:
    two_dumps_and_a_partial(world)
    world.oss.refuse_with = 403
    result = world.run("--once")
    assert result.returncode == 1
    assert len(world.oss.puts) == 1  # stops at the first refusal instead of sending every dump
    assert f"FAILED {OLDER}: HTTP 403 AccessDenied: refused by the fake (request id REQ-AccessDenied)" in result.stdout
    assert_no_secret_in(result.stdout + result.stderr + (world.state / "status.json").read_text(), world.oss.known[0])
    status = world.status()
    assert status["last_pass_ok"] is False
    assert [p["file"] for p in status["pending"]] == [OLDER, NEWER]
    assert not (world.state / "uploaded").exists() or not any((world.state / "uploaded").iterdir())
    health = world.run("--health")
    assert health.returncode == 1
    assert "unhealthy: the last pass failed" in health.stdout
    assert "403 AccessDenied" in health.stdout
    assert f"{OLDER} (completed" in health.stdout  # waited 25 h, more than 2 h

    world.oss.refuse_with = None
    assert world.run("--once").returncode == 0
    assert world.run("--health").returncode == 0


def test_https_upload_checks_the_bucket_certificate_against_the_trusted_cas(world: World) -> None:
    ca_file, context = make_tls(world.tmp)
    tls_oss = FakeOss(world.oss.known, tls=context)
    try:
        over_tls = World(world.tmp, world.metadata, tls_oss)
        two_dumps_and_a_partial(over_tls)
        untrusted = over_tls.run("--once", OSS_SCHEME="https")  # the system CAs do not know the test CA
        assert untrusted.returncode == 1
        assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stdout
        assert tls_oss.puts == []
        trusted = over_tls.run("--once", OSS_SCHEME="https", SSL_CERT_FILE=str(ca_file))
        assert trusted.returncode == 0, trusted.stdout
        assert [p.key for p in tls_oss.accepted()] == [f"memos/{OLDER}", f"memos/{NEWER}"]
    finally:
        tls_oss.server.shutdown()


def test_credentials_near_expiry_are_refreshed_before_the_next_upload(world: World) -> None:
    bodies = two_dumps_and_a_partial(world)
    expiring, renewed = fresh("expiring", hours=0.1), fresh("renewed")  # 6 minutes left, less than the margin
    world.metadata.credentials = [expiring, renewed]
    world.oss.known = [expiring, renewed]
    result = world.run("--once")
    assert result.returncode == 0, result.stdout
    first, second = world.oss.accepted()
    assert first.headers["x-oss-security-token"] == expiring.token
    assert second.headers["x-oss-security-token"] == renewed.token
    assert second.body == bodies[NEWER]
    assert world.metadata.credential_fetches == 2


def test_token_that_oss_calls_expired_is_replaced_and_the_upload_retried(world: World) -> None:
    two_dumps_and_a_partial(world)
    stale, renewed = fresh("stale"), fresh("renewed")
    world.metadata.credentials = [stale, renewed]
    world.oss.known = [stale, renewed]
    world.oss.expired_tokens = {stale.token}
    result = world.run("--once")
    assert result.returncode == 0, result.stdout
    assert [p.code for p in world.oss.puts] == ["SecurityTokenExpired", "", ""]
    assert {p.headers["x-oss-security-token"] for p in world.oss.accepted()} == {renewed.token}


def test_no_usable_credentials_fails_the_pass(world: World) -> None:
    two_dumps_and_a_partial(world)
    result = world.run("--once", METADATA_URL="http://127.0.0.1:9")  # nothing listens on the discard port
    assert result.returncode == 1
    assert "metadata service http://127.0.0.1:9 unreachable" in result.stdout
    assert world.oss.puts == []
    assert world.run("--health").returncode == 1


def test_health_without_any_pass_is_unhealthy(world: World) -> None:
    health = world.run("--health")
    assert health.returncode == 1
    assert health.stdout == "unhealthy: no pass has completed yet (no readable status file)\n"


def test_invalid_configuration_is_refused_with_the_variable_named(world: World) -> None:
    result = world.run("--once", OSS_ENDPOINT="https://oss-cn-hangzhou-internal.aliyuncs.com")
    assert result.returncode == 2
    assert "OSS_ENDPOINT=" in result.stderr
    assert world.oss.puts == []


def test_dump_larger_than_the_memory_limit_is_streamed(world: World) -> None:
    size = 64 * 1024 * 1024  # twice the container's 32 MiB limit
    block = os.urandom(1 << 20)
    with (world.backups / OLDER).open("wb") as handle:
        for _ in range(size >> 20):
            handle.write(block)
    # VmHWM is this process's own peak (ru_maxrss would include the pytest process it was spawned from).
    measure = (
        "import runpy, sys\n"
        f"sys.argv = [{str(PROGRAM)!r}, '--once']\n"
        "try:\n"
        f"    runpy.run_path({str(PROGRAM)!r}, run_name='__main__')\n"
        "finally:\n"
        "    peak = [line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM:')]\n"
        "    print('peak-kib', *peak, file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", measure], env=world.env(), capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    [put] = world.oss.accepted()
    assert put.length == size
    assert put.body_md5 == put.headers["content-md5"]
    peak_mib = int(result.stderr.split("peak-kib")[1].split()[0]) / 1024
    assert peak_mib < 40, f"peak RSS {peak_mib:.0f} MiB for a 64 MiB dump"


def test_sigterm_stops_the_loop_cleanly(world: World) -> None:
    two_dumps_and_a_partial(world)
    process = subprocess.Popen(
        [sys.executable, str(PROGRAM)],
        env=world.env(INTERVAL_SECONDS="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not (world.state / "status.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (world.state / "status.json").exists()
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0
    assert "copying" in stdout.splitlines()[0]
    assert len(world.oss.accepted()) == 2
