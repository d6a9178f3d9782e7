"""The machine: CPU accounting from /proc (who used the CPU during a measured run), the wait for a quiet machine,
and the facts RESULTS.md states about the machine and the versions measured."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from importlib import metadata

from bench.common import ROOT, log

CLK_TCK = os.sysconf("SC_CLK_TCK")
GROUPS = ("gunicorn", "postgres", "redis", "celery", "bench")
QUIET_BUSY_PERCENT = 10  # a machine busier than this before a run is waited for, then flagged


def proc_table() -> dict[int, tuple[str, int, int, int]]:
    """pid -> (comm, ppid, pgrp, utime+stime ticks) for every process we can read."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        used = int(fields[11]) + int(fields[12])
        if comm == "postgres":
            # A backend's time moves to the postmaster's cutime/cstime when it exits: counted there, backends that
            # live for one connection (a Celery task's) stay in the postgres group instead of landing in "other".
            used += int(fields[13]) + int(fields[14])
        table[int(entry.name)] = (comm, int(fields[1]), int(fields[2]), used)
    return table


def children_of(pid: int) -> list[int]:
    return [child for child, info in proc_table().items() if info[1] == pid]


def rss_kib(pid: int) -> int:
    """A process's resident memory (VmRSS, KiB), 0 when it is gone."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def group_rss_kib(pgrp: int) -> dict[int, int]:
    """pid -> resident memory (KiB) of every process in a process group (a Celery worker and its pool's children)."""
    return {pid: rss_kib(pid) for pid, info in proc_table().items() if info[2] == pgrp}


@dataclass
class CpuSample:
    at: float
    ticks: dict[int, tuple[str, int]]  # pid -> (group, utime + stime)
    busy: int
    total: int
    steal: int  # time the hypervisor gave another guest: a noisy neighbour


def cpu_sample(gunicorn_pgrp: int, worker_pgrp: int | None = None, redis_pid: int | None = None) -> CpuSample:
    """bench = this process (the open-loop phases' load generator and fakes; idle while wrk runs). redis_pid is the
    benchmark's own redis-server; without one, any redis-server counts as "redis"."""
    ticks = {}
    me = os.getpid()
    for pid, (comm, _ppid, pgrp, used) in proc_table().items():
        if pgrp == gunicorn_pgrp:
            ticks[pid] = ("gunicorn", used)
        elif worker_pgrp is not None and pgrp == worker_pgrp:
            ticks[pid] = ("celery", used)
        elif pid == me:
            ticks[pid] = ("bench", used)
        elif comm == "postgres":
            ticks[pid] = ("postgres", used)
        elif pid == redis_pid or (redis_pid is None and comm.startswith("redis-server")):
            # With the benchmark's own redis-server, the system's (if any) counts as "other".
            ticks[pid] = ("redis", used)
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return CpuSample(time.monotonic(), ticks, total - idle, total, values[7])


def cpu_shares(before: CpuSample, after: CpuSample, wrk_seconds: float) -> dict[str, float]:
    """Per-group CPU use as a percentage of the whole machine (all cores) over the interval. A process that exited
    in between is missed (its last ticks are gone), one that started is counted from zero."""
    total = max(after.total - before.total, 1)
    shares = dict.fromkeys(GROUPS, 0.0)
    for pid, (group, used) in after.ticks.items():
        shares[group] += 100.0 * (used - before.ticks.get(pid, (group, 0))[1]) / total
    shares["wrk"] = 100.0 * wrk_seconds * CLK_TCK / total
    shares["busy"] = 100.0 * (after.busy - before.busy) / total
    shares["steal"] = 100.0 * (after.steal - before.steal) / total
    shares["other"] = max(0.0, shares["busy"] - shares["steal"] - sum(shares[k] for k in (*GROUPS, "wrk")))
    return shares


def cpu_seconds(before: CpuSample, after: CpuSample) -> dict[str, float]:
    """Per-group CPU time in seconds (all cores) over the interval, with busy, steal and other as cpu_shares has
    them: what a unit of work costs rather than how full the machine was."""
    used = dict.fromkeys(GROUPS, 0)
    for pid, (group, ticks) in after.ticks.items():
        used[group] += ticks - before.ticks.get(pid, (group, 0))[1]
    seconds = {group: ticks / CLK_TCK for group, ticks in used.items()}
    seconds["busy"] = (after.busy - before.busy) / CLK_TCK
    seconds["steal"] = (after.steal - before.steal) / CLK_TCK
    seconds["other"] = max(0.0, seconds["busy"] - seconds["steal"] - sum(seconds[k] for k in GROUPS))
    return seconds


def background_load(seconds: float = 2.0) -> tuple[float, list[str]]:
    """CPU busy % of the whole machine over a short interval, and the busiest processes."""

    def busy_total() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return sum(values[:8]) - values[3] - values[4], sum(values[:8])

    procs_0, (busy_0, total_0) = proc_table(), busy_total()
    time.sleep(seconds)
    procs_1, (busy_1, total_1) = proc_table(), busy_total()
    total = max(total_1 - total_0, 1)
    top = sorted(
        ((info[3] - procs_0[pid][3], pid, info[0]) for pid, info in procs_1.items() if pid in procs_0),
        reverse=True,
    )
    busiest = [f"{comm} (pid {pid}) {100 * ticks / total:.0f} %" for ticks, pid, comm in top[:5] if ticks > 0]
    return 100.0 * (busy_1 - busy_0) / total, busiest


def wait_for_quiet(wait_s: float, resample_s: float, prefix: str = "", shown: int = 5) -> tuple[float, list[str]]:
    """Up to wait_s seconds for other processes' CPU use to drop below QUIET_BUSY_PERCENT; returns the last reading
    (busy %, busiest processes), which may still be above it."""
    busy, busiest = background_load()
    deadline = time.monotonic() + wait_s
    while busy > QUIET_BUSY_PERCENT and time.monotonic() < deadline:
        log(f"{prefix}the machine is {busy:.0f} % busy ({', '.join(busiest[:shown])}); waiting for it to quieten")
        busy, busiest = background_load(resample_s)
    return busy, busiest


# ----------------------------------------------------------------------------------------------- machine, versions


def machine_info() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": model,
        "memory": mem,
        "kernel": f"{platform.system()} {platform.release()}",
    }


def code_version() -> str:
    """The commit measured, and whether the work tree differs from it outside bench/ (read-only git calls)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    if not head:
        return "unknown (not a git work tree)"
    return head + (" with uncommitted changes" if dirty else "")


def versions(code: str, pg_version: str, redis_version: str, wrk_version: str) -> dict[str, str]:
    found = {"Countersign": code, "Python": platform.python_version()}
    for dist in ("Django", "django-oauth-toolkit", "gunicorn", "psycopg", "redis", "hiredis", "celery"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "not installed"
    found["PostgreSQL server"] = pg_version
    found["Redis server"] = redis_version
    found["wrk"] = wrk_version
    return found


# CPU columns in RESULTS.md and the console: wrk's closed-loop phases, and the open-loop phases with their worker.
CLOSED_LOOP_CPU = ("gunicorn", "postgres", "redis", "wrk", "other", "steal", "busy")
OPEN_LOOP_CPU = ("gunicorn", "celery", "postgres", "redis", "bench", "other", "steal", "busy")


def fmt_cpu(cpu: dict[str, float], columns: tuple[str, ...]) -> str:
    return " / ".join(f"{cpu[k]:.0f}" for k in columns)
