"""Moving the database between the container and RDS, on real PostgreSQL 18 + pgvector.

The source is the container database exactly as the program renders it (init script, role job, the
app's tables, embeddings and HNSW index created as the app's role). The target stands in for
ApsaraDB RDS for PostgreSQL: a second cluster with a database owned by a plain login role `memos`
(what RDS's DBOwner privilege gives the app's Normal account) and a privileged account `memos_admin`
that creates the extensions through the program's own extension job script, the password on stdin.

What the stand-in cannot show: RDS itself (it cannot be reached from here), its SSL endpoint (the
job and the DSN ask for sslmode=require, the local cluster has no certificate, so the tests connect
without it), and the exact rights of an RDS privileged account (the stand-in's is a superuser, which
is what creating the untrusted `vector` extension needs).
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from harness.mock_engine import ROOT, run_program
from harness.pg_server import BIN, PostgresServer
from lib.rds import extension_job_command, extension_job_stdin
from tests.support import (
    RenderedDatabase,
    load_app_data,
    local_dsn,
    rendered_database,
    stand_ins,
    start_rendered,
    vector,
)

pytestmark = pytest.mark.postgres

SCRIPT = ROOT / "scripts" / "migrate-database"
ROWS = 300
ADMIN_PASSWORD = "Adm1nPasswordForTheStandIn"
APP_PASSWORD = "App1PasswordForTheStandIn"


def dash() -> str:
    found = shutil.which("dash")
    if found is None:
        pytest.fail("dash is required; ./scripts/test installs it")
    return found


@pytest.fixture(scope="module")
def rendered() -> RenderedDatabase:
    return rendered_database(run_program("dev"))


@pytest.fixture
def container(rendered: RenderedDatabase) -> Iterator[PostgresServer]:
    """The container database with the app's schema and data, as the app would have made them."""
    pg = start_rendered(rendered)
    rng = random.Random(5)
    with psycopg.connect(local_dsn(pg, rendered.app_dsn), autocommit=True) as conn:
        load_app_data(conn, ROWS, rng, indexed=["memo", "memo_embedding"])
    yield pg
    pg.cleanup()


def job_script() -> str:
    argv = extension_job_command(image="unused", host="127.0.0.1", port=1, database="memos", user="memos_admin")
    return argv[argv.index("-c") + 1]


def run_extension_job(pg: PostgresServer) -> subprocess.CompletedProcess[str]:
    """The program's extension job, as the ECS host runs it in the client image (here with dash)."""
    script = job_script().replace("host=127.0.0.1 port=1", f"host=127.0.0.1 port={pg.port}")
    script = script.replace(" sslmode=require", "")  # the stand-in has no certificate
    env = {"PATH": f"{BIN}:/usr/bin:/bin"}
    return subprocess.run(
        [dash(), "-c", script],
        input=extension_job_stdin(ADMIN_PASSWORD),
        env=env,
        text=True,
        capture_output=True,
        check=False,
    )


@pytest.fixture
def rds(tmp_path: Path) -> Iterator[PostgresServer]:
    """The RDS stand-in: the app's database owned by `memos`, extensions made by the extension job."""
    pg = PostgresServer({}, superuser_password="standin-superuser", root=tmp_path)
    try:
        pg.initdb()
        pg.start()
        pg.psql(
            stdin=(
                f"CREATE ROLE memos_admin LOGIN SUPERUSER PASSWORD '{ADMIN_PASSWORD}';\n"
                f"CREATE ROLE memos LOGIN PASSWORD '{APP_PASSWORD}';\n"
                "CREATE DATABASE memos OWNER memos;\n"
            ),
            database="postgres",
        )
        job = run_extension_job(pg)
        assert job.returncode == 0, job.stderr
        yield pg
    finally:
        pg.cleanup()


def migrate(
    tmp_path: Path, source: tuple[PostgresServer, str, str], target: tuple[PostgresServer, str, str], *args: str,
    role: str = "",
) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """`migrate-database copy` between (server, user, password) pairs, run with dash."""
    files = {}
    for side, (_, _, password) in (("source", source), ("target", target)):
        files[side] = tmp_path / f"{side}-password"
        files[side].write_text(password)
    env = {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "SOURCE": f"host=127.0.0.1 port={source[0].port} dbname=memos user={source[1]}",
        "TARGET": f"host=127.0.0.1 port={target[0].port} dbname=memos user={target[1]}",
        "SOURCE_PASSWORD_FILE": str(files["source"]),
        "TARGET_PASSWORD_FILE": str(files["target"]),
        "TARGET_ROLE": role,
        "TMPDIR": str(tmp_path),
    }
    return subprocess.run([dash(), str(SCRIPT), "copy", *args], env=env, text=True, capture_output=True, check=False)


def snapshot(dsn: str) -> dict[str, object]:
    probe = vector(random.Random(99))
    with psycopg.connect(dsn) as conn:
        # Whether the index can serve the app's search at all, whatever the small table's costs say.
        conn.execute("SET enable_seqscan = off")
        plan = conn.execute(
            "EXPLAIN SELECT memo_id FROM memo_embedding ORDER BY embedding <=> %s::vector LIMIT 10", (probe,)
        ).fetchall()
        return {
            "memos": conn.execute("SELECT count(*), md5(string_agg(content, ',' ORDER BY id)) FROM memo").fetchone(),
            "embeddings": conn.execute(
                "SELECT count(*), md5(string_agg(embedding::text, ',' ORDER BY memo_id)) FROM memo_embedding"
            ).fetchone(),
            "indexes": conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1"
            ).fetchall(),
            "owners": conn.execute("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'").fetchall(),
            "hnsw used": any("memo_embedding_hnsw" in row[0] for row in plan),
        }


def app_dsn(pg: PostgresServer) -> str:
    return pg.dsn(user="memos", password=APP_PASSWORD)


def test_the_extension_job_creates_both_extensions_with_the_password_only_on_stdin(rds: PostgresServer) -> None:
    assert ADMIN_PASSWORD not in job_script()
    with psycopg.connect(app_dsn(rds)) as conn:
        names = [row[0] for row in conn.execute("SELECT extname FROM pg_extension ORDER BY 1").fetchall()]
    assert names == ["btree_gist", "plpgsql", "vector"]
    # Idempotent: it runs again on a new instance or database.
    assert run_extension_job(rds).returncode == 0


def test_container_to_rds_copies_rows_indexes_and_gives_the_app_ownership(
    container: PostgresServer, rendered: RenderedDatabase, rds: PostgresServer, tmp_path: Path
) -> None:
    before = snapshot(container.dsn())
    assert before["memos"][0] == ROWS  # type: ignore[index]
    result = migrate(tmp_path, (container, "postgres", rendered.superuser_password), (rds, "memos", APP_PASSWORD))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "verified: 2 tables, 600 rows, 4 indexes, the same on both sides"
    after = snapshot(app_dsn(rds))
    assert after == {**before, "owners": [("memos",)]}
    assert after["hnsw used"] is True
    with psycopg.connect(app_dsn(rds), autocommit=True) as conn:  # the app owns and can write it
        conn.execute("INSERT INTO memo (content) VALUES ('written on RDS')")
        conn.execute("ALTER TABLE memo ADD COLUMN pinned boolean")


def test_a_target_that_already_holds_tables_is_refused_without_replace(
    container: PostgresServer, rendered: RenderedDatabase, rds: PostgresServer, tmp_path: Path
) -> None:
    source = (container, "postgres", rendered.superuser_password)
    assert migrate(tmp_path, source, (rds, "memos", APP_PASSWORD)).returncode == 0
    with psycopg.connect(app_dsn(rds), autocommit=True) as conn:
        conn.execute("INSERT INTO memo (content) VALUES ('only on RDS')")
    again = migrate(tmp_path, source, (rds, "memos", APP_PASSWORD))
    assert again.returncode == 1
    assert "the target already holds 2 tables; pass --replace" in again.stderr
    assert snapshot(app_dsn(rds))["memos"][0] == ROWS + 1  # type: ignore[index]


def test_rds_back_to_the_container_replaces_the_stale_copy_and_keeps_the_app_role_as_owner(
    container: PostgresServer, rendered: RenderedDatabase, rds: PostgresServer, tmp_path: Path
) -> None:
    superuser = (container, "postgres", rendered.superuser_password)
    assert migrate(tmp_path, superuser, (rds, "memos", APP_PASSWORD)).returncode == 0
    with psycopg.connect(app_dsn(rds), autocommit=True) as conn:  # life goes on on RDS
        conn.execute("INSERT INTO memo (content) SELECT 'later ' || g FROM generate_series(1, 25) g")
    on_rds = snapshot(app_dsn(rds))

    back = migrate(tmp_path, (rds, "memos", APP_PASSWORD), superuser, "--replace", role="memos")
    assert back.returncode == 0, back.stderr
    assert snapshot(container.dsn()) == on_rds
    with psycopg.connect(local_dsn(container, rendered.app_dsn), autocommit=True) as conn:
        conn.execute("INSERT INTO memo (content) VALUES ('back in the container')")


def test_a_copy_that_differs_from_its_source_fails_and_says_how(
    container: PostgresServer, rendered: RenderedDatabase, rds: PostgresServer, tmp_path: Path
) -> None:
    # A table left over in the target from earlier, which the dump does not replace.
    with psycopg.connect(app_dsn(rds), autocommit=True) as conn:
        conn.execute("CREATE TABLE leftover (id int)")
        conn.execute("INSERT INTO leftover VALUES (1)")
    result = migrate(
        tmp_path, (container, "postgres", rendered.superuser_password), (rds, "memos", APP_PASSWORD), "--replace"
    )
    assert result.returncode == 1
    assert "> rows leftover 1" in result.stderr
    assert "the copy differs from the source" in result.stderr


def test_a_failed_restore_leaves_the_target_as_it_was(
    container: PostgresServer, rendered: RenderedDatabase, rds: PostgresServer, tmp_path: Path
) -> None:
    # Without the extensions the target cannot hold vector columns: pg_restore fails in its one transaction.
    with psycopg.connect(rds.dsn(user="memos_admin", password=ADMIN_PASSWORD), autocommit=True) as conn:
        conn.execute("DROP EXTENSION vector")
    result = migrate(tmp_path, (container, "postgres", rendered.superuser_password), (rds, "memos", APP_PASSWORD))
    assert result.returncode == 1
    assert "pg_restore failed; the target was left as it was" in result.stderr
    with psycopg.connect(app_dsn(rds)) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)


def urns(function: str, stack: str) -> set[str]:
    body = subprocess.run(
        ["sed", "-n", f"/^{function}()/,/^}}/p", str(SCRIPT)], capture_output=True, text=True, check=True
    )
    out = subprocess.run(
        [dash(), "-c", f"{body.stdout}\n{function} {stack}"], capture_output=True, text=True, check=True
    )
    return set(out.stdout.split())


def test_the_script_targets_exactly_the_resources_each_database_consists_of() -> None:
    from tests.conftest import PROD_SECRETS

    on_rds = run_program("prod", {"database": "rds", "containerDatabaseVolumes": "keep"}, secrets=PROD_SECRETS)
    in_container = run_program("prod", secrets=PROD_SECRETS)

    # The mock monitor names a top-level component with the root stack's type; the engine does not.
    def engine_urn(urn: str) -> str:
        return urn.replace("::pulumi:pulumi:Stack$", "::")

    assert urns("rds_urns", "prod") == {
        engine_urn(r.urn) for r in on_rds.resources.values() if r.name.startswith("rds")
    }
    assert urns("container_urns", "prod") == {
        engine_urn(r.urn)
        for r in in_container.resources.values()
        if r.name == "database" or r.name.startswith("database-")
    }
    # Moving back also targets the data volume the database container mounts (gone after `remove`).
    data_volume = in_container.by_name("volumes-database")
    assert data_volume.inputs["name"] == "memos-pgdata"
    assert data_volume.urn in in_container.by_name("database-server").options["dependencies"]
    assert urns("container_volume_urns", "prod") == {engine_urn(data_volume.urn)}


# The orchestration, with stand-ins for what only the operator's machine and the host have: `pulumi`
# (answers outputs and the state export, records every call), the stack's `ssh` command (runs the
# remote command here) and `docker` (runs the container's command here, with this machine's paths
# and the two test servers' addresses in place of `postgres:5432` and the RDS endpoint). The copy in
# between is the real script against the real servers.

PULUMI = """
echo "pulumi $*" >>"$LOG"
case $1 in
    stack)
        case $2 in
            output) case $3 in ssh_command) echo ssh-standin ;; app_container) echo memos-app ;; esac ;;
            export) cat "$STATE_JSON" ;;
        esac ;;
    config) [ "$2" = get ] && exit 1 ;;
esac
exit 0
"""
SSH = 'echo "ssh $*" >>"$LOG"; exec /bin/sh -c "$1"'
DOCKER = """
echo "docker $*" >>"$LOG"
[ "$1" = run ] || exit 0
shift
while [ $# -gt 0 ]; do
    case $1 in
        -e) shift; export "$1" ;;
        --entrypoint) shift; entrypoint=$1 ;;
        --network) shift ;;
        --rm|-i) ;;
        *) shift; break ;;
    esac
    shift
done
here() {
    printf '%s' "$1" | sed -e "s#/tmp/#$SANDBOX/#g" -e "s# sslmode=require##" \
        -e "s#host=postgres port=5432#host=127.0.0.1 port=$CONTAINER_PORT#" \
        -e "s#host=$RDS_HOST port=5432#host=127.0.0.1 port=$RDS_PORT#"
}
SOURCE=$(here "$SOURCE") TARGET=$(here "$TARGET")
SOURCE_PASSWORD_FILE=$(here "$SOURCE_PASSWORD_FILE") TARGET_PASSWORD_FILE=$(here "$TARGET_PASSWORD_FILE")
export SOURCE TARGET SOURCE_PASSWORD_FILE TARGET_PASSWORD_FILE
exec "$entrypoint" "$1" "$(here "$2")"
"""
RDS_HOST = "pgm-bp1standin.pg.rds.aliyuncs.com"
#: Calls that only read (outputs, the state, config values) and the ssh wrapper's own line.
QUERIES = ("pulumi stack", "pulumi config get", "ssh")


def secret(value: str) -> dict[str, str]:
    """A secret as `pulumi stack export --show-secrets` prints it."""
    return {"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270", "plaintext": json.dumps(value)}


def orchestrate(
    tmp_path: Path, container: PostgresServer, superuser_password: str, rds: PostgresServer, direction: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    prefix = "urn:pulumi:prod::memos::memos:index:"
    state = {
        "deployment": {
            "resources": [
                {"urn": f"{prefix}RdsDatabase$alicloud:rds/instance:Instance::rds-instance",
                 "outputs": {"connectionString": RDS_HOST, "port": "5432"}},
                {"urn": f"{prefix}RdsDatabase$random:index/randomPassword:RandomPassword::rds-app-password",
                 "outputs": {"result": secret(APP_PASSWORD)}},
                {"urn": f"{prefix}PgvectorDatabase$random:index/randomPassword:RandomPassword::"
                        "database-superuser-password", "outputs": {"result": secret(superuser_password)}},
            ]
        }
    }  # fmt: skip
    (tmp_path / "state.json").write_text(json.dumps(state))
    sandbox = tmp_path / "container-tmp"
    sandbox.mkdir()
    bin_dir = stand_ins(tmp_path / "bin", {"pulumi": PULUMI, "ssh-standin": SSH, "docker": DOCKER})
    log = tmp_path / "calls.log"
    env = {
        "PATH": f"{bin_dir}:{BIN}:/usr/bin:/bin",
        "LOG": str(log),
        "STATE_JSON": str(tmp_path / "state.json"),
        "SANDBOX": str(sandbox),
        "CONTAINER_PORT": str(container.port),
        "RDS_PORT": str(rds.port),
        "RDS_HOST": RDS_HOST,
        "TMPDIR": str(tmp_path),
    }
    result = subprocess.run(
        [dash(), str(SCRIPT), "--stack", "prod", direction], env=env, text=True, capture_output=True, check=False
    )
    return result, log.read_text().splitlines()


def test_to_rds_creates_rds_first_then_copies_with_the_app_stopped_then_moves_the_app(
    container: PostgresServer, rendered: RenderedDatabase, rds: PostgresServer, tmp_path: Path
) -> None:
    before = snapshot(container.dsn())
    result, calls = orchestrate(tmp_path, container, rendered.superuser_password, rds, "to-rds")
    assert result.returncode == 0, result.stderr
    assert "verified: 2 tables, 600 rows, 4 indexes" in result.stdout
    assert snapshot(app_dsn(rds)) == {**before, "owners": [("memos",)]}
    steps = [
        c if c.startswith("pulumi config") else " ".join(c.split()[:2]) for c in calls if not c.startswith(QUERIES)
    ]
    assert steps == [
        # The container database's volumes stay in the stack before it moves to RDS.
        "pulumi config set memos:containerDatabaseVolumes keep --stack prod",
        "pulumi config set memos:database rds --stack prod",
        "pulumi up",
        "docker stop",
        "docker run",
        "pulumi up",
    ]
    targeted = next(c for c in calls if c.startswith("pulumi up"))
    assert targeted.count("--target ") == 11
    assert calls[-1] == "pulumi up --stack prod"
    for line in calls:  # no password on any command line
        assert APP_PASSWORD not in line
        assert rendered.superuser_password not in line


def test_a_failed_copy_starts_the_app_again_and_never_moves_it(
    container: PostgresServer, rendered: RenderedDatabase, rds: PostgresServer, tmp_path: Path
) -> None:
    with psycopg.connect(app_dsn(rds), autocommit=True) as conn:
        conn.execute("CREATE TABLE memo (id int)")  # the target is not empty
    result, calls = orchestrate(tmp_path, container, rendered.superuser_password, rds, "to-rds")
    assert result.returncode == 1
    assert "the copy failed; the app runs on its old database again" in result.stderr
    assert (
        "Undo the config with:\n  pulumi config set memos:database container --stack prod\n"
        "  pulumi config rm memos:containerDatabaseVolumes --stack prod"
    ) in result.stderr
    assert any(c.startswith("docker start memos-app") for c in calls)
    assert [c for c in calls if c.startswith("pulumi up")] == [next(c for c in calls if c.startswith("pulumi up"))]


def test_to_container_clears_the_volume_choice_and_creates_the_database_with_its_volume_first(
    container: PostgresServer, rendered: RenderedDatabase, rds: PostgresServer, tmp_path: Path
) -> None:
    superuser = (container, "postgres", rendered.superuser_password)
    assert migrate(tmp_path, superuser, (rds, "memos", APP_PASSWORD)).returncode == 0
    with psycopg.connect(app_dsn(rds), autocommit=True) as conn:  # written on RDS after the move
        conn.execute("INSERT INTO memo (content) SELECT 'on rds ' || g FROM generate_series(1, 7) g")
    on_rds = snapshot(app_dsn(rds))
    result, calls = orchestrate(tmp_path, container, rendered.superuser_password, rds, "to-container")
    assert result.returncode == 0, result.stderr
    assert snapshot(container.dsn()) == on_rds
    steps = [
        c if c.startswith("pulumi config") else " ".join(c.split()[:2]) for c in calls if not c.startswith(QUERIES)
    ]
    assert steps == [
        # The RDS instance stays declared (protected) until the operator removes it.
        "pulumi config set memos:rdsInstance keep --stack prod",
        "pulumi config set memos:database container --stack prod",
        # memos:containerDatabaseVolumes is refused with memos:database container.
        "pulumi config rm memos:containerDatabaseVolumes --stack prod",
        "pulumi up",
        "docker stop",
        "docker run",
        "pulumi up",
    ]
    targeted = next(c for c in calls if c.startswith("pulumi up")).split()
    targets = {targeted[i + 1] for i, word in enumerate(targeted) if word == "--target"}
    assert targets == urns("container_urns", "prod") | urns("container_volume_urns", "prod")
    assert len(targets) == 7
    assert calls[-1] == "pulumi up --stack prod"
    for line in calls:  # no password on any command line
        assert APP_PASSWORD not in line
        assert rendered.superuser_password not in line
