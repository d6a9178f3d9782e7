"""Prompt latency (issue 3): helpers for the phase that bench/run.py runs last.

bc-authorize answers, a real Celery worker runs approvals.tasks.prompt_approver_task, and the official twilio client
sends the SMS to a loopback fake Twilio (tests/fakes/twilio.py) that runs in the benchmark's own process. An open-loop
generator sends bc-authorize at a fixed rate, each with a unique binding message ("B" + number), which the SMS body
quotes: latency = the fake's received_at - the time the 200 answer was read, both time.time() in this process.
"""

from __future__ import annotations

import contextlib
import http.client
import math
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # tests.fakes.twilio lives in the repository, not in an installed package
    sys.path.insert(0, str(ROOT))

from tests.fakes.twilio import FakeTwilio, ReceivedSms  # noqa: E402

HOST = "127.0.0.1"
# The SMS quotes the binding message: ... Check it shows "B123": <link>
_LABEL = re.compile(r'"([A-Z]\d+)"')


def sms_label(sms: ReceivedSms) -> str | None:
    match = _LABEL.search(sms.body or "")
    return match.group(1) if match else None


# ---------------------------------------------------------------------------------------------------- Celery worker


@dataclass
class Worker:
    proc: subprocess.Popen
    log_path: Path
    description: str

    def log_tail(self, n: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)  # warm shutdown: running tasks finish
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):  # prefork children are in the same process group
            os.killpg(self.proc.pid, signal.SIGKILL)


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


def start_worker(env: dict[str, str], pool: str, concurrency: int, log_path: Path) -> Worker:
    cmd = worker_command(pool, concurrency)
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
    description = " ".join(["celery", *cmd[1:-2]])
    return Worker(proc=proc, log_path=log_path, description=description)


# ------------------------------------------------------------------------------------------------- load generator


@dataclass
class Sent:
    label: str
    scheduled: float  # time.time() the request was due
    sent: float = 0.0  # time.time() just before connecting
    answered: float = 0.0  # time.time() once the whole answer was read
    status: int = 0
    error: str = ""


@dataclass
class OpenLoop:
    """Requests at a fixed rate, whatever the server's answers take (a pool of threads sends them)."""

    port: int
    auth: str
    login_hints: list[str]
    rate: float
    warmup_s: float
    duration_s: float
    threads: int = 64
    requests: list[Sent] = field(default_factory=list)
    measured_start: float = 0.0
    measured_end: float = 0.0

    def _send(self, item: Sent, body: str) -> None:
        headers = {"Authorization": self.auth, "Content-Type": "application/x-www-form-urlencoded"}
        item.sent = time.time()
        conn = http.client.HTTPConnection(HOST, self.port, timeout=10)
        try:
            conn.request("POST", "/oauth/bc-authorize/", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            item.answered = time.time()
            item.status = response.status
        except (OSError, http.client.HTTPException) as exc:
            item.answered = time.time()
            item.error = type(exc).__name__
        finally:
            conn.close()

    def run(self) -> None:
        n_warm = round(self.warmup_s * self.rate)
        n_total = n_warm + round(self.duration_s * self.rate)
        step = 1.0 / self.rate
        start = time.time() + 0.2
        self.measured_start = start + n_warm * step
        self.measured_end = start + n_total * step
        with ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="bench-load") as pool:
            for k in range(n_total):
                label = f"W{k}" if k < n_warm else f"B{k - n_warm}"
                due = start + k * step
                item = Sent(label=label, scheduled=due)
                self.requests.append(item)
                body = urlencode(
                    {
                        "scope": "openid",
                        "login_hint": self.login_hints[k % len(self.login_hints)],
                        "binding_message": label,
                    }
                )
                delay = due - time.time()
                if delay > 0:
                    time.sleep(delay)
                pool.submit(self._send, item, body)

    @property
    def measured(self) -> list[Sent]:
        return [r for r in self.requests if r.label.startswith("B")]


def wait_for_labels(fake: FakeTwilio, labels: set[str], deadline: float) -> None:
    """Until every label has an SMS, or the deadline (time.time())."""
    while time.time() < deadline:
        seen = {sms_label(m) for m in fake.messages}
        if labels <= seen:
            return
        time.sleep(0.05)


# ----------------------------------------------------------------------------------------------------- statistics


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest rank."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass
class PromptStats:
    sent: int
    answered_200: int
    errors: int  # answers other than 200, or no answer
    received: int  # measured requests with at least one SMS
    lost: int  # answered 200, no SMS within the wait after the load stopped
    duplicates: int  # measured requests with more than one SMS
    unmatched: int  # SMS whose body names no request of this run
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    min_ms: float
    answer_p50_ms: float  # bc-authorize: sent -> answer read
    answer_p99_ms: float
    late_sends: int  # requests sent more than 20 ms after their slot (the generator fell behind)
    achieved_rate: float
    error_kinds: dict[str, int] = field(default_factory=dict)


def compute_stats(load: OpenLoop, messages: list[ReceivedSms]) -> PromptStats:
    by_label: dict[str, list[ReceivedSms]] = {}
    unmatched = 0
    known = {r.label for r in load.requests}
    for sms in messages:
        label = sms_label(sms)
        if label in known:
            by_label.setdefault(label, []).append(sms)
        elif label is None or not label.startswith("S"):  # S*: the smoke test's
            unmatched += 1
    measured = load.measured
    ok = [r for r in measured if r.status == 200]
    error_kinds: dict[str, int] = {}
    for r in measured:
        if r.status != 200:
            kind = r.error or f"HTTP {r.status}"
            error_kinds[kind] = error_kinds.get(kind, 0) + 1
    latencies = sorted(
        1000 * (min(m.received_at for m in by_label[r.label]) - r.answered) for r in ok if r.label in by_label
    )
    answers = sorted(1000 * (r.answered - r.sent) for r in measured if r.answered)
    sends = [r.sent for r in measured]
    span = (max(sends) - min(sends)) if len(sends) > 1 else 0
    return PromptStats(
        sent=len(measured),
        answered_200=len(ok),
        errors=len(measured) - len(ok),
        received=sum(1 for r in measured if r.label in by_label),
        lost=sum(1 for r in ok if r.label not in by_label),
        duplicates=sum(1 for r in measured if len(by_label.get(r.label, ())) > 1),
        unmatched=unmatched,
        p50_ms=percentile(latencies, 50),
        p90_ms=percentile(latencies, 90),
        p99_ms=percentile(latencies, 99),
        max_ms=latencies[-1] if latencies else math.nan,
        min_ms=latencies[0] if latencies else math.nan,
        answer_p50_ms=percentile(answers, 50),
        answer_p99_ms=percentile(answers, 99),
        late_sends=sum(1 for r in measured if r.sent - r.scheduled > 0.020),
        achieved_rate=(len(sends) - 1) / span if span else math.nan,
        error_kinds=error_kinds,
    )


def warm_counts(load: OpenLoop, messages: list[ReceivedSms]) -> tuple[int, int]:
    """Warm-up requests answered 200, and how many of them got an SMS (a sanity figure)."""
    labels = {sms_label(m) for m in messages}
    warm_ok = [r for r in load.requests if r.label.startswith("W") and r.status == 200]
    return len(warm_ok), sum(1 for r in warm_ok if r.label in labels)
