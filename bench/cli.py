"""The command line: options, and the exit code of a run (`python -m bench`)."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from typing import Any

import bench
from bench.common import BenchError
from bench.phases.closed_loop import GAP_MARGIN_SECONDS, POLL_RATE_CEILING_SHARE
from bench.phases.peer import PEER_SRC
from bench.runner import run

# A phase's option: its type (or its choices), its default, and what it sets (the help, without the default).
PhaseOption = tuple[Callable[[str], Any] | tuple[str, ...], Any, str]


def add_phase_options(p: argparse.ArgumentParser, phase: str, options: dict[str, PhaseOption]) -> None:
    """--<phase>-<name> for each option; its help names the phase and ends with the default (on a line of its own
    after a long help: the formatter keeps lines as they are)."""
    for name, (kind, default, text) in options.items():
        text = f"{phase} phase: {text}"
        text += ("\n" if len(text) > 80 else " ") + f"(default {default})"
        if isinstance(kind, tuple):
            p.add_argument(f"--{phase}-{name}", choices=kind, default=default, help=text)
        else:
            p.add_argument(f"--{phase}-{name}", type=kind, default=default, help=text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=(bench.__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawTextHelpFormatter,
    )
    p.add_argument("--duration", type=int, default=15, help="measured seconds per phase (default 15)")
    p.add_argument("--warmup", type=int, default=3, help="unmeasured seconds before each phase (default 3)")
    # Defaults chosen by measurement on the 2-core machine (bench/RESULTS.md): 2 and 3 workers gave the same
    # throughput within run-to-run noise (ceiling ~3,100-3,800 req/s, pending polls ~1,500-1,900 req/s), 4 workers
    # less (more context switches, one more backend); 6 or 12 connections no more than 8, with higher p99 at 12.
    # 3 workers leave headroom for requests that wait on PostgreSQL (bc-authorize, polls that miss Redis).
    p.add_argument("--concurrency", type=int, default=8, help="open connections kept busy by wrk (default 8)")
    p.add_argument(
        "--workers", type=int, default=4, help="gunicorn workers of 4 threads, as config/gunicorn.conf.py (default 4)"
    )
    p.add_argument("--threads", type=int, default=2, help="wrk threads (default 2, at most --concurrency)")
    p.add_argument(
        "--pool",
        type=int,
        default=0,
        help="pending requests to create for the polls (default: enough for polls at up to\n"
        f"{100 * POLL_RATE_CEILING_SHARE:.0f} %% of the ceiling, each request polled every interval + "
        f"{GAP_MARGIN_SECONDS} s; at least 2000)",
    )
    p.add_argument("--database", default="countersign_bench", help="PostgreSQL database, dropped and recreated")
    p.add_argument("--pg-port", type=int, default=5432)
    p.add_argument("--pg-user", default="postgres")
    p.add_argument(
        "--redis-port",
        type=int,
        default=None,
        help="use the Redis already running on this 127.0.0.1 port (default: start a redis-server of the\n"
        "benchmark's own on a free port, stopped at the end, so that the test suite's FLUSHDBs never meet it)",
    )
    p.add_argument("--redis-db", type=int, default=14, help="Redis database number, flushed before and after")
    p.add_argument(
        "--only",
        choices=("all", "peer", "prompts", "ping", "profile", "flows", "admin", "flatness"),
        default="all",
        help="all phases (default), or only one of them (for development:\n"
        "prints its figures and writes bench/out/<phase>.json, leaves bench/RESULTS.md alone)",
    )
    add_phase_options(
        p,
        "peer",
        {
            "pairs": (int, 3, "runs of bench-peer.sh on each server, alternately: ours, peer, ours, peer, ..."),
            "duration": (int, 15, "measured seconds of each wrk run in bench-peer.sh (its DURATION)"),
            "connections": (int, 32, "wrk connections in bench-peer.sh (its CONNECTIONS)"),
            "redis-db": (int, 13, "database of the benchmark's Redis for the peer's models, flushed before and after"),
            "pending": (int, 1000, "bc-authorize requests for the Redis memory per pending request"),
            "dir": (str, str(PEER_SRC), "the peer's sources, copied and installed under bench/out/"),
        },
    )
    add_phase_options(
        p,
        "ping",
        {
            "rate": (float, 20, "approvals per second"),
            "count": (int, 300, "measured approvals"),
            "warmup": (int, 40, "approvals not counted, first"),
            "wait": (float, 10, "seconds a ping may take after the last approval before its request counts as lost"),
        },
    )
    add_phase_options(
        p,
        "prompt",
        {
            "rate": (float, 50, "bc-authorize per second"),
            "duration": (int, 30, "measured seconds"),
            "warmup": (int, 3, "unmeasured seconds first"),
            "wait": (float, 10, "seconds an SMS may take after the load stops before its request counts as lost"),
            "approvers": (int, 8, "approvers with a phone"),
            # Chosen by measurement on the 2-core machine (bench/README.md): see PROMPT_WORKER_NOTE
            # (bench/phases/prompts.py).
            "pool": (("prefork", "threads", "solo"), "threads", "Celery worker pool"),
            "concurrency": (int, 8, "Celery worker concurrency"),
        },
    )
    add_phase_options(
        p,
        "admin",
        {
            "requests": (int, 1_000_000, "approval requests in the admin's database (about 5 audit events each)"),
            "agents": (int, 200, "agents they belong to"),
            "approvers": (int, 2000, "approvers they ask"),
            "days": (float, 7.0, "the days they were created over, up to now"),
            "fetches": (int, 10, "measured fetches of each page, after two unmeasured"),
        },
    )
    add_phase_options(
        p,
        "profile",
        {"requests": (int, 400, "bc-authorize and polls of each kind, measured, then again under cProfile")},
    )
    add_phase_options(
        p,
        "flows",
        {
            "rate": (float, 20, "whole approvals started per second (open loop, many in flight)"),
            "duration": (int, 25, "measured seconds: flows started in them are counted, with the CPU used meanwhile"),
            "warmup": (int, 8, "seconds of flows first, not counted: at least the poll interval (5) + 1 s"),
            "wait": (float, 15, "seconds after the last flow started before a flow without its tokens counts as lost"),
            "approvers": (int, 8, "approvers, each with a phone and a signed-in session"),
            "pending-cap": (int, 50, "APPROVALS_MAX_PENDING_PER_PERSON in force (0: off; the product's default is 50)"),
        },
    )
    # Issue 17 item 3 (bench/phases/flatness.py). Defaults: the 100,000 against 1,000 pending, all of the
    # smaller store polled; 1,000,000 requests is an hour at our ~300 bc-authorize/s (the peer's ~3,500/s would be
    # 12.6M, a build of ~15 minutes here); 3 pairs of 2 + 7 s runs keep the phase near 4 minutes.
    add_phase_options(
        p,
        "flat",
        {
            "pairs": (int, 3, "pairs of runs, each condition once, alternately (A B, B A, ...)"),
            "duration": (int, 7, "measured seconds of each wrk run"),
            "warmup": (int, 2, "seconds of wrk before each measured run, not counted (0: none)"),
            "pending": (int, 100_000, "pending requests in the big store"),
            "pending-base": (int, 1000, "pending requests in the small store"),
            "polled": (int, 1000, "requests wrk polls in each store (at most --flat-pending-base)"),
            "rows": (int, 1_000_000, "requests of the grown database's hour of traffic, with their audit events"),
        },
    )
    p.add_argument(
        "--wait-quiet",
        type=int,
        default=30,
        help="wait up to this many seconds for other processes' CPU use to drop below 10 %% (default 30)",
    )
    p.add_argument("--no-access-log", action="store_true", help="run gunicorn without its access log")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="measure nothing: write bench/RESULTS.md again from the last complete run (bench/out/run.pickle)",
    )
    args = p.parse_args(argv)
    if args.duration < 1 or args.warmup < 1 or args.concurrency < 1 or args.workers < 1:
        p.error("--duration, --warmup, --concurrency and --workers must be at least 1")
    if args.duration > 300 or args.concurrency > 1000 or args.workers > 64:
        p.error("bounded on purpose: --duration <= 300, --concurrency <= 1000, --workers <= 64")
    if "bench" not in args.database:
        p.error("--database is dropped and recreated: its name must contain 'bench'")
    if args.redis_port is not None and args.redis_db == 15:
        p.error("Redis database 15 belongs to the test suite; pick another --redis-db")
    if not 1 <= args.prompt_rate <= 500 or not 1 <= args.prompt_duration <= 120 or args.prompt_warmup < 0:
        p.error("bounded on purpose: 1 <= --prompt-rate <= 500, 1 <= --prompt-duration <= 120, --prompt-warmup >= 0")
    if not 1 <= args.prompt_approvers <= 50 or not 1 <= args.prompt_concurrency <= 32:
        p.error("1 <= --prompt-approvers <= 50 and 1 <= --prompt-concurrency <= 32")
    if not 1 <= args.ping_rate <= 200 or not 200 <= args.ping_count <= 5000 or not 0 <= args.ping_warmup <= 500:
        p.error("bounded on purpose: 1 <= --ping-rate <= 200, 200 <= --ping-count <= 5000, 0 <= --ping-warmup <= 500")
    if not 1 <= args.peer_pairs <= 10 or not 1 <= args.peer_duration <= 60 or not 1 <= args.peer_connections <= 256:
        p.error("bounded on purpose: 1 <= --peer-pairs <= 10, 1 <= --peer-duration <= 60, --peer-connections <= 256")
    if args.peer_redis_db == args.redis_db or not 0 <= args.peer_redis_db <= 15 or not 1 <= args.peer_pending <= 20000:
        p.error("--peer-redis-db: 0..15 and not --redis-db; 1 <= --peer-pending <= 20000")
    if not 1 <= args.flows_rate <= 200 or not 1 <= args.flows_duration <= 120 or not 0 <= args.flows_warmup <= 60:
        p.error("bounded on purpose: 1 <= --flows-rate <= 200, 1 <= --flows-duration <= 120, 0 <= --flows-warmup <= 60")
    if not 1 <= args.flows_approvers <= 50 or args.flows_pending_cap < 0 or not 5 <= args.flows_wait <= 120:
        p.error("1 <= --flows-approvers <= 50, --flows-pending-cap >= 0, 5 <= --flows-wait <= 120")
    if not 1 <= args.flat_pairs <= 10 or not 1 <= args.flat_duration <= 60 or not 0 <= args.flat_warmup <= 30:
        p.error("bounded on purpose: 1 <= --flat-pairs <= 10, 1 <= --flat-duration <= 60, 0 <= --flat-warmup <= 30")
    if not 1 <= args.flat_polled <= args.flat_pending_base <= args.flat_pending <= 2_000_000:
        p.error("1 <= --flat-polled <= --flat-pending-base <= --flat-pending <= 2000000")
    if not 1000 <= args.flat_rows <= 20_000_000:
        p.error("bounded on purpose: 1000 <= --flat-rows <= 20000000")
    args.threads = max(1, min(args.threads, args.concurrency))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def terminate(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)
    try:
        run(args)
    except BenchError as exc:
        print(f"bench: FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted; gunicorn, the worker and the benchmark's redis-server stopped", file=sys.stderr)
        return 130
    return 0
