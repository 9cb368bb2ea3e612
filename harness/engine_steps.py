"""Pulumi's step sequence for one `pulumi up`, from the stack's state and a run of the program.

The mock engine records what the program registers but runs no deployment: it cannot say what an
`up` would create, update, replace or delete, nor in which order, nor where `protect` stops it.
This planner does that part as Pulumi's engine does it (pulumi/pulumi, pkg/resource/deploy):

- **Registrations, in the order the program makes them** (step_generator.go, generateSteps): a URN
  not in the state is a create; an existing one is first given its deployed value for every
  `ignore_changes` property (processIgnoreChanges), then compared with its deployed inputs: no
  difference is a same, a difference in a property that forces a new resource (FORCE_NEW below, and
  the resource's `replace_on_changes`) a replace, any other an update. Replacing a resource that is
  protected in the state and in the program is refused before any step runs ("unable to replace
  resource ... as it is currently marked for protection"); in an `up` the engine bails there, so
  nothing after it happens (the preview shows the rest; this planner plans the `up`).
- **`--target`** (isTargetedForUpdate, and the create branch of generateSteps): an untargeted
  resource keeps its state (a same), an untargeted new one is not created (a skipped create), and a
  targeted create that depends on a skipped one fails the run ("untargeted create").
- **Deletes, after the program has finished** (deployment_executor.go, performPostSteps): every
  resource of the state the run did not register (with `--target`, only targeted ones) is condemned
  (GenerateDeletes). ScheduleDeletes orders them into antichains over the old dependency graph
  (a resource's dependencies and its parent, graph.DependenciesOf): a resource is deleted only after
  everything that depends on it. The antichains run one after the other.
- **`protect` is checked when a delete step runs** (step.go, DeleteStep.Apply: deleteProtectedError),
  not when the deletes are planned: the deletes scheduled before it have already happened. The
  step executor continues past a protect error (step_executor.go, cancelDueToError, so that every
  refused delete is reported) but skips, in later antichains, every resource the refused one
  depends on (performPostSteps: erroredDeps, TransitiveDependenciesOf). The run then fails.
- A delete of a `retain_on_delete` resource removes it from the state only: the cloud keeps it.

What it does not model: the provider's own diff (a difference in inputs is taken for a change, and
which property forces a replacement is read from FORCE_NEW, a table of the providers' schemas for the
types this program uses; any other type's change is an update), delete-before-replace ordering
(a replace is one step where the registration is), refresh, aliases, and provider failures.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from harness.mock_engine import Registered, StackRun

Op = Literal["create", "same", "update", "replace", "delete"]

#: Inputs whose change makes the provider replace the resource (ForceNew in the Terraform schemas the
#: providers bridge). Docker (kreuzwerker/terraform-provider-docker v4.5.0): every argument of a
#: volume and of a network is ForceNew (internal/provider/resource_docker_volume.go, ..._network.go);
#: a container is replaced for anything but CONTAINER_IN_PLACE. random: every argument of a password
#: (its keepers included). command: `triggers`.
FORCE_NEW: Mapping[str, frozenset[str] | Literal["all"]] = {
    "docker:index/volume:Volume": "all",
    "docker:index/network:Network": "all",
    "random:index/randomPassword:RandomPassword": "all",
    "command:local:Command": frozenset({"triggers"}),
    "alicloud:ecs/ecsKeyPair:EcsKeyPair": frozenset({"keyPairName", "publicKey"}),
    "alicloud:oss/bucket:Bucket": frozenset({"bucket"}),
}
CONTAINER = "docker:index/container:Container"
#: What a container updates in place (PLATFORM_FACTS, from resource_docker_container.go), and what the
#: provider's diff shows as an update that does nothing (healthcheck, tmpfs), plus the provider's own
#: behaviour flags, which reach no container.
CONTAINER_IN_PLACE = frozenset({
    "restart", "maxRetryCount", "cpuShares", "memory", "memoryReservation", "memorySwap", "cpuSet", "mustRun",
    "healthcheck", "tmpfs", "wait", "waitTimeout", "destroyGraceSeconds", "start", "attach", "logs", "rm",
})  # fmt: skip


@dataclass(frozen=True)
class Resource:
    """One resource in the stack's state, as the engine keeps it."""

    urn: str
    type: str
    parent: str
    dependencies: frozenset[str]
    protect: bool
    retain_on_delete: bool
    inputs: Mapping[str, Any]

    @property
    def name(self) -> str:
        return self.urn.rsplit("::", 1)[-1]

    @classmethod
    def registered(cls, r: Registered, inputs: Mapping[str, Any] | None = None) -> Resource:
        return cls(
            urn=r.urn, type=r.type, parent=r.parent, dependencies=frozenset(r.options["dependencies"]),
            protect=bool(r.options["protect"]), retain_on_delete=bool(r.options["retain_on_delete"]),
            inputs=dict(r.inputs if inputs is None else inputs),
        )  # fmt: skip


@dataclass(frozen=True)
class Step:
    op: Op
    urn: str
    #: The properties that differ (update, replace).
    changed: tuple[str, ...] = ()
    #: A delete of a retain_on_delete resource: forgotten, not deleted in the cloud.
    retained: bool = False

    @property
    def name(self) -> str:
        return self.urn.rsplit("::", 1)[-1]


@dataclass
class Plan:
    """What one `pulumi up` does: its steps in order, the errors that fail it, and the state it leaves."""

    steps: list[Step] = field(default_factory=lambda: [])
    errors: list[str] = field(default_factory=lambda: [])
    state: dict[str, Resource] = field(default_factory=lambda: {})

    @property
    def ok(self) -> bool:
        return not self.errors

    def names(self, *ops: Op) -> list[str]:
        """Names of the resources with a step of one of `ops`, in step order."""
        return [s.name for s in self.steps if s.op in ops]

    def changes(self) -> list[Step]:
        """Every step that is not a same."""
        return [s for s in self.steps if s.op != "same"]


def state_of(run: StackRun) -> dict[str, Resource]:
    """The state a successful first `up` of `run` leaves: every registration, in order."""
    return plan({}, run).state


def _ignored_kept(new: Registered, old: Resource) -> dict[str, Any]:
    """The new inputs with each ignore_changes property set to its deployed value (processIgnoreChanges)."""
    inputs = dict(new.inputs)
    for path in new.options["ignore_changes"]:
        if path in old.inputs:
            inputs[path] = old.inputs[path]
        else:
            inputs.pop(path, None)
    return inputs


def _replaces(new: Registered, changed: Collection[str]) -> bool:
    if set(changed) & set(new.options["replace_on_changes"]):
        return True
    if new.type == CONTAINER:
        return bool(set(changed) - CONTAINER_IN_PLACE)
    forced = FORCE_NEW.get(new.type, frozenset())
    return bool(changed) and (forced == "all" or bool(set(changed) & forced))


def _dependencies(resource: Resource, among: Mapping[str, Resource]) -> set[str]:
    """What `resource` depends on within `among`: its dependencies and its parent (graph.DependenciesOf)."""
    return {urn for urn in (*resource.dependencies, resource.parent) if urn in among and urn != resource.urn}


def _transitive_dependencies(urn: str, among: Mapping[str, Resource]) -> set[str]:
    found: set[str] = set()
    frontier = [urn]
    while frontier:
        for dependency in _dependencies(among[frontier.pop()], among):
            if dependency not in found:
                found.add(dependency)
                frontier.append(dependency)
    return found


def schedule_deletes(condemned: Collection[str], state: Mapping[str, Resource]) -> list[list[str]]:
    """ScheduleDeletes: antichains of condemned URNs, each to run after the previous one, so that a
    resource is deleted only after everything condemned that depends on it. Within an antichain (the
    engine runs it in parallel) the order is the state's, backwards."""
    left = [urn for urn in state if urn in condemned]
    antichains: list[list[str]] = []
    while left:
        ready = [urn for urn in left if not _dependencies(state[urn], state) & set(left)]
        if not ready:
            raise AssertionError(f"a dependency cycle among {left}")
        antichains.append(ready)
        left = [urn for urn in left if urn not in ready]
    return [list(reversed(chain)) for chain in reversed(antichains)]


def plan(previous: Mapping[str, Resource], run: StackRun, *, targets: Collection[str] | None = None) -> Plan:
    """The steps of `pulumi up` (with `--target` for each of `targets`) from state `previous`."""
    result = Plan()
    targeted = (lambda urn: True) if targets is None else (lambda urn: urn in targets)
    skipped: set[str] = set()
    for new in run.resources.values():
        old = previous.get(new.urn)
        if not targeted(new.urn):
            if old is None:
                skipped.add(new.urn)
            else:
                result.steps.append(Step("same", new.urn))
                result.state[new.urn] = old
            continue
        if old is None:
            missing = sorted(set(new.options["dependencies"]) & skipped)
            if missing:
                result.errors.append(
                    f"untargeted create: {new.urn} depends on {', '.join(missing)}, which is not created"
                )
                return result
            result.steps.append(Step("create", new.urn))
            result.state[new.urn] = Resource.registered(new)
            continue
        inputs = _ignored_kept(new, old)
        changed = tuple(sorted(k for k in inputs.keys() | old.inputs.keys() if inputs.get(k) != old.inputs.get(k)))
        resource = Resource.registered(new, inputs)
        if not changed:
            result.steps.append(Step("same", new.urn))
        elif _replaces(new, changed):
            if resource.protect and old.protect:
                result.errors.append(f"unable to replace resource {new.urn!r} as it is currently marked for protection")
                return result
            result.steps.append(Step("replace", new.urn, changed))
        else:
            result.steps.append(Step("update", new.urn, changed))
        result.state[new.urn] = resource

    condemned = [urn for urn in previous if urn not in run.resources and targeted(urn)]
    for urn in previous:
        if urn not in run.resources and not targeted(urn):
            result.state[urn] = previous[urn]
    refused: set[str] = set()
    for antichain in schedule_deletes(condemned, previous):
        for urn in antichain:
            old = previous[urn]
            if urn in refused:
                result.state[urn] = old
            elif old.protect:
                result.errors.append(f"resource {urn!r} cannot be deleted because it is protected")
                result.state[urn] = old
                refused |= _transitive_dependencies(urn, previous)
            else:
                result.steps.append(Step("delete", urn, retained=old.retain_on_delete))
    # The state: the run's resources in registration order, then what it kept from before.
    kept = [urn for urn in previous if urn in result.state and urn not in run.resources]
    result.state = {urn: result.state[urn] for urn in [*run.resources, *kept] if urn in result.state}
    return result
