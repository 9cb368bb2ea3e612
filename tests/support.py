"""Test helpers: the database exactly as the program renders it, on a real PostgreSQL server."""

from __future__ import annotations

import http.server
import io
import json
import random
import re
import tarfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from docker.models.containers import Container
from psycopg import sql

from components.backup import BACKUP_DIR
from harness.deployment import Deployment, run_in
from harness.mock_engine import StackRun
from harness.pg_server import PostgresServer
from harness.realizer import Step
from tools.adopt_host_key import SECRET_SIG

#: The value under SECRET_SIG in an exported secret (resource.SecretSig in Pulumi's SDK).
SECRET_VALUE_SIG = "1b47061264138c4ac30d75fd1eb44270"


@dataclass(frozen=True)
class RenderedDatabase:
    """What the program sends to Docker for the database, and the app's DSN."""

    settings: dict[str, str]
    init_sql: str
    role_sql: str
    superuser_password: str
    app_dsn: str


def rendered_database(run: StackRun) -> RenderedDatabase:
    server = run.by_name("database-server")
    command = server.inputs["command"]
    assert command[0] == "postgres"
    pairs = command[1:]
    assert pairs[0::2] == ["-c"] * (len(pairs) // 2)
    uploads = {u["file"]: u["content"] for u in server.inputs["uploads"]}
    app_uploads = {u["file"]: u["content"] for u in run.by_name("app-server").inputs["uploads"]}
    return RenderedDatabase(
        settings=dict(pair.split("=", 1) for pair in pairs[1::2]),
        init_sql=uploads["/docker-entrypoint-initdb.d/10-extensions.sql"],
        role_sql=run.by_name("database-role-job").inputs["stdin"],
        superuser_password=uploads["/run/secrets/postgres-superuser-password"],
        app_dsn=app_uploads["/run/memos-secrets/dsn"],
    )


def same_setting(shown: str, rendered: str) -> bool:
    """SHOW prints floats in their shortest form (1.0 -> 1); everything else as rendered."""
    try:
        return float(shown) == float(rendered)
    except ValueError:
        return shown == rendered


def start_rendered(db: RenderedDatabase) -> PostgresServer:
    """initdb, start with the rendered flags, run the init script and the role job, as on a fresh volume."""
    server = PostgresServer(db.settings, superuser_password=db.superuser_password)
    try:
        server.initdb()
        server.start()
        server.setup_database(db.init_sql)
        server.psql(stdin=db.role_sql)
    except BaseException:
        server.cleanup()
        raise
    return server


def local_dsn(server: PostgresServer, program_dsn: str) -> str:
    """The program's DSN, pointed at this server instead of the container alias."""
    return program_dsn.replace("@postgres:5432/", f"@127.0.0.1:{server.port}/")


def stand_ins(bin_dir: Path, tools: Mapping[str, str]) -> Path:
    """Write executable `#!/bin/sh` stand-ins for system tools (name -> script body) into bin_dir."""
    bin_dir.mkdir(exist_ok=True)
    for name, body in tools.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    return bin_dir


class HealthEndpoint:
    """A local HTTP server that answers /healthz with a settable status, like the app."""

    def __init__(self) -> None:
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(endpoint.status if self.path == "/healthz" else 404)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.status = 200
        self._server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def vector(rng: random.Random) -> str:
    """A random 1024-dimensional embedding in pgvector's text form."""
    return "[" + ",".join(f"{rng.gauss(0, 1):.4f}" for _ in range(1024)) + "]"


def load_app_data(
    conn: psycopg.Connection[tuple[object, ...]], rows: int, rng: random.Random, *, indexed: Sequence[str]
) -> None:
    """The app's two vector tables with `rows` embeddings, and an HNSW index (`<table>_hnsw`, cosine,
    m = 16, ef_construction = 64) on each table in `indexed`; run as the app's role."""
    conn.execute("CREATE TABLE memo (id serial PRIMARY KEY, content text NOT NULL, embedding vector(1024))")
    conn.execute("CREATE TABLE memo_embedding (memo_id int PRIMARY KEY REFERENCES memo(id), embedding vector(1024))")
    conn.execute("INSERT INTO memo (content) SELECT 'note ' || g FROM generate_series(1, %s) g", (rows,))
    with conn.cursor().copy("COPY memo_embedding (memo_id, embedding) FROM STDIN") as copy:
        for memo_id in range(1, rows + 1):
            copy.write_row((memo_id, vector(rng)))
    for table in indexed:
        conn.execute(
            sql.SQL(
                "CREATE INDEX {} ON {} USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
            ).format(sql.Identifier(f"{table}_hnsw"), sql.Identifier(table))
        )


def pins(path: Path) -> dict[str, str]:
    """name -> version of a `uv pip compile --generate-hashes` file, checking every entry has hashes."""
    entries = re.split(r"\n(?=[a-z0-9])", re.sub(r"^#.*\n", "", path.read_text(), flags=re.MULTILINE))
    found: dict[str, str] = {}
    for entry in filter(None, (e.strip() for e in entries)):
        head = entry.split()[0]
        name, _, version = head.partition("==")
        assert version, f"{head} is not pinned with =="
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", entry), f"{name} has no hash"
        found[name] = version
    return found


def ops(steps: Sequence[Step]) -> dict[str, str]:
    """Resource name -> what `pulumi up` did to it."""
    return {s.name: s.op for s in steps}


def container_ids(deployment: Deployment) -> dict[str, str]:
    return {str(c.name): str(c.id) for c in deployment.client.containers.list(all=True)}


def insert_memos(deployment: Deployment, count: int) -> None:
    """`count` memos with random 1024-dimensional embeddings, generated in the server."""
    deployment.sql(
        "INSERT INTO memo (uid, creator_id, content, embedding) "  # noqa: S608 (count is an int)
        "SELECT 'memo-' || g || '-' || md5(random()::text), 1, 'note ' || g, e.v "
        f"FROM generate_series(1, {count}) g, "
        "LATERAL (SELECT array_agg(random())::vector(1024) AS v FROM generate_series(1, 1024) WHERE g > 0) e"
    )


def fake_pulumi(bin_dir: Path, stack: str, outputs: Mapping[str, object]) -> None:
    """A stand-in for the `pulumi` CLI's two `stack output` verbs the scripts use: `stack output NAME
    --stack STACK` (scripts/restore) and `stack output --json --show-secrets --stack STACK`
    (tools.verify). It answers from this run's exports and fails for an unknown output or another
    stack, as the CLI does."""
    bin_dir.mkdir()
    table = bin_dir / "outputs.json"
    table.write_text(json.dumps(dict(outputs)))
    script = bin_dir / "pulumi"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$*" = "stack output --json --show-secrets --stack {stack}" ]; then exec cat "{table}"; fi\n'
        f'[ "$1 $2" = "stack output" ] && [ "$4 $5" = "--stack {stack}" ] || exit 2\n'
        f'exec python3 -c \'import json,sys; o=json.load(open("{table}")); '
        'sys.exit(1) if not isinstance(o.get(sys.argv[1]), str) else print(o[sys.argv[1]])\' "$3"\n'
    )
    script.chmod(0o755)


def completed_dumps(backup: Container) -> dict[str, bytes]:
    """name -> content of every completed dump in the backup container's directory."""
    names = [n for n in run_in(backup, ["ls", BACKUP_DIR])[1].split() if re.fullmatch(r"memos-\d{8}T\d{6}Z.*\.dump", n)]
    found: dict[str, bytes] = {}
    for name in names:
        archive, _ = backup.get_archive(f"{BACKUP_DIR}/{name}")
        with tarfile.open(fileobj=io.BytesIO(b"".join(archive))) as tar:
            member = tar.extractfile(name)
            assert member is not None
            found[name] = member.read()
    return found


def stack_export(run: StackRun, *, without: Sequence[str] = ()) -> dict[str, Any]:
    """What `pulumi stack export --show-secrets` prints for a run: a version-3 deployment whose resources
    carry urn, type, parent and outputs, the stack resource's outputs being the run's exports. A secret
    is written as the CLI writes it with --show-secrets (apitype.SecretV1: the signature key and
    `plaintext`, the value's JSON; pkg/resource/stack/deployment.go). Outputs are what the mock engine
    answered: a real export also has inputs, dependencies and provider references, which nobody reads
    here. URNs are the engine's: a child of the stack carries no parent type (the mock's URNs do; the
    recorded real state in ../shared/real-run/ shows the engine's). `without` leaves out resources by
    name, as in a state from before they existed."""

    def secret(value: Any) -> dict[str, str]:
        return {SECRET_SIG: SECRET_VALUE_SIG, "plaintext": json.dumps(value)}

    def engine_urn(urn: str) -> str:
        return urn.replace("::pulumi:pulumi:Stack$", "::")

    stack_urn = f"urn:pulumi:{run.stack}::memos::pulumi:pulumi:Stack::memos-{run.stack}"
    outputs = {name: secret(value) if name in run.output_secrets else value for name, value in run.outputs.items()}
    resources: list[dict[str, Any]] = [{"urn": stack_urn, "custom": False, "type": "pulumi:pulumi:Stack",
                                        "outputs": outputs}]  # fmt: skip
    for registered in run.resources.values():
        if registered.name in without:
            continue
        secret_outputs = set(registered.options.get("additional_secret_outputs") or [])
        resources.append({
            "urn": engine_urn(registered.urn), "custom": bool(registered.options.get("custom")),
            "type": registered.type, "parent": engine_urn(registered.parent) if registered.parent else stack_urn,
            "outputs": {k: secret(v) if k in secret_outputs else v for k, v in registered.mock_outputs.items()},
        })  # fmt: skip
    return {"version": 3, "deployment": {"manifest": {"version": "v3.276.0"}, "resources": resources}}


def manual_dump(deployment: Deployment) -> str:
    """Take a dump with the backup container's own script, as an operator would; its file name."""
    code, made = run_in(deployment.container("backup_container"),
                        ["/bin/sh", "/usr/local/bin/memos-backup", "run", "manual"])  # fmt: skip
    assert code == 0, made
    dump = re.search(r"(memos-\S+-manual\.dump)", made)
    assert dump is not None, made
    return dump[1]
