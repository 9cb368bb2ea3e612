"""Secrets never appear in clear, and rotating one changes only what must change.

Leaks: every stack config runs with unique marker values for every secret (the API keys, and the
generated database passwords the mocks hand out); a marker may appear only under a property path the
engine received as secret, never in a plain input, a stack output, a command line, a container's
environment, the cloud-init document or a log message.

Rotation: the program runs twice, before and after a change, and the tests compare every resource's
inputs. A changed input on a Docker container means a replacement (PLATFORM_FACTS), unless the
program told the engine to ignore that property.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from harness.mock_engine import Registered, StackRun, run_program
from harness.pg_server import PostgresServer
from tests.conftest import PROD_SECRETS, SECRET_MARKERS

ALL_KEYS_ON = {"aiEmbeddingProvider": "openai", "aiLlmProvider": "deepseek"}


def leaves(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from leaves(item, f"{path}[{index}]")
    elif isinstance(value, str):
        yield path, value


def under_secret(path: str, secret_paths: frozenset[str]) -> bool:
    return any(path == p or path.startswith((f"{p}.", f"{p}[")) for p in secret_paths)


def generated_passwords(run: StackRun) -> list[str]:
    return [r.mock_outputs["result"] for r in run.of_type("random:index/randomPassword:RandomPassword")]


RUNS = {
    "dev": lambda: run_program("dev"),
    "dev with AI": lambda: run_program(
        "dev", {"aiEnabled": True}, secrets={k: SECRET_MARKERS[k] for k in ("siliconflowApiKey", "deepseekApiKey")}
    ),
    "prod": lambda: run_program("prod", secrets=PROD_SECRETS),
    "prod with every key": lambda: run_program("prod", ALL_KEYS_ON, secrets=SECRET_MARKERS),
    "prod behind the proxy": lambda: run_program(
        "prod", {"domain": "notes.example.com", "acmeEmail": "ops@example.com"}, secrets=PROD_SECRETS
    ),
    "prod on RDS": lambda: run_program(
        "prod", {"database": "rds", "containerDatabaseVolumes": "keep"}, secrets=PROD_SECRETS
    ),
}


@pytest.fixture(scope="module", params=sorted(RUNS))
def run(request: pytest.FixtureRequest) -> StackRun:
    return RUNS[request.param]()


def test_no_secret_appears_outside_a_secret_input(run: StackRun) -> None:
    secrets = [s for s in [*SECRET_MARKERS.values(), *generated_passwords(run)] if s]
    assert len(generated_passwords(run)) >= 2
    for resource in run.resources.values():
        for path, text in leaves(resource.inputs):
            for secret in secrets:
                if secret in text:
                    assert under_secret(path, resource.secret_paths), f"{resource.name}.{path} holds a secret in clear"


def test_api_keys_reach_the_app_only_as_files(run: StackRun) -> None:
    app = run.by_name("app-server")
    env = "\n".join(app.inputs["envs"])
    for marker in SECRET_MARKERS.values():
        assert marker not in env
    assert not any(entry.split("=", 1)[0].endswith(("_API_KEY", "_DSN", "PASSWORD")) for entry in app.inputs["envs"])


def test_stack_outputs_and_logs_hold_no_secret_in_clear(run: StackRun) -> None:
    secrets = [*SECRET_MARKERS.values(), *generated_passwords(run)]
    clear = {name: value for name, value in run.outputs.items() if name not in run.output_secrets}
    rendered = repr(clear) + "\n".join(run.warnings)
    for secret in secrets:
        assert secret not in rendered
    assert run.output_secrets == {"app_dsn"}


def inputs_by_name(run: StackRun) -> dict[str, Registered]:
    return {r.name: r for r in run.resources.values()}


def changed(before: StackRun, after: StackRun) -> dict[str, set[str]]:
    """Resource name -> top-level input properties that differ between the two runs."""
    old, new = inputs_by_name(before), inputs_by_name(after)
    assert old.keys() == new.keys()
    diff: dict[str, set[str]] = {}
    for name, resource in new.items():
        keys = set(resource.inputs) | set(old[name].inputs)
        props = {k for k in keys if resource.inputs.get(k) != old[name].inputs.get(k)}
        if props:
            diff[name] = props
    return diff


def effective(diff: dict[str, set[str]], run: StackRun) -> dict[str, set[str]]:
    """Drop the properties each resource tells the engine to ignore: those changes do nothing."""
    result: dict[str, set[str]] = {}
    for name, props in diff.items():
        ignored = set(inputs_by_name(run)[name].options["ignore_changes"])
        if props - ignored:
            result[name] = props - ignored
    return result


def test_rotating_an_ai_key_replaces_only_the_app() -> None:
    before = run_program("prod", secrets=PROD_SECRETS)
    after = run_program("prod", secrets={**PROD_SECRETS, "deepseekApiKey": "marker-deepseek-key-ROTATED"})
    assert changed(before, after) == {"app-server": {"uploads"}}


def test_rotating_the_app_password_changes_it_in_place_and_restarts_only_the_app() -> None:
    before = run_program("prod", secrets=PROD_SECRETS)
    after = run_program("prod", {"dbPasswordGeneration": 2}, secrets=PROD_SECRETS)
    assert changed(before, after) == {
        "database-app-password": {"keepers"},
        "database-role-job": {"stdin"},  # an update: the job runs again against the running server
        "app-server": {"uploads"},  # the new DSN file
    }
    job = inputs_by_name(after)["database-role-job"]
    app = inputs_by_name(after)["app-server"]
    assert job.urn in app.options["dependencies"]


def test_rotating_the_superuser_password_never_restarts_the_database() -> None:
    before = run_program("prod", secrets=PROD_SECRETS)
    after = run_program("prod", {"dbSuperuserPasswordGeneration": 2}, secrets=PROD_SECRETS)
    diff = changed(before, after)
    assert diff == {
        "database-superuser-password": {"keepers"},
        "database-role-job": {"stdin"},
        "database-server": {"uploads"},
        "backup-server": {"uploads"},  # the stateless backup container reads the new password file
    }
    assert effective(diff, after) == {
        "database-superuser-password": {"keepers"},
        "database-role-job": {"stdin"},
        "backup-server": {"uploads"},
    }


@pytest.mark.parametrize(
    "overrides",
    [{"appImage": "hrygo/memos:0.50.0"}, {"aiLlmModel": "deepseek-reasoner"}, {"timezone": "UTC"}],
    ids=["app image", "chat model", "time zone"],
)
def test_app_settings_never_touch_the_database_volumes_or_disks(overrides: dict[str, Any]) -> None:
    before = run_program("prod", secrets=PROD_SECRETS)
    after = run_program("prod", overrides, secrets=PROD_SECRETS)
    touched = set(changed(before, after))
    assert touched <= {"app-server", "app-image", "backup-pre-upgrade-dump"}


@pytest.mark.postgres
def test_password_rotation_on_a_real_server_keeps_every_row() -> None:
    def rendered(generation: int) -> tuple[str, str, str]:
        run = run_program("dev", {"dbPasswordGeneration": generation})
        uploads = {u["file"]: u["content"] for u in run.by_name("app-server").inputs["uploads"]}
        superuser = next(
            u["content"] for u in run.by_name("database-server").inputs["uploads"] if u["file"].endswith("password")
        )
        return run.by_name("database-role-job").inputs["stdin"], uploads["/run/memos-secrets/dsn"], superuser

    old_sql, old_dsn, superuser = rendered(1)
    new_sql, new_dsn, _ = rendered(2)
    assert old_dsn != new_dsn

    server = PostgresServer({}, superuser_password=superuser)
    try:
        server.initdb()
        server.start()
        server.setup_database("CREATE EXTENSION vector; CREATE EXTENSION btree_gist;")
        server.psql(stdin=old_sql)

        def local(dsn: str) -> str:
            return dsn.replace("@postgres:5432/", f"@127.0.0.1:{server.port}/")

        with psycopg.connect(local(old_dsn), autocommit=True) as conn:
            conn.execute("CREATE TABLE memo (id serial PRIMARY KEY, content text)")
            conn.execute("INSERT INTO memo (content) SELECT 'note ' || g FROM generate_series(1, 500) g")

        server.psql(stdin=new_sql)  # what `pulumi up` runs after `dbPasswordGeneration` is bumped

        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(local(old_dsn)).close()
        with psycopg.connect(local(new_dsn)) as conn:
            assert conn.execute("SELECT count(*), min(id), max(id) FROM memo").fetchone() == (500, 1, 500)
    finally:
        server.cleanup()
