"""The peer phase (issue 17): Countersign beside node-oidc-provider 9 with its models in Redis (../shared/peer), with
the same load, the peer's own bench-peer.sh (wrk, 32 connections, 3 s warm-up, 15 s measured: (1) backchannel
requests, (2) token polls on one pending auth_req_id), run alternately: ours, peer, ours, peer, ... The machine
drifts 10-20 % over minutes, so each pair gives a ratio ours/peer and the report takes the median of the ratios.

Also measured here: the resident memory of the shared gunicorn's workers after their runs, and Redis memory per
pending request (INFO memory used_memory around N bc-authorize requests), ours and the peer's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import redis

from bench.common import HOST, OUT_DIR, ROOT, BenchError, basic_auth, form_headers, free_port, http_request, log
from bench.phases.base import Context, Phase
from bench.phases.closed_loop import PollResult
from bench.servers import Server, Service, manage_json, spawn, wait_until_drained
from bench.system import rss_kib

PEER_SRC = ROOT.parent / "shared" / "peer"
PEER_CLIENT = {"client_id": "ciba-basic", "client_secret": "ciba-basic-secret"}
LOGIN_HINT = "alice"  # one of the peer's known users; ours gets an approver of that name
RUNS_DIR = OUT_DIR / "peer-runs"
# Issue 17's targets: throughput ratio ours/peer at least this, p99 at most P99_LIMIT times the peer's.
BC_TARGET = 0.4
POLL_TARGET = 0.6
P99_LIMIT = 2.0
ENDPOINTS = ("backchannel", "token_poll")  # bench-peer.sh's names (its raw files: <name>.wrk.txt)


@dataclass
class PeerRun:
    """One wrk run of bench-peer.sh, read from its raw output."""

    server: str  # "ours" or "peer"
    pair: int
    endpoint: str
    rps: float
    requests: int
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int


@dataclass
class RedisMemory:
    """What `count` bc-authorize requests (nothing else running) added to Redis, key by key: MEMORY USAGE of the keys
    they created, and the growth of the lists (ours: the Celery broker's queue of prompt tasks). INFO used_memory
    around them is kept as a check, but keys of earlier requests that expire meanwhile net out of it."""

    count: int
    key_bytes: int  # MEMORY USAGE of the keys that were not there before (lists apart)
    queue_bytes: int  # growth of the lists
    keys_added: int
    used_memory_delta: int  # INFO memory used_memory, the whole redis-server
    expired_meanwhile: int  # INFO stats expired_keys, the whole redis-server

    @property
    def per_request(self) -> float:
        return (self.key_bytes + self.queue_bytes) / max(self.count, 1)

    @property
    def per_request_without_queue(self) -> float:
        return self.key_bytes / max(self.count, 1)


@dataclass
class Ratio:
    rps: list[float]  # ours/peer, per pair
    p99: list[float]

    @property
    def rps_median(self) -> float:
        return statistics.median(self.rps)

    @property
    def p99_median(self) -> float:
        return statistics.median(self.p99)

    def met(self, target: float) -> bool:
        return self.rps_median >= target and self.p99_median <= P99_LIMIT


@dataclass
class PeerResult:
    runs: list[PeerRun]
    poll_answers: dict[str, str]  # server -> the error of bench-peer.sh's sample poll (its last one)
    versions: dict[str, str]
    gunicorn_rss_kib: dict[int, int]  # the shared gunicorn's workers after their runs
    gunicorn_master_rss_kib: int
    peer_rss_kib: int  # the peer's node process after its runs
    redis_memory: dict[str, RedisMemory]  # "ours" / "peer"
    # Phase c of the same run (many pending ids, each polled at its interval), when it ran: req/s and p99.
    pending_polls: tuple[float, float, int] | None  # (req/s, p99 ms, wrk connections)
    duration: int
    connections: int
    seconds: float
    ratios: dict[str, Ratio] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for endpoint in ENDPOINTS:
            ours = {r.pair: r for r in self.runs if r.server == "ours" and r.endpoint == endpoint}
            peer = {r.pair: r for r in self.runs if r.server == "peer" and r.endpoint == endpoint}
            pairs = sorted(ours.keys() & peer.keys())
            self.ratios[endpoint] = Ratio(
                [ours[i].rps / max(peer[i].rps, 1e-9) for i in pairs],
                [ours[i].p99_ms / max(peer[i].p99_ms, 1e-9) for i in pairs],
            )

    def median(self, server: str, endpoint: str, attr: str) -> float:
        return float(
            statistics.median(getattr(r, attr) for r in self.runs if r.server == server and r.endpoint == endpoint)
        )

    @property
    def pending_ratio(self) -> tuple[float, float] | None:
        """Phase c's pending polls against the peer's one-id polls (the same authorization_pending answer)."""
        if self.pending_polls is None:
            return None
        rps, p99, _ = self.pending_polls
        return rps / self.median("peer", "token_poll", "rps"), p99 / self.median("peer", "token_poll", "p99_ms")

    def verdicts(self) -> dict[str, bool | None]:
        pending = self.pending_ratio
        return {
            "backchannel": self.ratios["backchannel"].met(BC_TARGET),
            "slow_down": self.ratios["token_poll"].met(POLL_TARGET),
            "authorization_pending": None if pending is None else pending[0] >= POLL_TARGET and pending[1] <= P99_LIMIT,
        }

    def summary(self) -> str:
        bc, poll = self.ratios["backchannel"], self.ratios["token_poll"]
        return (
            f"median ours/peer: bc-authorize {bc.rps_median:.2f}x (p99 {bc.p99_median:.1f}x), token poll one id "
            f"{poll.rps_median:.2f}x (p99 {poll.p99_median:.1f}x); verdicts {self.verdicts()}"
        )


# --------------------------------------------------------------------------------------------------- the peer


def install_peer(src: Path) -> Path:
    """A copy of the peer with its packages (`npm ci`), kept in bench/out/peer-<hash of package-lock.json> so that
    reruns skip the install. The source is read-only where it is mounted."""
    lock = src / "package-lock.json"
    if not lock.exists():
        raise BenchError(f"the peer is missing: no {lock} (see ../shared/peer/README.md; --peer-dir)")
    digest = hashlib.sha256(lock.read_bytes())
    for name in ("package.json", "peer-server.mjs", "redis-adapter.mjs", "bench-peer.sh"):
        digest.update((src / name).read_bytes())
    home = OUT_DIR / f"peer-{digest.hexdigest()[:12]}"
    marker = home / ".bench-installed"
    if marker.exists():
        return home
    for tool in ("node", "npm", "curl"):
        if not shutil.which(tool):
            raise BenchError(f"{tool} is missing: the peer phase needs node 20, npm and curl")
    scratch = home.with_name(home.name + ".tmp")
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(src, scratch)
    for path in [scratch, *scratch.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)  # the copy keeps the read-only modes
    log(f"peer: npm ci in {scratch.relative_to(ROOT)}")
    done = subprocess.run(["npm", "ci", "--silent"], cwd=scratch, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise BenchError(f"peer: npm ci failed:\n{done.stdout[-1500:]}{done.stderr[-1500:]}")
    shutil.rmtree(home, ignore_errors=True)
    scratch.rename(home)
    marker.write_text("")
    return home


def start_peer(home: Path, redis_url: str) -> tuple[Service, int]:
    port = free_port()
    env = {**os.environ, "ADAPTER": "redis", "REDIS_URL": redis_url, "QUIET": "1", "PORT": str(port)}
    log_path = OUT_DIR / "peer.log"
    peer = Service(spawn(["node", "peer-server.mjs"], log_path, env, cwd=home), log_path)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if not peer.alive():
            raise BenchError(f"the peer exited with {peer.proc.returncode}:\n{peer.log_tail()}")
        try:
            status, _ = http_request(port, "GET", "/.well-known/openid-configuration")
            if status == 200:
                return peer, port
        except OSError:
            pass
        time.sleep(0.2)
    peer.stop()
    raise BenchError(f"the peer did not answer on {HOST}:{port} within 20 s:\n{peer.log_tail()}")


def worker_model(server: Server) -> str:
    """gunicorn's worker count and class (and threads) as bench/servers.py started it, read from its command line."""
    cmd = [str(a) for a in server.proc.args] if isinstance(server.proc.args, list) else []

    def option(name: str, default: str) -> str:
        return cmd[cmd.index(name) + 1] if name in cmd[:-1] else default

    model = f"{option('--workers', '?')} {option('--worker-class', 'sync')} workers"
    return model + (f", {option('--threads', '1')} threads each" if "--threads" in cmd else "")


def versions(home: Path, server: Server) -> dict[str, str]:
    def pkg(name: str) -> str:
        try:
            return str(json.loads((home / "node_modules" / name / "package.json").read_text())["version"])
        except (OSError, ValueError, KeyError):
            return "unknown"

    node = subprocess.run(["node", "-v"], capture_output=True, text=True).stdout.strip()
    return {
        "peer": f"node-oidc-provider {pkg('oidc-provider')} (ioredis {pkg('ioredis')}) on node {node}, ADAPTER=redis",
        "Countersign in the peer phase": f"gunicorn, {worker_model(server)} (the shared gunicorn of phases a-c)",
    }


# ------------------------------------------------------------------------------------------------ measurements

_WRK_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(value: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if not match:
        raise BenchError(f"unreadable wrk latency {value!r}")
    number, unit = float(match.group(1)), match.group(2)
    return number * 60_000 if unit == "m" else number * _WRK_UNITS[unit]


def parse_wrk(text: str) -> tuple[float, int, float, float, int, int]:
    """(req/s, requests, p50 ms, p99 ms, non-2xx, socket errors) from `wrk --latency`'s output."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    requests = re.search(r"(\d+) requests in", text)
    p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    if not (rps and requests and p50 and p99):
        raise BenchError(f"unreadable wrk output:\n{text[-1500:]}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return (
        float(rps.group(1)),
        int(requests.group(1)),
        _ms(p50.group(1)),
        _ms(p99.group(1)),
        int(non_2xx.group(1)) if non_2xx else 0,
        sum(int(g) for g in sockets.groups()) if sockets else 0,
    )


def bench_peer_sh(
    home: Path, server: str, pair: int, port: int, client: dict[str, str], duration: int, connections: int
) -> tuple[list[PeerRun], str]:
    """One run of the peer's bench-peer.sh against a server; its runs, and the error of its sample poll."""
    results = RUNS_DIR / f"{pair}-{server}"
    results.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "ISSUER": f"http://{HOST}:{port}",
        "CLIENT_ID": client["client_id"],
        "CLIENT_SECRET": client["client_secret"],
        "LOGIN_HINT": LOGIN_HINT,
        "DURATION": str(duration),
        "CONNECTIONS": str(connections),
        "RESULTS_DIR": str(results),
    }
    timeout = 2 * (duration + 3) + 90
    try:
        done = subprocess.run(
            [str(home / "bench-peer.sh")], env=env, cwd=home, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"bench-peer.sh ({server}, pair {pair}) did not finish within {timeout} s") from exc
    (results / "console.txt").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise BenchError(f"bench-peer.sh ({server}) failed with {done.returncode}:\n{done.stdout}{done.stderr}")
    runs = [
        PeerRun(server, pair, endpoint, *parse_wrk((results / f"{endpoint}.wrk.txt").read_text()))
        for endpoint in ENDPOINTS
    ]
    answer = re.search(r'sample poll answer: .*"error":\s*"([a-z_]+)"', done.stdout)
    return runs, answer.group(1) if answer else "?"


def backchannel_path(port: int) -> str:
    """The server's backchannel authentication endpoint, from its discovery document."""
    status, body = http_request(port, "GET", "/.well-known/openid-configuration")
    if status != 200:
        raise BenchError(f"GET /.well-known/openid-configuration on port {port} answered {status}")
    return str(urlsplit(json.loads(body)["backchannel_authentication_endpoint"]).path)


def redis_memory(client: redis.Redis, port: int, auth: str, count: int) -> RedisMemory:
    """What `count` bc-authorize requests, sent from 8 threads, add to the server's Redis db (see RedisMemory)."""

    def usage(key: bytes) -> int:
        # samples=0: every element, not the default estimate from 5 (a broker queue's messages differ in size).
        return client.memory_usage(key, samples=0) or 0

    def lists_bytes() -> int:
        return sum(usage(k) for k in client.scan_iter(count=1000, _type="list"))

    def readings() -> tuple[set[bytes], int, int, int]:
        return (
            set(client.scan_iter(count=1000)),
            lists_bytes(),
            client.info("memory")["used_memory"],
            client.info("stats")["expired_keys"],
        )

    path = backchannel_path(port)
    body = urlencode({"scope": "openid", "login_hint": LOGIN_HINT, "binding_message": "MEM-1"})
    headers = form_headers(auth)

    def one(_: int) -> int:
        return http_request(port, "POST", path, body, headers)[0]

    wait_until_drained(port)
    time.sleep(0.5)
    keys_0, lists_0, used_0, expired_0 = readings()
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(one, range(count)))
    wait_until_drained(port)
    time.sleep(0.5)
    keys_1, lists_1, used_1, expired_1 = readings()
    ok = statuses.count(200)
    if ok < count:
        raise BenchError(f"redis memory: {count - ok} of {count} bc-authorize requests failed ({set(statuses)})")
    added = [k for k in keys_1 - keys_0 if client.type(k) != b"list"]
    return RedisMemory(
        count=count,
        key_bytes=sum(usage(k) for k in added),
        queue_bytes=lists_1 - lists_0,
        keys_added=len(added),
        used_memory_delta=used_1 - used_0,
        expired_meanwhile=expired_1 - expired_0,
    )


class Peer(Phase):
    """Ours (the shared gunicorn) and the peer, alternately, with the peer's bench-peer.sh; then memory."""

    name = "peer"
    uses_shared_server = True

    def run(self, ctx: Context) -> PeerResult:
        args = ctx.args
        started = time.monotonic()
        home = install_peer(Path(args.peer_dir))
        server = ctx.shared_server()
        # What bench-peer.sh needs of ours: an approver named like the peer's user, and a poll client with
        # client_secret_basic (create_agent_client's default).
        manage_json(
            ctx.env,
            "create_approver",
            LOGIN_HINT,
            f"--password={secrets.token_urlsafe(24)}",
            "--email",
            "alice@example.com",
        )
        made = manage_json(ctx.env, "create_agent_client", "--name", "bench-peer-agent")
        ours_client = {"client_id": made["client_id"], "client_secret": made["client_secret"]}
        peer_url = f"redis://{HOST}:{args.redis_port}/{args.peer_redis_db}"
        peer_redis = redis.Redis.from_url(peer_url, socket_connect_timeout=3, socket_timeout=10)
        peer_redis.flushdb()
        shutil.rmtree(RUNS_DIR, ignore_errors=True)
        peer: Service | None = None
        try:
            peer, peer_port = start_peer(home, peer_url)
            log(
                f"peer: node-oidc-provider on {HOST}:{peer_port} (Redis db {args.peer_redis_db}); {args.peer_pairs} "
                f"pairs of bench-peer.sh, ours then the peer, {args.peer_connections} connections, "
                f"{args.peer_duration} s each"
            )
            runs: list[PeerRun] = []
            answers: dict[str, str] = {}
            for pair in range(1, args.peer_pairs + 1):
                for who, port, client in (("ours", server.port, ours_client), ("peer", peer_port, PEER_CLIENT)):
                    wait_until_drained(port)
                    got, answers[who] = bench_peer_sh(
                        home, who, pair, port, client, args.peer_duration, args.peer_connections
                    )
                    runs.extend(got)
                    log(
                        f"peer: pair {pair} {who}: "
                        + "; ".join(f"{r.endpoint} {r.rps:,.0f} req/s, p99 {r.p99_ms:.1f} ms" for r in got)
                        + f" (sample poll: {answers[who]})"
                    )
                    if not server.alive():
                        raise BenchError(f"gunicorn died during bench-peer.sh:\n{server.log_tail()}")
                    if not peer.alive():
                        raise BenchError(f"the peer died during bench-peer.sh:\n{peer.log_tail()}")
            wait_until_drained(server.port)
            gunicorn_rss = {pid: rss_kib(pid) for pid in server.worker_pids()}
            master_rss = rss_kib(server.proc.pid)
            peer_rss = rss_kib(peer.proc.pid)
            log(f"peer: Redis memory per pending request, {args.peer_pending} bc-authorize each")
            ours_redis = redis.Redis(host=HOST, port=args.redis_port, db=args.redis_db, socket_timeout=30)
            memory = {
                "ours": redis_memory(ours_redis, server.port, basic_auth(made), args.peer_pending),
                "peer": redis_memory(peer_redis, peer_port, basic_auth(PEER_CLIENT), args.peer_pending),
            }
        finally:
            if peer is not None:
                peer.stop()
            with contextlib.suppress(redis.RedisError):
                peer_redis.flushdb()
        polls = ctx.results.get("pending-polls")
        pending = (polls.load.rps, polls.load.p99_ms, args.concurrency) if isinstance(polls, PollResult) else None
        return PeerResult(
            runs=runs,
            poll_answers=answers,
            versions=versions(home, server),
            gunicorn_rss_kib=gunicorn_rss,
            gunicorn_master_rss_kib=master_rss,
            peer_rss_kib=peer_rss,
            redis_memory=memory,
            pending_polls=pending,
            duration=args.peer_duration,
            connections=args.peer_connections,
            seconds=time.monotonic() - started,
        )
