"""Names derived from the operator's SSH public key.

ECS takes a key pair's public key only when the key pair is created, and an instance picks up a key
pair only when its `key_name` changes. Naming the key pair after the key's fingerprint makes a new
key a new key pair, which the provider then attaches to the instance (rebooting it, since a Linux
guest reads its authorized key at boot).
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from lib.errors import ConfigError


def fingerprint_sha256(public_key: str) -> bytes:
    """SHA-256 of the key blob: the digest `ssh-keygen -l` prints (there in unpadded base64)."""
    parts = public_key.split()
    if len(parts) < 2:
        raise ConfigError("sshPublicKey", "is not an OpenSSH public key line such as 'ssh-ed25519 AAAA... you@laptop'")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(
            "sshPublicKey", "has a key blob that is not valid base64; paste the .pub file unchanged"
        ) from None
    return hashlib.sha256(blob).digest()


def key_pair_name(prefix: str, public_key: str) -> str:
    """`<prefix>-admin-<first 16 hex digits of the fingerprint>`: a new key gives a new name.

    64 bits of the fingerprint tell an operator's keys apart; the name stays within ECS's limit
    (2-128 letters, digits, `-`, `_` or `:`, starting with a letter).
    """
    return f"{prefix}-admin-{fingerprint_sha256(public_key).hex()[:16]}"
