"""Ping delivery (issue 5): helpers for the phase that bench/run.py runs after the prompts.

A ping client (CIBA Core §10.2) registered with its notification endpoint on the fake agent endpoint of
tests/fakes/agent_endpoint.py, which runs in the benchmark's own process. Pending requests are created first (each
with its own client_notification_token); then the approver, signed in through the login form, approves them one
after another at a fixed rate (open loop: POST /approvals/<id>/decide/ with the session and CSRF cookies). The decide
transaction writes a Notification and, on commit, enqueues approvals.tasks.notify_client_task; a real Celery worker
POSTs {"auth_req_id": ...} to the fake. Latency = the fake's received_at - the time just before the decide POST was
sent, both time.time() in this process, matched by the auth_req_id in the ping's body.
"""

from __future__ import annotations

import http.client
import math
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # tests.fakes lives in the repository, not in an installed package
    sys.path.insert(0, str(ROOT))

from tests.fakes.agent_endpoint import FakeAgentEndpoint, Received  # noqa: E402

HOST = "127.0.0.1"
_CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


class PingError(Exception):
    """A set-up step answered unexpectedly (run.py turns it into a BenchError)."""


# ------------------------------------------------------------------------------------------------- the approver


@dataclass
class Browser:
    """The approver's browser, reduced to what the decide POST needs: the session and CSRF cookies.

    Cookies are kept by hand: with DEBUG off the server marks them Secure (it expects TLS in front of it), which a
    cookie jar would then never send over the benchmark's plain-http loopback connection. The server itself does not
    care; the CSRF check of a plain-http request compares the Origin header with the host.
    """

    port: int
    cookies: dict[str, str] = field(default_factory=dict)

    @property
    def origin(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}
        return headers | (extra or {})

    def _keep(self, response: http.client.HTTPResponse) -> None:
        for header in response.headers.get_all("Set-Cookie") or ():
            jar = SimpleCookie()
            jar.load(header)
            for name, morsel in jar.items():
                self.cookies[name] = morsel.value

    def request(self, method: str, path: str, form: dict[str, str] | None = None) -> tuple[int, str, bytes]:
        """(status, Location, body); keeps the cookies it is given (used for set-up, not for the timed POSTs)."""
        conn = http.client.HTTPConnection(HOST, self.port, timeout=10)
        try:
            extra = {"Origin": self.origin}
            body = None
            if form is not None:
                body = urlencode(form)
                extra["Content-Type"] = "application/x-www-form-urlencoded"
            conn.request(method, path, body=body, headers=self._headers(extra))
            response = conn.getresponse()
            data = response.read()
            self._keep(response)
            return response.status, response.getheader("Location") or "", data
        finally:
            conn.close()

    def login(self, username: str, password: str) -> None:
        status, _, page = self.request("GET", "/accounts/login/")
        match = _CSRF_INPUT.search(page.decode(errors="replace"))
        if status != 200 or not match or "csrftoken" not in self.cookies:
            raise PingError(f"GET /accounts/login/ answered {status} without a CSRF token: {page[:300]!r}")
        form = {"username": username, "password": password, "csrfmiddlewaretoken": match.group(1)}
        status, location, page = self.request("POST", "/accounts/login/", form)
        if status != 302 or "sessionid" not in self.cookies:
            raise PingError(f"POST /accounts/login/ answered {status} (Location {location!r}): {page[:300]!r}")

    def decide_request(self, request_id: str) -> tuple[str, str, dict[str, str]]:
        """The decide POST, ready to send: (path, body, headers)."""
        body = urlencode({"decision": "approve", "csrfmiddlewaretoken": self.cookies["csrftoken"]})
        headers = self._headers({"Origin": self.origin, "Content-Type": "application/x-www-form-urlencoded"})
        return f"/approvals/{request_id}/decide/", body, headers


def decided_location(request_id: str) -> str:
    """Where decide sends the approver back to on success (and on failure: the DB says which)."""
    return f"/approvals/{request_id}/"


# ------------------------------------------------------------------------------------------------- load generator


@dataclass
class Approval:
    label: str  # W<n> (warm-up, not counted) or A<n>
    request_id: str
    auth_req_id: str
    token: str  # its client_notification_token
    scheduled: float = 0.0
    sent: float = 0.0  # time.time() just before connecting and sending the decide POST
    answered: float = 0.0
    status: int = 0
    location: str = ""
    error: str = ""


@dataclass
class ApproveLoop:
    """Decide POSTs at a fixed rate, whatever the answers take (a small pool of threads sends them)."""

    browser: Browser
    approvals: list[Approval]
    rate: float
    threads: int = 8
    measured_start: float = 0.0
    measured_end: float = 0.0

    def _send(self, item: Approval) -> None:
        path, body, headers = self.browser.decide_request(item.request_id)
        item.sent = time.time()
        conn = http.client.HTTPConnection(HOST, self.browser.port, timeout=10)
        try:
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            item.answered = time.time()
            item.status = response.status
            item.location = response.getheader("Location") or ""
        except (OSError, http.client.HTTPException) as exc:
            item.answered = time.time()
            item.error = type(exc).__name__
        finally:
            conn.close()

    def run(self) -> None:
        step = 1.0 / self.rate
        start = time.time() + 0.2
        n_warm = sum(1 for a in self.approvals if a.label.startswith("W"))
        self.measured_start = start + n_warm * step
        self.measured_end = start + len(self.approvals) * step
        with ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="bench-approve") as pool:
            for k, item in enumerate(self.approvals):
                item.scheduled = start + k * step
                delay = item.scheduled - time.time()
                if delay > 0:
                    time.sleep(delay)
                pool.submit(self._send, item)

    @property
    def measured(self) -> list[Approval]:
        return [a for a in self.approvals if a.label.startswith("A")]


def ping_id(ping: Received) -> str | None:
    body = ping.json
    return body.get("auth_req_id") if isinstance(body, dict) else None


def wait_for_pings(fake: FakeAgentEndpoint, auth_req_ids: set[str], deadline: float) -> None:
    """Until every auth_req_id has a ping, or the deadline (time.time())."""
    while time.time() < deadline:
        if auth_req_ids <= {ping_id(p) for p in fake.received}:
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
class PingStats:
    sent: int  # measured decide POSTs
    approved: int  # answered 302 back to the request's page (and approved in the database, checked apart)
    errors: int  # any other answer, or none
    received: int  # measured approvals with at least one ping
    lost: int  # approved, but no ping within the wait after the load stopped
    duplicates: int  # measured approvals with more than one ping
    bad_token: int  # pings whose Bearer token is not the request's client_notification_token
    unmatched: int  # pings naming no request of this run
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    min_ms: float
    answer_p50_ms: float  # decide: sent -> answer read
    answer_p99_ms: float
    after_answer_p50_ms: float  # ping received - decide's answer read
    late_sends: int  # decide POSTs sent more than 20 ms after their slot
    achieved_rate: float
    error_kinds: dict[str, int] = field(default_factory=dict)


def compute_stats(load: ApproveLoop, pings: list[Received]) -> PingStats:
    by_id: dict[str, list[Received]] = {}
    known = {a.auth_req_id: a for a in load.approvals}
    unmatched = bad_token = 0
    for ping in pings:
        rid = ping_id(ping)
        if rid not in known:
            unmatched += 1
            continue
        by_id.setdefault(rid, []).append(ping)
        if ping.headers.get("authorization") != f"Bearer {known[rid].token}":
            bad_token += 1
    measured = load.measured
    ok = [a for a in measured if a.status == 302 and a.location.endswith(decided_location(a.request_id))]
    error_kinds: dict[str, int] = {}
    for a in measured:
        if a not in ok:
            kind = a.error or f"HTTP {a.status} {a.location[:40]}".strip()
            error_kinds[kind] = error_kinds.get(kind, 0) + 1

    def first(a: Approval) -> float:
        return min(p.received_at for p in by_id[a.auth_req_id])

    got = [a for a in ok if a.auth_req_id in by_id]
    latencies = sorted(1000 * (first(a) - a.sent) for a in got)
    after_answer = sorted(1000 * (first(a) - a.answered) for a in got)
    answers = sorted(1000 * (a.answered - a.sent) for a in measured if a.answered)
    sends = [a.sent for a in measured]
    span = (max(sends) - min(sends)) if len(sends) > 1 else 0
    return PingStats(
        sent=len(measured),
        approved=len(ok),
        errors=len(measured) - len(ok),
        received=sum(1 for a in measured if a.auth_req_id in by_id),
        lost=sum(1 for a in ok if a.auth_req_id not in by_id),
        duplicates=sum(1 for a in measured if len(by_id.get(a.auth_req_id, ())) > 1),
        bad_token=bad_token,
        unmatched=unmatched,
        p50_ms=percentile(latencies, 50),
        p90_ms=percentile(latencies, 90),
        p99_ms=percentile(latencies, 99),
        max_ms=latencies[-1] if latencies else math.nan,
        min_ms=latencies[0] if latencies else math.nan,
        answer_p50_ms=percentile(answers, 50),
        answer_p99_ms=percentile(answers, 99),
        after_answer_p50_ms=percentile(after_answer, 50),
        late_sends=sum(1 for a in measured if a.sent - a.scheduled > 0.020),
        achieved_rate=(len(sends) - 1) / span if span else math.nan,
        error_kinds=error_kinds,
    )
