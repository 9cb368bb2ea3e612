"""The step planner on small hand-made stacks, against what Pulumi's engine does (harness/engine_steps.py
cites the engine's source for each rule)."""

from __future__ import annotations

from typing import Any

from harness.engine_steps import Resource, plan, schedule_deletes, state_of
from harness.mock_engine import Registered, StackRun

STACK = "urn:pulumi:test::memos::pulumi:pulumi:Stack::memos-test"
TYPE = "test:index:Thing"


def urn(name: str) -> str:
    return f"urn:pulumi:test::memos::{TYPE}::{name}"


def thing(
    name: str, /, *, deps: tuple[str, ...] = (), protect: bool = False, retain: bool = False,
    ignore: tuple[str, ...] = (), typ: str = TYPE, **inputs: Any,
) -> Registered:  # fmt: skip
    return Registered(
        type=typ, name=name, urn=urn(name), parent=STACK, inputs=dict(inputs), secret_paths=frozenset(),
        options={
            "protect": protect, "retain_on_delete": retain, "dependencies": sorted(urn(d) for d in deps),
            "ignore_changes": sorted(ignore), "replace_on_changes": [],
        },
    )  # fmt: skip


def run_of(*things: Registered) -> StackRun:
    return StackRun(
        stack="test", config={}, resources={t.urn: t for t in things}, outputs={}, output_secrets=set(), calls=[],
        warnings=[],
    )  # fmt: skip


def test_a_first_up_creates_everything_in_registration_order() -> None:
    result = plan({}, run_of(thing("net"), thing("db", deps=("net",)), thing("app", deps=("db",))))
    assert [(s.op, s.name) for s in result.steps] == [("create", "net"), ("create", "db"), ("create", "app")]
    assert result.ok
    assert list(result.state) == [urn("net"), urn("db"), urn("app")]


def test_removed_resources_are_deleted_after_the_program_ran_dependents_first() -> None:
    state = state_of(run_of(thing("net"), thing("db", deps=("net",)), thing("app", deps=("db",)), thing("x")))
    result = plan(state, run_of(thing("x", size=2)))
    assert [(s.op, s.name) for s in result.steps] == [
        ("update", "x"), ("delete", "app"), ("delete", "db"), ("delete", "net"),
    ]  # fmt: skip
    assert list(result.state) == [urn("x")]


def test_protect_is_checked_when_the_delete_step_runs_so_the_deletes_before_it_happen() -> None:
    # The protected instance is scheduled after its dependents: they are gone when it refuses.
    state = state_of(run_of(
        thing("instance", protect=True), thing("database", deps=("instance",)), thing("account", deps=("instance",)),
    ))  # fmt: skip
    result = plan(state, run_of())
    assert result.names("delete") == ["account", "database"]
    assert result.errors == [f"resource {urn('instance')!r} cannot be deleted because it is protected"]
    assert list(result.state) == [urn("instance")]
    # and every later up fails the same way
    again = plan(result.state, run_of())
    assert (again.names("delete"), again.errors) == ([], result.errors)


def test_what_a_refused_resource_depends_on_is_skipped_but_other_deletes_go_on() -> None:
    state = state_of(run_of(
        thing("password"), thing("account", deps=("password",), protect=True), thing("image"), thing("job",
        deps=("account", "image")),
    ))  # fmt: skip
    result = plan(state, run_of())
    assert result.names("delete") == ["job", "image"]
    assert not result.ok
    assert list(result.state) == [urn("password"), urn("account")]


def test_a_delete_of_a_retained_resource_only_forgets_it() -> None:
    state = state_of(run_of(thing("volume", retain=True)))
    result = plan(state, run_of())
    assert [(s.op, s.name, s.retained) for s in result.steps] == [("delete", "volume", True)]
    assert result.ok


def test_an_ignored_property_keeps_its_deployed_value_so_its_change_is_a_same() -> None:
    state = state_of(run_of(thing("host", userData="v1", ignore=("userData",))))
    assert plan(state, run_of(thing("host", userData="v2", ignore=("userData",)))).changes() == []
    assert plan(state, run_of(thing("host", userData="v2"))).names("update") == ["host"]


def test_a_protected_resource_that_would_be_replaced_stops_the_up_before_anything_else() -> None:
    volume = "docker:index/volume:Volume"
    state = state_of(run_of(thing("volume", typ=volume, protect=True, name="memos-pgdata"), thing("gone")))
    result = plan(state, run_of(thing("volume", typ=volume, protect=True, name="notes-pgdata"), thing("app")))
    assert result.steps == []
    assert result.errors == [f"unable to replace resource {urn('volume')!r} as it is currently marked for protection"]
    unprotected = plan(state_of(run_of(thing("volume", typ=volume, name="a"))), run_of(thing("volume", typ=volume,
                       name="b")))  # fmt: skip
    assert [(s.op, s.changed) for s in unprotected.steps] == [("replace", ("name",))]


def test_a_targeted_up_touches_only_its_targets() -> None:
    state = state_of(run_of(thing("net"), thing("old"), thing("other", size=1)))
    new = run_of(thing("net"), thing("db", deps=("net",)), thing("other", size=2), thing("app", deps=("db",)))
    result = plan(state, new, targets={urn("db")})
    assert [(s.op, s.name) for s in result.steps] == [("same", "net"), ("create", "db"), ("same", "other")]
    assert result.ok
    # untargeted: the update of `other` waits, `app` is not created, `old` is not deleted
    assert result.state[urn("other")].inputs == {"size": 1}
    assert set(result.state) == {urn("net"), urn("db"), urn("other"), urn("old")}


def test_a_targeted_create_that_needs_an_untargeted_new_resource_fails() -> None:
    new = run_of(thing("volume"), thing("db", deps=("volume",)))
    result = plan({}, new, targets={urn("db")})
    assert result.errors == [f"untargeted create: {urn('db')} depends on {urn('volume')}, which is not created"]


def test_deletes_are_scheduled_in_antichains_from_the_old_dependency_graph() -> None:
    state = {
        urn(n): Resource(urn(n), TYPE, STACK, frozenset(urn(d) for d in deps), False, False, {})
        for n, deps in [("a", ()), ("b", ("a",)), ("c", ("a",)), ("d", ("b", "c")), ("e", ())]
    }
    assert schedule_deletes(set(state), state) == [[urn("d")], [urn("c"), urn("b")], [urn("e"), urn("a")]]


def test_a_child_is_deleted_before_its_parent() -> None:
    component = Registered(
        type="test:index:Component", name="comp", urn=urn("comp"), parent=STACK, inputs={}, secret_paths=frozenset(),
        options={"protect": False, "retain_on_delete": False, "dependencies": [], "ignore_changes": [],
                 "replace_on_changes": []},
    )  # fmt: skip
    child = thing("child")
    child.parent = component.urn
    result = plan(state_of(run_of(component, child)), run_of())
    assert result.names("delete") == ["child", "comp"]
