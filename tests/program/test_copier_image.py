"""The OSS copier's image: built on the Docker host from a pinned, hash-locked recipe, never at start.

What is checked here: the recipe's files (every requirement pinned to the version the test suite runs
and carrying hashes; the install refuses anything unhashed and builds the one source-only package
with a hash-locked backend), the image resource the program registers (content-addressed tag,
configurable package index), its build context (only the files the tag hashes, so nothing else in
ops/ builds it again), and the clean-up of earlier copier images. The build itself, and the image it
makes, are shown in the Docker tier (tests/deploy/test_on_docker.py), on a stand-in of the base image.
"""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path

import pytest

from components import backup
from components.backup import copier_tag
from harness.mock_engine import ROOT, run_program
from harness.realizer import context_digest, context_files
from tests.conftest import PROD_SECRETS
from tests.support import pins

COPIER = ROOT / "ops" / "copier"
OSS = {"backupToOss": True}


def test_the_image_installs_exactly_the_versions_the_tests_run() -> None:
    locked = {p["name"]: p["version"] for p in tomllib.loads((ROOT / "uv.lock").read_text())["package"]}
    required = pins(COPIER / "requirements.txt")
    assert {"alibabacloud-oss-v2", "alibabacloud-credentials", "alibabacloud-cms20190101"} <= set(required)
    assert {name: locked.get(name) for name in required} == required
    assert pins(COPIER / "build-requirements.txt") == {"setuptools": "84.2.1"}


def test_the_recipe_refuses_unhashed_packages_and_installs_nothing_at_start() -> None:
    dockerfile = (COPIER / "Dockerfile").read_text()
    installs = [line for line in dockerfile.replace("\\\n", " ").splitlines() if "pip install" in line]
    assert len(installs) == 1
    steps = installs[0].split("&&")
    assert [s.split()[-1] for s in steps if "pip install" in s] == [
        "/tmp/copier/build-requirements.txt",
        "/tmp/copier/requirements.txt",
    ]
    for step in (s for s in steps if "pip install" in s):
        assert '--index-url "$PIP_INDEX_URL"' in step
        assert "--require-hashes" in step
    assert "--only-binary=:all:" in steps[0]
    assert "--no-build-isolation" in steps[1]
    assert 'ENTRYPOINT ["python", "/usr/local/bin/memos-oss-upload"]' in dockerfile
    assert "USER 65534:65534" in dockerfile


def test_the_program_builds_the_copier_on_the_host_with_the_configured_index() -> None:
    run = run_program("prod", {**OSS, "pipIndexUrl": "https://pypi.tuna.tsinghua.edu.cn/simple"}, secrets=PROD_SECRETS)
    image = run.by_name("backup-offsite-image")
    assert image.inputs == {
        "imageName": copier_tag("python:3.13-slim-bookworm"),
        "build": {
            "context": "ops",
            "dockerfile": "ops/copier/Dockerfile",
            "args": {
                "BASE_IMAGE": "python:3.13-slim-bookworm",
                "PIP_INDEX_URL": "https://pypi.tuna.tsinghua.edu.cn/simple",
            },
            "platform": "linux/amd64",
        },
        "skipPush": True,
        "buildOnPreview": False,
    }
    assert image.options["provider"] == run.by_name("backup-offsite").options["provider"]
    assert run.by_name("backup-offsite").inputs["image"] == image.inputs["imageName"]


def test_the_default_index_is_alibabas_mirror() -> None:
    run = run_program("prod", OSS, secrets=PROD_SECRETS)
    args = run.by_name("backup-offsite-image").inputs["build"]["args"]
    assert args["PIP_INDEX_URL"] == "https://mirrors.aliyun.com/pypi/simple"


def test_an_index_over_plain_http_is_trusted_by_name_and_one_over_https_is_not() -> None:
    # pip ignores a plain-HTTP index unless its host is trusted (seen on the rehearsal host's build);
    # the hash-locked requirements keep such an index from changing what is installed.
    internal = run_program(
        "prod", {**OSS, "pipIndexUrl": "http://mirrors.cloud.aliyuncs.com/pypi/simple/"}, secrets=PROD_SECRETS
    )
    args = internal.by_name("backup-offsite-image").inputs["build"]["args"]
    assert args["PIP_TRUSTED_HOST"] == "mirrors.cloud.aliyuncs.com"
    public = run_program("prod", OSS, secrets=PROD_SECRETS).by_name("backup-offsite-image").inputs["build"]["args"]
    assert "PIP_TRUSTED_HOST" not in public


def test_a_change_to_the_recipe_or_the_base_builds_a_new_tag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = copier_tag("python:3.13-slim-bookworm")
    assert re.fullmatch(r"memos-oss-copier:[0-9a-f]{16}", before)
    assert copier_tag("python:3.13-slim-bookworm") == before
    assert copier_tag("python:3.13.9-slim-bookworm") != before
    copy = tmp_path / "ops"
    shutil.copytree(ROOT / "ops", copy)
    (copy / "oss_upload.py").write_text((copy / "oss_upload.py").read_text() + "\n# changed\n")
    monkeypatch.setattr(backup, "COPIER_CONTEXT", copy)
    assert copier_tag("python:3.13-slim-bookworm") != before


def test_the_build_context_is_exactly_what_the_tag_hashes_and_nothing_else_in_ops() -> None:
    dockerfile = COPIER / "Dockerfile"
    assert {*context_files(ROOT / "ops", dockerfile), "copier/Dockerfile"} == set(backup.COPIER_FILES)


def test_without_the_ignore_file_a_test_runs_pycache_would_rebuild_the_image_on_the_next_up(tmp_path: Path) -> None:
    """The provider's Check hashes every context file into `contextDigest`, and any change is an Update
    that builds again. `ops/` is also a Python package the tests import, so its __pycache__ comes and goes."""
    ops = tmp_path / "ops"
    shutil.copytree(ROOT / "ops", ops, ignore=shutil.ignore_patterns("__pycache__"))
    dockerfile = ops / "copier/Dockerfile"
    before = context_digest(ops, dockerfile)
    (ops / "__pycache__").mkdir()
    (ops / "__pycache__/verify.cpython-313.pyc").write_bytes(b"\0")
    (ops / "container/memos-restore").write_text(
        (ops / "container/memos-restore").read_text() + "\n# another script changes\n"
    )
    assert context_digest(ops, dockerfile) == before
    (ops / "oss_upload.py").write_text((ops / "oss_upload.py").read_text() + "\n# the copier changes\n")
    changed = context_digest(ops, dockerfile)
    assert changed != before

    (ops / "copier/Dockerfile.dockerignore").unlink()
    unfiltered = context_digest(ops, dockerfile)
    (ops / "__pycache__/verify.cpython-313.pyc").write_bytes(b"\1")
    assert context_digest(ops, dockerfile) != unfiltered


def test_old_copier_images_are_removed_on_the_host_after_the_copier_moves_to_a_new_one() -> None:
    run = run_program("prod", OSS, secrets=PROD_SECRETS)
    prune = run.by_name("backup-offsite-image-prune")
    tag = copier_tag("python:3.13-slim-bookworm")
    prefix = run.by_name("backup-pre-upgrade-dump").inputs["create"].split(" docker exec ")[0]
    assert prefix.startswith("ssh ")
    assert prune.inputs == {
        "create": f"{prefix} sh -s",
        "stdin": backup.prune_copier_images_script(tag),
        "triggers": [tag],
    }
    assert run.by_name("backup-offsite").urn in prune.options["dependencies"]
    assert f"keep={tag}\n" in prune.inputs["stdin"]
