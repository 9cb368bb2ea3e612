"""The mock engine against a deployed run: what the engine does with `ignore_changes`.

processIgnoreChanges (pulumi/pulumi pkg/resource/deploy/step_generator.go) gives each ignored
property of an existing resource its deployed input value before the provider sees it, so the
resource's outputs, which the program reads, keep the deployed value.
"""

from __future__ import annotations

from harness.mock_engine import SECRET_SIG, run_program
from tests.conftest import PROD_SECRETS

#: The key of a secret's signature on the wire (pulumi.runtime.rpc._special_sig_key).
SECRET_KEY = "4dabf18193072939515e22adb298388d"


def plain(value: object) -> object:
    """A wire value without its secret wrapper (the user data is secret: it carries the host key)."""
    if isinstance(value, dict) and value.get(SECRET_KEY) == SECRET_SIG:  # pyright: ignore[reportUnknownMemberType]
        return value["value"]  # pyright: ignore[reportUnknownVariableType]
    return value


def test_an_ignored_property_of_a_deployed_resource_keeps_its_deployed_value() -> None:
    deployed = run_program("prod", secrets=PROD_SECRETS)
    changed = run_program("prod", {"swapMb": 2048}, secrets=PROD_SECRETS, deployed=deployed)
    before, after = deployed.by_name("host-instance"), changed.by_name("host-instance")
    assert after.options["ignore_changes"] == ["userData"]
    assert after.inputs["userData"] != before.inputs["userData"]  # what the program sent
    assert plain(after.mock_outputs["userData"]) == before.inputs["userData"]  # what the engine kept
    # The program reads the deployed value back, and says the new cloud-init is not applied.
    assert [w for w in changed.warnings if w.startswith("the host's cloud-init has changed")] == [
        "the host's cloud-init has changed but is not applied (it would reboot the instance); roll it out as "
        'docs/operations.md describes under "Changing the host\'s cloud-init"'
    ]


def test_without_a_deployed_run_every_resource_is_new_and_nothing_is_kept() -> None:
    run = run_program("prod", {"swapMb": 2048}, secrets=PROD_SECRETS)
    instance = run.by_name("host-instance")
    assert plain(instance.mock_outputs["userData"]) == instance.inputs["userData"]
    assert not [w for w in run.warnings if w.startswith("the host's cloud-init has changed")]


def test_a_secret_ignored_property_stays_secret_on_the_wire() -> None:
    # The database server ignores its uploads (the superuser password among them) once it exists.
    deployed = run_program("prod", secrets=PROD_SECRETS)
    again = run_program("prod", {"dbSuperuserPasswordGeneration": 2}, secrets=PROD_SECRETS, deployed=deployed)
    server, before = again.by_name("database-server"), deployed.by_name("database-server")
    assert server.options["ignore_changes"] == ["uploads"]
    assert server.inputs["uploads"] != before.inputs["uploads"]  # a new superuser password was sent
    assert server.mock_outputs["uploads"] == before.mock_outputs["uploads"]
    assert server.mock_outputs["uploads"][SECRET_KEY] == SECRET_SIG  # and the kept one is still a secret
