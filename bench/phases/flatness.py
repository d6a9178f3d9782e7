"""Flat cost (issue 17, item 3): does a request cost the same when the store is big?

(a) Token polls with `--flat-pending` (100,000) pending requests in the store against `--flat-pending-base` (1,000).
    The pending requests are seeded in bulk by bench/flat_seed.py with the server's environment, as bc-authorize
    stores them (the request row, its CREATED audit event, its poll mirror entry; a poll client has no
    RequestCallback), and checked against requests made over HTTP. wrk then polls the same number of them
    (`--flat-polled`) in both stores, the rest idle, in phase c's pattern (bench/wrk.lua poll mode): with so few ids
    the server soon answers nearly all polls `slow_down`, in both stores alike, and both answers read the request's
    mirror entry in Redis. Reported too: Redis memory per pending request, PostgreSQL table and index sizes.
(b) bc-authorize after an hour of traffic (`--flat-rows`, 1,000,000 requests with their audit trails, inserted with
    SQL into the real tables, then VACUUM ANALYZE) against a fresh database.

Each comparison runs on one gunicorn and one redis-server with the two stores swapped under them (Stores). The
machine drifts 10-20 % over minutes, so the runs alternate (A B, B A, A B, ...: each pair's order is the reverse of
the last, which also cancels a drift within a pair) and the verdicts take the median of the per-pair ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import psycopg
import redis
from psycopg import sql as pgsql

from bench.common import (
    CIBA_GRANT,
    HOST,
    OUT_DIR,
    ROOT,
    BenchError,
    basic_auth,
    form_headers,
    free_port,
    http_request,
    log,
)
from bench.load import Load, run_wrk
from bench.phases.base import Context, Phase
from bench.phases.closed_loop import GAP_MARGIN_SECONDS
from bench.postgres import admin_dsn
from bench.servers import (
    RedisServer,
    Server,
    manage,
    manage_json,
    server_env,
    smoke_test,
    start_own_redis,
    start_server,
    wait_until_drained,
)
from bench.system import cpu_sample, cpu_shares, wait_for_quiet

# Issue 17 item 3: "within 10 %". The cost must not grow: the big store's throughput at least 0.9 of the small one's.
FLAT_TARGET = 0.90
# Seeded requests ask for an hour (a client may ask up to MAX_EXPIRY_SECONDS): with the default 300 s, 100,000 could
# never be pending at once at our rate. They were created over the last SEED_SPREAD_S seconds, so all outlive the
# phase by ten minutes at least.
SEED_EXPIRY_S = 3600
SEED_SPREAD_S = 3000
TABLES = ("approvals_approvalrequest", "approvals_auditevent")
APPROVER = "bench-flat-approver"
# part -> (the reference condition, the one measured against it)
CONDITIONS = {"polls": ("base", "big"), "bc": ("fresh", "grown")}


@dataclass
class FlatRun:
    """One measured wrk run of one condition."""

    part: str  # "polls" or "bc"
    pair: int
    condition: str  # polls: "base" / "big"; bc: "fresh" / "grown"
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    answers: dict[str, int]
    socket_errors: int
    cpu: dict[str, float]


@dataclass
class RedisReading:
    used_memory: int  # INFO memory, the whole redis-server (both stores)
    keys: int  # DBSIZE of the store's own Redis database


@dataclass
class FlatResult:
    runs: list[FlatRun]
    pending: dict[str, int]  # condition -> seeded pending requests (the checks' few real ones apart)
    polled: int
    seed_seconds: dict[str, float]  # the big store's seeding: db, redis, the whole helper
    # condition -> "before" / "seeded" (around its seeding) / "polled" (after all runs); keys: that store's only
    redis: dict[str, dict[str, RedisReading]]
    mirror_key_bytes: float  # MEMORY USAGE (every element) of a seeded mirror entry, mean over a sample
    pg_sizes: dict[str, dict[str, tuple[int, int, int]]]  # condition -> table -> (rows, table bytes, index bytes)
    checks: list[str]
    history: dict[str, Any]  # bench/flat_seed.py history's output
    rows_after: dict[str, int]  # bc: requests in each database after the runs
    quiet: dict[str, float]  # part -> CPU busy % of the machine just before its runs
    duration: int
    warmup: int
    seconds: float
    ratios: dict[str, list[float]] = field(default_factory=dict)  # part -> second condition / first, per pair
    p99_ratios: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for part, (first, second) in CONDITIONS.items():
            runs = {(r.pair, r.condition): r for r in self.runs if r.part == part}
            pairs = sorted({p for p, c in runs if (p, first) in runs and (p, second) in runs})
            self.ratios[part] = [runs[(p, second)].rps / max(runs[(p, first)].rps, 1e-9) for p in pairs]
            self.p99_ratios[part] = [runs[(p, second)].p99_ms / max(runs[(p, first)].p99_ms, 1e-9) for p in pairs]

    def median(self, part: str) -> float:
        return statistics.median(self.ratios[part]) if self.ratios[part] else float("nan")

    def met(self, part: str) -> bool:
        return self.median(part) >= FLAT_TARGET

    def verdicts(self) -> dict[str, bool]:
        return {part: self.met(part) for part in CONDITIONS}

    def redis_bytes_per_pending(self) -> float:
        """INFO used_memory grown by seeding the big store, per seeded request."""
        r = self.redis["big"]
        return (r["seeded"].used_memory - r["before"].used_memory) / max(self.pending["big"], 1)

    def summary(self) -> str:
        return (
            f"polls with {self.pending['big']:,} pending vs {self.pending['base']:,}: median ratio "
            f"{self.median('polls'):.2f}x ({' / '.join(f'{x:.2f}' for x in self.ratios['polls'])}); bc-authorize "
            f"after {self.history.get('rows', 0):,} requests vs fresh: {self.median('bc'):.2f}x "
            f"({' / '.join(f'{x:.2f}' for x in self.ratios['bc'])}); Redis {self.redis_bytes_per_pending():,.0f} "
            f"bytes a pending request; verdicts {self.verdicts()}"
        )


@dataclass
class Stores:
    """Two stores, each a PostgreSQL database and a Redis database, behind one gunicorn and one redis-server: the
    live one under the names the server uses (database `live`, Redis db 0), the other parked (its own database name,
    Redis db 1). activate() swaps them between runs, with the server idle: its database connections are ended and
    the databases renamed (the server reconnects on its next request), and SWAPDB swaps the Redis databases.

    Why not two servers side by side: two gunicorns (and redis-servers) started alike differed by up to 13 % with
    equal stores in a trial on this machine, for as long as they ran, which is more than the 10 % to be judged. One
    server with the data swapped under it leaves only the data different."""

    args: argparse.Namespace
    live: str
    parked: dict[str, str]  # condition -> its database name while parked
    redis_server: RedisServer
    active: str = ""

    def database(self, condition: str) -> str:
        return self.live if condition == self.active else self.parked[condition]

    def client(self, condition: str | None = None) -> redis.Redis:
        db = 0 if condition is None or condition == self.active else 1
        return redis.Redis(host=HOST, port=self.redis_server.port, db=db, socket_timeout=30)

    def reading(self, condition: str) -> RedisReading:
        return RedisReading(int(self.client().info("memory")["used_memory"]), int(self.client(condition).dbsize()))

    def create(self, first: str, second: str, template: str) -> None:
        """`first` live, `second` parked, both copies of `template`, both Redis databases empty."""
        for name in (self.live, *self.parked.values()):
            drop_database(self.args, name)
        create_database(self.args, self.live, template)
        create_database(self.args, self.parked[second], template)
        self.client().flushall()
        self.active = first

    def activate(self, condition: str) -> None:
        if condition == self.active:
            return
        with psycopg.connect(admin_dsn(self.args), autocommit=True) as conn:
            rename_database(conn, self.live, self.parked[self.active])
            rename_database(conn, self.parked[condition], self.live)
        self.client().swapdb(0, 1)
        self.active = condition


# ------------------------------------------------------------------------------------------------------ databases


def create_database(args: argparse.Namespace, name: str, template: str | None = None) -> None:
    with psycopg.connect(admin_dsn(args), autocommit=True) as conn:
        conn.execute(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(name)))
        if template is None:
            conn.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(name)))
        else:
            conn.execute(
                pgsql.SQL("CREATE DATABASE {} TEMPLATE {}").format(pgsql.Identifier(name), pgsql.Identifier(template))
            )


def drop_database(args: argparse.Namespace, name: str) -> None:
    with psycopg.connect(admin_dsn(args), autocommit=True) as conn:
        conn.execute(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(name)))


def rename_database(conn: psycopg.Connection, old: str, new: str) -> None:
    """A database is renamed only with nobody connected: the server's idle connections, and an autovacuum worker that
    may come meanwhile, are ended first."""
    rename = pgsql.SQL("ALTER DATABASE {} RENAME TO {}").format(pgsql.Identifier(old), pgsql.Identifier(new))
    deadline = time.monotonic() + 10
    while True:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (old,),
        )
        try:
            conn.execute(rename)
            return
        except psycopg.errors.ObjectInUse as exc:
            if time.monotonic() > deadline:
                raise BenchError(f"could not rename database {old} to {new}: still in use") from exc
            time.sleep(0.05)


def table_sizes(args: argparse.Namespace, database: str) -> dict[str, tuple[int, int, int]]:
    """table -> (rows, pg_table_size, pg_indexes_size)."""
    sizes = {}
    with psycopg.connect(admin_dsn(args, database), autocommit=True) as conn:
        for table in TABLES:
            rows = conn.execute(pgsql.SQL("SELECT count(*) FROM {}").format(pgsql.Identifier(table))).fetchone()
            size = conn.execute("SELECT pg_table_size(%s::regclass), pg_indexes_size(%s::regclass)", (table, table))
            table_bytes, index_bytes = size.fetchone() or (0, 0)
            sizes[table] = (int(rows[0] if rows else 0), int(table_bytes), int(index_bytes))
    return sizes


def store_args(args: argparse.Namespace, database: str, redis_port: int) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), "database": database, "redis_port": redis_port, "redis_db": 0})


def with_database(args: argparse.Namespace, env: dict[str, str], database: str) -> dict[str, str]:
    """The server's environment aimed at another database (the helper's, for a parked store)."""
    return {**env, "DATABASE_URL": f"postgres://{args.pg_user}@{HOST}:{args.pg_port}/{database}"}


# ---------------------------------------------------------------------------------------------------------- helper


def flat_seed(env: dict[str, str], *argv: str, timeout: float) -> dict[str, Any]:
    """bench/flat_seed.py with a store's server environment; its one line of JSON."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bench.flat_seed", *argv],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"bench.flat_seed {argv[0]} did not finish within {timeout:.0f} s") from exc
    if done.returncode != 0:
        raise BenchError(f"bench.flat_seed {argv[0]} failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def poll(port: int, auth: str, auth_req_id: str) -> tuple[int, dict[str, Any]]:
    status, body = http_request(
        port,
        "POST",
        "/oauth/token/",
        urlencode({"grant_type": CIBA_GRANT, "auth_req_id": auth_req_id}),
        form_headers(auth),
    )
    return status, json.loads(body)


def bc_authorize(port: int, auth: str, body: str) -> str:
    status, answer = http_request(port, "POST", "/oauth/bc-authorize/", body, form_headers(auth))
    if status != 200:
        raise BenchError(f"bc-authorize answered {status}: {answer[:300]!r}")
    return str(json.loads(answer)["auth_req_id"])


def answer_of(status: int, body: dict[str, Any]) -> str:
    return f"{status} {body['error']}" if "error" in body else f"{status} with {', '.join(sorted(body))}"


def check_seeded(
    port: int, env: dict[str, str], condition: str, auth: str, seeded: list[str], decided: list[str]
) -> list[str]:
    """Seeded requests must be indistinguishable from real ones for a poll: the same row (times taken relative to
    created_at), audit events and mirror entry as a request made over HTTP with the same parameters, and the same
    answers once pending, approved or denied. Returns what was compared, for the report; raises on a difference."""
    body = urlencode(
        {
            "scope": "openid",
            "login_hint": APPROVER,
            "binding_message": "Flat check",
            "requested_expiry": SEED_EXPIRY_S,
        }
    )
    real, real_approved = bc_authorize(port, auth, body), bc_authorize(port, auth, body)
    seeded_pending, seeded_approved, seeded_denied = seeded[0], decided[0], decided[1]
    out = flat_seed(
        env,
        "check",
        # One argument each, comma-separated: an auth_req_id may start with "-", which argparse takes for an option.
        f"--describe={real},{seeded_pending}",
        f"--approve={seeded_approved},{real_approved}",
        f"--deny={seeded_denied}",
        timeout=60,
    )
    described = out["described"]
    a, b = described[real], described[seeded_pending]
    differs = [
        k
        for k in a["row"]
        if k not in ("id", "auth_req_id", "binding_message", "created_at") and a["row"][k] != b["row"].get(k)
    ]
    if differs:
        raise BenchError(f"{condition}: a seeded row differs from a real one in {differs}: {a['row']} {b['row']}")
    if a["events"] != b["events"]:
        raise BenchError(f"{condition}: seeded audit events {b['events']} differ from real ones {a['events']}")
    # "pending <expires> <interval> <client_id>" (authz.ciba.poll.pending_entry): all but the expiry must agree.
    real_entry, seeded_entry = ((m[0] or "").split(" ") for m in (a["mirror"], b["mirror"]))
    if len(real_entry) != 4 or real_entry[:1] + real_entry[2:] != seeded_entry[:1] + seeded_entry[2:]:
        raise BenchError(f"{condition}: mirror entries differ: real {a['mirror']}, seeded {b['mirror']}")
    if not all(out["decided"].values()):
        raise BenchError(f"{condition}: a decision did not take: {out['decided']}")
    answers = {
        "pending": [answer_of(*poll(port, auth, i)) for i in (real, seeded_pending)],
        "approved": [answer_of(*poll(port, auth, i)) for i in (real_approved, seeded_approved)],
        "denied": [answer_of(*poll(port, auth, seeded_denied))],
    }
    want = {"pending": "400 authorization_pending", "approved": "200 with", "denied": "400 access_denied"}
    for kind, got in answers.items():
        if len(set(got)) != 1 or not got[0].startswith(want[kind]):
            raise BenchError(f"{condition}: poll answers of {kind} requests, real then seeded: {got}")
    return [
        f"{len(a['row'])} columns equal but id, auth_req_id, binding_message (times relative to created_at)",
        f"audit events equal ({', '.join(e[0] for e in a['events'])})",
        f"mirror entries equal but the expiry (`{seeded_entry[0]} <expires> {seeded_entry[2]} <client_id>`, ttl "
        f"{b['mirror'][1]:,} s and {a['mirror'][1]:,} s)",
        f"polls of a real and a seeded request: pending `{answers['pending'][0]}`, approved "
        f"`{answers['approved'][0]}`; a seeded one denied: `{answers['denied'][0]}`",
    ]


# ------------------------------------------------------------------------------------------------------ the runs


def alternate(pairs: int, first: str, second: str) -> Iterator[tuple[int, str]]:
    """(pair, condition): first second, second first, first second, ..."""
    for pair in range(1, pairs + 1):
        yield from ((pair, c) for c in ((first, second) if pair % 2 else (second, first)))


def measured_run(
    args: argparse.Namespace,
    part: str,
    pair: int,
    condition: str,
    server: Server,
    stores: Stores,
    path: str,
    env: dict[str, str],
) -> FlatRun:
    """A warm-up (which also reconnects the server to the database just swapped in), then the measured run."""
    name = f"flat-{part}-{pair}-{condition}"
    wait_until_drained(server.port)
    stores.activate(condition)
    if args.flat_warmup:
        run_wrk(args, server.port, f"{name}-warmup", path, args.flat_warmup, env)
        wait_until_drained(server.port)
    before = cpu_sample(server.pgrp, None, stores.redis_server.proc.pid)
    load: Load = run_wrk(args, server.port, name, path, args.flat_duration, env)
    cpu = cpu_shares(before, cpu_sample(server.pgrp, None, stores.redis_server.proc.pid), load.wrk_cpu_s)
    if not server.alive():
        raise BenchError(f"gunicorn died during {name}:\n{server.log_tail()}")
    log(f"flatness: {name}: {load.rps:,.0f} req/s, p99 {load.p99_ms:.1f} ms, answers {load.answers}")
    return FlatRun(
        part,
        pair,
        condition,
        load.rps,
        load.p50_ms,
        load.p90_ms,
        load.p99_ms,
        load.requests,
        load.answers,
        load.socket_errors,
        cpu,
    )


class Flatness(Phase):
    """Issue 17, item 3: polls with a big store of pending requests, bc-authorize with a grown table; each against
    its small or fresh twin, alternately, on one gunicorn and one redis-server (see Stores)."""

    name = "flatness"

    def run(self, ctx: Context) -> FlatResult:
        args = ctx.args
        started = time.monotonic()
        prefix = f"{args.database}_flat"
        template = f"{prefix}_template"
        conditions = [c for pair in CONDITIONS.values() for c in pair]
        server: Server | None = None
        own_redis: RedisServer | None = None
        try:
            own_redis = start_own_redis("redis-flat.log")
            stores = Stores(args, f"{prefix}_live", {c: f"{prefix}_{c}" for c in conditions}, own_redis)
            auth, client_id = self.template(args, template, own_redis.port)
            port = free_port()
            env = server_env(store_args(args, stores.live, own_redis.port), port)
            stores.create("base", "big", template)
            log(f"flatness: gunicorn on {HOST}:{port} ({stores.live}, redis-server :{own_redis.port})")
            server = start_server(store_args(args, stores.live, own_redis.port), env, port, "gunicorn-flat.log")
            smoke_test(port, auth, urlencode({"scope": "openid", "login_hint": APPROVER, "binding_message": "Flat"}))
            polls = self.polls(ctx, server, stores, env, auth, client_id)
            wait_until_drained(port)
            stores.create("fresh", "grown", template)
            bc = self.grown(ctx, server, stores, env, auth, client_id)
        finally:
            if server is not None:
                server.stop()
            if own_redis is not None:
                own_redis.stop()
            for name in (template, f"{prefix}_live", *(f"{prefix}_{c}" for c in conditions)):
                with contextlib.suppress(psycopg.Error):
                    drop_database(args, name)
            for stale in OUT_DIR.glob("flat-ids*"):
                stale.unlink()
        return FlatResult(
            runs=polls["runs"] + bc["runs"],
            pending=polls["pending"],
            polled=polls["polled"],
            seed_seconds=polls["seed_seconds"],
            redis=polls["redis"],
            mirror_key_bytes=polls["mirror_key_bytes"],
            pg_sizes={**polls["pg_sizes"], **bc["pg_sizes"]},
            checks=polls["checks"],
            history=bc["history"],
            rows_after=bc["rows_after"],
            quiet={"polls": polls["quiet"], "bc": bc["quiet"]},
            duration=args.flat_duration,
            warmup=args.flat_warmup,
            seconds=time.monotonic() - started,
        )

    @staticmethod
    def template(args: argparse.Namespace, name: str, redis_port: int) -> tuple[str, str]:
        """A migrated database with an approver and a poll client, which every store copies: the same credentials
        everywhere."""
        log(f"flatness: template database {name}")
        create_database(args, name)
        env = server_env(store_args(args, name, redis_port), 0)
        manage(env, "migrate", "--no-input", "-v", "0")
        manage_json(env, "create_approver", APPROVER, "--password=flat-unused-0P9x", "--email", "flat@example.com")
        client = manage_json(env, "create_agent_client", "--name", "bench-flat-agent")
        return basic_auth(client), str(client["client_id"])

    @staticmethod
    def polls(
        ctx: Context, server: Server, stores: Stores, env: dict[str, str], auth: str, client_id: str
    ) -> dict[str, Any]:
        args = ctx.args
        counts = {"base": args.flat_pending_base, "big": args.flat_pending}
        readings: dict[str, dict[str, RedisReading]] = {}
        pg: dict[str, dict[str, tuple[int, int, int]]] = {}
        checks: list[str] = []
        polled: dict[str, list[str]] = {}
        seed_seconds: dict[str, float] = {}
        mirror_bytes = 0.0
        for condition, count in counts.items():
            wait_until_drained(server.port)
            stores.activate(condition)
            ids_path = OUT_DIR / f"flat-ids-{condition}.txt"
            log(f"flatness: seeding {count:,} pending requests into {condition} (bench/flat_seed.py)")
            time.sleep(0.3)
            before = stores.reading(condition)
            t0 = time.monotonic()
            # Two more than counted: the checks decide them.
            out = flat_seed(
                env,
                "pending",
                *("--count", str(count + 2), "--client-id", client_id, "--username", APPROVER),
                *("--expiry", str(SEED_EXPIRY_S), "--spread", str(SEED_SPREAD_S), "--ids-out", str(ids_path)),
                timeout=120 + count / 500,
            )
            seconds = time.monotonic() - t0
            readings[condition] = {"before": before, "seeded": stores.reading(condition)}
            # The big store's figures are kept: it is seeded last.
            seed_seconds = {"db": out["db_seconds"], "redis": out["redis_seconds"], "total": seconds}
            mirror_bytes = float(out["sample_key_bytes"])
            ids = ids_path.read_text().split()
            checks = check_seeded(server.port, env, condition, auth, ids[:count], ids[count:])
            pg[condition] = table_sizes(args, stores.database(condition))
            polled[condition] = random.Random(4711).sample(ids[:count], args.flat_polled)
        gap = ctx.interval + GAP_MARGIN_SECONDS
        envs = {}
        for condition, ids in polled.items():
            path = OUT_DIR / f"flat-ids-polled-{condition}.txt"
            path.write_text("\n".join(ids) + "\n")
            # Phase c's pattern (bench/wrk.lua poll mode), without its state carried from run to run.
            envs[condition] = {
                "BENCH_MODE": "poll",
                "BENCH_AUTH": auth,
                "BENCH_IDS": str(path),
                "BENCH_GAP": f"{gap:.2f}",
            }
        quiet, _ = wait_for_quiet(args.wait_quiet, 5.0, prefix="flatness: ")
        log(
            f"flatness: polls, {args.flat_pairs} pairs, {args.flat_polled:,} ids polled in each store "
            f"({counts['base']:,} and {counts['big']:,} pending)"
        )
        runs = [
            measured_run(args, "polls", pair, condition, server, stores, "/oauth/token/", envs[condition])
            for pair, condition in alternate(args.flat_pairs, *CONDITIONS["polls"])
        ]
        for condition in counts:
            readings[condition]["polled"] = stores.reading(condition)
        return {
            "runs": runs,
            "pending": counts,
            "polled": args.flat_polled,
            "seed_seconds": seed_seconds,
            "redis": readings,
            "mirror_key_bytes": mirror_bytes,
            "pg_sizes": pg,
            "checks": checks,
            "quiet": quiet,
        }

    @staticmethod
    def grown(
        ctx: Context, server: Server, stores: Stores, env: dict[str, str], auth: str, client_id: str
    ) -> dict[str, Any]:
        args = ctx.args
        grown = stores.database("grown")
        log(f"flatness: an hour of traffic into {grown}: {args.flat_rows:,} requests (bench/flat_seed.py)")
        history = flat_seed(
            with_database(args, env, grown),
            "history",
            *("--rows", str(args.flat_rows), "--client-id", client_id, "--username", APPROVER),
            timeout=300 + args.flat_rows / 2000,
        )
        log(
            f"flatness: {history['rows']:,} requests, {history['events']:,} audit events in "
            f"{history['insert_seconds']:.0f} s (VACUUM ANALYZE {history['vacuum_seconds']:.0f} s): "
            f"{history['statuses']}"
        )
        pg = {c: table_sizes(args, stores.database(c)) for c in CONDITIONS["bc"]}
        bc_body = urlencode({"scope": "openid", "login_hint": APPROVER, "binding_message": "Pay invoice 4711: 120 EUR"})
        for condition in CONDITIONS["bc"]:
            wait_until_drained(server.port)
            stores.activate(condition)
            smoke_test(server.port, auth, bc_body)
        wrk_env = {
            "BENCH_MODE": "bc",
            "BENCH_AUTH": auth,
            "BENCH_BODY": bc_body,
            "BENCH_IDS_OUT": str(OUT_DIR / "flat-ids-bc"),
        }
        quiet, _ = wait_for_quiet(args.wait_quiet, 5.0, prefix="flatness: ")
        log(f"flatness: bc-authorize, {args.flat_pairs} pairs, fresh and grown")
        runs = [
            measured_run(args, "bc", pair, condition, server, stores, "/oauth/bc-authorize/", wrk_env)
            for pair, condition in alternate(args.flat_pairs, *CONDITIONS["bc"])
        ]
        wait_until_drained(server.port)
        rows_after = {c: table_sizes(args, stores.database(c))[TABLES[0]][0] for c in CONDITIONS["bc"]}
        return {"runs": runs, "history": history, "pg_sizes": pg, "rows_after": rows_after, "quiet": quiet}
