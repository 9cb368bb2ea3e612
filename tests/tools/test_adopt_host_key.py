"""tools.adopt_host_key without a host: what it reads from a stack export. Its run against a real host
(the login with the old trust, the install, sshd's restart, the pinned login after) is a scenario of
the rehearsal (tests/deploy/test_rehearsal.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from harness.mock_engine import run_program
from tests.conftest import PROD_SECRETS
from tests.support import stack_export
from tools.adopt_host_key import SECRET_SIG, AdoptError, key_urn, login, stack_key, trusted_today


@pytest.fixture(scope="module")
def exported() -> tuple[list[dict[str, object]], dict[str, object]]:
    run = run_program("prod", secrets=PROD_SECRETS)
    key = run.by_name("host-ssh-host-key")
    return stack_export(run)["deployment"]["resources"], {"urn": key.urn, **key.mock_outputs}


def test_the_key_is_found_where_the_program_registers_it_and_its_secret_is_decoded(
    exported: tuple[list[dict[str, object]], dict[str, object]], tmp_path: Path
) -> None:
    resources, key = exported
    assert key_urn(resources, "prod") == key["urn"]
    found = stack_key(resources, str(key["urn"]))
    assert found is not None
    assert found.private == key["privateKeyOpenssh"]
    assert found.public == " ".join(str(key["publicKeyOpenssh"]).split()[:2])
    # The export wrote the private key as a secret, and it is a real key whose public half is the pin.
    [record] = [r for r in resources if r["urn"] == key["urn"]]
    assert SECRET_SIG in json.dumps(record["outputs"]["privateKeyOpenssh"])  # pyright: ignore[reportIndexIssue]
    (tmp_path / "key").write_text(found.private)
    (tmp_path / "key").chmod(0o600)
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(tmp_path / "key")], capture_output=True, text=True,
                             check=True)  # fmt: skip
    assert " ".join(derived.stdout.split()[:2]) == found.public


def test_a_state_from_before_the_key_has_no_key_and_the_host_is_still_found() -> None:
    run = run_program("prod", secrets=PROD_SECRETS)
    resources = stack_export(run, without=["host-ssh-host-key"])["deployment"]["resources"]
    assert stack_key(resources, key_urn(resources, "prod")) is None
    assert login(resources, "prod") == ("root", "198.51.100.20")


def test_an_export_without_the_passphrase_or_without_a_host_is_one_line_naming_the_fix(
    exported: tuple[list[dict[str, object]], dict[str, object]],
) -> None:
    resources, key = exported
    encrypted = [
        {**r, "outputs": {"privateKeyOpenssh": {SECRET_SIG: "1b47061264138c4ac30d75fd1eb44270", "ciphertext": "x"},
                          "publicKeyOpenssh": "ssh-ed25519 AAAA"}}
        if r["urn"] == key["urn"] else r
        for r in resources
    ]  # fmt: skip
    with pytest.raises(AdoptError, match="passphrase"):
        stack_key(encrypted, str(key["urn"]))
    dev = stack_export(run_program("dev"))["deployment"]["resources"]
    with pytest.raises(AdoptError, match=r"stack dev has no host \(memos:index:EcsHost\): nothing to adopt"):
        key_urn(dev, "dev")
    no_output = [r for r in resources if r["type"] != "pulumi:pulumi:Stack"]
    with pytest.raises(AdoptError, match=r"no docker_host output: deploy it once \(`pulumi up --stack prod`\)"):
        login(no_output, "prod")


def test_without_the_old_known_hosts_file_it_asks_for_the_fingerprint_from_the_console(tmp_path: Path) -> None:
    missing = tmp_path / "memos-prod.known_hosts"
    with pytest.raises(AdoptError, match=r"does not exist: read the host's key fingerprint on its console"):
        trusted_today("198.51.100.20", missing, None, tmp_path)
    assert not missing.exists()
