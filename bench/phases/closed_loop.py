"""Phases a-e: wrk in a closed loop against one gunicorn.

a. ceiling          GET  /healthz/             (no backend touched), measured first and again last
b. backchannel      POST /oauth/bc-authorize/  (Basic auth, scope=openid, login_hint, binding_message)
c. pending polls    POST /oauth/token/         (CIBA grant, over a pool of pending auth_req_ids)
d. ratio            pending-poll req/s / mean ceiling req/s, target >= 60 % (computed from a and c)
e. rows written     PostgreSQL tuple counters around the pending-poll phase, target 0 (measured in c)
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import OUT_DIR, BenchError, log
from bench.load import Load, run_wrk
from bench.phases.base import Context, Phase
from bench.postgres import add_rows, pg_snapshot, written_between
from bench.servers import wait_until_drained
from bench.system import cpu_shares

RATIO_TARGET = 0.60
# A pending request is polled again GAP_MARGIN_SECONDS after its interval, so that queueing in the server never makes
# a poll early. The pool of pending requests is sized for polls at up to POLL_RATE_CEILING_SHARE of the ceiling,
# created with at most TOPUP_MAX_SECONDS of bc-authorize beyond the measured phase.
GAP_MARGIN_SECONDS = 0.3
POLL_RATE_CEILING_SHARE = 0.7
TOPUP_MAX_SECONDS = 50
IDS_PREFIX = OUT_DIR / "ids"  # wrk.lua's bc mode appends the auth_req_ids it gets to ids.<thread>


def measure(
    ctx: Context, name: str, path: str, extra_env: dict[str, str], warmup: int | None = None
) -> tuple[Load, Load]:
    """A warm-up run, then the measured run (with CPU accounting around it), on the shared gunicorn."""
    args, server = ctx.args, ctx.shared_server()
    warm = run_wrk(args, server.port, f"{name}-warmup", path, warmup or args.warmup, extra_env)
    wait_until_drained(server.port)
    before = ctx.cpu_sample(server)
    load = run_wrk(args, server.port, name, path, args.duration, extra_env)
    load.cpu = cpu_shares(before, ctx.cpu_sample(server), load.wrk_cpu_s)
    if not server.alive():
        raise BenchError(f"gunicorn died during {name}:\n{server.log_tail()}")
    return warm, load


class Ceiling(Phase):
    """a. GET /healthz/, which touches no backend: what the server does at most."""

    uses_shared_server = True

    def __init__(self, name: str = "ceiling", warmup: int | None = None) -> None:
        self.name = name
        self.warmup = warmup

    def run(self, ctx: Context) -> Load:
        _, load = measure(ctx, self.name, "/healthz/", {"BENCH_MODE": "get"}, warmup=self.warmup)
        return load


@dataclass
class BcResult:
    load: Load  # the measured run
    requests_total: int  # warm-up included
    rows: dict[str, int]  # written to PostgreSQL during warm-up and run: checks that the row counter sees writes

    def summary(self) -> str:
        return self.load.summary()


def bc_env(ctx: Context) -> dict[str, str]:
    return {"BENCH_MODE": "bc", "BENCH_AUTH": ctx.auth, "BENCH_BODY": ctx.bc_body, "BENCH_IDS_OUT": str(IDS_PREFIX)}


class BcAuthorize(Phase):
    """b. POST /oauth/bc-authorize/; the pending requests it creates are the pool that c polls."""

    name = "bc-authorize"
    uses_shared_server = True

    def run(self, ctx: Context) -> BcResult:
        server = ctx.shared_server()
        rows_0 = pg_snapshot(ctx.args, server.port)
        warm, load = measure(ctx, self.name, "/oauth/bc-authorize/", bc_env(ctx))
        rows_1 = pg_snapshot(ctx.args, server.port)
        return BcResult(load, warm.requests + load.requests, written_between(rows_0, rows_1))


@dataclass
class PollResult:
    load: Load
    rows: dict[str, int]  # written while polling (warm-up included)
    polls_made: int  # warm-ups included
    pool_size: int
    ring: int  # requests being polled at the end, each every ~gap seconds
    gap: float
    xacts_per_poll: float  # PostgreSQL transactions per poll during the measured run (and its 1 s re-warm)
    warmup_seconds: float

    def summary(self) -> str:
        return (
            f"{self.load.summary()}; {self.load.ring:,} requests being polled, {self.load.grown:,} joined during the "
            "measured run"
        )


class PendingPolls(Phase):
    """c (and e). Pending polls, as agents that honour the interval make them (see wrk.lua): each pending request is
    polled again once `gap` seconds (its interval and a margin) have passed, and the set of requests being polled
    grows until the server is saturated. The pool of pending requests must hold rate * gap of them; it is sized for
    polls at up to POLL_RATE_CEILING_SHARE of the ceiling and topped up with more bc-authorize requests before any
    poll.

    A warm-up fills the set, PostgreSQL's statistics are read, a 1 s re-warm lets the workers reconnect to the
    database, and the measured run follows; the statistics are read again after it.
    """

    name = "pending-polls"
    uses_shared_server = True

    def run(self, ctx: Context) -> PollResult:
        args, server = ctx.args, ctx.shared_server()
        bc_rps = ctx.result("bc-authorize", BcResult).load.rps
        ceiling_rps = ctx.result("ceiling", Load).rps
        gap = ctx.interval + GAP_MARGIN_SECONDS
        target = args.pool or max(2000, math.ceil(POLL_RATE_CEILING_SHARE * ceiling_rps * gap))
        budget = TOPUP_MAX_SECONDS
        for _ in range(3):  # bounded top-up
            have = len(collect_ids(IDS_PREFIX))
            missing = target - have
            seconds = min(budget, max(1, math.ceil(missing / max(bc_rps, 1) * 1.1)))
            if missing <= 0 or budget <= 0:
                break
            budget -= seconds
            log(f"pool of {have:,} pending requests is short of {target:,}: {seconds} s more of bc-authorize")
            run_wrk(args, server.port, "pool-topup", "/oauth/bc-authorize/", seconds, bc_env(ctx))
        # Shuffled (reproducibly): the requests that join the set being polled then have creation times spread over
        # the whole creation window, rather than all being the oldest, so that per-request state the server keeps for
        # a while (e.g. with a time to live) does not all expire at once.
        pool = collect_ids(IDS_PREFIX)
        random.Random(4711).shuffle(pool)
        pool_path = OUT_DIR / "pool.txt"
        pool_path.write_text("\n".join(pool) + "\n")
        state_path = OUT_DIR / "poll-state.txt"
        state_path.unlink(missing_ok=True)
        poll_env = {
            "BENCH_MODE": "poll",
            "BENCH_AUTH": ctx.auth,
            "BENCH_IDS": str(pool_path),
            "BENCH_GAP": f"{gap:.2f}",
            "BENCH_STATE": str(state_path),
        }
        path = "/oauth/token/"
        started = time.monotonic()
        snap = pg_snapshot(args, server.port)
        seconds = max(args.warmup, math.ceil(gap) + 3)  # the set of polled requests fills during the first gap
        log(f"pending polls: warm-up, {seconds} s over a pool of {len(pool):,}, each request polled every {gap:.1f} s")
        warm = run_wrk(args, server.port, "pending-polls-warmup", path, seconds, poll_env)
        mid = pg_snapshot(args, server.port)  # waits for the server to drain
        rows = written_between(snap, mid)
        # pg_snapshot ended the workers' database connections: one more second of polls lets them reconnect (with
        # DB_CONN_HEALTH_CHECKS=false the first query on a dead connection is a 500) before the measured run.
        rewarm = run_wrk(args, server.port, "pending-polls-rewarm", path, 1, poll_env)
        wait_until_drained(server.port)
        warmup_seconds = time.monotonic() - started
        before = ctx.cpu_sample(server)
        polls = run_wrk(args, server.port, self.name, path, args.duration, poll_env)
        polls.cpu = cpu_shares(before, ctx.cpu_sample(server), polls.wrk_cpu_s)
        if not server.alive():
            raise BenchError(f"gunicorn died during the pending polls:\n{server.log_tail()}")
        end = pg_snapshot(args, server.port)
        rows = add_rows(rows, written_between(mid, end))
        return PollResult(
            load=polls,
            rows=rows,
            polls_made=warm.requests + rewarm.requests + polls.requests,
            pool_size=len(pool),
            ring=polls.ring,
            gap=gap,
            xacts_per_poll=(end.xacts - mid.xacts) / max(rewarm.requests + polls.requests, 1),
            warmup_seconds=warmup_seconds,
        )


def collect_ids(prefix: Path) -> list[str]:
    ids: dict[str, None] = {}
    for path in sorted(prefix.parent.glob(prefix.name + ".*")):
        for line in path.read_text().splitlines():
            if line:
                ids[line] = None
    return list(ids)


def ceiling_ratio(ceiling: Load, ceiling_after: Load, polls: Load) -> tuple[float, float]:
    """d. (the mean ceiling, pending polls / it). The machine's speed drifts (a shared host), so the ratio uses the
    mean of the ceiling runs before and after."""
    ceiling_rps = (ceiling.rps + ceiling_after.rps) / 2
    return ceiling_rps, polls.rps / ceiling_rps
