"""Phase g, ping delivery (issue 5).

A ping client (CIBA Core §10.2) registered with its notification endpoint on the fake agent endpoint of
tests/fakes/agent_endpoint.py, which runs in the benchmark's own process. Pending requests are created first (each
with its own client_notification_token); then the approver, signed in through the login form, approves them one
after another at a fixed rate (open loop: POST /approvals/<id>/decide/ with the session and CSRF cookies). The decide
transaction writes a Notification and, on commit, enqueues approvals.tasks.notify_client_task; a real Celery worker
POSTs {"auth_req_id": ...} to the fake. Latency = the fake's received_at - the time just before the decide POST was
sent, both time.time() in this process, matched by the auth_req_id in the ping's body.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import re
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from urllib.parse import urlencode

from bench.common import HOST, OUT_DIR, BenchError, basic_auth, form_headers, free_port, http_request, log, percentile
from bench.load import OpenLoop, Shot
from bench.phases.base import Context, Phase
from bench.postgres import connect, pg_sessions
from bench.servers import (
    Server,
    Worker,
    flush_redis,
    manage_json,
    server_env,
    start_server,
    start_worker,
    wait_until_drained,
)
from bench.system import OPEN_LOOP_CPU, cpu_shares, fmt_cpu, wait_for_quiet
from tests.fakes.agent_endpoint import FakeAgentEndpoint, Received

PING_P50_TARGET_MS = 100
_CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


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

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
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
            conn.request(method, path, body=body, headers=self.headers(extra))
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
            raise BenchError(f"ping: GET /accounts/login/ answered {status} without a CSRF token: {page[:300]!r}")
        form = {"username": username, "password": password, "csrfmiddlewaretoken": match.group(1)}
        status, location, page = self.request("POST", "/accounts/login/", form)
        if status != 302 or "sessionid" not in self.cookies:
            raise BenchError(f"ping: POST /accounts/login/ answered {status} (Location {location!r}): {page[:300]!r}")

    def decide_form(self) -> dict[str, str]:
        return {"decision": "approve", "csrfmiddlewaretoken": self.cookies["csrftoken"]}

    def decide_headers(self) -> dict[str, str]:
        """The timed decide POSTs' headers: the cookies as they are after the login."""
        return self.headers({"Origin": self.origin, "Content-Type": "application/x-www-form-urlencoded"})


def decide_path(request_id: str) -> str:
    return f"/approvals/{request_id}/decide/"


def decided_location(request_id: str) -> str:
    """Where decide sends the approver back to on success (and on failure: the DB says which)."""
    return f"/approvals/{request_id}/"


# ------------------------------------------------------------------------------------------------- pings


@dataclass(kw_only=True)
class Approval(Shot):
    """A decide POST: label W<n> (warm-up, not counted) or A<n>."""

    request_id: str
    auth_req_id: str
    token: str  # its client_notification_token


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


def compute_stats(load: OpenLoop[Approval], pings: list[Received]) -> PingStats:
    by_id: dict[str, list[Received]] = {}
    known = {a.auth_req_id: a for a in load.shots}
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


@dataclass
class PingResult:
    stats: PingStats
    cpu: dict[str, float]
    pg_sessions: int
    worker: str
    db_approved: int  # measured requests approved in the database after the run
    db_delivered: int  # their notifications marked delivered
    warm: tuple[int, int]  # warm-up approvals answered 302, and how many of them got a ping
    create_seconds: float  # creating the pending requests
    seconds: float  # the phase's wall time, set-up included

    @property
    def target_met(self) -> bool:
        st = self.stats
        return st.p50_ms < PING_P50_TARGET_MS and st.lost == 0 and st.errors == 0 and st.duplicates == 0

    def summary(self) -> str:
        st = self.stats
        return (
            f"approvals sent {st.sent}, approved (302) {st.approved}, pings received {st.received}, lost {st.lost}, "
            f"duplicates {st.duplicates}; decide POST->ping p50 {st.p50_ms:.1f} ms, p90 {st.p90_ms:.1f} ms, "
            f"p99 {st.p99_ms:.1f} ms, max {st.max_ms:.1f} ms; decide answer p50 {st.answer_p50_ms:.1f} ms; "
            f"CPU {fmt_cpu(self.cpu, OPEN_LOOP_CPU)}; target {'met' if self.target_met else 'NOT met'}"
        )


# -------------------------------------------------------------------------------------------------------- database


def _request_ids(args: argparse.Namespace, auth_req_ids: list[str]) -> dict[str, str]:
    with connect(args) as conn:
        rows = conn.execute(
            "SELECT auth_req_id, id::text FROM approvals_approvalrequest WHERE auth_req_id = ANY(%s)", (auth_req_ids,)
        ).fetchall()
    return dict(rows)


def _unprompted(args: argparse.Namespace, auth_req_ids: list[str]) -> int:
    """Requests whose prompt task (console channel here) has not run yet: the worker is still busy with them."""
    with connect(args) as conn:
        return conn.execute(
            "SELECT count(*) FROM approvals_approvalrequest WHERE auth_req_id = ANY(%s) AND prompted_at IS NULL "
            "AND prompt_failed_at IS NULL",
            (auth_req_ids,),
        ).fetchone()[0]


def _db_outcome(args: argparse.Namespace, auth_req_ids: list[str]) -> tuple[int, int]:
    with connect(args) as conn:
        approved = conn.execute(
            "SELECT count(*) FROM approvals_approvalrequest WHERE auth_req_id = ANY(%s) AND status = 'approved'",
            (auth_req_ids,),
        ).fetchone()[0]
        delivered = conn.execute(
            "SELECT count(*) FROM authz_notification n JOIN approvals_approvalrequest r ON r.id = n.request_id "
            "WHERE r.auth_req_id = ANY(%s) AND n.status = 'delivered'",
            (auth_req_ids,),
        ).fetchone()[0]
    return approved, delivered


# ---------------------------------------------------------------------------------------------------------- phase


def _create_pending(port: int, auth: str, hint: str, labels: list[str]) -> list[tuple[str, str, str]]:
    """bc-authorize for each label, each with its own client_notification_token: [(label, auth_req_id, token)]."""
    form = form_headers(auth)

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


class Ping(Phase):
    """g. Pending requests of a ping client first; then the approver approves them at a steady rate, open loop; a
    real Celery worker pings the fake agent endpoint in this process; latency = ping received - decide POST sent."""

    name = "ping"

    def run(self, ctx: Context) -> PingResult:
        args = ctx.args
        started = time.monotonic()
        fake = FakeAgentEndpoint()
        server: Server | None = None
        worker: Worker | None = None
        try:
            port = free_port()
            env = server_env(args, port)
            password = secrets.token_urlsafe(24)
            approver = manage_json(env, "create_approver", "bench-ping-approver", f"--password={password}")
            # The fake listens on http://127.0.0.1: only accepted with this development setting. With DEBUG off,
            # system check E108 refuses it in manage.py commands (hence --skip-checks below); gunicorn and the worker
            # run no system checks.
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
            auth = basic_auth(client)
            flush_redis(args)  # tasks queued by earlier phases with no worker must not reach this one
            log(
                f"ping: fake agent endpoint {fake.url}; gunicorn ({args.workers} sync workers) and a Celery worker "
                f"({args.prompt_pool}, concurrency {args.prompt_concurrency})"
            )
            server = start_server(args, env, port, "gunicorn-ping.log")
            worker = start_worker(args, env, "celery-ping.log")
            browser = Browser(port)
            browser.login(approver["username"], password)

            # Smoke test, which also waits for the worker: one request approved, its ping within 30 s.
            ((_, smoke_id, _),) = _create_pending(port, auth, approver["username"], ["S1"])
            smoke_pk = _request_ids(args, [smoke_id])[smoke_id]
            status, location, page = browser.request("POST", decide_path(smoke_pk), browser.decide_form())
            if status != 302 or not location.endswith(decided_location(smoke_pk)):
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
            body = urlencode(browser.decide_form())
            approvals = [
                Approval(
                    label=label,
                    path=decide_path(ids[rid]),
                    body=body,
                    request_id=ids[rid],
                    auth_req_id=rid,
                    token=token,
                )
                for label, rid, token in created
            ]
            # Their prompts (console channel) keep the worker busy for a moment: let it finish first.
            deadline = time.monotonic() + 60
            while _unprompted(args, list(ids)) and time.monotonic() < deadline:
                time.sleep(0.2)
            wait_until_drained(port)
            time.sleep(1)
            wait_for_quiet(args.wait_quiet, 3.0, prefix="ping: ", shown=2)

            load = OpenLoop(
                port=port,
                shots=approvals,
                headers=browser.decide_headers(),
                rate=args.ping_rate,
                warmup=args.ping_warmup,
                threads=8,
                name="bench-approve",
            )
            log(
                f"ping: {args.ping_warmup} approvals warm-up then {args.ping_count} measured at {args.ping_rate:g} "
                "decide POSTs/s (open loop)"
            )
            gen = load.start()
            sessions_0 = pg_sessions(args)
            before = ctx.cpu_sample(server, worker)
            gen.join(timeout=len(approvals) / args.ping_rate + 30)
            time.sleep(0.3)  # the last pings
            after = ctx.cpu_sample(server, worker)
            sessions = pg_sessions(args) - sessions_0
            if gen.is_alive():
                raise BenchError("ping: the load generator did not finish")
            cpu = cpu_shares(before, after, 0.0)
            wanted = {a.auth_req_id for a in load.shots if a.status == 302}
            wait_for_pings(fake, wanted, time.time() + args.ping_wait)
            if not server.alive() or not worker.alive():
                raise BenchError(f"ping: gunicorn or the worker died.\n{server.log_tail()}\n{worker.log_tail()}")
            time.sleep(0.5)  # a duplicate would come right after
            pings = [p for p in fake.received if ping_id(p) != smoke_id]
            stats = compute_stats(load, pings)
            got = {ping_id(p) for p in pings}
            warm_ok = [a for a in load.warm if a.status == 302]
            warm = (len(warm_ok), sum(1 for a in warm_ok if a.auth_req_id in got))
            db_approved, db_delivered = _db_outcome(args, [a.auth_req_id for a in load.measured])
            first_ping: dict[str | None, float] = {}
            for p in pings:
                first_ping.setdefault(ping_id(p), p.received_at)
            (OUT_DIR / "ping-approvals.tsv").write_text(
                "label\tauth_req_id\tscheduled\tsent\tanswered\tstatus\tlocation\terror\tfirst_ping\n"
                + "".join(
                    f"{a.label}\t{a.auth_req_id}\t{a.scheduled:.6f}\t{a.sent:.6f}\t{a.answered:.6f}\t{a.status}\t"
                    f"{a.location}\t{a.error}\t{first_ping.get(a.auth_req_id, 0):.6f}\n"
                    for a in load.shots
                )
            )
            (OUT_DIR / "ping-received.tsv").write_text(
                "auth_req_id\treceived_at\tpath\n"
                + "".join(f"{ping_id(p)}\t{p.received_at:.6f}\t{p.path}\n" for p in fake.received)
            )
            description = worker.description
        finally:
            if worker is not None:
                worker.stop()
            if server is not None:
                server.stop()
            fake.close()
        return PingResult(
            stats,
            cpu,
            sessions,
            description,
            db_approved,
            db_delivered,
            warm,
            create_seconds,
            time.monotonic() - started,
        )
