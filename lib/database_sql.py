"""SQL the program runs against the database: the init script and the idempotent role job.

The init script runs once, from /docker-entrypoint-initdb.d, on an empty data volume, before the server
accepts TCP connections: the app's own schema uses `vector(1024)` before it creates the extension, so
both extensions must already exist when the app first connects.

The role job runs on every deploy whose inputs changed (first deploy, password rotation): it makes the
app role a plain login role that owns only its database, and sets both passwords. Passwords travel as
SCRAM-SHA-256 verifiers (RFC 7677, the format PostgreSQL stores), so the plaintext reaches neither the
server, its logs, nor the job's command.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

EXTENSIONS_SQL = """\
CREATE EXTENSION IF NOT EXISTS vector;
CREATE EXTENSION IF NOT EXISTS btree_gist;
"""

INIT_SQL = (
    "-- Runs once on an empty data volume, before the app can connect: the app's schema needs both.\n" + EXTENSIONS_SQL
)

SCRAM_ITERATIONS = 4096
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def scram_sha256_verifier(password: str, *, salt_context: str) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (as `ALTER ROLE ... PASSWORD`).

    Formula (RFC 5802/7677): SaltedPassword = PBKDF2-HMAC-SHA256(password, salt, 4096);
    StoredKey = SHA256(HMAC(SaltedPassword, "Client Key")); ServerKey = HMAC(SaltedPassword, "Server Key").
    The salt is derived from the password and `salt_context` (HMAC-SHA256, 16 bytes) instead of drawn
    at random, so the same password always renders the same SQL and an unchanged deploy does not
    re-run the job. Caveat: that is sound only for high-entropy generated passwords, which these are;
    SASLprep is the identity for the ASCII alphabet they use.
    """
    if not password.isascii():
        raise ValueError("generated passwords are ASCII; SASLprep is not implemented")
    salt = hmac.new(password.encode(), f"memos-scram-salt:{salt_context}".encode(), hashlib.sha256).digest()[:16]
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, SCRAM_ITERATIONS)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _identifier(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"{name!r} is not a plain lowercase SQL identifier")
    return name


def role_job_sql(*, database: str, app_role: str, app_verifier: str, superuser_verifier: str) -> str:
    """Idempotent SQL that provisions the app role and sets both passwords (one transaction)."""
    db = _identifier(database)
    role = _identifier(app_role)
    for verifier in (app_verifier, superuser_verifier):
        if not verifier.startswith("SCRAM-SHA-256$") or "'" in verifier:
            raise ValueError("expected a SCRAM-SHA-256 verifier")
    # Identifiers are checked against a strict pattern above and verifiers against their format.
    return f"""\
SET log_statement = 'none';
BEGIN;
{EXTENSIONS_SQL}DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
    CREATE ROLE {role};
  END IF;
END
$$;
ALTER ROLE {role} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
  PASSWORD '{app_verifier}';
ALTER ROLE postgres WITH PASSWORD '{superuser_verifier}';
ALTER DATABASE {db} OWNER TO {role};
REVOKE ALL ON DATABASE {db} FROM PUBLIC;
REVOKE CONNECT, TEMPORARY ON DATABASE postgres FROM PUBLIC;
COMMIT;
"""
