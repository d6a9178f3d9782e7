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
import re
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import ClassVar
from urllib.parse import urlencode

from bench.common import HOST, OUT_DIR, BenchError, basic_auth, form_headers, free_port, http_request, log, percentile
from bench.load import OpenLoop, Shot
from bench.phases.base import Context, Phase
from bench.phases.open_loop import ArrivalStats, arrival_stats, await_arrivals, latencies_ms, measure_load
from bench.postgres import connect
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
from bench.system import OPEN_LOOP_CPU, fmt_cpu, group_rss_kib, wait_for_quiet
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

    def login(self, username: str, password: str, path: str = "/accounts/login/") -> None:
        """Signs in through the login form at `path` (the approvers' or the admin's)."""
        status, _, page = self.request("GET", path)
        match = _CSRF_INPUT.search(page.decode(errors="replace"))
        if status != 200 or not match or "csrftoken" not in self.cookies:
            raise BenchError(f"GET {path} answered {status} without a CSRF token: {page[:300]!r}")
        form = {"username": username, "password": password, "csrfmiddlewaretoken": match.group(1)}
        status, location, page = self.request("POST", path, form)
        if status != 302 or "sessionid" not in self.cookies:
            raise BenchError(f"POST {path} answered {status} (Location {location!r}): {page[:300]!r}")

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


# ----------------------------------------------------------------------------------------------------- statistics


def approved(a: Approval) -> bool:
    """A 302 back to the request's page (whether it was approved, the database says: checked apart)."""
    return a.status == 302 and a.location.endswith(decided_location(a.request_id))


@dataclass
class PingStats(ArrivalStats):
    """ok = approved; the latency runs from the decide POST sent."""

    bad_token: int  # pings whose Bearer token is not the request's client_notification_token
    after_answer_p50_ms: float  # ping received - decide's answer read


def compute_stats(load: OpenLoop[Approval], pings: list[Received]) -> PingStats:
    """Each ping matched to its approval by the auth_req_id in its body."""
    known = {a.auth_req_id: a for a in load.shots}
    arrivals: dict[str, list[float]] = {}
    unmatched = bad_token = 0
    for ping in pings:
        rid = ping_id(ping)
        if rid not in known:
            unmatched += 1
            continue
        approval = known[rid]
        arrivals.setdefault(approval.label, []).append(ping.received_at)
        if ping.headers.get("authorization") != f"Bearer {approval.token}":
            bad_token += 1
    stats = arrival_stats(load, arrivals, unmatched, ok=approved, since=lambda a: a.sent)
    after_answer = latencies_ms(filter(approved, load.measured), arrivals, lambda a: a.answered)
    return PingStats(**vars(stats), bad_token=bad_token, after_answer_p50_ms=percentile(after_answer, 50))


@dataclass
class PingResult:
    # What the console and RESULTS.md call the stats' sent, ok and received.
    counts: ClassVar[tuple[str, str, str]] = ("approvals sent", "approved (302)", "pings received")

    stats: PingStats
    cpu: dict[str, float]
    pg_sessions: int
    worker: str
    db_approved: int  # measured requests approved in the database after the run
    db_delivered: int  # their notifications marked delivered
    warm: tuple[int, int]  # warm-up approvals answered 302, and how many of them got a ping
    create_seconds: float  # creating the pending requests
    seconds: float  # the phase's wall time, set-up included
    # The worker's processes' resident memory (pid -> KiB) after the run, before it stops (issue 17, item 5).
    worker_rss_kib: dict[int, int] = field(default_factory=dict)

    @property
    def target_met(self) -> bool:
        st = self.stats
        return st.p50_ms < PING_P50_TARGET_MS and st.lost == 0 and st.errors == 0 and st.duplicates == 0

    def summary(self) -> str:
        st = self.stats
        return (
            f"{st.summary(self.counts, 'decide POST->ping')}; decide answer p50 {st.answer_p50_ms:.1f} ms; "
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
                f"ping: fake agent endpoint {fake.url}; gunicorn ({args.workers} gthread workers) and a Celery worker "
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
            timeout = len(approvals) / args.ping_rate + 30
            cpu, sessions = measure_load(ctx, "ping", load, server, worker, timeout, settle=0.3)  # the last pings
            wanted = {a.auth_req_id for a in load.shots if a.status == 302}
            await_arrivals("ping", server, worker, lambda: {ping_id(p) for p in fake.received}, wanted, args.ping_wait)
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
            worker_rss = group_rss_kib(worker.pgrp)
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
            worker_rss_kib=worker_rss,
        )
