"""Peak memory and time of the copier image's package installs, as `pulumi up` runs them on the host.

The copier's image is built on the Docker host during `pulumi up`, beside whatever already runs there.
This runs the Dockerfile's two `pip install` steps, word for word and from the same locked files, in a
container from the Python 3.13 stand-in base (harness/standin_images.py) on a private dockerd, and samples
the container's cgroup v1 `memory.stat` (resident plus shared memory; the page cache is left out, as it
is reclaimed under pressure) every 0.05 s.

    sudo .venv/bin/python -m bench.copier_build [--runs 3] [--index-url URL]

Results are in docs/docker-tier.md. What it cannot show: BuildKit's own memory in dockerd during the
build (not in the container's cgroup), and the official base image (the stand-in is Debian trixie's
Python).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

from harness.deployment import reachable_pip_index
from harness.docker_daemon import start_private_dockerd
from harness.standin_images import StandIn, ensure_image

COPIER = Path(__file__).resolve().parent.parent / "ops" / "copier"
BASE = "python:3.13-slim-bookworm"


def install_script(index_url: str) -> str:
    """The Dockerfile's two installs, with its flags."""
    return (
        f'python -m pip install --index-url "{index_url}" --require-hashes --only-binary=:all: '
        "-r /copier/build-requirements.txt "
        f'&& python -m pip install --index-url "{index_url}" --require-hashes --no-build-isolation '
        "-r /copier/requirements.txt"
    )


def sample_peak(stat: Path, peak: list[int], done: threading.Event) -> None:
    """Keep the highest resident plus shared memory in `peak[0]` until `done`."""
    while not done.is_set():
        try:
            fields = dict(line.split() for line in stat.read_text().splitlines())
            peak[0] = max(peak[0], int(fields["total_rss"]) + int(fields["total_shmem"]))
        except (OSError, KeyError):  # not created yet, or already gone
            pass
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description="Peak memory and time of the copier image's package installs.")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--index-url", default=reachable_pip_index())
    options = parser.parse_args()
    daemon = start_private_dockerd(Path(tempfile.mkdtemp(prefix="mi-bench-", dir="/tmp")))
    try:
        client = daemon.client()
        ensure_image(client, StandIn("python", BASE))
        for run in range(1, options.runs + 1):
            container = client.containers.run(
                BASE, ["sh", "-c", install_script(options.index_url)], network_mode="host", detach=True,
                environment={"PIP_NO_CACHE_DIR": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
                volumes={str(COPIER): {"bind": "/copier", "mode": "ro"}},
            )  # fmt: skip
            cgroup = Path(f"/sys/fs/cgroup/memory/docker/{container.id}/memory.stat")
            peak: list[int] = [0]
            done = threading.Event()
            sampler = threading.Thread(target=sample_peak, args=(cgroup, peak, done))
            started = time.monotonic()
            sampler.start()
            result = container.wait(timeout=900)
            took = time.monotonic() - started
            done.set()
            sampler.join()
            container.remove()
            status = "ok" if result["StatusCode"] == 0 else f"exit {result['StatusCode']}"
            print(f"run {run}: {status}, {took:.1f} s, peak resident + shared {peak[0] / 2**20:.0f} MiB")
    finally:
        daemon.clear()
        daemon.close()


if __name__ == "__main__":
    main()
