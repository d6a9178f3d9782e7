"""The HTTP load generators: wrk in a closed loop (fixed concurrency, bench/wrk.lua) for throughput, and an open loop
(a fixed schedule of POSTs, whatever the answers take) for latency."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from bench.common import BENCH_DIR, HOST, OUT_DIR, BenchError, log

WRK_SCRIPT = BENCH_DIR / "wrk.lua"


# ---------------------------------------------------------------------------------------------- wrk (closed loop)


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


@dataclass
class Load:
    """One wrk run."""

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

    def summary(self) -> str:
        return (
            f"{self.rps:,.0f} req/s, p50 {self.p50_ms:.2f} ms, p99 {self.p99_ms:.2f} ms, answers {self.answers}, "
            f"socket errors {self.socket_errors}, CPU busy {self.cpu['busy']:.0f}%"
        )


def run_wrk(args: argparse.Namespace, port: int, name: str, path: str, seconds: int, extra_env: dict[str, str]) -> Load:
    """wrk for `seconds` against `path`; bench/wrk.lua takes its mode and files from extra_env (BENCH_*) and writes
    its figures to bench/out/wrk-<name>.json, its console output goes to wrk-<name>.txt."""
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


# ---------------------------------------------------------------------------------------------------- open loop


@dataclass(kw_only=True)
class Shot:
    """One POST of an open-loop run, and what became of it. Times are time.time(), comparable with the fakes'
    received_at in the same process."""

    label: str  # W<n> in the warm-up, then the phase's own letter and number (prompts B<n>, ping A<n>)
    path: str
    body: str
    scheduled: float = 0.0  # when it was due
    sent: float = 0.0  # just before connecting and sending
    answered: float = 0.0  # once the whole answer was read (or the connection failed)
    status: int = 0
    location: str = ""
    error: str = ""


S = TypeVar("S", bound=Shot)


def send(port: int, shot: Shot, headers: dict[str, str], method: str = "POST") -> bytes:
    """Sends `shot` on a connection of its own and records its times, status and Location (or its error) in it;
    returns the answer's body (b"" when there was none). A GET sends no body."""
    shot.sent = time.time()
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request(method, shot.path, body=None if method == "GET" else shot.body, headers=headers)
        response = conn.getresponse()
        answer = response.read()
        shot.answered = time.time()
        shot.status = response.status
        shot.location = response.getheader("Location") or ""
        return answer
    except (OSError, http.client.HTTPException) as exc:
        shot.answered = time.time()
        shot.error = type(exc).__name__
        return b""
    finally:
        conn.close()


@dataclass
class OpenLoop(Generic[S]):
    """POSTs at a fixed rate, whatever the server's answers take: a pool of threads sends them, each on its own
    connection, so that a slow answer never delays the next request. The first `warmup` shots are not measured."""

    port: int
    shots: list[S]
    headers: dict[str, str]
    rate: float
    warmup: int
    threads: int
    name: str = "bench-load"  # the threads' name prefix
    # Called with each shot and its answer's body once read, on the sending thread (the flows phase starts the next
    # step of a flow there); it must not raise, the pool would swallow it.
    on_answer: Callable[[S, bytes], None] | None = None
    measured_start: float = 0.0  # time.time() the first measured shot is due (set when the run starts)
    measured_end: float = 0.0

    def _send(self, shot: S) -> None:
        answer = send(self.port, shot, self.headers)
        if self.on_answer is not None:
            self.on_answer(shot, answer)

    def run(self) -> None:
        step = 1.0 / self.rate
        start = time.time() + 0.2
        self.measured_start = start + self.warmup * step
        self.measured_end = start + len(self.shots) * step
        with ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix=self.name) as pool:
            for k, shot in enumerate(self.shots):
                shot.scheduled = start + k * step
                delay = shot.scheduled - time.time()
                if delay > 0:
                    time.sleep(delay)
                pool.submit(self._send, shot)

    def start(self) -> threading.Thread:
        """Runs the schedule in a thread of its own and returns once the measured part is due, for the caller's
        readings before it (CPU, PostgreSQL sessions); join the thread for the end."""
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        while not self.measured_start:
            time.sleep(0.01)
        time.sleep(max(0.0, self.measured_start - time.time()))
        return thread

    @property
    def measured(self) -> list[S]:
        return self.shots[self.warmup :]

    @property
    def warm(self) -> list[S]:
        return self.shots[: self.warmup]
