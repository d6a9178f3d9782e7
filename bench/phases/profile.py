"""The profile (issue 17): where one request's time goes, in-process, beside what each process spent per request
under load in phases b and c."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from bench.common import OUT_DIR, ROOT, BenchError, log
from bench.load import Load
from bench.phases.base import Context, Phase, PhaseResult

# Under load, CPU per request for these groups of bench/system.py, from phases b and c.
PROCESS_GROUPS = ("gunicorn", "postgres", "redis", "wrk")


@dataclass
class ProfileResult:
    requests: int  # per measured kind
    kinds: dict[str, dict[str, Any]]  # bench/inprocess.py's figures per kind of request
    answers: dict[str, int]

    def summary(self) -> str:
        return ", ".join(f"{k}: {v['cpu_ms']:.2f} ms CPU in-process" for k, v in self.kinds.items())


def cpu_ms_per_request(load: Load, nproc: int | str) -> dict[str, float]:
    """CPU milliseconds per request of each process group during a measured wrk run (shares are of the machine)."""
    per = 1000.0 * int(nproc) / max(load.rps, 1e-9) / 100.0
    return {group: load.cpu.get(group, 0.0) * per for group in PROCESS_GROUPS}


class Profile(Phase):
    """In-process, no HTTP: the Django application as a gunicorn worker loads it, called directly."""

    name = "profile"

    def run(self, ctx: Context) -> PhaseResult:
        n = ctx.args.profile_requests
        log(f"profile: {n} bc-authorize and 2 x {n} polls in-process, then again under cProfile")
        env = {
            **ctx.env,
            "BENCH_AUTH": ctx.auth,
            "BENCH_BODY": ctx.bc_body,
            "BENCH_PORT": str(ctx.port),
            "BENCH_PROFILE_N": str(n),
            "BENCH_INTERVAL": str(ctx.interval),
            "BENCH_OUT_DIR": str(OUT_DIR),
        }
        done = subprocess.run(
            [sys.executable, "-m", "bench.inprocess"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        (OUT_DIR / "profile.log").write_text(done.stderr)
        if done.returncode != 0:
            raise BenchError(f"bench.inprocess failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        answers = figures.pop("answers")
        return ProfileResult(requests=n, kinds=figures, answers=answers)


GROUP_LABELS = {"gunicorn": "gunicorn", "postgres": "PostgreSQL", "redis": "Redis", "wrk": "wrk (the load)"}


def profile_section(r: ProfileResult, loads: dict[str, Load], nproc: int | str) -> list[str]:
    """RESULTS.md's "Where a request's time goes": CPU per request by process under load (phases b and c), then
    in-process per request (wall, CPU, statements, round trips), then the profiled split by what spends it."""
    lines = [
        "## Where a request's time goes (issue 17's profile)",
        "",
        "CPU per request under load, by process: each process group's CPU during the measured run of the closed-loop "
        "phase divided by the requests it answered (ms of one core per request).",
        "",
        "| load | req/s | " + " | ".join(GROUP_LABELS.values()) + " | all four |",
        "| --- | ---: | " + " | ".join("---:" for _ in GROUP_LABELS) + " | ---: |",
    ]
    for label, load in loads.items():
        per = cpu_ms_per_request(load, nproc)
        lines.append(
            f"| {label} | {load.rps:,.0f} | "
            + " | ".join(f"{per[g]:.2f}" for g in GROUP_LABELS)
            + f" | {sum(per.values()):.2f} |"
        )
    kinds = list(r.kinds)
    lines += [
        "",
        f"In-process (bench/inprocess.py): the Django application a gunicorn worker loads, called directly on one "
        f"thread with no HTTP and no gunicorn, {r.requests:,} requests of each kind on the benchmark's database and "
        "Redis, after a warm-up. Wall time includes waiting for PostgreSQL and Redis; CPU is this process's alone. "
        "The difference between gunicorn's CPU per request above and the in-process CPU here is what serving HTTP "
        "costs: gunicorn's parsing and writing, its access log, thread hand-offs and the GIL among 4 threads.",
        "",
        "| request | wall ms | CPU ms | SQL statements | Redis commands |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for kind in kinds:
        k = r.kinds[kind]
        lines.append(
            f"| {kind} | {k['wall_ms']:.2f} | {k['cpu_ms']:.2f} | {k['sql_per_request']:.1f} | "
            f"{k['redis_commands_per_request']:.1f} |"
        )
    answers = ", ".join(f"{name} {count:,}" for name, count in sorted(r.answers.items()))
    lines += [
        "",
        f"Poll answers in-process: {answers}. A statement is one execute (bc-authorize's two INSERTs and their lock "
        "go as one); a Redis command counts once even inside a pipeline or script. The connection health check "
        "(one `SELECT 1` when a request first touches the database, CONN_HEALTH_CHECKS) is not a statement here "
        "but is a round trip.",
        "",
        "The same requests again under cProfile, each function's own time summed by what spends it (ms per request; "
        "cProfile slows Python code more than it slows waiting, so read the shares, not the sums):",
        "",
        "| spent in | " + " | ".join(kinds) + " |",
        "| --- | " + " | ".join("---:" for _ in kinds) + " |",
    ]
    categories: list[str] = []
    for kind in kinds:
        for name in r.kinds[kind]["categories_ms"]:
            if name not in categories:
                categories.append(name)
    for name in categories:
        cells = []
        for kind in kinds:
            k = r.kinds[kind]
            ms = k["categories_ms"].get(name, 0.0)
            cells.append(f"{ms:.2f} ({100 * ms / max(k['profiled_ms'], 1e-9):.0f} %)")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| all | " + " | ".join(f"{r.kinds[k]['profiled_ms']:.2f}" for k in kinds) + " |")
    lines += ["", "Countersign's functions with the most time under them (cumulative, ms per request, profiled):", ""]
    for kind in kinds:
        top = [
            f"`{name.split(' ')[1]}` ({name.split(' ')[0].rsplit(':', 1)[0]}) {ms:.2f}"
            for name, ms in r.kinds[kind]["ours_cumulative_ms"]
            if "middleware" not in name and " dispatch" not in name
        ][:6]
        lines.append(f"- {kind}: " + "; ".join(top) + ".")
    lines += [
        "",
        "The listings sorted by own and by cumulative time: bench/out/profile-<request>.txt; the figures: "
        "bench/out/results.json.",
        "",
    ]
    return lines
