"""The processes the benchmark starts and stops: its own redis-server, gunicorn as production runs it, a Celery
worker; and what they need: the server environment, manage.py commands, a smoke test."""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlencode

import redis

from bench.common import (
    CIBA_GRANT,
    HOST,
    OUT_DIR,
    POLL_INTERVAL_S,
    ROOT,
    BenchError,
    form_headers,
    free_port,
    http_request,
)
from bench.system import children_of

# The abuse limits stay counted (issue 17: every bc-authorize pays for its rate counters) but never bite: the
# benchmark sends thousands of requests a minute for a handful of people. The pending cap is off, since no person
# has thousands waiting, and counting them would measure the benchmark, not the server. RESULTS.md says so.
ABUSE_LIMITS_OFF = {
    "APPROVALS_PROMPTS_PER_MINUTE": "100000000",
    "APPROVALS_PROMPTS_PER_PERSON_PER_MINUTE": "100000000",
    "APPROVALS_MAX_PENDING_PER_PERSON": "0",
}


@dataclass
class Service:
    """A process started in a session of its own (so it leads its own process group), its output in a log file."""

    proc: subprocess.Popen
    log_path: Path
    stop_grace: ClassVar[float] = 15  # seconds between SIGTERM and SIGKILL

    @property
    def pgrp(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return ""

    def stop(self) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgrp, signal.SIGTERM)
            try:
                self.proc.wait(timeout=self.stop_grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pgrp, signal.SIGKILL)
                self.proc.wait(timeout=10)
        # gunicorn's workers and prefork's children are in the main process's group; make sure none outlived it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgrp, signal.SIGKILL)


def spawn(cmd: list[str], log_path: Path, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.Popen:
    with log_path.open("w") as log_file:
        return subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


# ----------------------------------------------------------------------------------------------------------- Redis


@dataclass
class RedisServer(Service):
    """The benchmark's own redis-server: the test suite flushes the system Redis's databases (15..0) while it runs,
    which would empty the benchmark's broker and cache under it."""

    port: int = 0
    stop_grace: ClassVar[float] = 10


def start_own_redis(log_name: str = "redis.log") -> RedisServer:
    binary = shutil.which("redis-server")
    if not binary:
        raise BenchError(
            "redis-server is missing: install it (Debian: apt-get install redis-server) or point --redis-port "
            "at a running Redis."
        )
    port = free_port()
    log_path = OUT_DIR / log_name
    cmd = [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"]
    server = RedisServer(spawn(cmd, log_path, cwd=OUT_DIR), log_path, port)
    client = redis.Redis(host=HOST, port=port, socket_connect_timeout=1, socket_timeout=2)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not server.alive():
            raise BenchError(f"redis-server exited with {server.proc.returncode}: see {log_path}")
        with contextlib.suppress(redis.RedisError):
            client.ping()
            return server
        time.sleep(0.05)
    server.stop()
    raise BenchError(f"redis-server did not answer on {HOST}:{port} within 10 s")


def redis_url(args: argparse.Namespace) -> str:
    return f"redis://{HOST}:{args.redis_port}/{args.redis_db}"


def check_redis(args: argparse.Namespace, own: bool) -> str:
    try:
        client = redis.Redis.from_url(redis_url(args), socket_connect_timeout=3, socket_timeout=5)
        client.ping()
        return client.info("server")["redis_version"]
    except redis.RedisError as exc:
        if own:
            raise BenchError(
                f"The benchmark's own redis-server on port {args.redis_port} does not answer ({exc})"
            ) from exc
        raise BenchError(
            f"Redis is not reachable at {HOST}:{args.redis_port} ({exc}).\n"
            "Start it, e.g.: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no"
        ) from exc


def flush_redis(args: argparse.Namespace) -> None:
    redis.Redis.from_url(redis_url(args), socket_connect_timeout=3, socket_timeout=10).flushdb()


# ------------------------------------------------------------------------------------------ environment, manage.py


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
        # The abuse limits (5 bc-authorize a minute per client and person, 10 per person from all clients, 50
        # pending per person by default) would refuse nearly every benchmark request with access_denied: counted but
        # out of reach, the pending cap off (ABUSE_LIMITS_OFF).
        **ABUSE_LIMITS_OFF,
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


# -------------------------------------------------------------------------------------------------------- gunicorn


@dataclass
class Server(Service):
    """gunicorn: threaded workers, as production runs it."""

    port: int = 0

    def worker_pids(self) -> list[int]:
        return children_of(self.proc.pid)


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
        # The worker model of config/gunicorn.conf.py (threads, keep-alive); --workers stays the benchmark's own.
        "--worker-class",
        "gthread",
        "--threads",
        "4",
    ]
    if not args.no_access_log:
        # As docker-compose.yml runs it: its access log (format, logger class, redaction in the master); the options
        # above take precedence over the file's.
        cmd += ["--config", "config/gunicorn.conf.py"]
    server = Server(spawn(cmd, log_path, env), log_path, port)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not server.alive():
            raise BenchError(f"gunicorn exited with {server.proc.returncode} while starting:\n{server.log_tail()}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            status, _ = http_request(port, "GET", "/healthz/")
            if status == 200 and len(server.worker_pids()) >= args.workers:
                return server
        time.sleep(0.2)
    server.stop()
    raise BenchError(f"gunicorn did not answer GET /healthz/ on {HOST}:{port} within 30 s:\n{server.log_tail()}")


def smoke_test(port: int, auth: str, bc_body: str) -> int:
    """One request of each kind, so that a misconfiguration fails here with its answer rather than as errors.
    Returns the poll interval the server asks for."""
    form = form_headers(auth)
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


def wait_until_drained(port: int, timeout: float = 10.0) -> None:
    """Wait until the server has answered everything a load generator left queued: when wrk stops, requests still
    sit in the listen backlog and the workers finish them. Counts the server's established and half-closed
    sockets."""
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


# ---------------------------------------------------------------------------------------------------- Celery worker


@dataclass
class Worker(Service):
    """A real Celery worker (the open-loop phases'), on the benchmark's Redis as broker."""

    description: str = ""
    stop_grace: ClassVar[float] = 20  # SIGTERM is a warm shutdown: running tasks finish


def worker_command(pool: str, concurrency: int) -> list[str]:
    celery = Path(sys.executable).with_name("celery")
    return [
        str(celery),
        "-A",
        "config",
        "worker",
        "-l",
        "warning",
        "--pool",
        pool,
        "--concurrency",
        str(concurrency),
        "--hostname",
        f"bench-{os.getpid()}@%h",
    ]


def start_worker(args: argparse.Namespace, env: dict[str, str], log_name: str) -> Worker:
    """With the open-loop phases' pool and concurrency (--prompt-pool, --prompt-concurrency)."""
    cmd = worker_command(args.prompt_pool, args.prompt_concurrency)
    log_path = OUT_DIR / log_name
    description = " ".join(["celery", *cmd[1:-2]])
    return Worker(spawn(cmd, log_path, env), log_path, description)
