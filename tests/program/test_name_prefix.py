"""memos:namePrefix changed on a deployed stack: the data volumes keep their names, and every container
mounts a volume that exists.

Each volume's physical name carries the prefix and is ForceNew in the docker provider, so a new prefix
would replace the volumes (a new, empty one under the new name, the old one deleted, or refused by
`protect` only as that step runs). The mock engine answers the second run against the first
(ignored properties keep their deployed values, as the engine does), and harness/engine_steps.py
plans the `up`.
"""

from __future__ import annotations

from harness.engine_steps import Plan, plan, state_of
from harness.mock_engine import StackRun, run_program
from tests.conftest import PROD_SECRETS

VOLUME = "docker:index/volume:Volume"
CONTAINER = "docker:index/container:Container"


def mounted(run: StackRun) -> dict[str, set[str]]:
    """Volume names each container mounts."""
    return {
        c.name: {v["volumeName"] for v in c.inputs.get("volumes", []) if "volumeName" in v}
        for c in run.of_type(CONTAINER)
    }


def volumes_after(result: Plan) -> set[str]:
    """The physical names of the volumes the state holds after the `up`."""
    return {r.inputs["name"] for r in result.state.values() if r.type == VOLUME}


def test_renaming_a_prod_stack_keeps_its_protected_volumes_and_their_names() -> None:
    deployed = run_program("prod", secrets=PROD_SECRETS)
    renamed = run_program("prod", {"namePrefix": "notes"}, secrets=PROD_SECRETS, deployed=deployed)
    result = plan(state_of(deployed), renamed)
    assert result.ok, result.errors
    volume_steps = {s.name: s.op for s in result.steps if s.urn in {v.urn for v in renamed.of_type(VOLUME)}}
    assert volume_steps == {"volumes-app": "same", "volumes-backups": "same", "volumes-database": "same"}
    assert not [n for n in result.names("delete", "replace") if n.startswith("volumes-")]
    # Every container mounts the kept volumes, by the names they have.
    assert mounted(renamed)["database-server"] == {"memos-pgdata"}
    assert mounted(renamed)["app-server"] == {"memos-appdata"}
    assert set().union(*mounted(renamed).values()) <= volumes_after(result)
    # The rest takes the new prefix, and the preview says what did not.
    assert renamed.by_name("database-server").inputs["name"] == "notes-postgres"
    assert [w for w in renamed.warnings if w.startswith("memos:namePrefix")] == [
        "memos:namePrefix: the data volumes keep their names: memos-appdata (not notes-appdata), memos-backups "
        "(not notes-backups), memos-pgdata (not notes-pgdata); they are protected and a new name would replace them "
        'with empty ones, while everything else takes the new prefix (docs/operations.md, "Changing '
        'memos:namePrefix")'
    ]
    # And the next up has nothing left to do.
    again = run_program("prod", {"namePrefix": "notes"}, secrets=PROD_SECRETS, deployed=deployed)
    assert plan(result.state, again).changes() == []


def test_a_new_stack_gets_its_volumes_under_its_own_prefix_without_a_warning() -> None:
    run = run_program("prod", {"namePrefix": "notes"}, secrets=PROD_SECRETS)
    assert {v.inputs["name"] for v in run.of_type(VOLUME)} == {"notes-appdata", "notes-backups", "notes-pgdata"}
    assert mounted(run)["database-server"] == {"notes-pgdata"}
    assert not [w for w in run.warnings if w.startswith("memos:namePrefix")]


def test_renaming_the_unprotected_dev_stack_replaces_its_volumes_and_mounts_the_new_ones() -> None:
    deployed = run_program("dev")
    renamed = run_program("dev", {"namePrefix": "notes"}, deployed=deployed)
    result = plan(state_of(deployed), renamed)
    assert result.ok, result.errors
    assert sorted(n for n in result.names("replace") if n.startswith("volumes-")) == [
        "volumes-app", "volumes-backups", "volumes-database",
    ]  # fmt: skip
    assert set().union(*mounted(renamed).values()) <= volumes_after(result)
    assert mounted(renamed)["database-server"] == {"notes-pgdata"}
