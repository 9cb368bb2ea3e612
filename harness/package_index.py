"""A package index the rehearsal host reaches, standing in for Alibaba Cloud's PyPI mirror.

prod's copier build installs its hash-locked requirements from memos:pipIndexUrl (by default
https://mirrors.aliyun.com/pypi/simple/, which ECS reaches and this machine does not). This serves the
same files under the same protocol: the Simple Repository API (PEP 503: one page per normalised project
name, each link a file with its `#sha256=` fragment), on the rehearsal network's gateway address only,
so the host's build reaches it and nothing outside this machine can.

Which files: for every pinned `name==version` of the copier's requirement files, the files PyPI itself
publishes (its Simple API, PEP 691) whose SHA-256 is one of the pins and that pip on CPython 3.13,
manylinux x86_64 (the copier's base) could install; an sdist only where the release has no such wheel.
They are downloaded once into the test cache and checked against their pinned hashes.

What it cannot show: the mirror's own availability, speed and TLS certificate (this is plain HTTP on a
private address); pip's choice among files the mirror has and this index leaves out.
"""

from __future__ import annotations

import hashlib
import html
import http.server
import json
import re
import threading
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

#: What the copier's base image installs for: CPython 3.13 on manylinux x86_64.
TARGET_TAGS: frozenset[Tag] = frozenset(
    [
        *cpython_tags((3, 13), platforms=[f"manylinux_2_{n}_x86_64" for n in range(36, 4, -1)] + ["linux_x86_64"]),
        *compatible_tags((3, 13), "cp313", platforms=[f"manylinux_2_{n}_x86_64" for n in range(36, 4, -1)]),
        *(Tag(f"cp3{minor}", "abi3", f"manylinux{m}_x86_64") for minor in range(2, 14) for m in ("1", "2010", "2014")),
    ]
)
SIMPLE = "https://pypi.org/simple/{name}/"
SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    hashes: frozenset[str]


def read_pins(path: Path) -> list[Pin]:
    """The `name==version --hash=sha256:...` entries of a `uv pip compile --generate-hashes` file."""
    text = re.sub(r"^#.*\n", "", path.read_text(), flags=re.MULTILINE)
    pins: list[Pin] = []
    for entry in filter(None, (e.strip() for e in re.split(r"\n(?=[a-zA-Z0-9])", text))):
        name, _, version = entry.split()[0].partition("==")
        pins.append(Pin(name, version, frozenset(re.findall(r"--hash=sha256:([0-9a-f]{64})", entry))))
    return pins


def _installable(filename: str) -> bool:
    return filename.endswith(".whl") and bool(set(parse_wheel_filename(filename)[3]) & TARGET_TAGS)


def download(pins: Iterable[Pin], directory: Path) -> list[Path]:
    """The pinned releases' files pip could install on the target, in `directory` (reused if there).

    The files are listed by PyPI's Simple API in its JSON form (PEP 691), the way pip finds them."""
    directory.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    for pin in pins:
        url = SIMPLE.format(name=canonicalize_name(pin.name))
        request = urllib.request.Request(url, headers={"Accept": SIMPLE_JSON})  # noqa: S310 (a fixed https URL)
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 (a fixed https URL)
            listing = json.load(response)
        pinned = [f for f in listing["files"] if f["hashes"].get("sha256") in pin.hashes]
        chosen = [f for f in pinned if _installable(f["filename"])] or [
            f for f in pinned if f["filename"].endswith((".tar.gz", ".zip"))
        ]
        if not chosen:
            raise RuntimeError(f"{pin.name}=={pin.version}: no pinned file installs on CPython 3.13 manylinux x86_64")
        for file in chosen:
            target, digest = directory / file["filename"], file["hashes"]["sha256"]
            if not target.exists() or hashlib.sha256(target.read_bytes()).hexdigest() != digest:
                with urllib.request.urlopen(file["url"], timeout=300) as response:  # noqa: S310 (PyPI's file URL)
                    data = response.read()
                if hashlib.sha256(data).hexdigest() != digest:
                    raise RuntimeError(f"{file['filename']}: the download does not match its pinned hash")
                target.write_bytes(data)
            files.append(target)
    return files


def write_simple_index(files: Iterable[Path], root: Path) -> None:
    """PEP 503 pages under root/simple/ linking to the files in root/files/ (where they already are)."""
    projects: dict[str, list[Path]] = {}
    for file in files:
        name = file.name.split("-")[0] if file.name.endswith(".whl") else file.name.rsplit("-", 1)[0]
        projects.setdefault(canonicalize_name(name), []).append(file)
    simple = root / "simple"
    for project, project_files in projects.items():
        page = simple / project / "index.html"
        page.parent.mkdir(parents=True, exist_ok=True)
        links = [
            f'<a href="../../files/{html.escape(f.name)}#sha256={hashlib.sha256(f.read_bytes()).hexdigest()}">'
            f"{html.escape(f.name)}</a>"
            for f in sorted(project_files)
        ]
        page.write_text("<!DOCTYPE html><html><body>\n" + "<br>\n".join(links) + "\n</body></html>\n")
    (simple / "index.html").write_text(
        "<!DOCTYPE html><html><body>\n"
        + "\n".join(f'<a href="{p}/">{p}</a>' for p in sorted(projects))
        + "\n</body></html>\n"
    )


class PackageIndex:
    """Serves root/ over HTTP on `address` until `stop()`; `url` is the index URL pip takes."""

    def __init__(self, root: Path, address: str) -> None:
        handler = partial(_QuietHandler, directory=str(root))
        self._server = http.server.ThreadingHTTPServer((address, 0), handler)
        self.url = f"http://{address}:{self._server.server_address[1]}/simple/"
        self.requests: list[str] = []
        self._server.requests = self.requests  # type: ignore[attr-defined]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        self.server.requests.append(self.path)  # type: ignore[attr-defined]
