"""The off-host copier (ops/oss_upload.py) on Alibaba's SDKs, run for real against a local cloud stand-in.

`python ops/oss_upload.py --once | --health` runs as a subprocess with its production endpoint names;
HTTP_PROXY sends its requests to harness/cloud_standin.py, which plays the instance metadata service,
OSS and CloudMonitor. The stand-in accepts an OSS request only with a valid V4 signature, recomputed
from the documented canonical form by its own code, and the tests below first show that this check
agrees with a second, independent V4 implementation (the older `oss2` SDK) and refuses a request
changed after signing. The SDK's own signer is therefore never its own judge.

What the stand-in cannot show is listed in its docstring: real access control (the role's policy is
compared with the actions the stand-in saw, not evaluated by RAM), TLS, throttling and latency.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():  # oss2 has docstrings with invalid escapes
    warnings.simplefilter("ignore", DeprecationWarning)
    import oss2
    import oss2.http

from components.offsite_bucket import copier_actions
from harness.cloud_standin import (
    CloudStandIn,
    Issued,
    SignatureError,
    V4Request,
    crc64_ecma,
    crc64_reference,
    verify_acs3,
    verify_v4,
)
from ops import oss_upload
from ops.oss_upload import Dump, choose_pending, health_problems, newest_dump_age_hours
from settings import OFFSITE_MEMORY_MIB

PROGRAM = Path(oss_upload.__file__).resolve()
BUCKET = "memos-prod-backups-1a2b3c4d"
REGION = "cn-hangzhou"
OLDER = "memos-20261130T030000Z-scheduled.dump"
NEWER = "memos-20261201T030000Z-pre-upgrade.dump"


# --------------------------------------------------------------------------------------------------------------------
# The stand-in's checks, against independent implementations


def oss2_signed(method: str, key: str, params: dict[str, str], headers: dict[str, str], cred: Issued) -> V4Request:
    """A request signed by oss2's V4 signer (a second implementation), as the stand-in would receive it."""
    url = f"http://{BUCKET}.oss-{REGION}.aliyuncs.com/"
    request = oss2.http.Request(method, url, params=params, headers=headers, region=REGION, product="oss")
    provider = oss2.credentials.StaticCredentialsProvider(cred.key_id, cred.secret, cred.token)
    oss2.ProviderAuthV4(provider)._sign_request(request, BUCKET, key)  # pyright: ignore[reportPrivateUsage]
    lower = {k.lower(): v for k, v in request.headers.items()}
    return V4Request(method, BUCKET, key, dict(params), lower)


CRED = Issued("STS.NUgYrLnoC37mZZCNnAbez2Ezq", "9Qm7ZzYyS+d2q/4bo1pKVx3dFg7kHn8eXHuRsv6rZ1k=", "CAIS+tok/en=",
              dt.datetime(2030, 1, 1, tzinfo=dt.UTC))  # fmt: skip


@pytest.mark.parametrize(
    ("method", "key", "params"),
    [
        ("PUT", f"memos/{OLDER}", {}),
        ("POST", f"memos/{OLDER}", {"uploads": ""}),
        ("PUT", f"memos/{OLDER}", {"partNumber": "2", "uploadId": "0004B9894A22E5B1888A1E29F823****"}),
        ("PUT", "backups/db 2026+12/备份 ä%20&=?#~!'()*.dump", {}),
    ],
    ids=["put", "initiate-multipart", "upload-part", "awkward-key"],
)
def test_the_standins_v4_check_accepts_a_second_implementations_signature(
    method: str, key: str, params: dict[str, str]
) -> None:
    headers = {"Content-Type": "application/octet-stream", "x-oss-server-side-encryption": "AES256"}
    request = oss2_signed(method, key, params, headers, CRED)
    now = dt.datetime.strptime(request.headers["x-oss-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    assert verify_v4(request, {CRED.key_id: CRED.secret}, REGION, now) == CRED.key_id


@pytest.mark.parametrize(
    "tamper",
    ["key", "query", "signed header", "secret", "region", "clock"],
)
def test_the_standins_v4_check_refuses_a_request_changed_after_signing(tamper: str) -> None:
    request = oss2_signed("PUT", f"memos/{OLDER}", {}, {"x-oss-server-side-encryption": "AES256"}, CRED)
    now = dt.datetime.strptime(request.headers["x-oss-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    secrets, region = {CRED.key_id: CRED.secret}, REGION
    if tamper == "key":
        request = V4Request(request.method, BUCKET, f"memos/{NEWER}", request.query, request.headers)
    elif tamper == "query":
        request = V4Request(request.method, BUCKET, request.key, {"acl": ""}, request.headers)
    elif tamper == "signed header":
        request = V4Request(request.method, BUCKET, request.key, request.query,
                            {**request.headers, "x-oss-server-side-encryption": "KMS"})  # fmt: skip
    elif tamper == "secret":
        secrets = {CRED.key_id: "another-secret"}
    elif tamper == "region":
        region = "cn-shanghai"
    else:
        now += dt.timedelta(minutes=16)
    with pytest.raises(SignatureError):
        verify_v4(request, secrets, region, now)


def test_the_standins_crc64_is_the_one_oss_documents() -> None:
    # CRC-64/XZ check value for "123456789" (the catalogue of parametrised CRC algorithms).
    assert crc64_reference(b"123456789") == 0x995DC9BBDF1939FA
    data = os.urandom(4099)
    assert crc64_ecma(data) == crc64_reference(data)


# --------------------------------------------------------------------------------------------------------------------
# Pure rules


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


def test_the_backup_age_is_that_of_the_newest_completed_dump() -> None:
    now = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
    dumps = [
        Dump(OLDER, 1, 0.0),
        Dump(NEWER, 1, 0.0),
        Dump("memos-20261201T080000Z-manual.dump.partial", 1, 0.0),  # still being written: not verified
    ]
    assert newest_dump_age_hours(dumps, now) == 6.0
    assert newest_dump_age_hours([Dump("memos-20261201T080000Z.dump.partial", 1, 0.0)], now) is None


def status(
    *, last_pass: dt.datetime, error: str | None = None, pending_since: dt.datetime | None = None
) -> dict[str, object]:
    pending = (
        []
        if pending_since is None
        else [{"file": "memos-x.dump", "size": 1, "completed_at": oss_upload.iso(pending_since)}]
    )
    return {"last_pass_at": oss_upload.iso(last_pass), "last_pass_ok": error is None, "last_error": error,
            "pending": pending}  # fmt: skip


def test_health_requires_a_recent_successful_pass_and_nothing_pending_for_two_hours() -> None:
    now, minute = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC), dt.timedelta(minutes=1)
    assert health_problems(status(last_pass=now - minute), now, 300) == []
    assert health_problems(status(last_pass=now, pending_since=now - 119 * minute), now, 300) == []
    assert health_problems(None, now, 300) == ["no pass has completed yet (no readable status file)"]
    [stale] = health_problems(status(last_pass=now - 16 * minute), now, 300)
    assert "900 s" in stale
    [failed] = health_problems(status(last_pass=now, error="memos-x.dump: AccessDenied"), now, 300)
    assert "AccessDenied" in failed
    [late] = health_problems(status(last_pass=now, pending_since=now - 121 * minute), now, 300)
    assert "memos-x.dump" in late


# --------------------------------------------------------------------------------------------------------------------
# End to end, through the SDKs


@dataclass
class World:
    tmp: Path
    cloud: CloudStandIn
    proxy: str

    @property
    def backups(self) -> Path:
        return self.tmp / "backups"

    @property
    def state(self) -> Path:
        return self.tmp / "state"

    def env(self, **overrides: str) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.tmp),
            "HTTP_PROXY": self.proxy,
            "OSS_BUCKET": BUCKET,
            "OSS_REGION": REGION,
            "OSS_ENDPOINT": f"http://oss-{REGION}-internal.aliyuncs.com",
            "CMS_ENDPOINT": f"http://metrics.{REGION}.aliyuncs.com",
            "CMS_GROUP_ID": "4242",
            "MEMOS_STACK": "prod",
            "RAM_ROLE_NAME": "memos-prod-backup-writer",
            "BACKUP_DIR": str(self.backups),
            "STATE_DIR": str(self.state),
            "PART_SIZE_MIB": "1",
        }
        env.update(overrides)
        return {k: v for k, v in env.items() if v != ""}

    def run(self, *args: str, **overrides: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(PROGRAM), *args], env=self.env(**overrides), capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip

    def dump(self, name: str, body: bytes) -> bytes:
        (self.backups / name).write_bytes(body)
        return body

    def status(self) -> dict[str, Any]:
        return json.loads((self.state / "status.json").read_text())

    def objects(self) -> dict[str, bytes]:
        return {key: stored.body for key, stored in self.cloud.objects.items()}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    (tmp_path / "backups").mkdir()
    cloud = CloudStandIn(bucket=BUCKET, region=REGION)
    cloud.issue("STS.first")
    proxy = cloud.start()
    try:
        yield World(tmp_path, cloud, proxy)
    finally:
        cloud.stop()


def two_dumps_and_a_partial(world: World) -> dict[str, bytes]:
    bodies = {
        NEWER: world.dump(NEWER, os.urandom(300_001)),  # written first: directory order is not name order
        OLDER: world.dump(OLDER, os.urandom(2 * 1024 * 1024 + 17)),  # above PART_SIZE_MIB: multipart
    }
    world.dump("memos-20261201T050000Z.dump.partial", b"half a dump")
    (world.backups / ".last-success").write_text("1796094000 scheduled memos-20261201T030000Z.dump\n")
    return bodies


def assert_no_secret_in(text: str, *creds: Issued) -> None:
    for cred in creds:
        assert cred.secret not in text
        assert cred.token not in text
    assert "Signature=" not in text


@pytest.mark.parametrize("hardened", [True, False], ids=["hardened-metadata", "normal-metadata"])
def test_once_uploads_each_completed_dump_signed_encrypted_and_crc_checked(world: World, hardened: bool) -> None:
    world.cloud.hardened = hardened
    bodies = two_dumps_and_a_partial(world)
    result = world.run("--once")
    assert result.returncode == 0, result.stdout + result.stderr
    [cred] = world.cloud.issued
    assert world.objects() == {f"memos/{OLDER}": bodies[OLDER], f"memos/{NEWER}": bodies[NEWER]}
    assert world.cloud.refused == []
    older, newer = world.cloud.objects[f"memos/{OLDER}"], world.cloud.objects[f"memos/{NEWER}"]
    assert (older.multipart, newer.multipart) == (True, False)  # 2 MiB + 17 B in 1 MiB parts; 300 kB in one
    for stored in (older, newer):
        assert stored.headers["x-oss-server-side-encryption"] == "AES256"
        assert stored.headers["x-oss-security-token"] == cred.token
        assert stored.headers["authorization"].startswith(f"OSS4-HMAC-SHA256 Credential={cred.key_id}/")
    lines = result.stdout.splitlines()
    assert [line.split(": ", 1)[1].split(" (")[0] for line in lines] == [
        f"uploaded {OLDER} to oss://{BUCKET}/memos/{OLDER}",
        f"uploaded {NEWER} to oss://{BUCKET}/memos/{NEWER}",
    ]
    assert f"CRC-64 {crc64_ecma(bodies[OLDER])}" in lines[0]
    assert_no_secret_in(result.stdout + result.stderr, cred)
    status = world.status()
    assert (status["last_pass_ok"], status["last_error"], status["pending"]) == (True, None, [])
    assert status["uploaded_in_last_pass"] == [OLDER, NEWER]
    marker = json.loads((world.state / "uploaded" / f"{OLDER}.json").read_text())
    assert {k: marker[k] for k in ("file", "bucket", "key", "size", "crc64", "multipart")} == {
        "file": OLDER, "bucket": BUCKET, "key": f"memos/{OLDER}", "size": len(bodies[OLDER]),
        "crc64": str(crc64_ecma(bodies[OLDER])), "multipart": True,
    }  # fmt: skip
    assert sorted(p.name for p in (world.state / "uploaded").iterdir()) == [f"{OLDER}.json", f"{NEWER}.json"]
    # The .partial file and the marker file in the dumps' directory were never read or sent.
    assert not any("partial" in key or "last-success" in key for key in world.objects())


def test_the_backup_age_reaches_cloudmonitor_as_a_custom_metric(world: World) -> None:
    two_dumps_and_a_partial(world)
    before = time.time()
    assert world.run("--once").returncode == 0
    [cred] = world.cloud.issued
    [metric] = world.cloud.metrics
    taken = dt.datetime(2026, 12, 1, 3, 0, tzinfo=dt.UTC).timestamp()  # NEWER's time
    reported = json.loads(metric.pop("Values"))["value"]
    assert abs(reported - (before - taken) / 3600) < 0.1
    assert before * 1000 - 1000 <= int(metric.pop("Time")) <= time.time() * 1000 + 1000
    assert metric == {
        "GroupId": "4242",
        "MetricName": "memos_backup_age_hours",
        "Dimensions": '{"stack":"prod"}',
        "Type": "0",
        "AccessKeyId": cred.key_id,
        "SecurityToken": cred.token,
    }
    assert world.status()["newest_dump_age_hours"] == pytest.approx(reported, abs=0.01)
    # The stand-in checked the request's ACS3 signature; the same check refuses it once changed.
    [sent] = world.cloud.cms_requests
    url = urllib.parse.urlsplit(f"http://metrics.{REGION}.aliyuncs.com{sent['path']}?{sent['query']}")
    secrets = {cred.key_id: cred.secret}
    assert verify_acs3("POST", url, sent["headers"], sent["body"].encode(), secrets) == cred.key_id
    forged = url._replace(query=sent["query"].replace("MetricList.1.Values=", "MetricList.1.Values=1"))
    with pytest.raises(SignatureError):
        verify_acs3("POST", forged, sent["headers"], sent["body"].encode(), secrets)


def test_without_a_group_no_metric_is_sent_and_without_dumps_no_age(world: World) -> None:
    two_dumps_and_a_partial(world)
    assert world.run("--once", CMS_GROUP_ID="").returncode == 0
    assert world.cloud.metrics == []
    for name in (OLDER, NEWER):
        (world.backups / name).unlink()
    assert world.run("--once").returncode == 0
    assert world.cloud.metrics == []  # nothing verified yet: the backup container's health reports that
    assert world.status()["newest_dump_age_hours"] is None


def test_the_role_allows_exactly_the_actions_the_copier_uses(world: World) -> None:
    two_dumps_and_a_partial(world)
    assert world.run("--once").returncode == 0
    # A part refused by OSS: the SDK retries it, gives up and aborts the multipart upload.
    world.cloud.oss_failure, world.cloud.fail_only_parts = (403, "AccessDenied"), True
    world.dump("memos-20261201T060000Z.dump", os.urandom(3 * 1024 * 1024))
    assert world.run("--once").returncode == 1
    assert world.cloud.uploads == {}  # nothing left behind in the bucket
    assert sorted(set(world.cloud.actions)) == sorted(copier_actions())


def test_second_pass_uploads_nothing_new_and_health_passes(world: World) -> None:
    two_dumps_and_a_partial(world)
    assert world.run("--once").returncode == 0
    sent = len(world.cloud.actions)
    again = world.run("--once", CMS_GROUP_ID="")
    assert again.returncode == 0, again.stdout
    assert again.stdout == ""
    assert len(world.cloud.actions) == sent
    assert world.status()["last_upload"]["file"] == NEWER  # carried over from the pass that uploaded
    health = world.run("--health", OSS_BUCKET="", OSS_ENDPOINT="", OSS_REGION="")  # needs no OSS settings
    assert health.returncode == 0, health.stdout
    assert health.stdout.startswith("healthy:")


def test_a_new_dump_is_uploaded_by_the_next_pass(world: World) -> None:
    two_dumps_and_a_partial(world)
    assert world.run("--once").returncode == 0
    world.dump("memos-20261201T060000Z.dump", b"the third dump")
    assert world.run("--once").returncode == 0
    assert world.objects()["memos/memos-20261201T060000Z.dump"] == b"the third dump"
    assert len(world.objects()) == 3


def test_a_refused_upload_fails_the_pass_and_the_healthcheck_with_a_reason(world: World) -> None:
    two_dumps_and_a_partial(world)
    world.cloud.oss_failure = (403, "AccessDenied")
    result = world.run("--once", CMS_GROUP_ID="")
    assert result.returncode == 1
    [failed] = [line for line in result.stdout.splitlines() if "FAILED" in line]
    assert f"FAILED {OLDER}:" in failed
    assert "AccessDenied" in failed
    assert NEWER not in result.stdout  # stops at the first refusal instead of sending every dump
    [cred] = world.cloud.issued
    assert_no_secret_in(result.stdout + result.stderr + (world.state / "status.json").read_text(), cred)
    status = world.status()
    assert status["last_pass_ok"] is False
    assert [p["file"] for p in status["pending"]] == [OLDER, NEWER]
    assert not (world.state / "uploaded").exists() or not any((world.state / "uploaded").iterdir())
    completed = time.time() - 3 * 3600
    os.utime(world.backups / OLDER, (completed, completed))  # completed 3 h ago
    world.run("--once", CMS_GROUP_ID="")
    health = world.run("--health")
    assert health.returncode == 1
    assert "unhealthy: the last pass failed" in health.stdout
    assert "AccessDenied" in health.stdout
    assert f"{OLDER} (completed" in health.stdout

    world.cloud.oss_failure = None
    assert world.run("--once").returncode == 0
    assert world.run("--health").returncode == 0


def test_a_token_that_oss_calls_expired_is_replaced_and_the_upload_retried(world: World) -> None:
    two_dumps_and_a_partial(world)
    stale = world.cloud.next_credentials[0]
    renewed = world.cloud.issue("STS.renewed")
    world.cloud.revoked = {stale.token}
    result = world.run("--once")
    assert result.returncode == 0, result.stdout + result.stderr
    assert world.cloud.refused[0].startswith("SecurityTokenExpired")
    assert {stored.headers["x-oss-security-token"] for stored in world.cloud.objects.values()} == {renewed.token}
    assert [m["SecurityToken"] for m in world.cloud.metrics] == [renewed.token]


def test_credentials_close_to_expiry_are_fetched_again_before_use(world: World) -> None:
    two_dumps_and_a_partial(world)
    world.cloud.next_credentials.clear()
    expiring = world.cloud.issue("STS.expiring", hours=0.2)  # 12 minutes left: inside the SDK's 15-minute margin
    renewed = world.cloud.issue("STS.renewed")
    assert world.run("--once").returncode == 0
    # The SDK refreshes credentials that are inside its margin: it fetched the role's credentials
    # again, and the pass ended on the new ones.
    assert world.cloud.issued == [expiring, renewed]
    assert [m["SecurityToken"] for m in world.cloud.metrics] == [renewed.token]


def test_no_credentials_fails_the_pass_without_touching_oss(world: World) -> None:
    two_dumps_and_a_partial(world)
    world.cloud.next_credentials.clear()  # the metadata service answers 404 for the role
    result = world.run("--once")
    assert result.returncode == 1
    assert "FAILED" in result.stdout
    assert world.cloud.objects == {}
    assert world.run("--health").returncode == 1
    # One line of ours per failure; the SDKs' own logging (tracebacks of every refresh) is not printed.
    assert result.stderr == ""
    assert all(re.fullmatch(r"\S+Z memos-oss-upload: FAILED .+", line) for line in result.stdout.splitlines())


def test_health_without_any_pass_is_unhealthy(world: World) -> None:
    health = world.run("--health")
    assert health.returncode == 1
    assert health.stdout == "unhealthy: no pass has completed yet (no readable status file)\n"


@pytest.mark.parametrize(
    ("variable", "value"),
    [("OSS_ENDPOINT", "oss-cn-hangzhou-internal.aliyuncs.com/path"), ("OSS_REGION", "hangzhou"),
     ("OSS_BUCKET", "Memos"), ("CMS_GROUP_ID", "group-1"), ("PART_SIZE_MIB", "0")],
)  # fmt: skip
def test_invalid_configuration_is_refused_with_the_variable_named(world: World, variable: str, value: str) -> None:
    result = world.run("--once", **{variable: value})
    assert result.returncode == 2
    assert result.stderr.startswith(f"memos-oss-upload: {variable}=")
    assert world.cloud.metadata_requests == []


def test_a_dump_larger_than_a_part_streams_within_the_containers_memory_limit(world: World) -> None:
    size = 64 * 1024 * 1024
    block = os.urandom(1 << 20)
    digest = hashlib.sha256()
    with (world.backups / OLDER).open("wb") as handle:
        for _ in range(size >> 20):
            handle.write(block)
            digest.update(block)
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
    result = subprocess.run([sys.executable, "-c", measure], env=world.env(PART_SIZE_MIB="16"), capture_output=True,
                            text=True, timeout=120, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    stored = world.cloud.objects[f"memos/{OLDER}"]
    assert (len(stored.body), stored.multipart) == (size, True)
    assert hashlib.sha256(stored.body).hexdigest() == digest.hexdigest()
    peak_mib = int(result.stderr.split("peak-kib")[1].split()[0]) / 1024
    # The SDKs' imports are most of it (about 70 MiB measured); the dump adds a part at most.
    assert peak_mib < 0.8 * OFFSITE_MEMORY_MIB, f"peak RSS {peak_mib:.0f} MiB of a {OFFSITE_MEMORY_MIB} MiB limit"


def test_sigterm_stops_the_loop_cleanly(world: World) -> None:
    two_dumps_and_a_partial(world)
    process = subprocess.Popen([sys.executable, str(PROGRAM)], env=world.env(INTERVAL_SECONDS="10"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
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
    assert len(world.objects()) == 2


def test_the_copier_module_keeps_no_signing_or_metadata_code_of_its_own() -> None:
    source = PROGRAM.read_text()
    for hand_written in ("hmac", "hashlib", "http.client", "100.100.100.200", "Authorization"):
        assert hand_written not in source
