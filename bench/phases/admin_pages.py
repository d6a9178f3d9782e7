"""Issue 18, item 8: the admin's review pages at scale.

A database of its own holds 1,000,000 approval requests of 200 agents and 2,000 approvers over seven days, with their
audit trails (about 5 events a request) and prompt deliveries, written by bench/flat_seed.py (`admin-history`) with
every index in place. A superuser signs in through the admin's login form, and each page is fetched one after
another, as an admin would: the request list, its filters, its searches, a request's page and the overview. Target:
each under 300 ms (the 90th percentile of its fetches)."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

import psycopg

from bench.common import OUT_DIR, BenchError, free_port, log, percentile
from bench.phases.base import Context, Phase, PhaseResult
from bench.phases.flatness import create_database, drop_database, flat_seed
from bench.phases.ping import Browser
from bench.postgres import admin_dsn
from bench.servers import manage, server_env, start_server
from bench.system import cpu_seconds, wait_for_quiet

PAGE_TARGET_MS = 300.0


@dataclass
class PageTiming:
    label: str
    path: str
    status: int
    times_ms: list[float]
    bytes: int
    # CPU seconds per measured fetch, by process group (gunicorn, postgres, bench, other, steal): whether a slow page
    # is the server's work or the machine's (another process, a noisy neighbour).
    cpu_ms: dict[str, float] = field(default_factory=dict)

    @property
    def p50(self) -> float:
        return percentile(sorted(self.times_ms), 50)

    @property
    def p90(self) -> float:
        return percentile(sorted(self.times_ms), 90)


@dataclass
class AdminResult:
    requests: int
    events: int
    deliveries: int
    agents: int
    approvers: int
    days: float
    seed_seconds: float
    sizes: dict[str, tuple[int, int]]  # table -> (table bytes, index bytes)
    pages: list[PageTiming] = field(default_factory=list)

    @property
    def met(self) -> bool:
        return all(page.status == _expected(page.label) and page.p90 < PAGE_TARGET_MS for page in self.pages)

    def summary(self) -> str:
        slowest = max(self.pages, key=lambda page: page.p90)
        return (
            f"{len(self.pages)} admin pages over {self.requests:,} requests and {self.events:,} events: slowest "
            f"{slowest.label} p90 {slowest.p90:.0f} ms; target {PAGE_TARGET_MS:.0f} ms "
            f"{'met' if self.met else 'NOT met'}"
        )


def _pages(dsn: str) -> list[tuple[str, str]]:
    """The pages to fetch, with real values from the data set: a busy agent, an approver, a request and its id."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        agent_name, client_id = conn.execute(
            "SELECT name, client_id FROM oauth2_provider_application WHERE client_id = 'bench-agent-7'"
        ).fetchone()
        (username,) = conn.execute("SELECT username FROM auth_user WHERE username = 'approver-42'").fetchone()
        request_id, auth_req_id, message = conn.execute(
            "SELECT id, auth_req_id, binding_message FROM approvals_approvalrequest "
            "WHERE status = 'consumed' ORDER BY created_at DESC OFFSET 5000 LIMIT 1"
        ).fetchone()
    today = time.strftime("%Y-%m-%d", time.gmtime())
    week_ago = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 6 * 86400))
    requests = "/admin/approvals/approvalrequest/"

    def q(**params: object) -> str:
        return requests + "?" + urlencode(params)

    return [
        ("request list", requests),
        ("page 50 of the list", q(p=50)),
        ("filter: status", q(status="denied")),
        ("filter: agent", q(agent=client_id)),
        ("filter: approver", q(approver=username)),
        ("filter: channel", q(channel="webpush")),
        ("filter: decided via", q(decided_via__exact="link")),
        ("filter: delivery mode", q(mode="poll")),
        ("filter: date range", q(created_from=week_ago, created_to=today)),
        ("filter: never delivered", q(channel="none", status="expired")),
        ("search: agent name", q(q=agent_name)),
        ("search: agent client_id", q(q=client_id)),
        ("search: approver", q(q=username)),
        ("search: binding message", q(q=message)),
        # An exact auth_req_id leads straight to its request's page: the answer is that redirect.
        ("search: exact auth_req_id", q(q=auth_req_id)),
        ("a request's page", f"{requests}{quote(str(request_id))}/change/"),
        ("audit event list", "/admin/approvals/auditevent/"),
        ("overview", "/admin/review/overview/"),
    ]


class AdminPages(Phase):
    """Issue 18, item 8: the admin's pages with 1,000,000 requests and about 5,000,000 audit events."""

    name = "admin"

    def run(self, ctx: Context) -> PhaseResult:
        args = ctx.args
        database = f"{args.database}_admin"
        port = free_port()
        env = {
            **server_env(args, port),
            "DATABASE_URL": f"postgres://{args.pg_user}@127.0.0.1:{args.pg_port}/{database}",
        }
        create_database(args, database)
        server = None
        try:
            log(f"admin: migrating {database}")
            manage(env, "migrate", "--no-input", "-v", "0")
            password = secrets.token_urlsafe(18)
            manage(
                {**env, "DJANGO_SUPERUSER_PASSWORD": password},
                "createsuperuser",
                "--noinput",
                "--username",
                "bench-admin",
                "--email",
                "admin@example.com",
            )
            log(
                f"admin: {args.admin_requests:,} requests of {args.admin_agents} agents and {args.admin_approvers:,} "
                f"approvers over {args.admin_days:g} days (bench/flat_seed.py admin-history)"
            )
            started = time.monotonic()
            seeded = flat_seed(
                env,
                "admin-history",
                f"--rows={args.admin_requests}",
                f"--agents={args.admin_agents}",
                f"--approvers={args.admin_approvers}",
                f"--hours={24 * args.admin_days}",
                timeout=3600,
            )
            seed_seconds = time.monotonic() - started
            dsn = admin_dsn(args, database)
            sizes = _sizes(dsn)
            deliveries = sizes.pop("_deliveries")[0]
            server = start_server(args, env, port, log_name="gunicorn-admin.log")
            browser = Browser(port)
            browser.login("bench-admin", password, path="/admin/login/")
            # Every page once per gunicorn worker before any is measured: each connection may land on any worker,
            # and a worker's first page (templates, the admin's registry, PostgreSQL's cache after the load) took
            # 400 ms more in a run that warmed each page on two fetches only.
            to_fetch = _pages(dsn)
            for _ in range(args.workers):
                for _label, path in to_fetch:
                    browser.request("GET", path)
            # As the open-loop phases do: other processes' CPU turns straight into the pages' time.
            wait_for_quiet(args.wait_quiet, 3.0, prefix="admin: ", shown=2)
            pages = []
            for label, path in to_fetch:
                before = ctx.cpu_sample(server)
                timing = _fetch(browser, label, path, args.admin_fetches)
                used = cpu_seconds(before, ctx.cpu_sample(server))
                timing.cpu_ms = {
                    group: 1000 * used[group] / (2 + len(timing.times_ms))
                    for group in ("gunicorn", "postgres", "bench", "other", "steal")
                }
                log(
                    f"admin: {label}: {timing.status}, p50 {timing.p50:.0f} ms, p90 {timing.p90:.0f} ms; CPU ms a "
                    "fetch (gunicorn / pg / bench / other / steal): "
                    + " / ".join(f"{v:.0f}" for v in timing.cpu_ms.values())
                )
                pages.append(timing)
            return AdminResult(
                requests=args.admin_requests,
                events=int(seeded["events"]),
                deliveries=deliveries,
                agents=args.admin_agents,
                approvers=args.admin_approvers,
                days=args.admin_days,
                seed_seconds=seed_seconds,
                sizes=sizes,
                pages=pages,
            )
        finally:
            if server is not None:
                server.stop()
            drop_database(args, database)


def _fetch(browser: Browser, label: str, path: str, fetches: int) -> PageTiming:
    """Two more unmeasured fetches, then `fetches` measured, one after another."""
    status, size = 0, 0
    times: list[float] = []
    for i in range(2 + fetches):
        started = time.perf_counter()
        status, _, body = browser.request("GET", path)
        elapsed = 1000 * (time.perf_counter() - started)
        if i >= 2:
            times.append(elapsed)
        size = len(body)
        if status != _expected(label):
            (OUT_DIR / "admin-failed-page.html").write_bytes(body)
            break
    return PageTiming(label, path, status, times or [float("nan")], size)


def _expected(label: str) -> int:
    return 302 if label == "search: exact auth_req_id" else 200


def _sizes(dsn: str) -> dict[str, tuple[int, int]]:
    tables = ("approvals_approvalrequest", "approvals_auditevent", "approvals_delivery")
    sizes = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for table in tables:
            sizes[table] = conn.execute(
                "SELECT pg_table_size(%s::regclass), pg_indexes_size(%s::regclass)", (table, table)
            ).fetchone()
        (count,) = conn.execute("SELECT count(*) FROM approvals_delivery").fetchone()
    sizes["_deliveries"] = (count, 0)
    if not count:
        raise BenchError("admin: the history wrote no deliveries")
    return sizes


def admin_verdict(r: AdminResult) -> list[str]:
    slowest = max(r.pages, key=lambda page: page.p90)
    failed = [page.label for page in r.pages if page.status != _expected(page.label)]
    return [
        f"- Admin review pages (issue 18) with {r.requests:,} approval requests and {r.events:,} audit events: the "
        f"slowest of {len(r.pages)} pages, {slowest.label}, **{slowest.p90:.0f} ms** at the 90th percentile"
        + (f"; pages that did not answer as expected: {', '.join(failed)}" if failed else "")
        + f" — target each under {PAGE_TARGET_MS:.0f} ms — **{'MET' if r.met else 'NOT MET'}**."
    ]


def admin_section(r: AdminResult) -> list[str]:
    mib = 1024 * 1024
    lines = [
        "## Admin review at scale (issue 18, item 8)",
        "",
        *admin_verdict(r),
        "",
        f"A database of its own: {r.requests:,} approval requests of {r.agents} agents and {r.approvers:,} approvers, "
        f"created evenly over the {r.days:g} days up to the run, with {r.events:,} audit events and {r.deliveries:,} "
        "prompt deliveries (bench/flat_seed.py `admin-history`: INSERT ... SELECT generate_series into the real tables "
        "with every index in place, then VACUUM ANALYZE; the mix of statuses, channels and ways of deciding is in its "
        f"notes), written in {r.seed_seconds:.0f} s. One gunicorn as in the other phases; a superuser signed in "
        "through the admin's login form fetches every page once per gunicorn worker (unmeasured), then each page one "
        "after another (two fetches unmeasured, then the measured ones), timed from sending the request to reading "
        "the whole page.",
        "",
        "| page | path | status | p50 ms | p90 ms | max ms | fetches | KiB | CPU ms a fetch: gunicorn / pg / "
        "bench / other / steal |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for page in r.pages:
        path = page.path if len(page.path) < 90 else page.path[:87] + "..."
        cpu = " / ".join(f"{v:.0f}" for v in page.cpu_ms.values()) if page.cpu_ms else "-"
        lines.append(
            f"| {page.label} | `{path}` | {page.status} | {page.p50:.0f} | {page.p90:.0f} | "
            f"{max(page.times_ms):.0f} | {len(page.times_ms)} | {page.bytes / 1024:.0f} | {cpu} |"
        )
    lines += [
        "",
        "- Sizes: "
        + "; ".join(
            f"{table} {table_bytes / mib:.0f} MiB + {index_bytes / mib:.0f} MiB of indexes"
            for table, (table_bytes, index_bytes) in r.sizes.items()
        )
        + ".",
        "- CPU ms a fetch: CPU time of each process group while the page was fetched (the 2 unmeasured fetches and "
        "the measured ones), divided by the number of fetches. gunicorn is the server's work (Django's admin "
        "renders each of a list's 100 rows cell by cell in Python), pg is PostgreSQL's, bench the benchmark's "
        "client; other is any process outside the benchmark and steal the time the hypervisor gave other guests, "
        "both of which should be near 0.",
        "- The number of queries each page makes is asserted in the test suite, not here.",
        "",
    ]
    return lines
