"""What the benchmark watches while a phase runs: the cgroup's memory and the server's log.

`memory.max_usage_in_bytes` counts the page cache too, which the kernel drops before it kills anything,
so a database that reads a lot sits at its limit without being in danger. The number that decides
whether the OOM killer fires is the memory the kernel cannot drop: anonymous pages plus shared memory
(`rss + shmem` in memory.stat). That is sampled every 100 ms in a thread, per phase.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.pg_server import MemoryCgroup

MIB = 1024 * 1024


@dataclass
class PhaseMemory:
    peak_usage_mib: float = 0.0
    peak_unreclaimable_mib: float = 0.0
    oom_kills: int = 0
    failcnt: int = 0
    #: (seconds since the phase began, rss + shmem MiB), one point per 0.5 s.
    timeline: list[tuple[float, float]] = field(default_factory=lambda: [])

    def as_dict(self, *, with_timeline: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "peak_usage_mib": round(self.peak_usage_mib, 1),
            "peak_unreclaimable_mib": round(self.peak_unreclaimable_mib, 1),
            "oom_kills": self.oom_kills,
            "failcnt": self.failcnt,
        }
        if with_timeline:
            out["timeline"] = [[round(t, 2), round(m, 1)] for t, m in self.timeline]
        return out


class MemorySampler:
    """Samples rss + shmem of a cgroup every `interval` seconds and keeps the maximum per phase."""

    def __init__(self, cgroup: MemoryCgroup, interval: float = 0.1, cpu: CpuMeter | None = None) -> None:
        self.cgroup = cgroup
        self.cpu = cpu
        self.interval = interval
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._peak = 0
        self._phase_start = time.monotonic()
        self._timeline: list[tuple[float, float]] = []
        self._last_point = -1.0

    def _sample(self) -> None:
        try:
            value = self.cgroup.unreclaimable_bytes()
        except OSError:
            return
        now = time.monotonic()
        with self._lock:
            self._peak = max(self._peak, value)
            offset = now - self._phase_start
            if offset - self._last_point >= 0.5:
                self._timeline.append((offset, value / MIB))
                self._last_point = offset

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()
            if self.cpu is not None:
                self.cpu.sync()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="memory-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @contextmanager
    def phase(self) -> Iterator[PhaseMemory]:
        """Measure one phase: resets the kernel's peak counter and the sampled peak on entry."""
        result = PhaseMemory()
        self.cgroup.reset_peak()
        oom_before = self.cgroup.oom_kills()
        fail_before = self.cgroup.failcnt()
        with self._lock:
            self._peak = 0
            self._phase_start = time.monotonic()
            self._timeline = []
            self._last_point = -1.0
        self._sample()
        try:
            yield result
        finally:
            self._sample()
            with self._lock:
                result.peak_unreclaimable_mib = self._peak / MIB
                result.timeline = list(self._timeline)
            result.peak_usage_mib = self.cgroup.peak_bytes() / MIB
            result.oom_kills = self.cgroup.oom_kills() - oom_before
            result.failcnt = self.cgroup.failcnt() - fail_before


#: Lines the postmaster writes when a child dies abnormally and when it resets shared memory.
_CHILD_KILLED = re.compile(r"LOG:\s+(.+?) \(PID (\d+)\) was terminated by signal (\d+)")
_RESTART = re.compile(r"all server processes terminated; reinitializing")
_SPILL = re.compile(r"hnsw graph no longer fits into maintenance_work_mem after (\d+) tuples")


@dataclass
class LogEvents:
    killed_by_signal_9: int = 0
    children_killed: int = 0
    crash_restarts: int = 0
    postmaster_exited: bool = False
    lines: list[str] = field(default_factory=lambda: [])
    #: pid -> the process type the postmaster names ("client backend", "checkpointer process", ...)
    killed: dict[int, str] = field(default_factory=lambda: {})

    @property
    def crashes(self) -> int:
        return self.crash_restarts + int(self.postmaster_exited)

    def as_dict(self) -> dict[str, Any]:
        return {
            "killed_by_signal_9": self.killed_by_signal_9,
            "children_killed": self.children_killed,
            "crash_restarts": self.crash_restarts,
            "postmaster_exited": self.postmaster_exited,
            "crashes": self.crashes,
            "lines": self.lines[:20],
            "killed": {str(pid): kind for pid, kind in self.killed.items()},
        }


class LogWatcher:
    """Reads the server log from where the last phase stopped and counts crash signatures."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def read_new(self) -> str:
        if not self.path.exists():
            return ""
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        self.offset += len(data)
        return data.decode(errors="replace")

    def events(self, *, running: bool) -> LogEvents:
        text = self.read_new()
        out = LogEvents(postmaster_exited=not running)
        for line in text.splitlines():
            child = _CHILD_KILLED.search(line)
            if child:
                out.children_killed += 1
                out.killed_by_signal_9 += int(child.group(3) == "9")
                out.killed[int(child.group(2))] = child.group(1)
                out.lines.append(line.strip())
            elif "terminated by signal 9" in line:
                out.killed_by_signal_9 += 1
                out.lines.append(line.strip())
            if _RESTART.search(line):
                out.crash_restarts += 1
                out.lines.append(line.strip())
            elif any(mark in line for mark in ("background worker", "could not", "out of memory")):
                out.lines.append(line.strip())
        return out


def spilled_at(messages: list[str]) -> int | None:
    for message in messages:
        found = _SPILL.search(message)
        if found:
            return int(found.group(1))
    return None


_DMESG_TIME = re.compile(r"^\[\s*(\d+\.\d+)\]")
_OOM_TASK = re.compile(r"oom-kill:.*oom_memcg=/([^,]+),.*task=([^,]+),pid=(\d+)")
_OOM_KILLED = re.compile(
    r"Killed process (\d+) \(([^)]*)\) total-vm:(\d+)kB, anon-rss:(\d+)kB, file-rss:(\d+)kB, shmem-rss:(\d+)kB"
)


class KernelLog:
    """The kernel's OOM-killer reports (dmesg), to tell which process a memory cgroup's OOM kill hit."""

    def __init__(self) -> None:
        self.last_time = self._latest()

    @staticmethod
    def _lines() -> list[str] | None:
        try:
            out = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=20, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.splitlines() if out.returncode == 0 else None

    def _latest(self) -> float:
        lines = self._lines() or []
        for line in reversed(lines):
            found = _DMESG_TIME.match(line)
            if found:
                return float(found.group(1))
        return 0.0

    def victims(self, cgroup_name: str, postmaster_pid: int | None) -> list[dict[str, Any]] | None:
        """OOM kills in `cgroup_name` since the last call; None if dmesg cannot be read."""
        lines = self._lines()
        if lines is None:
            return None
        pids: set[int] = set()
        victims: list[dict[str, Any]] = []
        newest = self.last_time
        for line in lines:
            stamp = _DMESG_TIME.match(line)
            if not stamp or float(stamp.group(1)) <= self.last_time:
                continue
            newest = max(newest, float(stamp.group(1)))
            task = _OOM_TASK.search(line)
            if task and task.group(1) == cgroup_name:
                pids.add(int(task.group(3)))
            killed = _OOM_KILLED.search(line)
            if killed and int(killed.group(1)) in pids:
                pid = int(killed.group(1))
                victims.append(
                    {
                        "pid": pid,
                        "postmaster": pid == postmaster_pid,
                        "anon_rss_mib": round(int(killed.group(4)) / 1024, 1),
                        "shmem_rss_mib": round(int(killed.group(6)) / 1024, 1),
                    }
                )
        self.last_time = newest
        return victims


CPUACCT_ROOT = Path("/sys/fs/cgroup/cpuacct")
USER_HZ = os.sysconf("SC_CLK_TCK")


def _host_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all but idle and iowait), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / USER_HZ


PF_KTHREAD = 0x00200000


def _kernel_thread_seconds() -> float:
    """CPU seconds of the kernel's own threads (writeback, reclaim, ...), which work for everyone and
    mostly for the benchmark's own I/O; they are left out of "other work"."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        if int(fields[6]) & PF_KTHREAD:  # field 9 of /proc/pid/stat: flags
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / USER_HZ


def _client_seconds() -> float:
    """CPU seconds of this process, every thread. Not its children: reaping a stopped postmaster adds
    the whole server's CPU time to them, which the cpuacct group has counted already; the phases that
    run a client program (pgbench) report its CPU time themselves."""
    t = os.times()
    return t.user + t.system


@dataclass
class CpuSnapshot:
    wall: float
    host: float
    server: float
    client: float
    kernel: float


class CpuMeter:
    """Tells the benchmark's own CPU use from everything else on the machine.

    The server's processes are mirrored into a cpuacct group (a new postmaster after a restart is
    moved within one sampler tick; its children inherit the group), the client's share comes from
    os.times(), and whatever else the host was busy with is "other" CPU: another job on the box
    that the timings below would otherwise silently absorb.
    """

    def __init__(self, memory: MemoryCgroup) -> None:
        self.memory = memory
        self.path = CPUACCT_ROOT / memory.name
        self.available = CPUACCT_ROOT.is_dir()
        if self.available:
            with contextlib.suppress(OSError):
                self.path.rmdir()
            try:
                self.path.mkdir()
            except OSError:
                self.available = False

    def sync(self) -> None:
        if not self.available:
            return
        try:
            ours = set((self.path / "cgroup.procs").read_text().split())
            for pid in (self.memory.path / "cgroup.procs").read_text().split():
                if pid not in ours:
                    with contextlib.suppress(OSError):
                        (self.path / "cgroup.procs").write_text(pid)
        except OSError:
            pass

    def server_seconds(self) -> float:
        """CPU seconds the server's processes have used since the group was made."""
        if not self.available:
            return 0.0
        try:
            return int((self.path / "cpuacct.usage").read_text()) / 1e9
        except OSError:
            return 0.0

    def snapshot(self) -> CpuSnapshot:
        self.sync()
        return CpuSnapshot(
            time.monotonic(), _host_busy_seconds(), self.server_seconds(), _client_seconds(), _kernel_thread_seconds()
        )

    @staticmethod
    def between(a: CpuSnapshot, b: CpuSnapshot, *, client_programs: float = 0.0) -> dict[str, float]:
        wall = max(1e-9, b.wall - a.wall)
        host = b.host - a.host
        server = b.server - a.server
        client = b.client - a.client + client_programs
        kernel = max(0.0, b.kernel - a.kernel)
        other = max(0.0, host - server - client - kernel)
        return {
            "wall_s": round(wall, 2),
            "server_cores": round(server / wall, 3),
            "client_cores": round(client / wall, 3),
            "kernel_thread_cores": round(kernel / wall, 3),
            "other_cores": round(other / wall, 3),
        }

    def wait_for_quiet(self, *, threshold_cores: float = 0.15, window: float = 2.0, max_wait: float = 300.0) -> float:
        """Block until the rest of the machine uses less than `threshold_cores` over `window` seconds
        (or `max_wait` passes); returns the seconds waited."""
        started = time.monotonic()
        while True:
            before = self.snapshot()
            time.sleep(window)
            other = self.between(before, self.snapshot())["other_cores"]
            if other < threshold_cores or time.monotonic() - started >= max_wait:
                return time.monotonic() - started

    def remove(self) -> None:
        if not self.available:
            return
        # Whatever is left (nothing, once the server stopped) goes back to the root group first.
        with contextlib.suppress(OSError):
            for pid in (self.path / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError):
                    (CPUACCT_ROOT / "cgroup.procs").write_text(pid)
        with contextlib.suppress(OSError):
            self.path.rmdir()
