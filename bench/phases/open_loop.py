"""What the open-loop phases (f prompts, g ping) share: the measured run with its CPU and PostgreSQL readings, the wait
for what arrives at the phase's fake in the benchmark's process (an SMS, a ping), and the statistics of the shots
and their arrivals.

A phase matches the arrivals to its shots itself (the SMS quotes the binding message, the ping carries the
auth_req_id) and says which answer counts as ok and where a latency starts; the counting is the same for both.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bench.common import BenchError, percentile
from bench.load import OpenLoop, S
from bench.phases.base import Context
from bench.postgres import pg_sessions
from bench.servers import Server, Worker
from bench.system import cpu_shares


def measure_load(
    ctx: Context, phase: str, load: OpenLoop[S], server: Server, worker: Worker, timeout: float, settle: float = 0.0
) -> tuple[dict[str, float], int]:
    """Runs `load`; returns the CPU split and the PostgreSQL sessions opened from when its first measured shot is due
    until `settle` seconds after the generator finished (given up on after `timeout` seconds)."""
    gen = load.start()
    sessions_0 = pg_sessions(ctx.args)
    before = ctx.cpu_sample(server, worker)
    gen.join(timeout=timeout)
    if settle:
        time.sleep(settle)
    after = ctx.cpu_sample(server, worker)
    sessions = pg_sessions(ctx.args) - sessions_0
    if gen.is_alive():
        raise BenchError(f"{phase}: the load generator did not finish")
    return cpu_shares(before, after, 0.0), sessions


def await_arrivals(
    phase: str, server: Server, worker: Worker, arrived: Callable[[], set[str | None]], wanted: set[str], wait: float
) -> None:
    """Until `arrived()` (what the fake has seen so far, by key) holds every key in `wanted`, or `wait` seconds; then
    checks that gunicorn and the worker are still up, and leaves a moment for duplicates."""
    deadline = time.time() + wait
    while time.time() < deadline and not wanted <= arrived():
        time.sleep(0.05)
    if not server.alive() or not worker.alive():
        raise BenchError(f"{phase}: gunicorn or the worker died.\n{server.log_tail()}\n{worker.log_tail()}")
    time.sleep(0.5)  # a duplicate would come right after


@dataclass
class ArrivalStats:
    """A run's measured shots and their arrivals. Latencies (ms) run from a shot's start (sent, or its answer read:
    the phase says which) to its first arrival, over the shots answered ok."""

    sent: int  # measured shots
    ok: int  # answered as the phase expects (200 from bc-authorize, a 302 back to the request from decide)
    errors: int  # any other answer, or none
    received: int  # measured shots with at least one arrival
    lost: int  # answered ok, but nothing arrived within the wait after the load stopped
    duplicates: int  # measured shots with more than one arrival
    unmatched: int  # arrivals naming no shot of this run
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    min_ms: float
    answer_p50_ms: float  # the shot itself: sent -> answer read
    answer_p99_ms: float
    late_sends: int  # shots sent more than 20 ms after their slot (the generator fell behind)
    achieved_rate: float
    error_kinds: dict[str, int]

    def summary(self, counts: tuple[str, str, str], latency: str) -> str:
        """The figures for the console: `counts` names sent, ok and received as the phase does, `latency` its
        latency."""
        sent, ok, received = counts
        return (
            f"{sent} {self.sent}, {ok} {self.ok}, {received} {self.received}, lost {self.lost}, "
            f"duplicates {self.duplicates}; {latency} p50 {self.p50_ms:.1f} ms, p90 {self.p90_ms:.1f} ms, "
            f"p99 {self.p99_ms:.1f} ms, max {self.max_ms:.1f} ms"
        )


def latencies_ms(shots: Iterable[S], arrivals: dict[str, list[float]], since: Callable[[S], float]) -> list[float]:
    """Sorted, over the shots something arrived for: their first arrival - since(shot), in ms."""
    return sorted(1000 * (min(arrivals[s.label]) - since(s)) for s in shots if s.label in arrivals)


def arrival_stats(
    load: OpenLoop[S],
    arrivals: dict[str, list[float]],
    unmatched: int,
    ok: Callable[[S], bool],
    since: Callable[[S], float],
) -> ArrivalStats:
    """The statistics of `load`'s measured shots. `arrivals`: the received_at (time.time()) of everything that
    arrived for a shot, by the shot's label; `unmatched`: how many arrivals named no shot; `ok`: whether a shot was
    answered as expected; `since`: where a shot's latency starts."""
    measured = load.measured
    good = [s for s in measured if ok(s)]
    error_kinds: dict[str, int] = {}
    for s in measured:
        if not ok(s):
            kind = s.error or f"HTTP {s.status} {s.location[:40]}".strip()
            error_kinds[kind] = error_kinds.get(kind, 0) + 1
    latencies = latencies_ms(good, arrivals, since)
    answers = sorted(1000 * (s.answered - s.sent) for s in measured if s.answered)
    sends = [s.sent for s in measured]
    span = (max(sends) - min(sends)) if len(sends) > 1 else 0
    return ArrivalStats(
        sent=len(measured),
        ok=len(good),
        errors=len(measured) - len(good),
        received=sum(1 for s in measured if s.label in arrivals),
        lost=sum(1 for s in good if s.label not in arrivals),
        duplicates=sum(1 for s in measured if len(arrivals.get(s.label, ())) > 1),
        unmatched=unmatched,
        p50_ms=percentile(latencies, 50),
        p90_ms=percentile(latencies, 90),
        p99_ms=percentile(latencies, 99),
        max_ms=latencies[-1] if latencies else math.nan,
        min_ms=latencies[0] if latencies else math.nan,
        answer_p50_ms=percentile(answers, 50),
        answer_p99_ms=percentile(answers, 99),
        late_sends=sum(1 for s in measured if s.sent - s.scheduled > 0.020),
        achieved_rate=(len(sends) - 1) / span if span else math.nan,
        error_kinds=error_kinds,
    )
