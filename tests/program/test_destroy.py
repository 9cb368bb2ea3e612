"""`pulumi destroy` on prod stops before it deletes anything; on dev it tears everything down.

The engine deletes a resource only after every resource that depends on it (explicitly, through an
input, as its child, or through its provider) is gone, and refuses a protected resource when its turn
comes (pulumi/pulumi pkg/resource/deploy: the delete step returns "cannot be deleted because it is
protected"). `destroy_order` replays that order over what the program registered, stopping at the
first wave that holds a protected resource. It cannot show the engine's parallelism within a wave
(the engine would still delete that wave's unprotected resources), which does not matter for prod:
its first wave is the guard alone.
"""

from __future__ import annotations

from harness.mock_engine import Registered, StackRun


def dependencies(resource: Registered) -> set[str]:
    found = set(resource.options["dependencies"])
    if resource.parent:
        found.add(resource.parent)
    provider = resource.options["provider"]
    if provider:
        found.add(provider.rsplit("::", 1)[0])
    return found


def destroy_order(run: StackRun) -> tuple[list[set[str]], str | None]:
    """Waves of deletes until the first protected resource: (names deleted per wave, the one refused)."""
    remaining = {r.urn: r for r in run.resources.values()}
    waves: list[set[str]] = []
    while remaining:
        depended_on = {dep for r in remaining.values() for dep in dependencies(r)}
        wave = [r for urn, r in remaining.items() if urn not in depended_on]
        assert wave, "the dependency graph has a cycle"
        refused = sorted(r.name for r in wave if r.options["protect"])
        if refused:
            return waves, refused[0]
        waves.append({r.name for r in wave})
        for r in wave:
            del remaining[r.urn]
    return waves, None


def test_destroying_prod_is_refused_before_anything_is_deleted(prod_run: StackRun) -> None:
    waves, refused = destroy_order(prod_run)
    assert (waves, refused) == ([], "destroy-guard")


def test_the_guard_depends_on_every_resource_of_the_stack(prod_run: StackRun) -> None:
    guard = prod_run.by_name("destroy-guard")
    custom = {r.urn for r in prod_run.resources.values() if r.options["custom"]}
    assert custom <= set(guard.options["dependencies"])
    assert guard.options["protect"] is True


def test_without_the_guard_prod_would_lose_its_containers_and_firewall_first(prod_run: StackRun) -> None:
    # The behaviour the guard prevents, shown on the same graph with the guard left out.
    without = StackRun(**{**vars(prod_run), "resources": {
        urn: r for urn, r in prod_run.resources.items() if r.name != "destroy-guard"
    }})  # fmt: skip
    waves, refused = destroy_order(without)
    deleted = set().union(*waves)
    assert {"app-server", "host-rule-ssh-203-0-113-10-32", "host-rule-https"} <= deleted
    assert refused is not None


def test_a_dev_stack_is_destroyed_completely(dev_run: StackRun) -> None:
    waves, refused = destroy_order(dev_run)
    assert refused is None
    assert waves[0] == {"destroy-guard"}
    assert set().union(*waves) == dev_run.names()
