"""A local stand-in for the three Alibaba Cloud endpoints the OSS copier talks to, as an HTTP proxy.

The copier's SDKs honour HTTP_PROXY for plain-HTTP endpoints, so the copier runs with its production
endpoint names (`<bucket>.oss-<region>-internal.aliyuncs.com`, `100.100.100.200`,
`metrics.<region>.aliyuncs.com`) and this proxy answers each by its Host:

- **Instance metadata service** (ECS documentation "Obtain instance metadata"): `PUT /latest/api/token`
  (hardened mode, `X-aliyun-ecs-metadata-token-ttl-seconds`), `GET
  /latest/meta-data/ram/security-credentials/[<role>]` returning the role name or the STS document
  (AccessKeyId, AccessKeySecret, SecurityToken, Expiration, Code). In hardened mode a request
  without the session token is refused with 401.
- **OSS** (OSS API reference: PutObject, InitiateMultipartUpload, UploadPart,
  CompleteMultipartUpload, AbortMultipartUpload). Every request must carry a valid **V4
  signature**, which `verify_v4` recomputes from the documented canonical form ("Include a V4
  signature in the header": canonical request, string to sign, the HMAC-SHA256 key chain starting
  from "aliyun_v4" + secret) and, separately, the STS security token of a credential the metadata
  service handed out and that has not expired. It stores the bodies, returns the object's CRC-64
  (ECMA-182, as `x-oss-hash-crc64ecma`) and maps each request to the RAM action it needs, so tests
  can compare the actions used with the role's policy.
- **CloudMonitor** PutCustomMetric (CMS API 2019-01-01): checks the request's ACS3-HMAC-SHA256
  signature from its documented construction (Alibaba Cloud API "V3 request body and signature"),
  records each `MetricList.N.*` entry with the AccessKeyId and security token it came with, and
  answers `{"Code": "200"}`.

What it cannot show: the real services' access control (a policy is only compared, not evaluated),
OSS's own checks beyond signature, token and CRC (e.g.
server-side encryption is recorded, not performed), throttling, latency and TLS (the copier uses
HTTPS in production; here every endpoint is plain HTTP through the proxy).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import http.server
import json
import re
import threading
import urllib.parse
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import crcmod  # pyright: ignore[reportMissingTypeStubs]

METADATA_HOST = "100.100.100.200"
ROLE = "memos-prod-backup-writer"
#: OSS's V4 algorithm name and the scope's fixed parts (documentation: "Include a V4 signature").
V4_ALGORITHM = "OSS4-HMAC-SHA256"
V4_TERMINATOR = "aliyun_v4_request"
_UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~"


def crc64_reference(data: bytes) -> int:
    """CRC-64/XZ bit by bit (ECMA-182 polynomial, reflected, init and xor-out all ones): what OSS reports."""
    poly = 0xC96C5795D7870F42
    crc = 0xFFFFFFFFFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFFFFFFFFFF


#: The same CRC, fast enough for dumps of many MiB (crcmod's convention: initCrc is init XOR xor-out).
crc64_ecma = crcmod.mkCrcFun(0x142F0E1EBA9EA3693, initCrc=0, rev=True, xorOut=0xFFFFFFFFFFFFFFFF)


def _uri_encode(text: str, *, keep_slash: bool) -> str:
    safe = _UNRESERVED + ("/" if keep_slash else "")
    return urllib.parse.quote(text, safe=safe)


@dataclass(frozen=True)
class V4Request:
    """What the V4 signature covers of one request, as the server received it."""

    method: str
    bucket: str
    key: str
    #: Query parameters, decoded (a parameter without a value maps to "").
    query: Mapping[str, str]
    #: Headers with lowercase names.
    headers: Mapping[str, str]


def canonical_request(request: V4Request, additional: list[str]) -> str:
    """The documented canonical request: verb, URI, query, headers, additional headers, payload hash."""
    uri = _uri_encode(f"/{request.bucket}/{request.key}", keep_slash=True)
    query = "&".join(
        _uri_encode(name, keep_slash=False) + (f"={_uri_encode(value, keep_slash=False)}" if value else "")
        for name, value in sorted(request.query.items())
    )
    signed = sorted(
        name
        for name in request.headers
        if name.startswith("x-oss-") or name in ("content-type", "content-md5") or name in additional
    )
    headers = "".join(f"{name}:{request.headers[name].strip()}\n" for name in signed)
    payload = request.headers.get("x-oss-content-sha256", "UNSIGNED-PAYLOAD")
    return "\n".join([request.method, uri, query, headers, ";".join(additional), payload])


def signing_key(secret: str, date: str, region: str) -> bytes:
    key = hmac.new(f"aliyun_v4{secret}".encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, "oss", V4_TERMINATOR):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


_CREDENTIAL = re.compile(rf"^(?P<key_id>[^/]+)/(?P<date>[0-9]{{8}})/(?P<region>[a-z0-9-]+)/oss/{V4_TERMINATOR}$")


def _authorization_fields(value: str) -> dict[str, str]:
    """`OSS4-HMAC-SHA256 Credential=..., AdditionalHeaders=..., Signature=...` (fields in any order)."""
    algorithm, _, rest = value.partition(" ")
    if algorithm != V4_ALGORITHM:
        return {}
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, _, value = part.strip().partition("=")
        fields[name] = value
    return fields if {"Credential", "Signature"} <= set(fields) else {}


class SignatureError(Exception):
    """The request's Authorization header is not a valid V4 signature for the credentials it names."""


def verify_v4(request: V4Request, secrets: Mapping[str, str], region: str, now: dt.datetime) -> str:
    """Check the V4 signature from its documented construction; returns the AccessKeyId it names."""
    fields = _authorization_fields(request.headers.get("authorization", ""))
    match = _CREDENTIAL.match(fields.get("Credential", ""))
    if match is None or not re.fullmatch(r"[0-9a-f]{64}", fields.get("Signature", "")):
        raise SignatureError(f"not an {V4_ALGORITHM} Authorization header: {request.headers.get('authorization')!r}")
    key_id, date = match["key_id"], match["date"]
    if key_id not in secrets:
        raise SignatureError(f"unknown AccessKeyId {key_id}")
    if match["region"] != region:
        raise SignatureError(f"signed for region {match['region']}, not {region}")
    stamp = request.headers.get("x-oss-date", "")
    try:
        signed_at = dt.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        raise SignatureError(f"x-oss-date {stamp!r} is not an ISO 8601 basic UTC time") from None
    if stamp[:8] != date:
        raise SignatureError("the scope's date is not the date of x-oss-date")
    if abs((now - signed_at).total_seconds()) > 15 * 60:
        raise SignatureError("x-oss-date is more than 15 minutes away from the server's time")
    additional = [h for h in fields.get("AdditionalHeaders", "").split(";") if h]
    if additional != sorted(additional) or any(h not in request.headers for h in additional):
        raise SignatureError(f"AdditionalHeaders {additional} are not sorted names of headers sent")
    scope = f"{date}/{region}/oss/{V4_TERMINATOR}"
    digest = hashlib.sha256(canonical_request(request, additional).encode()).hexdigest()
    string_to_sign = f"{V4_ALGORITHM}\n{stamp}\n{scope}\n{digest}"
    expected = hmac.new(signing_key(secrets[key_id], date, region), string_to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, fields["Signature"]):
        raise SignatureError("SignatureDoesNotMatch")
    return key_id


_ACS3 = re.compile(
    r"^ACS3-HMAC-SHA256 Credential=(?P<key_id>[^,]+),SignedHeaders=(?P<signed>[a-z0-9;-]+),"
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)


def verify_acs3(method: str, url: urllib.parse.SplitResult, headers: Mapping[str, str], body: bytes,
                secrets: Mapping[str, str]) -> str:  # fmt: skip
    """Check an Alibaba Cloud API (ACS3-HMAC-SHA256, "V3 request body and signature") signature."""
    match = _ACS3.match(headers.get("authorization", ""))
    if match is None or match["key_id"] not in secrets:
        raise SignatureError(f"not an ACS3-HMAC-SHA256 Authorization of a known key: {headers.get('authorization')!r}")
    signed = match["signed"].split(";")
    if signed != sorted(signed) or any(name not in headers for name in signed):
        raise SignatureError(f"SignedHeaders {signed} are not sorted names of headers sent")
    if headers.get("x-acs-content-sha256") != hashlib.sha256(body).hexdigest():
        raise SignatureError("x-acs-content-sha256 is not the body's SHA-256")
    query = "&".join(
        f"{_uri_encode(name, keep_slash=False)}={_uri_encode(value, keep_slash=False)}"
        for name, value in sorted(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
    )
    canonical = "\n".join([
        method, _uri_encode(url.path or "/", keep_slash=True), query,
        "".join(f"{name}:{headers[name].strip()}\n" for name in signed), ";".join(signed),
        headers["x-acs-content-sha256"],
    ])  # fmt: skip
    string_to_sign = "ACS3-HMAC-SHA256\n" + hashlib.sha256(canonical.encode()).hexdigest()
    expected = hmac.new(secrets[match["key_id"]].encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, match["signature"]):
        raise SignatureError("SignatureDoesNotMatch")
    return match["key_id"]


@dataclass
class Issued:
    """A credential the metadata service handed out."""

    key_id: str
    secret: str
    token: str
    expires: dt.datetime


@dataclass
class Stored:
    body: bytes
    headers: dict[str, str]
    multipart: bool


@dataclass
class CloudStandIn:
    """State and knobs of the stand-in; `start()` serves it on 127.0.0.1 (or the address given)."""

    bucket: str
    region: str = "cn-hangzhou"
    hardened: bool = True
    now: Any = field(default=lambda: dt.datetime.now(dt.UTC))
    issued: list[Issued] = field(default_factory=lambda: [])
    #: Tokens OSS treats as expired even before their Expiration (to test the copier's renewal).
    revoked: set[str] = field(default_factory=set[str])
    objects: dict[str, Stored] = field(default_factory=lambda: {})
    uploads: dict[str, dict[int, bytes]] = field(default_factory=lambda: {})
    refused: list[str] = field(default_factory=lambda: [])
    actions: list[str] = field(default_factory=lambda: [])
    metrics: list[dict[str, str]] = field(default_factory=lambda: [])
    metadata_requests: list[str] = field(default_factory=lambda: [])
    cms_requests: list[dict[str, Any]] = field(default_factory=lambda: [])
    #: Answer every OSS request with this (status, code) instead, when set.
    oss_failure: tuple[int, str] | None = None
    #: Refuse only UploadPart (so a multipart upload starts, fails and is aborted).
    fail_only_parts: bool = False
    #: Credentials the next metadata request hands out; rotates through these.
    next_credentials: list[Issued] = field(default_factory=lambda: [])

    def issue(self, key_id: str, *, hours: float = 6) -> Issued:
        credential = Issued(
            key_id=key_id,
            secret=base64.b64encode(hashlib.sha256(key_id.encode()).digest()).decode(),
            token=f"CAIS{hashlib.sha256(b'token' + key_id.encode()).hexdigest()}+/=",
            expires=self.now() + dt.timedelta(hours=hours),
        )
        self.next_credentials.append(credential)
        return credential

    @property
    def oss_host(self) -> str:
        return f"{self.bucket}.oss-{self.region}-internal.aliyuncs.com"

    @property
    def cms_host(self) -> str:
        return f"metrics.{self.region}.aliyuncs.com"

    def start(self, address: str = "127.0.0.1") -> str:
        """Serve; returns the proxy URL for HTTP_PROXY."""
        standin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _answer(self, status: int, body: bytes = b"", headers: Mapping[str, str] | None = None) -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _dispatch(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                host = (url.hostname or self.headers.get("Host", "")).lower()
                body = self._body()
                headers = {k.lower(): v for k, v in self.headers.items()}
                if host == METADATA_HOST:
                    standin._metadata(self, url.path, headers)
                elif host == standin.oss_host:
                    standin._oss(self, url, headers, body)
                elif host == standin.cms_host:
                    standin._cms(self, url, headers, body)
                else:
                    self._answer(502, f"the stand-in does not serve {host}".encode())

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _dispatch  # noqa: N815

        self._server = http.server.ThreadingHTTPServer((address, 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://{address}:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- metadata service

    _SESSION = "metadata-session-token-not-a-credential"

    def _metadata(self, handler: Any, path: str, headers: Mapping[str, str]) -> None:
        self.metadata_requests.append(f"{handler.command} {path}")
        if handler.command == "PUT" and path == "/latest/api/token":
            if not headers.get("x-aliyun-ecs-metadata-token-ttl-seconds"):
                handler._answer(400)
                return
            handler._answer(200, self._SESSION.encode())
            return
        if self.hardened and headers.get("x-aliyun-ecs-metadata-token") != self._SESSION:
            handler._answer(401)
            return
        base = "/latest/meta-data/ram/security-credentials/"
        if path == base:
            handler._answer(200, ROLE.encode())
        elif path == base + ROLE and self.next_credentials:
            credential = self.next_credentials[0]
            if len(self.next_credentials) > 1:
                self.next_credentials.pop(0)
            self.issued.append(credential)
            document = {
                "AccessKeyId": credential.key_id,
                "AccessKeySecret": credential.secret,
                "SecurityToken": credential.token,
                "Expiration": credential.expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "LastUpdated": self.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
                "Code": "Success",
            }
            handler._answer(200, json.dumps(document).encode())
        else:
            handler._answer(404)

    # --- OSS

    def _oss_error(self, handler: Any, status: int, code: str, message: str) -> None:
        self.refused.append(f"{code}: {message}")
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            f"<RequestId>{uuid.uuid4().hex}</RequestId><HostId>{self.oss_host}</HostId></Error>"
        ).encode()
        handler._answer(status, body, {"Content-Type": "application/xml", "x-oss-request-id": uuid.uuid4().hex})

    def _oss(  # noqa: PLR0911 (one answer per OSS operation)
        self, handler: Any, url: urllib.parse.SplitResult, headers: Mapping[str, str], body: bytes
    ) -> None:
        key = urllib.parse.unquote(url.path.lstrip("/"))
        query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        request = V4Request(handler.command, self.bucket, key, query, headers)
        secrets = {c.key_id: c.secret for c in self.issued}
        try:
            key_id = verify_v4(request, secrets, self.region, self.now())
        except SignatureError as error:
            self._oss_error(handler, 403, "SignatureDoesNotMatch", str(error))
            return
        credential = next(c for c in self.issued if c.key_id == key_id)
        token = headers.get("x-oss-security-token")
        if token != credential.token:
            self._oss_error(handler, 403, "InvalidAccessKeyId", "missing or wrong x-oss-security-token")
            return
        if token in self.revoked or credential.expires <= self.now():
            self._oss_error(handler, 403, "SecurityTokenExpired", "the security token has expired")
            return
        is_part = handler.command == "PUT" and "uploadId" in query
        if self.oss_failure is not None and (is_part or not self.fail_only_parts):
            status, code = self.oss_failure
            self._oss_error(handler, status, code, "refused by the test")
            return
        request_id = {"x-oss-request-id": uuid.uuid4().hex}
        if handler.command == "PUT" and "uploadId" not in query:
            self.actions.append("oss:PutObject")
            self.objects[key] = Stored(body, dict(headers), multipart=False)
            crc = str(crc64_ecma(body))
            etag = '"' + hashlib.md5(body).hexdigest().upper() + '"'  # noqa: S324 (OSS's ETag)
            handler._answer(200, b"", {**request_id, "ETag": etag, "x-oss-hash-crc64ecma": crc})
        elif handler.command == "POST" and "uploads" in query:
            self.actions.append("oss:PutObject")  # InitiateMultipartUpload is authorised as PutObject
            upload_id = uuid.uuid4().hex.upper()
            self.uploads[upload_id] = {}
            self._pending_headers = dict(headers)
            answer = (
                '<?xml version="1.0" encoding="UTF-8"?>\n<InitiateMultipartUploadResult>'
                f"<Bucket>{self.bucket}</Bucket><Key>{key}</Key><UploadId>{upload_id}</UploadId>"
                "</InitiateMultipartUploadResult>"
            ).encode()
            handler._answer(200, answer, {**request_id, "Content-Type": "application/xml"})
        elif handler.command == "PUT":
            self.actions.append("oss:PutObject")  # UploadPart
            parts = self.uploads.get(query["uploadId"])
            if parts is None:
                self._oss_error(handler, 404, "NoSuchUpload", "unknown upload id")
                return
            parts[int(query["partNumber"])] = body
            etag = '"' + hashlib.md5(body).hexdigest().upper() + '"'  # noqa: S324 (OSS's ETag)
            handler._answer(200, b"", {**request_id, "ETag": etag, "x-oss-hash-crc64ecma": str(crc64_ecma(body))})
        elif handler.command == "POST" and "uploadId" in query:
            self.actions.append("oss:PutObject")  # CompleteMultipartUpload
            parts = self.uploads.pop(query["uploadId"], None)
            if parts is None:
                self._oss_error(handler, 404, "NoSuchUpload", "unknown upload id")
                return
            listed = [int(p.findtext("PartNumber") or 0) for p in ET.fromstring(body).iter("Part")]  # noqa: S314 (the copier's own request)
            if listed != sorted(parts) or listed != list(range(1, len(parts) + 1)):
                self._oss_error(handler, 400, "InvalidPartOrder", f"parts {listed} of {sorted(parts)}")
                return
            data = b"".join(parts[n] for n in listed)
            self.objects[key] = Stored(data, {**self._pending_headers}, multipart=True)
            answer = (
                '<?xml version="1.0" encoding="UTF-8"?>\n<CompleteMultipartUploadResult>'
                f'<Bucket>{self.bucket}</Bucket><Key>{key}</Key><ETag>"{uuid.uuid4().hex.upper()}-{len(parts)}"</ETag>'
                "</CompleteMultipartUploadResult>"
            ).encode()
            headers_out = {
                **request_id,
                "Content-Type": "application/xml",
                "x-oss-hash-crc64ecma": str(crc64_ecma(data)),
            }
            handler._answer(200, answer, headers_out)
        elif handler.command == "DELETE" and "uploadId" in query:
            self.actions.append("oss:AbortMultipartUpload")
            self.uploads.pop(query["uploadId"], None)
            handler._answer(204, b"", request_id)
        else:
            self._oss_error(handler, 400, "NotImplemented", f"{handler.command} {url.path}?{url.query}")

    # --- CloudMonitor

    def _cms(self, handler: Any, url: urllib.parse.SplitResult, headers: Mapping[str, str], body: bytes) -> None:
        params = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        params.update(urllib.parse.parse_qsl(body.decode(), keep_blank_values=True))
        self.cms_requests.append(
            {"path": url.path, "query": url.query, "headers": dict(headers), "body": body.decode()}
        )
        action = params.get("Action") or headers.get("x-acs-action")
        if action != "PutCustomMetric":
            handler._answer(400, json.dumps({"Code": "400", "Message": f"unexpected {params.get('Action')}"}).encode())
            return
        self.actions.append("cms:PutCustomMetric")
        entries: dict[str, dict[str, str]] = {}
        for name, value in params.items():
            found = re.fullmatch(r"MetricList\.([0-9]+)\.(\w+)", name)
            if found:
                entries.setdefault(found[1], {})[found[2]] = value
        secrets = {c.key_id: c.secret for c in self.issued}
        try:
            key_id = verify_acs3(handler.command, url, headers, body, secrets)
        except SignatureError as error:
            self.refused.append(f"cms: {error}")
            handler._answer(400, json.dumps({"Code": "SignatureDoesNotMatch", "Message": str(error)}).encode())
            return
        for _, entry in sorted(entries.items()):
            entry["AccessKeyId"] = key_id
            entry["SecurityToken"] = headers.get("x-acs-security-token", "")
            self.metrics.append(entry)
        answer = {"Code": "200", "Message": "", "RequestId": uuid.uuid4().hex}
        handler._answer(200, json.dumps(answer).encode(), {"Content-Type": "application/json"})
