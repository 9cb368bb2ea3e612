"""The off-host home of the database dumps: a private, encrypted OSS bucket and the instance's role.

Creates the bucket (private, public access blocked, server-side encryption, dumps expiring after the
configured days), and a RAM role that ECS instances can assume with exactly what the copier does:
put objects under the dumps' prefix (which also authorises a multipart upload's initiate, parts and
complete), abort its own failed multipart uploads there, and report the backup-age custom metric to
CloudMonitor (which has no resource-level permissions for it). The host's copier uses that role's
temporary credentials from the instance metadata service, so no access key is ever stored on the host.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_alicloud as alicloud
import pulumi_random as random

#: The OSS actions the copier uses on the dumps' prefix: PutObject authorises PutObject and a multipart
#: upload's InitiateMultipartUpload, UploadPart and CompleteMultipartUpload; the SDK aborts a failed one.
OSS_ACTIONS = ("oss:PutObject", "oss:AbortMultipartUpload")
#: PutCustomMetric, for the backup age (CloudMonitor authorises it on "*" only).
CMS_ACTIONS = ("cms:PutCustomMetric",)


def copier_actions() -> tuple[str, ...]:
    """Every RAM action the copier's role allows."""
    return OSS_ACTIONS + CMS_ACTIONS


def role_policy(bucket_name: str, prefix: str) -> dict[str, object]:
    """The role's policy document: the copier's actions and nothing else."""
    return {
        "Version": "1",
        "Statement": [
            {"Effect": "Allow", "Action": list(OSS_ACTIONS), "Resource": [f"acs:oss:*:*:{bucket_name}/{prefix}*"]},
            {"Effect": "Allow", "Action": list(CMS_ACTIONS), "Resource": ["*"]},
        ],
    }


@dataclass(frozen=True)
class OffsiteBackupBucketArgs:
    """Inputs of OffsiteBackupBucket."""

    name_prefix: str
    stack: str
    #: Object prefix the dumps are written under.
    prefix: str
    #: Days before the lifecycle rule deletes a dump.
    retention_days: int
    #: Region of the bucket, for its VPC-internal endpoint.
    region: str
    protect: bool
    tags: Mapping[str, str]


class OffsiteBackupBucket(pulumi.ComponentResource):
    """A write-only destination for dumps, reachable with the instance's RAM role."""

    bucket_name: pulumi.Output[str]
    role_name: pulumi.Output[str]
    internal_endpoint: str

    def __init__(self, name: str, args: OffsiteBackupBucketArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("memos:index:OffsiteBackupBucket", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # Bucket names are global across Alibaba Cloud; a stable random suffix keeps ours unique.
        suffix = random.RandomId(f"{name}-suffix", byte_length=4, opts=child)
        bucket = alicloud.oss.Bucket(
            f"{name}-bucket",
            bucket=suffix.hex.apply(lambda hex_id: f"{args.name_prefix}-{args.stack}-backups-{hex_id}"),
            storage_class="Standard",
            server_side_encryption_rule=alicloud.oss.BucketServerSideEncryptionRuleArgs(sse_algorithm="AES256"),
            lifecycle_rules=[
                alicloud.oss.BucketLifecycleRuleArgs(
                    id="expire-dumps",
                    enabled=True,
                    prefix=args.prefix,
                    expirations=[alicloud.oss.BucketLifecycleRuleExpirationArgs(days=args.retention_days)],
                )
            ],
            force_destroy=False,
            tags=dict(args.tags),
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect, retain_on_delete=args.protect),
        )
        alicloud.oss.BucketAcl(f"{name}-acl", bucket=bucket.bucket, acl="private", opts=child)
        alicloud.oss.BucketPublicAccessBlock(
            f"{name}-public-access-block", bucket=bucket.bucket, block_public_access=True, opts=child
        )

        role = alicloud.ram.Role(
            f"{name}-role",
            role_name=f"{args.name_prefix}-{args.stack}-backup-writer",
            description="Assumed by the Memos host to copy database dumps to OSS",
            assume_role_policy_document=json.dumps(
                {
                    "Version": "1",
                    "Statement": [
                        {"Action": "sts:AssumeRole", "Effect": "Allow", "Principal": {"Service": ["ecs.aliyuncs.com"]}}
                    ],
                }
            ),
            opts=child,
        )
        policy = alicloud.ram.Policy(
            f"{name}-policy",
            policy_name=f"{args.name_prefix}-{args.stack}-backup-put",
            description="Put dumps under the Memos backup bucket's prefix and report their age, nothing else",
            policy_document=bucket.bucket.apply(lambda bucket_name: json.dumps(role_policy(bucket_name, args.prefix))),
            opts=child,
        )
        alicloud.ram.RolePolicyAttachment(
            f"{name}-role-policy",
            role_name=role.role_name,
            policy_name=policy.policy_name,
            policy_type="Custom",
            opts=child,
        )
        self.bucket_name = bucket.bucket
        self.role_name = role.role_name
        self.internal_endpoint = f"oss-{args.region}-internal.aliyuncs.com"
        self.register_outputs({"bucket_name": self.bucket_name, "role_name": self.role_name})
