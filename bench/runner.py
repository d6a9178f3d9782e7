"""A run: the benchmark's own redis-server, the checks before it, the set-up every phase shares (a fresh database,
an approver and an agent client), the phases in order, and the report."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import pickle
import secrets
import time
from urllib.parse import urlencode

import redis

from bench import report
from bench.common import HOST, OUT_DIR, ROOT, BenchError, basic_auth, free_port, log
from bench.load import ensure_wrk
from bench.phases import Context, phases
from bench.postgres import analyze, autovacuum_on, check_postgres, recreate_database
from bench.servers import RedisServer, check_redis, flush_redis, manage, manage_json, server_env, start_own_redis
from bench.system import QUIET_BUSY_PERCENT, code_version, machine_info, versions, wait_for_quiet

# Raw files of the previous run, removed first (the logs are overwritten).
STALE = (
    "ids.*",
    "wrk-*",
    "pool.txt",
    "results.json",
    "prompts*",
    "celery.log",
    "ping*",
    "celery-ping.log",
    "flows*",
    "flat-*",
    "flatness.json",
    "peer.json",
    "profile*",
)


RUN_PICKLE = OUT_DIR / "run.pickle"


def report_only() -> None:
    """RESULTS.md again from the last complete run's figures (bench/out/run.pickle, this checkout's own file)."""
    if not RUN_PICKLE.exists():
        raise BenchError(f"{RUN_PICKLE.relative_to(ROOT)} is missing: run the whole benchmark first")
    with RUN_PICKLE.open("rb") as f:
        facts, args, results = pickle.load(f)  # noqa: S301 (written by run_phases above, in bench/out/)
    report.write_results(facts, args, results)
    log(report.summary_line(facts, results))


def run(args: argparse.Namespace) -> None:
    if args.report_only:
        report_only()
        return
    started = time.monotonic()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for pattern in STALE:
        for stale in OUT_DIR.glob(pattern):
            stale.unlink()
    own_redis: RedisServer | None = None
    try:
        if args.redis_port is None:
            own_redis = start_own_redis()
            args.redis_port = own_redis.port
            log(f"started the benchmark's own redis-server on {HOST}:{own_redis.port} (pid {own_redis.proc.pid})")
        run_phases(args, started, own_redis)
    finally:
        if own_redis is not None:
            own_redis.stop()
            log("stopped the benchmark's redis-server")


def run_phases(args: argparse.Namespace, started: float, own_redis: RedisServer | None) -> None:
    pg_version = check_postgres(args)
    redis_version = check_redis(args, own=own_redis is not None)
    wrk_version = ensure_wrk()
    code = code_version()  # what gunicorn will load: taken before it starts
    log(f"PostgreSQL {pg_version}, Redis {redis_version}, {wrk_version}")
    idle_busy, busiest = wait_for_quiet(args.wait_quiet, 5.0)
    if idle_busy > QUIET_BUSY_PERCENT:
        log(
            f"WARNING: the machine is already {idle_busy:.0f} % busy before the run ({', '.join(busiest)}): "
            "the figures will be lower than on a quiet machine"
        )

    flush_redis(args)
    log(f"recreating database {args.database}")
    recreate_database(args)
    port = free_port()
    env = server_env(args, port)
    log("migrating")
    manage(env, "migrate", "--no-input", "-v", "0")
    approver = manage_json(
        env, "create_approver", "bench-approver", f"--password={secrets.token_urlsafe(24)}", "--email", "a@example.com"
    )
    client = manage_json(env, "create_agent_client", "--name", "bench-agent")
    ctx = Context(
        args=args,
        port=port,
        env=env,
        auth=basic_auth(client),
        bc_body=urlencode(
            {"scope": "openid", "login_hint": approver["username"], "binding_message": "Pay invoice 4711: 120 EUR"}
        ),
        redis_pid=own_redis.proc.pid if own_redis is not None else None,
    )

    # A server without autovacuum (a CI configuration) never gathers planner statistics on the bench database: after
    # phases a-c and the peer's runs (tens of thousands of requests) it still plans for empty tables, and a prompt's
    # claim UPDATE chose the partial index of unprompted requests over the primary key, reading every one of them
    # (p50 0.5 s instead of 10-30 ms). Autovacuum would have analyzed the tables long before: do as it would.
    analyze_between = not autovacuum_on(args)
    try:
        for n, phase in enumerate(phases(args.only)):
            if not phase.uses_shared_server:
                ctx.stop_shared_server()
            if analyze_between and n:
                log(f"ANALYZE {args.database} (autovacuum is off on this server): {analyze(args):.1f} s")
            result = phase.run(ctx)
            ctx.results[phase.name] = result
            log(f"{phase.name}: {result.summary()}")
    finally:
        ctx.stop_shared_server()
        with contextlib.suppress(redis.RedisError):
            flush_redis(args)

    if args.only != "all":
        (name,) = ctx.results
        path = report.write_phase_json(name, ctx.results[name])
        log(
            f"--only {args.only}: done in {time.monotonic() - started:.0f} s; bench/RESULTS.md left alone, figures "
            f"in {path}"
        )
        return

    facts = report.RunFacts(
        date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        elapsed=time.monotonic() - started,
        machine=machine_info(),
        versions=versions(code, pg_version, redis_version, wrk_version),
        background=(idle_busy, busiest),
        own_redis=own_redis is not None,
        analyzed_between=analyze_between,
    )
    # Kept first, so that a fault in the report loses no measurement: `python -m bench --report-only` writes
    # RESULTS.md again from it.
    with RUN_PICKLE.open("wb") as f:
        pickle.dump((facts, args, ctx.results), f)
    report.write_results(facts, args, ctx.results)
    log(report.summary_line(facts, ctx.results))
