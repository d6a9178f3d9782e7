#!/usr/bin/env python3
"""Countersign benchmark: one command, `make bench` (or `.venv/bin/python bench/run.py`).

It creates a fresh PostgreSQL database, migrates it, registers an approver and an agent client through the management
commands, starts the service as production runs it (gunicorn sync workers, DEBUG off, PostgreSQL, Redis cache and
Celery broker) on a free loopback port, and drives it with wrk (closed loop, fixed concurrency):

  a. ceiling          GET  /healthz/             (no backend touched), measured first and again last
  b. backchannel      POST /oauth/bc-authorize/  (Basic auth, scope=openid, login_hint, binding_message)
  c. pending polls    POST /oauth/token/         (CIBA grant, round-robin over a pool of pending auth_req_ids)
  d. ratio            pending-poll req/s / mean ceiling req/s, target >= 60 %
  e. rows written     PostgreSQL tuple counters around the pending-poll phase, target 0
  f. prompts          (issue 3, last, bench/prompts.py) a fresh gunicorn with the Twilio SMS channel aimed at a fake
                      Twilio in this process, a real Celery worker, bc-authorize at a steady 50/s for 30 s (open
                      loop): bc-authorize's answer -> SMS accepted by the fake, p50 < 150 ms, p99 < 1 s, none lost
  g. ping             (issue 5, bench/ping.py) a ping client whose notification endpoint is a fake agent endpoint in
                      this process, a real Celery worker, the approver approving pending requests at a steady 20/s
                      (open loop): decide POST sent -> ping received by the fake, p50 < 100 ms, none lost

Redis: unless --redis-port is given, the benchmark starts its own redis-server on a free port and stops it at the
end (the test suite flushes the system Redis's databases). APPROVALS_PROMPTS_PER_MINUTE=0 for every phase.

bench/RESULTS.md is rewritten at the end of each successful run; raw wrk output, the gunicorn log and a JSON copy of
the results go to bench/out/ (ignored by git). Only 127.0.0.1 is ever targeted; every load run is bounded in time.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import http.client
import json
import math
import os
import platform
import random
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, urlencode

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
OUT_DIR = BENCH_DIR / "out"
RESULTS_MD = BENCH_DIR / "RESULTS.md"
WRK_SCRIPT = BENCH_DIR / "wrk.lua"
HOST = "127.0.0.1"  # the only address this benchmark ever targets
CIBA_GRANT = "urn:openid:params:grant-type:ciba"
POLL_INTERVAL_S = 5  # the server's default interval: an id polled again sooner gets slow_down
RATIO_TARGET = 0.60
# A pending request is polled again GAP_MARGIN_SECONDS after its interval, so that queueing in the server never makes
# a poll early. The pool of pending requests is sized for polls at up to POLL_RATE_CEILING_SHARE of the ceiling,
# created with at most TOPUP_MAX_SECONDS of bc-authorize beyond the measured phase.
GAP_MARGIN_SECONDS = 0.3
POLL_RATE_CEILING_SHARE = 0.7
# Settings the caller's environment may change for an experiment; RESULTS.md names them when set.
PASSED_THROUGH = ("DB_CONN_MAX_AGE", "DB_CONN_HEALTH_CHECKS", "LOG_LEVEL")
TOPUP_MAX_SECONDS = 50
CLK_TCK = os.sysconf("SC_CLK_TCK")

try:  # the project's virtualenv has both
    import psycopg
    import redis
    from psycopg import sql as pgsql
except ImportError as exc:  # pragma: no cover - a message, not a traceback
    sys.exit(f"bench: {exc}. Run it with the project's virtualenv: `make bench` or `.venv/bin/python bench/run.py`.")


import ping as bench_ping  # noqa: E402 - bench/ping.py, next to this file
import prompts as bench_prompts  # noqa: E402 - bench/prompts.py, next to this file


class BenchError(Exception):
    """A failure with a message meant for the person running the benchmark."""


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --------------------------------------------------------------------------------------------------------- options


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=int, default=15, help="measured seconds per phase (default 15)")
    p.add_argument("--warmup", type=int, default=3, help="unmeasured seconds before each phase (default 3)")
    # Defaults chosen by measurement on the 2-core machine (bench/RESULTS.md): 2 and 3 workers gave the same
    # throughput within run-to-run noise (ceiling ~3,100-3,800 req/s, pending polls ~1,500-1,900 req/s), 4 workers
    # less (more context switches, one more backend); 6 or 12 connections no more than 8, with higher p99 at 12.
    # 3 workers leave headroom for requests that wait on PostgreSQL (bc-authorize, polls that miss Redis).
    p.add_argument("--concurrency", type=int, default=8, help="open connections kept busy by wrk (default 8)")
    p.add_argument("--workers", type=int, default=3, help="gunicorn sync workers (default 3)")
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
        choices=("all", "prompts", "ping"),
        default="all",
        help="all phases (default), or only the prompt-latency phase or the ping phase (for development: prints\n"
        "its figures and writes bench/out/prompts.json or ping.json, leaves bench/RESULTS.md alone)",
    )
    p.add_argument("--ping-rate", type=float, default=20, help="ping phase: approvals per second (default 20)")
    p.add_argument("--ping-count", type=int, default=300, help="ping phase: measured approvals (default 300)")
    p.add_argument("--ping-warmup", type=int, default=40, help="ping phase: approvals not counted, first (default 40)")
    p.add_argument(
        "--ping-wait",
        type=float,
        default=10,
        help="ping phase: seconds a ping may take after the last approval before its request counts as lost\n"
        "(default 10)",
    )
    p.add_argument("--prompt-rate", type=float, default=50, help="prompt phase: bc-authorize per second (default 50)")
    p.add_argument("--prompt-duration", type=int, default=30, help="prompt phase: measured seconds (default 30)")
    p.add_argument("--prompt-warmup", type=int, default=3, help="prompt phase: unmeasured seconds first (default 3)")
    p.add_argument(
        "--prompt-wait",
        type=float,
        default=10,
        help="prompt phase: seconds an SMS may take after the "
        "load stops before its request counts as lost (default 10)",
    )
    p.add_argument("--prompt-approvers", type=int, default=8, help="prompt phase: approvers with a phone (default 8)")
    # Chosen by measurement on the 2-core machine (bench/README.md): see PROMPT_WORKER_NOTE.
    p.add_argument(
        "--prompt-pool",
        choices=("prefork", "threads", "solo"),
        default="threads",
        help="prompt phase: Celery worker pool (default threads)",
    )
    p.add_argument(
        "--prompt-concurrency", type=int, default=8, help="prompt phase: Celery worker concurrency (default 8)"
    )
    p.add_argument(
        "--wait-quiet",
        type=int,
        default=30,
        help="wait up to this many seconds for other processes' CPU use to drop below 10 %% (default 30)",
    )
    p.add_argument("--no-access-log", action="store_true", help="run gunicorn without its access log")
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
    args.threads = max(1, min(args.threads, args.concurrency))
    return args


# ------------------------------------------------------------------------------------------------------- preflight


def admin_dsn(args: argparse.Namespace, dbname: str = "postgres") -> str:
    return f"host={HOST} port={args.pg_port} user={args.pg_user} dbname={dbname} connect_timeout=3"


def check_postgres(args: argparse.Namespace) -> str:
    try:
        with psycopg.connect(admin_dsn(args), autocommit=True) as conn:
            return conn.execute("SHOW server_version").fetchone()[0]
    except psycopg.Error as exc:
        raise BenchError(
            f"PostgreSQL is not reachable at {HOST}:{args.pg_port} as {args.pg_user} ({exc}).\n"
            "Start it (Debian: pg_ctlcluster 15 main start) or point --pg-port/--pg-user at one."
        ) from exc


@dataclass
class OwnRedis:
    """The benchmark's own redis-server: the test suite flushes the system Redis's databases (15..0) while it runs,
    which would empty the benchmark's broker and cache under it."""

    proc: subprocess.Popen | None = None
    port: int = 0

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if not binary:
            raise BenchError(
                "redis-server is missing: install it (Debian: apt-get install redis-server) or point --redis-port "
                "at a running Redis."
            )
        self.port = free_port()
        log_file = (OUT_DIR / "redis.log").open("w")
        cmd = [binary, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(
            cmd,
            cwd=OUT_DIR,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log_file.close()
        client = redis.Redis(host=HOST, port=self.port, socket_connect_timeout=1, socket_timeout=2)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"redis-server exited with {self.proc.returncode}: see {OUT_DIR / 'redis.log'}")
            with contextlib.suppress(redis.RedisError):
                client.ping()
                return
            time.sleep(0.05)
        raise BenchError(f"redis-server did not answer on {HOST}:{self.port} within 10 s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


OWN_REDIS = OwnRedis()


def redis_url(args: argparse.Namespace) -> str:
    return f"redis://{HOST}:{args.redis_port}/{args.redis_db}"


def check_redis(args: argparse.Namespace) -> str:
    try:
        client = redis.Redis.from_url(redis_url(args), socket_connect_timeout=3, socket_timeout=5)
        client.ping()
        return client.info("server")["redis_version"]
    except redis.RedisError as exc:
        if OWN_REDIS.proc is not None:
            raise BenchError(
                f"The benchmark's own redis-server on port {args.redis_port} does not answer ({exc})"
            ) from exc
        raise BenchError(
            f"Redis is not reachable at {HOST}:{args.redis_port} ({exc}).\n"
            "Start it, e.g.: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no"
        ) from exc


def flush_redis(args: argparse.Namespace) -> None:
    redis.Redis.from_url(redis_url(args), socket_connect_timeout=3, socket_timeout=10).flushdb()


def ensure_wrk() -> str:
    """wrk from Debian's packages, installed when missing (root, apt-get)."""
    if not shutil.which("wrk"):
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            raise BenchError("wrk is missing and cannot be installed here: install it (Debian: apt-get install wrk).")
        log("wrk is missing: installing it with apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-qq", "wrk"]
        if subprocess.run(install, env=env, capture_output=True, timeout=300).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=300)
            done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=300)
            if done.returncode != 0:
                raise BenchError(f"apt-get install wrk failed:\n{done.stderr[-2000:]}")
    first = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.splitlines()
    return first[0].split(" Copyright")[0].strip() if first else "wrk"


# ---------------------------------------------------------------------------------------------------------- set-up


def recreate_database(args: argparse.Namespace) -> None:
    with psycopg.connect(admin_dsn(args), autocommit=True) as conn:
        name = pgsql.Identifier(args.database)
        conn.execute(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        conn.execute(pgsql.SQL("CREATE DATABASE {}").format(name))


def generate_rsa_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def server_env(args: argparse.Namespace, port: int) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "APPROVALS_", "COUNTERSIGN_")) and k != "GUNICORN_CMD_ARGS"
    }
    origin = f"http://{HOST}:{port}"
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50),
        OIDC_RSA_PRIVATE_KEY=generate_rsa_pem(),
        DATABASE_URL=f"postgres://{args.pg_user}@{HOST}:{args.pg_port}/{args.database}",
        REDIS_URL=redis_url(args),
        # Prompts are queued on the Redis broker as in production. Phases a-c run no Celery worker (the queue is
        # purged before the prompt phase, which runs one).
        CELERY_BROKER_URL=redis_url(args),
        # The abuse limit (default 5 bc-authorize a minute per client and person) would refuse nearly every
        # benchmark request with access_denied: off for the benchmark.
        APPROVALS_PROMPTS_PER_MINUTE="0",
        ALLOWED_HOSTS=f"{HOST},localhost",
        COUNTERSIGN_ISSUER=origin,
        COUNTERSIGN_PUBLIC_URL=origin,
        COUNTERSIGN_VAR_DIR=str(OUT_DIR / "var"),
        PYTHONUNBUFFERED="1",
    )
    return env


def manage(env: dict[str, str], *argv: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise BenchError(f"manage.py {' '.join(argv[:1])} failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    return done.stdout


def manage_json(env: dict[str, str], *argv: str) -> dict[str, Any]:
    output = manage(env, *argv)
    for line in reversed(output.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise BenchError(f"manage.py {argv[0]} printed no JSON:\n{output[-2000:]}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------------------- server


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    log_path: Path

    def worker_pids(self) -> list[int]:
        return [pid for pid, info in proc_table().items() if info[1] == self.proc.pid]

    def log_tail(self, n: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return ""

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        # Workers are in the master's process group; make sure none outlived it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def start_server(args: argparse.Namespace, env: dict[str, str], port: int, log_name: str = "gunicorn.log") -> Server:
    log_path = OUT_DIR / log_name
    cmd = [
        sys.executable,
        "-m",
        "gunicorn",
        "config.wsgi",
        "--bind",
        f"{HOST}:{port}",
        "--workers",
        str(args.workers),
        "--worker-class",
        "sync",
    ]
    if not args.no_access_log:
        cmd += ["--access-logfile", "-"]  # as docker-compose.yml runs it
    log_file = log_path.open("w")
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log_file.close()
    server = Server(proc=proc, port=port, log_path=log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"gunicorn exited with {proc.returncode} while starting:\n{server.log_tail()}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            status, _ = http_request(port, "GET", "/healthz/")
            if status == 200 and len(server.worker_pids()) >= args.workers:
                return server
        time.sleep(0.2)
    server.stop()
    raise BenchError(f"gunicorn did not answer GET /healthz/ on {HOST}:{port} within 30 s:\n{server.log_tail()}")


def http_request(
    port: int, method: str, path: str, body: str | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def smoke_test(port: int, auth: str, bc_body: str) -> int:
    """One request of each kind, so that a misconfiguration fails here with its answer rather than as errors.
    Returns the poll interval the server asks for."""
    form = {"Authorization": auth, "Content-Type": "application/x-www-form-urlencoded"}
    status, body = http_request(port, "POST", "/oauth/bc-authorize/", bc_body, form)
    if status != 200:
        raise BenchError(f"POST /oauth/bc-authorize/ answered {status}: {body[:500]!r}")
    acknowledgement = json.loads(body)
    auth_req_id = acknowledgement["auth_req_id"]
    poll = urlencode({"grant_type": CIBA_GRANT, "auth_req_id": auth_req_id})
    answers = []
    for _ in range(2):
        status, body = http_request(port, "POST", "/oauth/token/", poll, form)
        answers.append((status, json.loads(body).get("error")))
    if answers != [(400, "authorization_pending"), (400, "slow_down")]:
        raise BenchError(f"Unexpected CIBA poll answers (want pending, then slow_down): {answers}")
    return int(acknowledgement.get("interval") or POLL_INTERVAL_S)


# ------------------------------------------------------------------------------------------------------------- CPU


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


@dataclass
class CpuSample:
    at: float
    ticks: dict[int, tuple[str, int]]  # pid -> (group, utime + stime)
    busy: int
    total: int
    steal: int  # time the hypervisor gave another guest: a noisy neighbour


GROUPS = ("gunicorn", "postgres", "redis", "celery", "bench")


def cpu_sample(server: Server, worker_pgrp: int | None = None) -> CpuSample:
    """bench = this process (the prompt phase's load generator and fake Twilio; idle while wrk runs)."""
    ticks = {}
    own_redis = OWN_REDIS.proc.pid if OWN_REDIS.proc is not None else None
    me = os.getpid()
    for pid, (comm, _ppid, pgrp, used) in proc_table().items():
        if pgrp == server.proc.pid:
            ticks[pid] = ("gunicorn", used)
        elif worker_pgrp is not None and pgrp == worker_pgrp:
            ticks[pid] = ("celery", used)
        elif pid == me:
            ticks[pid] = ("bench", used)
        elif comm == "postgres":
            ticks[pid] = ("postgres", used)
        elif pid == own_redis or (own_redis is None and comm.startswith("redis-server")):
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


def background_load(seconds: float = 2.0) -> tuple[float, list[str]]:
    """CPU busy % of the whole machine over a short interval before the run, and the busiest processes."""

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


# -------------------------------------------------------------------------------------------------------- PostgreSQL


def wait_until_drained(port: int, timeout: float = 10.0) -> None:
    """Wait until the server has answered everything wrk left queued: when wrk stops, requests still sit in the
    listen backlog and the workers finish them. Counts the server's established and half-closed sockets."""
    local = f"{socket.inet_aton(HOST)[::-1].hex().upper()}:{port:04X}"
    deadline = time.monotonic() + timeout
    quiet_since = None
    while time.monotonic() < deadline:
        with open("/proc/net/tcp") as f:
            busy = sum(1 for line in f.readlines()[1:] if line.split()[1] == local and line.split()[3] in ("01", "08"))
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= 0.2:
            return
        time.sleep(0.02)


@dataclass
class PgSnapshot:
    rows: dict[str, int]  # per table: n_tup_ins + n_tup_upd + n_tup_del
    xacts: int  # transactions committed or rolled back in the bench database


def pg_snapshot(args: argparse.Namespace, port: int) -> PgSnapshot:
    """Rows written per table and transactions so far, with every server backend's stats flushed first.

    PostgreSQL 15 flushes a backend's table counters at most once a second and, when the backend then goes idle, only
    after up to 10 s. A backend flushes everything when it exits, so once the service is idle its database
    connections are ended here; Django reconnects on the next request (CONN_HEALTH_CHECKS), inside the next phase's
    warm-up.
    """
    wait_until_drained(port)
    others = (
        "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND backend_type = 'client backend'"
    )
    with psycopg.connect(admin_dsn(args, args.database), autocommit=True) as conn:
        deadline = time.monotonic() + 10
        while conn.execute(f"SELECT count(*) {others}").fetchone()[0]:
            if time.monotonic() > deadline:
                raise BenchError("the service's PostgreSQL connections did not end within 10 s")
            conn.execute(f"SELECT pg_terminate_backend(pid) {others}")
            time.sleep(0.05)
        conn.execute("SELECT pg_stat_clear_snapshot()")
        rows = conn.execute("SELECT relname, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables").fetchall()
        xacts = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()[0]
    return PgSnapshot({name: int(count) for name, count in rows}, int(xacts))


def written_between(before: PgSnapshot, after: PgSnapshot) -> dict[str, int]:
    a, b = after.rows, before.rows
    return {t: a.get(t, 0) - b.get(t, 0) for t in a if a.get(t, 0) != b.get(t, 0)}


# --------------------------------------------------------------------------------------------------------------- wrk


@dataclass
class Load:
    rps: float
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    socket_errors: int
    answers: dict[str, int]
    early: int  # polls made before the interval was over (no fresh request left)
    grown: int  # requests that joined the set being polled during this run
    ring: int  # requests being polled at the end of this run
    wrk_cpu_s: float
    cpu: dict[str, float] = field(default_factory=dict)


def run_wrk(args: argparse.Namespace, port: int, name: str, path: str, seconds: int, extra_env: dict[str, str]) -> Load:
    result_path = OUT_DIR / f"wrk-{name}.json"
    result_path.unlink(missing_ok=True)
    env = {**os.environ, **extra_env, "BENCH_RESULT": str(result_path), "BENCH_THREADS": str(args.threads)}
    cmd = [
        "wrk",
        f"--threads={args.threads}",
        f"--connections={args.concurrency}",
        f"--duration={seconds}s",
        "--timeout=10s",
        f"--script={WRK_SCRIPT}",
        f"http://{HOST}:{port}{path}",
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 60)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk ({name}) did not finish within {seconds + 60} s") from exc
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    (OUT_DIR / f"wrk-{name}.txt").write_text(done.stdout + done.stderr)
    if done.returncode != 0 or not result_path.exists():
        raise BenchError(f"wrk ({name}) failed with {done.returncode}:\n{done.stdout[-1500:]}{done.stderr[-1500:]}")
    raw = json.loads(result_path.read_text())
    seconds_run = raw["duration_us"] / 1e6
    lat = raw["latency_us"]
    errors = raw["errors"]
    return Load(
        rps=raw["requests"] / seconds_run,
        requests=raw["requests"],
        seconds=seconds_run,
        p50_ms=lat["p50"] / 1000,
        p90_ms=lat["p90"] / 1000,
        p99_ms=lat["p99"] / 1000,
        max_ms=lat["max"] / 1000,
        socket_errors=errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
        answers={**raw["answers"], "status_ge_400": errors["status"]},
        early=raw.get("early", 0),
        grown=raw.get("grown", 0),
        ring=raw.get("ring", 0),
        wrk_cpu_s=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
    )


def log_load(name: str, load: Load) -> None:
    log(
        f"{name}: {load.rps:,.0f} req/s, p50 {load.p50_ms:.2f} ms, p99 {load.p99_ms:.2f} ms, "
        f"answers {load.answers}, socket errors {load.socket_errors}, CPU busy {load.cpu['busy']:.0f}%"
    )


def measure(
    args: argparse.Namespace,
    server: Server,
    name: str,
    path: str,
    extra_env: dict[str, str],
    warmup: int | None = None,
) -> tuple[Load, Load]:
    """A warm-up run, then the measured run (with CPU accounting around it)."""
    warm = run_wrk(args, server.port, f"{name}-warmup", path, warmup or args.warmup, extra_env)
    wait_until_drained(server.port)
    before = cpu_sample(server)
    load = run_wrk(args, server.port, name, path, args.duration, extra_env)
    load.cpu = cpu_shares(before, cpu_sample(server), load.wrk_cpu_s)
    if server.proc.poll() is not None:
        raise BenchError(f"gunicorn died during {name}:\n{server.log_tail()}")
    log_load(name, load)
    return warm, load


def add_rows(total: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    return {t: total.get(t, 0) + more.get(t, 0) for t in {*total, *more}}


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


def poll_phase(
    args: argparse.Namespace,
    server: Server,
    auth: str,
    bc_env: dict[str, str],
    bc_rps: float,
    ceiling_rps: float,
    interval: int,
) -> PollResult:
    """Pending polls, as agents that honour the interval make them (see wrk.lua): each pending request is polled
    again once `gap` seconds (its interval and a margin) have passed, and the set of requests being polled grows
    until the server is saturated. The pool of pending requests must hold rate * gap of them; it is sized for polls
    at up to POLL_RATE_CEILING_SHARE of the ceiling and topped up with more bc-authorize requests before any poll.

    A warm-up fills the set, PostgreSQL's statistics are read, a 1 s re-warm lets the workers reconnect to the
    database, and the measured run follows; the statistics are read again after it.
    """
    prefix = Path(bc_env["BENCH_IDS_OUT"])
    gap = interval + GAP_MARGIN_SECONDS
    target = args.pool or max(2000, math.ceil(POLL_RATE_CEILING_SHARE * ceiling_rps * gap))
    budget = TOPUP_MAX_SECONDS
    for _ in range(3):  # bounded top-up
        have = len(collect_ids(prefix))
        missing = target - have
        seconds = min(budget, max(1, math.ceil(missing / max(bc_rps, 1) * 1.1)))
        if missing <= 0 or budget <= 0:
            break
        budget -= seconds
        log(f"pool of {have:,} pending requests is short of {target:,}: {seconds} s more of bc-authorize")
        run_wrk(args, server.port, "pool-topup", "/oauth/bc-authorize/", seconds, bc_env)
    # Shuffled (reproducibly): the requests that join the set being polled then have creation times spread over the
    # whole creation window, rather than all being the oldest, so that per-request state the server keeps for a
    # while (e.g. with a time to live) does not all expire at once.
    pool = collect_ids(prefix)
    random.Random(4711).shuffle(pool)
    pool_path = OUT_DIR / "pool.txt"
    pool_path.write_text("\n".join(pool) + "\n")
    state_path = OUT_DIR / "poll-state.txt"
    state_path.unlink(missing_ok=True)
    poll_env = {
        "BENCH_MODE": "poll",
        "BENCH_AUTH": auth,
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
    before = cpu_sample(server)
    polls = run_wrk(args, server.port, "pending-polls", path, args.duration, poll_env)
    polls.cpu = cpu_shares(before, cpu_sample(server), polls.wrk_cpu_s)
    if server.proc.poll() is not None:
        raise BenchError(f"gunicorn died during the pending polls:\n{server.log_tail()}")
    end = pg_snapshot(args, server.port)
    rows = add_rows(rows, written_between(mid, end))
    log_load("pending-polls", polls)
    log(f"pending polls: {polls.ring:,} requests being polled, {polls.grown:,} joined during the measured run")
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


# ---------------------------------------------------------------------------------------------- prompts (issue 3)

PROMPT_P50_TARGET_MS = 150
PROMPT_P99_TARGET_MS = 1000
PROMPT_WORKER_NOTE = (
    "threads, concurrency 8. A prompt costs the worker ~11-13 ms of CPU and ~19 ms of wall time (12 SQL statements "
    "and the twilio call, measured in-process), so at 50/s the worker needs about half a core and spends a third "
    "of each task waiting: 8 threads overlap those waits in "
    "one process (one GIL is enough for half a core) without prefork's pipe traffic through a main process. "
    "Measured here, 30 s at 50/s each, on a machine that other sessions' test suites kept 25-50 % busy at the time "
    "(so the figures are noisy): p50 threads/8 0.19 s and 3.0 s, threads/4 3.3 s, prefork/2 0.6 s, 6.8 s and 8.5 s "
    "(218 lost), prefork/4 5.0 s; threads/8 on a quiet machine: p50 20-26 ms, p99 108-148 ms, then 8 ms and 17 ms "
    "once the worker kept its database connections between tasks (config/celery.py)"
)


@dataclass
class PromptResult:
    stats: bench_prompts.PromptStats
    cpu: dict[str, float]
    pg_sessions: int  # PostgreSQL sessions opened in the bench database during the measured run
    worker: str
    approvers: int
    warm: tuple[int, int]
    seconds: float  # the phase's wall time, set-up included


def create_sms_approvers(env: dict[str, str], count: int) -> list[str]:
    """Approvers with a phone each (fictional UK mobile numbers, +44 7700 900xxx), created concurrently."""
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> str:
        made = manage_json(
            env,
            "create_approver",
            f"bench-sms-{i}",
            f"--password={secrets.token_urlsafe(24)}",
            "--phone",
            f"+447700900{100 + i:03d}",
        )
        if not made.get("phone_number"):
            raise BenchError(f"create_approver --phone stored no phone: {made}")
        return made["username"]

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(one, range(count)))


def prompt_phase(args: argparse.Namespace, auth: str) -> PromptResult:
    """bc-authorize at a steady rate, open loop; a real Celery worker sends each prompt through the twilio client to
    a fake Twilio in this process; latency = SMS accepted by the fake - bc-authorize's 200 read by the generator."""
    started = time.monotonic()
    fake = bench_prompts.FakeTwilio(account_sid="AC" + secrets.token_hex(16), auth_token=secrets.token_hex(16))
    server = worker = None
    try:
        port = free_port()
        env = server_env(args, port)
        env.update(
            APPROVALS_PROMPT_CHANNELS="approvals.channels.twilio_sms.TwilioSmsChannel",
            TWILIO_ACCOUNT_SID=fake.account_sid,
            TWILIO_AUTH_TOKEN=fake.auth_token,
            TWILIO_FROM_NUMBER="+447700900001",
            TWILIO_API_BASE=fake.base_url,
            TWILIO_STATUS_CALLBACKS="false",
        )
        log(f"prompts: creating {args.prompt_approvers} approvers with a phone")
        hints = create_sms_approvers(env, args.prompt_approvers)
        # Tasks queued by phases a-c (no worker ran) must not reach this worker: empty the broker first.
        flush_redis(args)
        log(
            f"prompts: fake Twilio on {fake.base_url}; gunicorn ({args.workers} sync workers) and a Celery worker "
            f"({args.prompt_pool}, concurrency {args.prompt_concurrency})"
        )
        server = start_server(args, env, port, "gunicorn-prompts.log")
        worker = bench_prompts.start_worker(env, args.prompt_pool, args.prompt_concurrency, OUT_DIR / "celery.log")
        # Smoke test, which also waits for the worker to be up: one request, its SMS within 30 s.
        form = {"Authorization": auth, "Content-Type": "application/x-www-form-urlencoded"}
        body = urlencode({"scope": "openid", "login_hint": hints[0], "binding_message": "S1"})
        status, answer = http_request(port, "POST", "/oauth/bc-authorize/", body, form)
        if status != 200:
            raise BenchError(f"prompts: POST /oauth/bc-authorize/ answered {status}: {answer[:500]!r}")
        try:
            fake.wait_for_messages(1, timeout=30)
        except AssertionError as exc:
            raise BenchError(
                f"prompts: no SMS reached the fake within 30 s ({str(exc)[:500]}).\nCelery worker log:\n"
                f"{worker.log_tail()}"
            ) from exc
        wait_until_drained(port)
        time.sleep(1)  # let the worker go idle
        # Other processes' CPU use turns straight into queueing here (the worker's and gunicorn's share shrinks):
        # wait for a quiet machine as at the start, then note what was taken anyway.
        busy, busiest = background_load()
        deadline = time.monotonic() + args.wait_quiet
        while busy > 10 and time.monotonic() < deadline:
            log(f"prompts: the machine is {busy:.0f} % busy ({', '.join(busiest[:2])}); waiting for it to quieten")
            busy, busiest = background_load(3.0)
        load = bench_prompts.OpenLoop(
            port=port,
            auth=auth,
            login_hints=hints,
            rate=args.prompt_rate,
            warmup_s=args.prompt_warmup,
            duration_s=args.prompt_duration,
        )
        log(
            f"prompts: {args.prompt_warmup} s warm-up then {args.prompt_duration} s measured at "
            f"{args.prompt_rate:g} bc-authorize/s (open loop)"
        )
        worker_pgrp = worker.proc.pid
        gen = threading.Thread(target=load.run, daemon=True)
        gen.start()
        while not load.measured_start:
            time.sleep(0.01)
        time.sleep(max(0.0, load.measured_start - time.time()))
        sessions_0 = pg_sessions(args)
        before = cpu_sample(server, worker_pgrp)
        gen.join(timeout=args.prompt_warmup + args.prompt_duration + 30)
        after = cpu_sample(server, worker_pgrp)
        sessions = pg_sessions(args) - sessions_0
        if gen.is_alive():
            raise BenchError("prompts: the load generator did not finish")
        cpu = cpu_shares(before, after, 0.0)
        labels = {r.label for r in load.measured if r.status == 200}
        bench_prompts.wait_for_labels(fake, labels, time.time() + args.prompt_wait)
        if server.proc.poll() is not None or worker.proc.poll() is not None:
            raise BenchError(f"prompts: gunicorn or the worker died.\n{server.log_tail()}\n{worker.log_tail()}")
        time.sleep(0.5)  # a duplicate would come right after
        messages = fake.messages
        stats = bench_prompts.compute_stats(load, messages)
        warm = bench_prompts.warm_counts(load, messages)
        (OUT_DIR / "prompts-requests.tsv").write_text(
            "label\tscheduled\tsent\tanswered\tstatus\terror\n"
            + "".join(
                f"{r.label}\t{r.scheduled:.6f}\t{r.sent:.6f}\t{r.answered:.6f}\t{r.status}\t{r.error}\n"
                for r in load.requests
            )
        )
        (OUT_DIR / "prompts-sms.tsv").write_text(
            "label\treceived_at\tto\n"
            + "".join(f"{bench_prompts.sms_label(m)}\t{m.received_at:.6f}\t{m.to}\n" for m in messages)
        )
        description = worker.description
    finally:
        if worker is not None:
            worker.stop()
        if server is not None:
            server.stop()
        fake.close()
    result = PromptResult(stats, cpu, sessions, description, len(hints), warm, time.monotonic() - started)
    log_prompts(result)
    return result


def pg_sessions(args: argparse.Namespace) -> int:
    with psycopg.connect(admin_dsn(args, args.database), autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()").fetchone()
    return int(row[0])


def prompt_verdict(st: bench_prompts.PromptStats) -> bool:
    return (
        st.p50_ms < PROMPT_P50_TARGET_MS
        and st.p99_ms < PROMPT_P99_TARGET_MS
        and st.lost == 0
        and st.duplicates == 0
        and st.errors == 0
    )


def log_prompts(r: PromptResult) -> None:
    st = r.stats
    log(
        f"prompts: sent {st.sent}, answered 200 {st.answered_200}, SMS received {st.received}, lost {st.lost}, "
        f"duplicates {st.duplicates}; answer->SMS p50 {st.p50_ms:.1f} ms, p90 {st.p90_ms:.1f} ms, "
        f"p99 {st.p99_ms:.1f} ms, max {st.max_ms:.1f} ms; CPU {fmt_prompt_cpu(r.cpu)}; "
        f"target {'met' if prompt_verdict(st) else 'NOT met'}"
    )


def fmt_prompt_cpu(cpu: dict[str, float]) -> str:
    keys = ("gunicorn", "celery", "postgres", "redis", "bench", "other", "steal", "busy")
    return " / ".join(f"{cpu[k]:.0f}" for k in keys)


def prompt_verdict_line(r: PromptResult, args: argparse.Namespace) -> str:
    st = r.stats
    return (
        f"- Prompts: bc-authorize's answer to the SMS accepted by the fake Twilio, {args.prompt_rate:g} requests/s "
        f"for {args.prompt_duration} s: p50 **{st.p50_ms:.0f} ms**, p99 **{st.p99_ms:.0f} ms**, lost **{st.lost}**, "
        f"duplicates **{st.duplicates}** — target p50 < {PROMPT_P50_TARGET_MS} ms, p99 < {PROMPT_P99_TARGET_MS} ms, "
        f"none lost (nor duplicated, nor refused) — **{'MET' if prompt_verdict(st) else 'NOT MET'}**."
    )


def disturbance(cpu: dict[str, float], run: str) -> list[str]:
    """A caution line when processes outside the benchmark (or other guests) took CPU during an open-loop run."""
    taken = cpu["other"] + cpu["steal"]
    if taken <= 5:
        return []
    return [
        f"- Caution: during the {run} run {taken:.0f} % of the machine went to processes outside the benchmark or "
        "to other guests; gunicorn and the worker had that much less CPU, and at a fixed arrival rate that shows as "
        "queueing (higher latency), not as lower throughput."
    ]


def prompt_disturbance(r: PromptResult) -> list[str]:
    return disturbance(r.cpu, "prompt")


def prompt_section(r: PromptResult, args: argparse.Namespace) -> list[str]:
    st = r.stats
    errors = f" ({', '.join(f'{k}: {v}' for k, v in st.error_kinds.items())})" if st.error_kinds else ""
    return [
        "## Prompts (issue 3)",
        "",
        prompt_verdict_line(r, args),
        *prompt_disturbance(r),
        "",
        "| measured | p50 | p90 | p99 | max | min | sent | answered 200 | SMS received | lost | duplicates "
        "| CPU %: gunicorn / celery / pg / redis / bench / other / steal / busy |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        f"| bc-authorize answer → SMS at the fake (ms) | {st.p50_ms:.1f} | {st.p90_ms:.1f} | {st.p99_ms:.1f} | "
        f"{st.max_ms:.1f} | {st.min_ms:.1f} | {st.sent:,} | {st.answered_200:,} | {st.received:,} | {st.lost} | "
        f"{st.duplicates} | {fmt_prompt_cpu(r.cpu)} |",
        "",
        f"- Load: open loop, {args.prompt_rate:g} POST /oauth/bc-authorize/ a second on a fixed schedule (achieved "
        f"{st.achieved_rate:.2f}/s; {st.late_sends} requests left more than 20 ms after their slot), "
        f"{args.prompt_warmup} s warm-up (not counted) then {args.prompt_duration} s measured; each request opens "
        "its own connection (form-encoded, client_secret_basic), from a pool of 64 threads so that slow answers "
        f"never hold back the next request. login_hint rotates over {r.approvers} approvers, each with a phone; "
        "each request carries a unique binding_message ('B' + its number), which the SMS quotes: that is how an "
        "SMS is matched to its request (the SMS has no auth_req_id, by design).",
        f"- bc-authorize itself during the run (send → answer read): p50 {st.answer_p50_ms:.1f} ms, p99 "
        f"{st.answer_p99_ms:.1f} ms; answers other than 200: {st.errors}{errors}.",
        "- Latency = the time the fake Twilio parsed the Messages.json request (time.time()) − the time the "
        "generator had read bc-authorize's 200 answer (time.time()), both in the benchmark's process; the task is "
        "queued when the request's transaction commits, before the answer is written, so a fast worker can beat "
        "the answer (a latency near or below 0).",
        f"- Lost = answered 200 but no SMS within {args.prompt_wait:g} s after the load stopped; duplicates = "
        f"requests with more than one SMS; {st.unmatched} SMS matched no request. Warm-up: "
        f"{r.warm[1]:,} of its {r.warm[0]:,} requests prompted by then.",
        f"- Worker: `{r.worker}` on the benchmark's Redis as broker, same environment as gunicorn; chosen: "
        f"{PROMPT_WORKER_NOTE}. gunicorn: {args.workers} sync workers as above.",
        "- Prompt settings: APPROVALS_PROMPT_CHANNELS=approvals.channels.twilio_sms.TwilioSmsChannel, "
        "TWILIO_API_BASE=the fake's http://127.0.0.1:<port>, TWILIO_STATUS_CALLBACKS=false, random "
        "TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN checked by the fake, APPROVALS_PROMPTS_PER_MINUTE=0 (the abuse "
        "limit, off for every phase of the benchmark: it would refuse nearly all of its requests).",
        "- CPU: share of the whole machine during the measured 30 s; celery = the worker's process group; bench = "
        "the benchmark's own process (load generator and fake Twilio); pg = the whole PostgreSQL server, backends that "
        "exited included (through the postmaster's children time), and so also other databases' clients, such as a "
        "test suite running meanwhile.",
        f"- PostgreSQL sessions opened during the measured run: {r.pg_sessions:,} for {st.sent:,} prompts "
        f"({r.pg_sessions / max(st.sent, 1):.2f} a prompt). Celery's Django fixup would close the worker's database "
        "connections after every task; config/celery.py recycles them like web requests instead (CONN_MAX_AGE), "
        "which removed a new PostgreSQL backend per prompt, until then the largest cost in the chain.",
        f"- Phase wall time {r.seconds:.0f} s (approvers, a fresh gunicorn and worker, smoke test, load, wait). "
        "Raw data: bench/out/prompts-requests.tsv, prompts-sms.tsv, celery.log, gunicorn-prompts.log.",
        "",
    ]


def prompt_json(r: PromptResult) -> dict[str, Any]:
    return {
        "stats": vars(r.stats),
        "cpu": r.cpu,
        "pg_sessions": r.pg_sessions,
        "worker": r.worker,
        "approvers": r.approvers,
        "warm": r.warm,
        "seconds": r.seconds,
        "target_met": prompt_verdict(r.stats),
    }


# ------------------------------------------------------------------------------------------------- ping (issue 5)

PING_P50_TARGET_MS = 100


@dataclass
class PingResult:
    stats: bench_ping.PingStats
    cpu: dict[str, float]
    pg_sessions: int
    worker: str
    db_approved: int  # measured requests approved in the database after the run
    db_delivered: int  # their notifications marked delivered
    warm: tuple[int, int]  # warm-up approvals answered 302, and how many of them got a ping
    create_seconds: float  # creating the pending requests
    seconds: float  # the phase's wall time, set-up included


def _create_pending(port: int, auth: str, hint: str, labels: list[str]) -> list[tuple[str, str, str]]:
    """bc-authorize for each label, each with its own client_notification_token: [(label, auth_req_id, token)]."""
    from concurrent.futures import ThreadPoolExecutor

    form = {"Authorization": auth, "Content-Type": "application/x-www-form-urlencoded"}

    def one(label: str) -> tuple[str, str, str]:
        token = f"{label}.{secrets.token_urlsafe(16)}"
        body = urlencode(
            {"scope": "openid", "login_hint": hint, "binding_message": label, "client_notification_token": token}
        )
        status, answer = http_request(port, "POST", "/oauth/bc-authorize/", body, form)
        if status != 200:
            raise BenchError(f"ping: POST /oauth/bc-authorize/ answered {status}: {answer[:500]!r}")
        return label, json.loads(answer)["auth_req_id"], token

    with ThreadPoolExecutor(max_workers=6) as pool:
        return list(pool.map(one, labels))


def _request_ids(args: argparse.Namespace, auth_req_ids: list[str]) -> dict[str, str]:
    with psycopg.connect(admin_dsn(args, args.database), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT auth_req_id, id::text FROM approvals_approvalrequest WHERE auth_req_id = ANY(%s)", (auth_req_ids,)
        ).fetchall()
    return dict(rows)


def _unprompted(args: argparse.Namespace, auth_req_ids: list[str]) -> int:
    """Requests whose prompt task (console channel here) has not run yet: the worker is still busy with them."""
    with psycopg.connect(admin_dsn(args, args.database), autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM approvals_approvalrequest WHERE auth_req_id = ANY(%s) AND prompted_at IS NULL "
            "AND prompt_failed_at IS NULL",
            (auth_req_ids,),
        ).fetchone()[0]


def _db_outcome(args: argparse.Namespace, auth_req_ids: list[str]) -> tuple[int, int]:
    with psycopg.connect(admin_dsn(args, args.database), autocommit=True) as conn:
        approved = conn.execute(
            "SELECT count(*) FROM approvals_approvalrequest WHERE auth_req_id = ANY(%s) AND status = 'approved'",
            (auth_req_ids,),
        ).fetchone()[0]
        delivered = conn.execute(
            "SELECT count(*) FROM approvals_notification n JOIN approvals_approvalrequest r ON r.id = n.request_id "
            "WHERE r.auth_req_id = ANY(%s) AND n.status = 'delivered'",
            (auth_req_ids,),
        ).fetchone()[0]
    return approved, delivered


def ping_phase(args: argparse.Namespace) -> PingResult:
    """Pending requests of a ping client first; then the approver approves them at a steady rate, open loop; a real
    Celery worker pings the fake agent endpoint in this process; latency = ping received - decide POST sent."""
    started = time.monotonic()
    fake = bench_ping.FakeAgentEndpoint()
    server = worker = None
    try:
        port = free_port()
        env = server_env(args, port)
        password = secrets.token_urlsafe(24)
        approver = manage_json(env, "create_approver", "bench-ping-approver", f"--password={password}")
        # The fake listens on http://127.0.0.1: only accepted with this development setting. With DEBUG off, system
        # check E108 refuses it in manage.py commands (hence --skip-checks below); gunicorn and the worker run no
        # system checks.
        env["APPROVALS_OUTBOUND_ALLOW_LOOPBACK_HTTP"] = "true"
        client = manage_json(
            env,
            "create_agent_client",
            "--skip-checks",
            "--name",
            "bench-ping-agent",
            "--delivery-mode",
            "ping",
            "--notification-endpoint",
            fake.url,
        )
        credentials = f"{quote_plus(client['client_id'])}:{quote_plus(client['client_secret'])}"
        auth = "Basic " + base64.b64encode(credentials.encode()).decode()
        flush_redis(args)  # tasks queued by earlier phases with no worker must not reach this one
        log(
            f"ping: fake agent endpoint {fake.url}; gunicorn ({args.workers} sync workers) and a Celery worker "
            f"({args.prompt_pool}, concurrency {args.prompt_concurrency})"
        )
        server = start_server(args, env, port, "gunicorn-ping.log")
        worker = bench_prompts.start_worker(env, args.prompt_pool, args.prompt_concurrency, OUT_DIR / "celery-ping.log")
        browser = bench_ping.Browser(port)
        try:
            browser.login(approver["username"], password)
        except bench_ping.PingError as exc:
            raise BenchError(f"ping: {exc}") from exc

        # Smoke test, which also waits for the worker: one request approved, its ping within 30 s.
        ((_, smoke_id, _),) = _create_pending(port, auth, approver["username"], ["S1"])
        smoke_pk = _request_ids(args, [smoke_id])[smoke_id]
        decide_form = {"decision": "approve", "csrfmiddlewaretoken": browser.cookies["csrftoken"]}
        status, location, page = browser.request("POST", f"/approvals/{smoke_pk}/decide/", decide_form)
        if status != 302 or not location.endswith(bench_ping.decided_location(smoke_pk)):
            raise BenchError(f"ping: POST decide answered {status} (Location {location!r}): {page[:300]!r}")
        try:
            fake.wait_for(1, timeout=30)
        except AssertionError as exc:
            raise BenchError(
                f"ping: no ping reached the fake within 30 s ({str(exc)[:300]}).\nCelery worker log:\n"
                f"{worker.log_tail()}"
            ) from exc

        labels = [f"W{k}" for k in range(args.ping_warmup)] + [f"A{k}" for k in range(args.ping_count)]
        log(f"ping: creating {len(labels)} pending requests (bc-authorize with a client_notification_token each)")
        t0 = time.monotonic()
        created = _create_pending(port, auth, approver["username"], labels)
        create_seconds = time.monotonic() - t0
        ids = _request_ids(args, [rid for _, rid, _ in created])
        approvals = [
            bench_ping.Approval(label=label, request_id=ids[rid], auth_req_id=rid, token=token)
            for label, rid, token in created
        ]
        # Their prompts (console channel) keep the worker busy for a moment: let it finish first.
        deadline = time.monotonic() + 60
        while _unprompted(args, list(ids)) and time.monotonic() < deadline:
            time.sleep(0.2)
        wait_until_drained(port)
        time.sleep(1)
        busy, busiest = background_load()
        deadline = time.monotonic() + args.wait_quiet
        while busy > 10 and time.monotonic() < deadline:
            log(f"ping: the machine is {busy:.0f} % busy ({', '.join(busiest[:2])}); waiting for it to quieten")
            busy, busiest = background_load(3.0)

        load = bench_ping.ApproveLoop(browser=browser, approvals=approvals, rate=args.ping_rate)
        log(
            f"ping: {args.ping_warmup} approvals warm-up then {args.ping_count} measured at {args.ping_rate:g} "
            "decide POSTs/s (open loop)"
        )
        worker_pgrp = worker.proc.pid
        gen = threading.Thread(target=load.run, daemon=True)
        gen.start()
        while not load.measured_start:
            time.sleep(0.01)
        time.sleep(max(0.0, load.measured_start - time.time()))
        sessions_0 = pg_sessions(args)
        before = cpu_sample(server, worker_pgrp)
        gen.join(timeout=len(approvals) / args.ping_rate + 30)
        time.sleep(0.3)  # the last pings
        after = cpu_sample(server, worker_pgrp)
        sessions = pg_sessions(args) - sessions_0
        if gen.is_alive():
            raise BenchError("ping: the load generator did not finish")
        cpu = cpu_shares(before, after, 0.0)
        wanted = {a.auth_req_id for a in load.approvals if a.status == 302}
        bench_ping.wait_for_pings(fake, wanted, time.time() + args.ping_wait)
        if server.proc.poll() is not None or worker.proc.poll() is not None:
            raise BenchError(f"ping: gunicorn or the worker died.\n{server.log_tail()}\n{worker.log_tail()}")
        time.sleep(0.5)  # a duplicate would come right after
        pings = [p for p in fake.received if bench_ping.ping_id(p) != smoke_id]
        stats = bench_ping.compute_stats(load, pings)
        got = {bench_ping.ping_id(p) for p in pings}
        warm_ok = [a for a in load.approvals if a.label.startswith("W") and a.status == 302]
        warm = (len(warm_ok), sum(1 for a in warm_ok if a.auth_req_id in got))
        db_approved, db_delivered = _db_outcome(args, [a.auth_req_id for a in load.measured])
        first_ping = {}
        for p in pings:
            first_ping.setdefault(bench_ping.ping_id(p), p.received_at)
        (OUT_DIR / "ping-approvals.tsv").write_text(
            "label\tauth_req_id\tscheduled\tsent\tanswered\tstatus\tlocation\terror\tfirst_ping\n"
            + "".join(
                f"{a.label}\t{a.auth_req_id}\t{a.scheduled:.6f}\t{a.sent:.6f}\t{a.answered:.6f}\t{a.status}\t"
                f"{a.location}\t{a.error}\t{first_ping.get(a.auth_req_id, 0):.6f}\n"
                for a in load.approvals
            )
        )
        (OUT_DIR / "ping-received.tsv").write_text(
            "auth_req_id\treceived_at\tpath\n"
            + "".join(f"{bench_ping.ping_id(p)}\t{p.received_at:.6f}\t{p.path}\n" for p in fake.received)
        )
        description = worker.description
    finally:
        if worker is not None:
            worker.stop()
        if server is not None:
            server.stop()
        fake.close()
    result = PingResult(
        stats, cpu, sessions, description, db_approved, db_delivered, warm, create_seconds, time.monotonic() - started
    )
    log_ping(result)
    return result


def ping_verdict(st: bench_ping.PingStats) -> bool:
    return st.p50_ms < PING_P50_TARGET_MS and st.lost == 0 and st.errors == 0 and st.duplicates == 0


def log_ping(r: PingResult) -> None:
    st = r.stats
    log(
        f"ping: approvals sent {st.sent}, approved (302) {st.approved}, pings received {st.received}, lost {st.lost}, "
        f"duplicates {st.duplicates}; decide POST->ping p50 {st.p50_ms:.1f} ms, p90 {st.p90_ms:.1f} ms, "
        f"p99 {st.p99_ms:.1f} ms, max {st.max_ms:.1f} ms; decide answer p50 {st.answer_p50_ms:.1f} ms; "
        f"CPU {fmt_prompt_cpu(r.cpu)}; target {'met' if ping_verdict(st) else 'NOT met'}"
    )


def ping_verdict_line(r: PingResult, args: argparse.Namespace) -> str:
    st = r.stats
    return (
        f"- Ping: the approver's decide POST to the ping received by the fake agent endpoint, {st.sent} approvals at "
        f"{args.ping_rate:g}/s: p50 **{st.p50_ms:.0f} ms**, p99 **{st.p99_ms:.0f} ms**, lost **{st.lost}**, "
        f"duplicates **{st.duplicates}** — target p50 < {PING_P50_TARGET_MS} ms (none lost, duplicated or refused) — "
        f"**{'MET' if ping_verdict(st) else 'NOT MET'}**."
    )


def ping_disturbance(r: PingResult) -> list[str]:
    return disturbance(r.cpu, "ping")


def ping_section(r: PingResult, args: argparse.Namespace) -> list[str]:
    st = r.stats
    errors = f" ({', '.join(f'{k}: {v}' for k, v in st.error_kinds.items())})" if st.error_kinds else ""
    return [
        "## Ping delivery (issue 5)",
        "",
        ping_verdict_line(r, args),
        *ping_disturbance(r),
        "",
        "| measured | p50 | p90 | p99 | max | min | approvals sent | approved (302) | pings received | lost "
        "| duplicates | CPU %: gunicorn / celery / pg / redis / bench / other / steal / busy |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        f"| decide POST sent → ping at the fake (ms) | {st.p50_ms:.1f} | {st.p90_ms:.1f} | {st.p99_ms:.1f} | "
        f"{st.max_ms:.1f} | {st.min_ms:.1f} | {st.sent:,} | {st.approved:,} | {st.received:,} | {st.lost} | "
        f"{st.duplicates} | {fmt_prompt_cpu(r.cpu)} |",
        "",
        f"- Load: a ping client (`create_agent_client --delivery-mode ping --notification-endpoint "
        "http://127.0.0.1:<port>/cb`, the fake agent endpoint of tests/fakes/agent_endpoint.py in the benchmark's "
        f"process, answering 204). {args.ping_warmup + st.sent:,} pending requests are created first "
        f"(bc-authorize, each with its own client_notification_token; {r.create_seconds:.1f} s), then the approver, "
        "signed in once through /accounts/login/ (so with a fresh-password session), approves them one after another: "
        f"open loop, {args.ping_rate:g} POST /approvals/<id>/decide/ a second on a fixed schedule (achieved "
        f"{st.achieved_rate:.2f}/s; {st.late_sends} left more than 20 ms after their slot) from a pool of 8 threads, "
        f"each on its own connection with the session and CSRF cookies; {args.ping_warmup} approvals of warm-up "
        f"(not counted; {r.warm[1]} of {r.warm[0]} pinged) then {st.sent:,} measured.",
        "- Latency = the time the fake parsed the ping (time.time()) − the time just before the decide POST was "
        "sent (time.time()), both in the benchmark's process, matched by the auth_req_id in the ping's body. It "
        "covers the whole decide request (session, CSRF, the transaction that writes the Notification), the task "
        "enqueued on commit, the worker's delivery (claim, attempt rows, the SSRF-checked POST) and the fake. "
        f"The decide answer itself (sent → 302 read): p50 {st.answer_p50_ms:.1f} ms, p99 {st.answer_p99_ms:.1f} ms; "
        f"ping after that answer: p50 {st.after_answer_p50_ms:.1f} ms.",
        f"- Approved = a 302 back to the request's page ({st.errors} other answers{errors}); the database agrees: "
        f"{r.db_approved:,} of the {st.sent:,} measured requests approved, {r.db_delivered:,} notifications marked "
        f"delivered. Lost = approved but no ping within {args.ping_wait:g} s after the last approval; duplicates = "
        f"requests pinged more than once; {st.bad_token} pings carried a Bearer token other than the request's "
        f"client_notification_token; {st.unmatched} pings matched no request.",
        f"- Worker: `{r.worker}` (as in the prompt phase), broker emptied first; the requests' own prompts (console "
        "channel) are all sent before the approvals start. gunicorn: a fresh one, "
        f"{args.workers} sync workers. PostgreSQL sessions opened during the measured run: {r.pg_sessions}.",
        "- Setting for this phase only: APPROVALS_OUTBOUND_ALLOW_LOOPBACK_HTTP=true (for gunicorn, the worker and "
        "`create_agent_client`), so that the http://127.0.0.1 notification endpoint is accepted; production refuses "
        "it: with DEBUG off system check E108 flags the setting, so `create_agent_client` runs with `--skip-checks` "
        "(gunicorn and the worker run no system checks). The session "
        "and CSRF cookies are Secure with DEBUG off; the benchmark sends them itself over the plain-http loopback.",
        f"- Phase wall time {r.seconds:.0f} s. Raw data: bench/out/ping-approvals.tsv, ping-received.tsv, "
        "celery-ping.log, gunicorn-ping.log.",
        "",
    ]


def ping_json(r: PingResult) -> dict[str, Any]:
    return {
        "stats": vars(r.stats),
        "cpu": r.cpu,
        "pg_sessions": r.pg_sessions,
        "worker": r.worker,
        "db_approved": r.db_approved,
        "db_delivered": r.db_delivered,
        "warm": r.warm,
        "create_seconds": r.create_seconds,
        "seconds": r.seconds,
        "target_met": ping_verdict(r.stats),
    }


# ------------------------------------------------------------------------------------------------------------ report


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


def fmt_cpu(cpu: dict[str, float]) -> str:
    return " / ".join(f"{cpu[k]:.0f}" for k in ("gunicorn", "postgres", "redis", "wrk", "other", "steal", "busy"))


def pool_warning(polls: Load, pool_size: int) -> list[str]:
    """Early polls or slow_down answers: the pool was too small for the rate reached, or polls came too early."""
    share = max(polls.early, polls.answers["slow_down"]) / max(polls.requests, 1)
    if share <= 0.01:
        return []
    return [
        f"- Caution: {100 * share:.1f} % of the measured polls were early or got slow_down (the pool of "
        f"{pool_size:,} pending requests ran out at {polls.rps:,.0f} polls/s, or answers were slow): these are not "
        "the figures of pending polls; run again with a larger --pool."
    ]


def disturbances(loads: dict[str, Load]) -> list[str]:
    """A warning line per measured run that other processes or the hypervisor took more than 5 % of the CPU."""
    notes = []
    for name, load in loads.items():
        taken = load.cpu["other"] + load.cpu["steal"]
        if taken > 5:
            notes.append(
                f"- Caution: during the {name} run {taken:.0f} % of the machine went to processes outside the "
                "benchmark or to other guests; that figure is lower than a quiet machine would give."
            )
    return notes


def write_results(r: dict[str, Any]) -> None:
    ceiling: Load = r["ceiling"]
    ceiling_after: Load = r["ceiling_after"]
    ceiling_rps = (ceiling.rps + ceiling_after.rps) / 2
    bc: Load = r["bc"]
    polls: Load = r["polls"]
    ratio = polls.rps / ceiling_rps
    ratio_met = ratio >= RATIO_TARGET
    rows = sum(r["rows_polls"].values())
    a = polls.answers
    poll_total = max(polls.requests, 1)
    args = r["args"]

    def row(label: str, load: Load, errors: int) -> str:
        return (
            f"| {label} | {load.rps:,.0f} | {load.p50_ms:.2f} | {load.p90_ms:.2f} | {load.p99_ms:.2f} | "
            f"{load.max_ms:.1f} | {load.requests:,} | {errors} | {fmt_cpu(load.cpu)} |"
        )

    mix = ", ".join(
        f"{k.replace('_', ' ')} {v:,} ({100 * v / poll_total:.2f} %)" for k, v in a.items() if k != "status_ge_400"
    )
    bc_rows = r["rows_bc"]
    pr: PollResult = r["poll_result"]
    bc_requests = r["bc_requests_total"]
    lines = [
        "# Countersign benchmark results",
        "",
        f"Written by `bench/run.py` (`make bench`) on {r['date']}; total run time {r['elapsed']:.0f} s.",
        "",
        "## Verdicts",
        "",
        f"- Pending polls reach **{100 * ratio:.1f} %** of the ceiling "
        f"({polls.rps:,.0f} req/s vs a ceiling of {ceiling_rps:,.0f} req/s, the mean of the runs before and after): "
        f"target at least {100 * RATIO_TARGET:.0f} % "
        f"— **{'MET' if ratio_met else 'NOT MET'}**.",
        f"- Rows written to PostgreSQL during the pending-poll phase ({r['poll_requests_total']:,} polls, warm-up "
        f"included): **{rows}** — target 0 — **{'MET' if rows == 0 else 'NOT MET'}**"
        + (f" (by table: {r['rows_polls']})" if rows else "")
        + ".",
        *([prompt_verdict_line(r["prompts"], args), *prompt_disturbance(r["prompts"])] if r.get("prompts") else []),
        *([ping_verdict_line(r["ping"], args), *ping_disturbance(r["ping"])] if r.get("ping") else []),
        *pool_warning(polls, r["pool_size"]),
        *disturbances({"ceiling": ceiling, "bc-authorize": bc, "pending polls": polls, "ceiling after": ceiling_after}),
        "",
        "## Figures",
        "",
        f"Closed loop, {args.concurrency} connections, {args.warmup} s warm-up then {args.duration} s measured per "
        "phase. Latency in ms, measured by wrk from writing the request to reading the whole response "
        "(queueing for a free worker included). CPU columns: share of the whole machine "
        f"({r['machine']['nproc']} cores = 100 %) during the measured run; other = processes outside the benchmark, "
        "steal = time the hypervisor gave to other guests (both should be near 0).",
        "",
        "| phase | req/s | p50 | p90 | p99 | max | requests | errors "
        "| CPU %: gunicorn / pg / redis / wrk / other / steal / busy |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        row("a. ceiling: GET /healthz/", ceiling, ceiling.answers["status_ge_400"] + ceiling.socket_errors),
        row("b. POST /oauth/bc-authorize/", bc, bc.answers["other"] + bc.socket_errors),
        row("c. pending polls: POST /oauth/token/ (CIBA)", polls, a["other"] + a["ok"] + polls.socket_errors),
        row(
            "a. ceiling again, after the polls",
            ceiling_after,
            ceiling_after.answers["status_ge_400"] + ceiling_after.socket_errors,
        ),
        "",
        f"- d. ratio pending polls / ceiling (the mean of both ceiling runs, {ceiling_rps:,.0f} req/s): "
        f"**{ratio:.3f}** ({100 * ratio:.1f} %), target ≥ {RATIO_TARGET:.2f}: **{'met' if ratio_met else 'not met'}**.",
        f"  The two ceiling runs differ by {100 * abs(ceiling.rps - ceiling_after.rps) / ceiling_rps:.0f} %: on a "
        "shared virtual machine the speed drifts by 10-20 % from minute to minute, so compare several runs "
        "rather than single figures.",
        f"- e. rows written (n_tup_ins + n_tup_upd + n_tup_del, pg_stat_user_tables) during the pending-poll phase: "
        f"**{rows}** (target 0).",
        f"- Poll answers (measured run): {mix}. {pr.ring:,} pending requests were being polled, each every "
        f"{pr.gap:.1f} s ({polls.grown:,} joined during the measured run; {polls.early:,} polls had to be made "
        f"early for want of fresh requests), out of a pool of {r['pool_size']:,}.",
        f"- PostgreSQL transactions during the measured polls: {pr.xacts_per_poll:.3f} a poll (pg_stat_database "
        "xact_commit + xact_rollback, a 1 s re-warm included; 0 would mean every pending poll was answered without "
        "PostgreSQL).",
        f"- Check that the row counter sees writes: the bc-authorize phase wrote {sum(bc_rows.values()):,} rows for "
        f"the {bc_requests:,} requests wrk counted ({sum(bc_rows.values()) / max(bc_requests, 1):.2f} a request; "
        f"the server also completes the few still queued when wrk stops): {bc_rows}.",
        "- errors = socket errors + unexpected answers (ceiling: any status ≥ 400; bc-authorize: anything but 200; "
        "polls: anything but authorization_pending or slow_down).",
        "",
        *(prompt_section(r["prompts"], args) if r.get("prompts") else []),
        *(ping_section(r["ping"], args) if r.get("ping") else []),
        "## Machine",
        "",
        *[f"- {k}: {v}" for k, v in r["machine"].items()],
        f"- CPU busy before the run (2 s sample, nothing of the benchmark running): {r['background'][0]:.0f} %"
        + (f"; busiest: {', '.join(r['background'][1])}" if r["background"][0] > 10 else ""),
        "",
        "## Versions",
        "",
        *[f"- {k}: {v}" for k, v in r["versions"].items()],
        "",
        "## Server configuration",
        "",
        f"- gunicorn `config.wsgi`, {args.workers} sync workers, bound to {HOST} (a free port), access log "
        f"{'off' if args.no_access_log else 'on (stdout, as docker-compose.yml)'}; sync workers close the "
        "connection after each response, so every request opens a new TCP connection.",
        "- DEBUG=false, random SECRET_KEY, freshly generated 2048-bit RSA key in OIDC_RSA_PRIVATE_KEY, "
        "COUNTERSIGN_ISSUER=http://127.0.0.1:<port>.",
        f"- Database: PostgreSQL at {HOST}:{args.pg_port}, database `{args.database}` dropped, recreated and "
        "migrated for the run; connection settings as settings.py makes them from the environment: "
        + (", ".join(f"{k}={os.environ[k]}" for k in PASSED_THROUGH if k in os.environ) or "its defaults")
        + ".",
        f"- Redis: {redis_url(args)} as the cache and the Celery broker (phases a-c: prompts queue up, no worker "
        "runs), flushed before and after; "
        + (
            "the benchmark's own redis-server (`--save '' --appendonly no`, a free port), started for the run and "
            "stopped after it, so the test suite's FLUSHDBs on the system Redis cannot reach it."
            if r.get("own_redis")
            else "an existing Redis given with --redis-port."
        )
        + " APPROVALS_PROMPTS_PER_MINUTE=0 (the abuse limit would refuse the benchmark's requests).",
        "",
        "## Load generator",
        "",
        f"- {r['versions']['wrk']} with bench/wrk.lua, on the same machine: {args.threads} threads, "
        f"{args.concurrency} connections, {args.warmup} s warm-up + {args.duration} s per phase, timeout 10 s.",
        "- bc-authorize body: scope=openid, login_hint=<approver>, binding_message; Basic client authentication.",
        "- Pending polls: grant_type=urn:openid:params:grant-type:ciba for the pending requests that bc-authorize "
        "created, each wrk thread polling its own share like agents that honour the interval: a request is polled "
        f"again once {pr.gap:.1f} s have passed (its {pr.gap - GAP_MARGIN_SECONDS:.0f} s interval and "
        f"{GAP_MARGIN_SECONDS} s for queueing), and a request not polled yet is taken whenever none is due, so the "
        "number of requests being polled grows until the server is saturated. The pool is sized for polls at up to "
        f"{100 * POLL_RATE_CEILING_SHARE:.0f} % of the ceiling (topped up with more bc-authorize requests before "
        "the polls, outside the row counts). The warm-up fills the set of requests being polled (here "
        f"{pr.warmup_seconds:.0f} s, with the statistics readings and a 1 s re-warm), so the measured polls are "
        "repeat polls; the set carries over from run to run (bench/out/poll-state.txt).",
        "- Rows written: PostgreSQL 15 flushes a backend's counters lazily, so before each reading the service's "
        "database connections are ended (a backend flushes on exit) and the reading follows pg_stat_clear_snapshot().",
        "",
    ]
    RESULTS_MD.write_text("\n".join(lines))
    (OUT_DIR / "results.json").write_text(
        json.dumps(
            {
                "date": r["date"],
                "args": vars(args),
                "machine": r["machine"],
                "versions": r["versions"],
                "ceiling": vars(ceiling),
                "ceiling_after": vars(ceiling_after),
                "bc_authorize": vars(bc),
                "pending_polls": vars(polls),
                "ceiling_rps_mean": ceiling_rps,
                "ratio": ratio,
                "ratio_target_met": ratio_met,
                "rows_written_polls": r["rows_polls"],
                "rows_written_bc": bc_rows,
                "pool_size": r["pool_size"],
                "pg_xacts_per_poll": pr.xacts_per_poll,
                "prompts": prompt_json(r["prompts"]) if r.get("prompts") else None,
                "ping": ping_json(r["ping"]) if r.get("ping") else None,
            },
            indent=2,
        )
    )


# -------------------------------------------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> None:
    started = time.monotonic()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for pattern in ("ids.*", "wrk-*", "pool.txt", "results.json", "prompts*", "celery.log", "ping*", "celery-ping.log"):
        for stale in OUT_DIR.glob(pattern):
            stale.unlink()
    own_redis = args.redis_port is None
    if own_redis:
        OWN_REDIS.start()
        args.redis_port = OWN_REDIS.port
        log(f"started the benchmark's own redis-server on {HOST}:{OWN_REDIS.port} (pid {OWN_REDIS.proc.pid})")
    try:
        run_phases(args, started, own_redis)
    finally:
        if own_redis:
            OWN_REDIS.stop()
            log("stopped the benchmark's redis-server")


def run_phases(args: argparse.Namespace, started: float, own_redis: bool) -> None:
    pg_version = check_postgres(args)
    redis_version = check_redis(args)
    wrk_version = ensure_wrk()
    code = code_version()  # what gunicorn will load: taken before it starts
    log(f"PostgreSQL {pg_version}, Redis {redis_version}, {wrk_version}")
    idle_busy, busiest = background_load()
    deadline = time.monotonic() + args.wait_quiet
    while idle_busy > 10 and time.monotonic() < deadline:
        log(f"the machine is {idle_busy:.0f} % busy ({', '.join(busiest)}); waiting for it to quieten")
        idle_busy, busiest = background_load(5.0)
    if idle_busy > 10:
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
    credentials = f"{quote_plus(client['client_id'])}:{quote_plus(client['client_secret'])}"
    auth = "Basic " + base64.b64encode(credentials.encode()).decode()
    bc_body = urlencode(
        {"scope": "openid", "login_hint": approver["username"], "binding_message": "Pay invoice 4711: 120 EUR"}
    )

    if args.only == "ping":
        try:
            ping_result = ping_phase(args)
        finally:
            with contextlib.suppress(redis.RedisError):
                flush_redis(args)
        (OUT_DIR / "ping.json").write_text(json.dumps(ping_json(ping_result), indent=2))
        log(
            f"--only ping: done in {time.monotonic() - started:.0f} s; bench/RESULTS.md left alone, figures in "
            f"{(OUT_DIR / 'ping.json').relative_to(ROOT)}"
        )
        return

    if args.only == "prompts":
        try:
            prompt_result = prompt_phase(args, auth)
        finally:
            with contextlib.suppress(redis.RedisError):
                flush_redis(args)
        (OUT_DIR / "prompts.json").write_text(json.dumps(prompt_json(prompt_result), indent=2))
        log(
            f"--only prompts: done in {time.monotonic() - started:.0f} s; bench/RESULTS.md left alone, figures in "
            f"{(OUT_DIR / 'prompts.json').relative_to(ROOT)}"
        )
        return

    log(f"starting gunicorn: {args.workers} sync workers on {HOST}:{port}")
    server = start_server(args, env, port)
    try:
        log(f"workers {server.worker_pids()}; smoke test")
        interval = smoke_test(port, auth, bc_body)

        _, ceiling = measure(args, server, "ceiling", "/healthz/", {"BENCH_MODE": "get"})

        ids_prefix = OUT_DIR / "ids"
        bc_env = {"BENCH_MODE": "bc", "BENCH_AUTH": auth, "BENCH_BODY": bc_body, "BENCH_IDS_OUT": str(ids_prefix)}
        rows_0 = pg_snapshot(args, port)
        bc_warm, bc = measure(args, server, "bc-authorize", "/oauth/bc-authorize/", bc_env)
        rows_1 = pg_snapshot(args, port)

        poll_result = poll_phase(args, server, auth, bc_env, bc.rps, ceiling.rps, interval)
        # The ceiling again: the machine's speed drifts (a shared host), so the ratio uses the mean of both runs.
        _, ceiling_after = measure(args, server, "ceiling-after", "/healthz/", {"BENCH_MODE": "get"}, warmup=1)
    finally:
        log("stopping gunicorn")
        server.stop()
    try:
        # Last, with its own gunicorn (Twilio settings) and a Celery worker; the broker is emptied first.
        prompt_result = prompt_phase(args, auth)
        # g: ping delivery (issue 5), again with a fresh gunicorn and worker.
        ping_result = ping_phase(args)
    finally:
        with contextlib.suppress(redis.RedisError):
            flush_redis(args)

    results = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "elapsed": time.monotonic() - started,
        "args": args,
        "machine": machine_info(),
        "versions": versions(code, pg_version, redis_version, wrk_version),
        "ceiling": ceiling,
        "ceiling_after": ceiling_after,
        "bc": bc,
        "polls": poll_result.load,
        "poll_result": poll_result,
        "rows_bc": written_between(rows_0, rows_1),
        "bc_requests_total": bc_warm.requests + bc.requests,
        "rows_polls": poll_result.rows,
        "poll_requests_total": poll_result.polls_made,
        "pool_size": poll_result.pool_size,
        "background": (idle_busy, busiest),
        "prompts": prompt_result,
        "ping": ping_result,
        "own_redis": own_redis,
    }
    write_results(results)
    polls = poll_result.load
    ceiling_rps = (ceiling.rps + ceiling_after.rps) / 2
    ratio = polls.rps / ceiling_rps
    log(
        f"done in {results['elapsed']:.0f} s: ceiling {ceiling.rps:,.0f} then {ceiling_after.rps:,.0f} req/s; "
        f"bc-authorize {bc.rps:,.0f} req/s; "
        f"pending polls {polls.rps:,.0f} req/s = {100 * ratio:.1f} % of ceiling "
        f"(target {100 * RATIO_TARGET:.0f} %: {'met' if ratio >= RATIO_TARGET else 'NOT met'}); "
        f"rows written by polls: {sum(results['rows_polls'].values())}; prompts p50 "
        f"{prompt_result.stats.p50_ms:.0f} ms, p99 {prompt_result.stats.p99_ms:.0f} ms, lost "
        f"{prompt_result.stats.lost}, duplicates {prompt_result.stats.duplicates} (target "
        f"{'met' if prompt_verdict(prompt_result.stats) else 'NOT met'}); ping p50 {ping_result.stats.p50_ms:.0f} ms, "
        f"p99 {ping_result.stats.p99_ms:.0f} ms, lost {ping_result.stats.lost} (target "
        f"{'met' if ping_verdict(ping_result.stats) else 'NOT met'}). See {RESULTS_MD.relative_to(ROOT)}."
    )


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


if __name__ == "__main__":
    sys.exit(main())
