"""The stand-in images' recipes and their cache of root filesystems, without building anything.

The images themselves are built and used by the Docker tier (tests/deploy/test_on_docker.py).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from harness import standin_images
from harness.standin_images import BOOKWORM, TRIXIE_PYTHON, Rootfs, StandIn, apt_mirror, image_recipe, rootfs_of


def test_the_copiers_base_is_trixies_python_and_everything_else_bookworm() -> None:
    assert rootfs_of(StandIn("python", "python:3.13-slim-bookworm")) == TRIXIE_PYTHON
    assert {rootfs_of(StandIn(kind, "x:1")) for kind in ("postgres", "memos", "caddy")} == {BOOKWORM}


def test_a_changed_host_ca_bundle_rebuilds_the_python_stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = tmp_path / "ca-certificates.crt"
    bundle.write_text("one\n")
    monkeypatch.setattr(standin_images, "HOST_CA_BUNDLE", bundle)
    python = StandIn("python", "python:3.13-slim-bookworm")
    before = image_recipe(python)
    memos = image_recipe(StandIn("memos", "hrygo/memos:0.51.0"))
    bundle.write_text("two\n")
    assert image_recipe(python) != before
    assert image_recipe(StandIn("memos", "hrygo/memos:0.51.0")) == memos


def test_the_mirror_is_read_from_aptss_sources(tmp_path: Path) -> None:
    sources = tmp_path / "sources.list.d"
    sources.mkdir()
    (sources / "debian.sources").write_text("Types: deb\nURIs: http://mirror.example.test/debian\nSuites: bookworm\n")
    assert apt_mirror((sources,)) == "http://mirror.example.test/debian"
    (tmp_path / "sources.list").write_text("deb [arch=amd64] http://other.example.test/debian bookworm main\n")
    assert apt_mirror((tmp_path / "sources.list",)) == "http://other.example.test/debian"
    with pytest.raises(RuntimeError, match="no Debian archive"):
        apt_mirror((tmp_path / "missing",))


def test_two_callers_wait_for_one_debootstrap_instead_of_making_it_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`./scripts/test` makes the root filesystems in the background while the Docker tier may already
    ask for them: the second caller must wait on the lock and reuse the result."""
    monkeypatch.setattr(standin_images, "CACHE_ROOT", tmp_path)
    made: list[str] = []

    def slow_debootstrap(rootfs: Rootfs, target: Path) -> Path:
        made.append(rootfs.suite)
        time.sleep(0.3)
        (target / "usr/bin").mkdir(parents=True)
        (target / rootfs.marker).write_text("")
        return target

    monkeypatch.setattr(standin_images, "_debootstrap", slow_debootstrap)
    results: list[Path] = []
    callers = [threading.Thread(target=lambda: results.append(standin_images.base_rootfs(BOOKWORM))) for _ in range(2)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert made == ["bookworm"]
    assert results[0] == results[1] == tmp_path / f"rootfs-{BOOKWORM.recipe}"


def test_the_root_filesystems_are_made_side_by_side(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(standin_images, "CACHE_ROOT", tmp_path)
    running: list[int] = [0, 0]  # now, most at once
    guard = threading.Lock()

    def debootstrap(rootfs: Rootfs, target: Path) -> Path:
        with guard:
            running[0] += 1
            running[1] = max(running[1], running[0])
        time.sleep(0.3)
        (target / rootfs.marker).parent.mkdir(parents=True)
        (target / rootfs.marker).write_text("")
        with guard:
            running[0] -= 1
        return target

    monkeypatch.setattr(standin_images, "_debootstrap", debootstrap)
    paths = standin_images.prepare_rootfs([BOOKWORM, TRIXIE_PYTHON, BOOKWORM])
    assert running[1] == 2
    assert paths == [tmp_path / f"rootfs-{BOOKWORM.recipe}", tmp_path / f"rootfs-{TRIXIE_PYTHON.recipe}"]
