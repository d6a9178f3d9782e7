"""The admin's overview page (issue 18 item 5): its figures for a known set of requests, its charts, who may see it,
and what it costs in queries."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from html import unescape
from html.parser import HTMLParser
from types import SimpleNamespace
from typing import Any

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from approvals import services
from approvals.models import ApprovalRequest, Delivery
from authz.review import charts
from authz.review.overview import overview, percentile
from authz.review.overview_page import duration
from authz.tasks import warm_review_overview_task
from tests import factories

pytestmark = [pytest.mark.django_db, pytest.mark.postgres, pytest.mark.redis]

URL = "/admin/review/overview/"
# The instant the page is looked at; the data set is laid out around it.
NOW = datetime(2026, 6, 1, 9, 30, tzinfo=UTC)
SVG = "{http://www.w3.org/2000/svg}"
Status = ApprovalRequest.Status


@pytest.fixture
def frozen():
    with time_machine.travel(NOW, tick=False):
        yield


def ago(**kwargs: float) -> datetime:
    return NOW - timedelta(**kwargs)


class DataSet:
    """Twelve requests around NOW, each made and decided through approvals' services at its own time. "n. d.":
    never delivered (pending or expired, no prompt accepted).

    In the last 24 hours (travel agent: r1-r5, expense bot: r6, r7):
      r1  1 h ago, its SMS accepted, approved on the page after 10 s, tokens issued  -> tokens issued
      r2  2 h ago, its push accepted, denied after 30 s, expired, not swept yet      -> expired (denied)
      r3  3 h ago, no prompt accepted, approved by link after 60 s, unredeemed       -> expired (approved), n. d.
      r4  30 s ago, its SMS accepted                                                  -> pending
      r5  60 s ago, no prompt accepted (SMS failed, then rejected)                   -> pending, n. d.
      r6  5 h ago, no prompt accepted, expired undecided                             -> expired, n. d.
      r7  4 h ago, cancelled by an admin                                              -> cancelled
    Earlier in the last 7 days (travel agent: r8; expense bot: r9, r10, r12):
      r8  3 days ago, approved after 120 s, tokens issued                            -> tokens issued
      r9  2 days ago, denied after 90 s                                              -> expired (denied), n. d.
      r10 6 days ago, its SMS accepted, expired undecided                            -> expired
      r12 2 days ago, its push failed, expired undecided                             -> expired, n. d.
    Before that (calendar bot): r11 8 days ago, tokens issued: in neither window.
    The expiry sweep ran two and a half hours ago (r3, r6, r9, r10, r12 are stored as expired; r2 still as denied).
    """

    def __init__(self, admin_user: Any) -> None:
        travel, _ = factories.make_agent_client(name="Travel agent")
        expense, _ = factories.make_agent_client(name="Expense bot")
        calendar, _ = factories.make_agent_client(name="Calendar bot")
        self.travel, self.expense = travel, expense
        alice = factories.make_approver("alice")
        self.alice = alice

        def make(agent: Any, created: datetime, **kwargs: Any) -> ApprovalRequest:
            return services.approval_request_create(
                client=agent, user=alice.user, scope="openid", hint_type="login_hint", now=created,
                **factories.as_bc_authorize(**kwargs),
            )  # fmt: skip

        def decide(r: ApprovalRequest, after: int, *, approve: bool, **kwargs: Any) -> None:
            at = r.created_at + timedelta(seconds=after)
            assert services.approval_request_decide(
                approval_request_id=r.pk, user=alice.user, approve=approve, now=at, **kwargs
            )

        def consume(r: ApprovalRequest, after: int) -> None:
            assert services.approval_request_consume(
                approval_request_id=r.pk, now=r.created_at + timedelta(seconds=after)
            )

        def prompted(r: ApprovalRequest, channel: str) -> None:
            # What approvals.prompts writes when a provider accepts the prompt.
            ApprovalRequest.objects.filter(pk=r.pk).update(prompted_at=r.created_at, prompt_channel=channel)

        def attempt(r: ApprovalRequest, channel: str, status: str, n: int = 1) -> None:
            Delivery.objects.create(
                request=r, channel=channel, destination=f"{channel}:{r.pk}", attempt=n, status=status,
                created_at=r.created_at, updated_at=r.created_at,
            )  # fmt: skip

        r1 = make(travel, ago(hours=1))
        prompted(r1, "sms")
        attempt(r1, "sms", Delivery.Status.SENT)
        decide(r1, 10, approve=True)
        consume(r1, 12)

        r2 = make(travel, ago(hours=2))
        prompted(r2, "webpush")
        attempt(r2, "webpush", Delivery.Status.SENT)
        decide(r2, 30, approve=False)

        r3 = make(travel, ago(hours=3))
        attempt(r3, "webpush", Delivery.Status.INTERRUPTED)
        decide(r3, 60, approve=True, by_link=True)

        r4 = make(travel, ago(seconds=30))
        prompted(r4, "sms")
        attempt(r4, "sms", Delivery.Status.DELIVERED)

        r5 = make(travel, ago(seconds=60))
        attempt(r5, "sms", Delivery.Status.FAILED)
        attempt(r5, "sms", Delivery.Status.REJECTED, 2)

        r6 = make(expense, ago(hours=5))
        attempt(r6, "sms", Delivery.Status.UNDELIVERED)

        r7 = make(expense, ago(hours=4))
        assert services.approval_request_cancel(
            approval_request_id=r7.pk, actor=admin_user, now=r7.created_at + timedelta(seconds=5)
        )

        r8 = make(travel, ago(days=3))
        decide(r8, 120, approve=True)
        consume(r8, 125)

        r9 = make(expense, ago(days=2))
        decide(r9, 90, approve=False)

        r10 = make(expense, ago(days=6))
        prompted(r10, "sms")
        attempt(r10, "sms", Delivery.Status.SENT)

        r12 = make(expense, ago(days=2, seconds=-10))
        attempt(r12, "webpush", Delivery.Status.FAILED)

        r11 = make(calendar, ago(days=8))
        decide(r11, 5, approve=True)
        consume(r11, 6)

        # The expiry sweep ran two and a half hours ago: r3, r6, r9, r10 and r12 are stored as expired; r2 became
        # overdue since and is still stored as denied.
        services.approval_request_expire_due(now=ago(hours=2, minutes=30))
        assert ApprovalRequest.objects.get(pk=r3.pk).status == Status.EXPIRED
        assert ApprovalRequest.objects.get(pk=r2.pk).status == Status.DENIED


@pytest.fixture
def superuser(db):
    return get_user_model().objects.create_superuser("root", "root@example.com", factories.PASSWORD)


@pytest.fixture
def data(frozen, superuser) -> DataSet:
    return DataSet(superuser)


def signed_in(user: Any) -> Client:
    http = Client()
    http.force_login(user)
    return http


def staff(username: str, *groups: str) -> Any:
    user = get_user_model().objects.create_user(username, password=factories.PASSWORD, is_staff=True)
    for name in groups:
        user.groups.add(Group.objects.get(name=name))
    return user


# --- The figures ------------------------------------------------------------------------------------------------------


def test_the_figures_of_both_windows(data):
    figures = overview()
    day, week = figures.day, figures.week

    assert day.statuses == {
        Status.PENDING: 2, Status.APPROVED: 0, Status.CONSUMED: 1, Status.DENIED: 0, Status.EXPIRED: 3,
        Status.CANCELLED: 1,
    }  # fmt: skip
    assert day.total == 7
    assert week.statuses == {
        Status.PENDING: 2, Status.APPROVED: 0, Status.CONSUMED: 2, Status.DENIED: 0, Status.EXPIRED: 6,
        Status.CANCELLED: 1,
    }  # fmt: skip
    assert week.total == 11

    # Decided by the person: r1, r2, r3 (10 s, 30 s, 60 s); then r8 and r9 (120 s, 90 s). r3 was approved and then
    # expired unredeemed: still an approval. r9 was denied and then expired: still a denial.
    assert (day.decided, day.approved) == (3, 2)
    assert day.approval_rate == pytest.approx(2 / 3)
    assert day.median == timedelta(seconds=30)
    assert day.p90 == timedelta(seconds=54)  # 30 + 0.8 * (60 - 30)
    assert (week.decided, week.approved) == (5, 3)
    assert week.approval_rate == pytest.approx(0.6)
    assert week.median == timedelta(seconds=60)
    assert week.p90 == timedelta(seconds=108)  # 90 + 0.6 * (120 - 90)

    # Pending or expired, no prompt accepted: r3, r5, r6; then r9, r12.
    assert (day.never_delivered, week.never_delivered) == (3, 5)

    channels = {c.channel: (c.attempts, c.accepted, c.failed, c.unknown) for c in day.channels}
    assert channels == {"sms": (5, 2, 3, 0), "webpush": (2, 1, 0, 1)}
    rates = {c.channel: c.failure_rate for c in day.channels}
    assert rates == {"sms": pytest.approx(0.6), "webpush": 0.0}
    channels = {c.channel: (c.attempts, c.accepted, c.failed, c.unknown) for c in week.channels}
    assert channels == {"sms": (6, 3, 3, 0), "webpush": (3, 1, 1, 1)}

    assert [(a.name, a.requests) for a in day.agents] == [("Travel agent", 5), ("Expense bot", 2)]
    assert [(a.name, a.requests) for a in week.agents] == [("Travel agent", 6), ("Expense bot", 5)]
    assert day.agents[0].application_id == data.travel.pk


def test_the_chart_buckets(data):
    figures = overview()
    # 25 clock hours, from 09:00 yesterday (partial) to 09:00 now (partial).
    assert len(figures.hours) == 25
    assert figures.hours[0].start == datetime(2026, 5, 31, 9, tzinfo=UTC)
    assert figures.hours[-1].start == datetime(2026, 6, 1, 9, tzinfo=UTC)
    by_hour = {bucket.start.hour: dict(bucket.counts) for bucket in figures.hours if bucket.counts}
    assert by_hour == {
        4: {Status.EXPIRED: 1},  # r6
        5: {Status.CANCELLED: 1},  # r7
        6: {Status.EXPIRED: 1},  # r3
        7: {Status.EXPIRED: 1},  # r2
        8: {Status.CONSUMED: 1},  # r1
        9: {Status.PENDING: 2},  # r4, r5
    }
    assert sum(bucket.total for bucket in figures.hours) == figures.day.total
    # 8 calendar days, from 25 May (partial) to 1 June (partial).
    assert [bucket.start.isoformat() for bucket in figures.days] == [f"2026-05-{d}" for d in range(25, 32)] + [
        "2026-06-01"
    ]
    by_day = {bucket.start.day: dict(bucket.counts) for bucket in figures.days if bucket.counts}
    assert by_day == {
        26: {Status.EXPIRED: 1},  # r10
        29: {Status.CONSUMED: 1},  # r8
        30: {Status.EXPIRED: 2},  # r9, r12
        1: {Status.EXPIRED: 3, Status.CONSUMED: 1, Status.PENDING: 2, Status.CANCELLED: 1},  # r1-r7
    }
    assert sum(bucket.total for bucket in figures.days) == figures.week.total


def test_an_empty_database_gives_zeros_and_dashes(frozen, superuser):
    figures = overview()
    assert figures.day.total == figures.week.total == 0
    assert figures.day.approval_rate is None and figures.day.median is None and figures.day.p90 is None
    assert figures.week.agents == [] and figures.week.channels == []
    response = signed_in(superuser).get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    assert "No requests." in html and "No prompt was sent" in html
    assert_well_formed_charts(html)


def test_the_busiest_agents_are_five(frozen):
    alice = factories.make_approver("alice")
    for k, name in enumerate(["Fox", "Elk", "Doe", "Cat", "Bee", "Ant", "Yak"]):
        agent, _ = factories.make_agent_client(name=name)
        for _ in range(3 if name == "Yak" else 1 + k % 2):
            factories.make_approval_request(alice, SimpleNamespace(application=agent), created_ago=60)
    agents = overview().day.agents
    # Yak 3; then the 2s (Elk, Cat, Ant), then the 1s (Fox, Doe, Bee), each in the order they were registered.
    assert [(a.name, a.requests) for a in agents] == [("Yak", 3), ("Elk", 2), ("Cat", 2), ("Ant", 2), ("Fox", 1)]


def test_percentile_is_percentile_cont():
    assert percentile([], 0.5) is None
    assert percentile([(7, 1)], 0.9) == 7
    assert percentile([(10, 1), (30, 1), (60, 1)], 0.5) == 30
    assert percentile([(10, 1), (30, 1), (60, 1)], 0.9) == 54
    assert percentile([(1, 1), (2, 1), (3, 1), (4, 1)], 0.5) == 2.5
    # Repeated values: 10, 10, 10, 20 -> ranks 0-2 hold 10.
    assert percentile([(10, 3), (20, 1)], 0.5) == 10
    assert percentile([(10, 3), (20, 1)], 0.9) == pytest.approx(17)  # 10 + 0.7 * (20 - 10)
    assert percentile([(10, 1), (20, 3)], 0.0) == 10 and percentile([(10, 1), (20, 3)], 1.0) == 20


def test_the_percentiles_are_postgresqls(data):
    """The histogram's percentiles are what percentile_cont gives over the same requests (whole seconds here)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY decided_at - created_at), "
            "percentile_cont(0.9) WITHIN GROUP (ORDER BY decided_at - created_at) FROM approvals_approvalrequest "
            "WHERE created_at >= %s AND decided_via IN ('page', 'link', 'automated')",
            [ago(days=7, minutes=30)],
        )
        median, p90 = cursor.fetchone()
    assert (
        (overview().week.median, overview().week.p90)
        == (median, p90)
        == (timedelta(seconds=60), timedelta(seconds=108))
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0 s"), (12, "12 s"), (60, "1 min"), (184, "3 min 4 s"), (7500, "2 h 5 min"), (97200, "1 d 3 h")],
)
def test_durations_read_as_people_say_them(seconds, text):
    assert duration(timedelta(seconds=seconds)) == text
    assert duration(None) == "-"


# --- The page ---------------------------------------------------------------------------------------------------------


def test_the_page_shows_the_figures(data, superuser):
    response = signed_in(superuser).get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    assert response.templates[0].name == "admin/review/overview.html"
    assert "admin/base_site.html" in [t.name for t in response.templates]
    # The summary, the tables and the links to the filtered request list.
    assert "66.7 % (2 of 3)" in html and "60.0 % (3 of 5)" in html
    assert "30 s" in html and "54 s" in html and "1 min" in html and "1 min 48 s" in html
    # SMS in the last 24 hours: 5 attempts, 3 failed, none unknown, a 60 % failure rate; then 6, 3, 0, 50 %.
    sms = '<th scope="row">sms</th>' + "".join(
        f'<td class="num">{v}</td>' for v in (5, 3, 0, "60.0 %", 6, 3, 0, "50.0 %")
    )
    assert sms in re.sub(r">\s+<", "><", html)
    assert re.search(r'<td class="num">3<div class="help">list: .*</div></td><td class="num">5<div', html)
    assert "Travel agent" in html and "Expense bot" in html and "Calendar bot" not in html
    assert f"/admin/oauth2_provider/application/{data.travel.pk}/change/" in html
    assert "/admin/approvals/approvalrequest/?" in html
    # The time of the figures, to the second with its zone.
    assert "As of 2026-06-01 09:30:00 UTC" in html
    # Nothing secret: no auth_req_id.
    for auth_req_id in ApprovalRequest.objects.values_list("auth_req_id", flat=True):
        assert auth_req_id not in html


def links(html: str) -> dict[str, str]:
    """The page's links, by their text (the last of each)."""
    return {text: unescape(href) for href, text in re.findall(r'<a href="([^"]+)"[^>]*>([^<]+)</a>', html)}


def listed(response) -> set[str]:
    """The requests on a page of the request list."""
    return set(re.findall(r'name="_selected_action" value="([0-9a-f-]{36})"', response.content.decode()))


def test_the_links_lead_to_the_request_list_filtered(data, superuser):
    http = signed_in(superuser)
    html = http.get(URL).content.decode()
    # The 7-day column comes last: its never-delivered links, its status counts.
    found = links(html)
    assert found["pending"].startswith("/admin/approvals/approvalrequest/?")
    never_pending = http.get(found["pending"])
    assert never_pending.status_code == 200
    r5 = ApprovalRequest.objects.get(created_at=ago(seconds=60))
    assert listed(never_pending) == {str(r5.pk)}
    never_expired = listed(http.get(found["expired"]))
    assert never_expired == {
        str(pk)
        for pk in ApprovalRequest.objects.filter(prompt_channel="", status="expired").values_list("pk", flat=True)
    }
    assert len(never_expired) == 4  # r3, r6, r9, r12
    travel = http.get(found["6"])  # the travel agent's 6 requests in 7 days
    assert len(listed(travel)) == 6


def assert_well_formed_charts(html: str) -> list[ET.Element]:
    """Each chart's <svg>, parsed as XML, with its <title> and <desc> first and nothing that could run."""
    found = re.findall(r'<svg [^>]*class="review-chart".*?</svg>', html, re.DOTALL)
    assert len(found) == 2
    parsed = []
    for markup in found:
        svg = ET.fromstring(markup)
        assert svg.tag == f"{SVG}svg"
        assert svg.get("role") == "img"
        title, desc = list(svg)[:2]
        assert title.tag == f"{SVG}title" and title.text and title.get("id")
        assert desc.tag == f"{SVG}desc" and desc.text and desc.get("id")
        assert svg.get("aria-labelledby") == f"{title.get('id')} {desc.get('id')}"
        for element in svg.iter():
            assert element.tag.removeprefix(SVG) not in ("script", "foreignObject", "style", "a", "image", "use")
            assert not [name for name in element.attrib if name.lower().startswith("on") or name == "style"]
            assert not [value for value in element.attrib.values() if "javascript:" in value.lower()]
        parsed.append(svg)
    return parsed


def test_the_charts_are_well_formed_svg_with_their_numbers(data, superuser):
    html = signed_in(superuser).get(URL).content.decode()
    hours, days = assert_well_formed_charts(html)
    assert hours.find(f"{SVG}title").text == "Requests per hour, last 24 hours"
    assert "7 requests in all" in hours.find(f"{SVG}desc").text
    assert days.find(f"{SVG}title").text == "Requests per day, last 7 days"
    # One bar part per (bucket, status) with requests in it, its number in its tooltip.
    tips = [rect.find(f"{SVG}title").text for rect in days.iter(f"{SVG}rect") if rect.find(f"{SVG}title") is not None]
    assert "Mon 2026-06-01: Pending 2" in tips and "Sat 2026-05-30: Expired 2" in tips
    assert len(tips) == 7
    # The same numbers in a table.
    assert "<summary>The numbers of this chart</summary>" in html
    assert '<th scope="row">2026-06-01 09:00–10:00</th>' in html


class _Scripts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.inline: list[str] = []
        self.handlers: list[str] = []
        self.styles: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handlers += [f"{tag} {name}" for name, _ in attrs if name.startswith("on")]
        self.styles += [tag for name, _ in attrs if name == "style"]
        if tag == "style":
            self.styles.append("<style>")
        if tag == "script":
            self.scripts.append(dict(attrs))
            self._in_script = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append(data)


def test_no_script_and_the_csp_unchanged(data, superuser, settings):
    http = signed_in(superuser)
    response = http.get(URL)
    html = response.content.decode()
    content = html[html.index('<div id="content-main">') :]
    assert "<script" not in content.lower()
    page = _Scripts()
    page.feed(html)
    # The admin's own scripts are files of ours ('self'); none inline, no event handler, no inline style.
    assert page.inline == [] and page.handlers == [] and page.styles == []
    assert all((script.get("src") or "").startswith("/static/admin/js/") for script in page.scripts)
    # The page's policy is the site's, unchanged, and the admin index's.
    policy = response["Content-Security-Policy"]
    assert policy == http.get("/admin/")["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "style-src 'self'" in policy and "unsafe-inline" not in policy
    assert response["X-Frame-Options"] == "DENY"
    assert "no-cache" in response["Cache-Control"]  # the admin's never_cache


def test_the_admin_index_links_to_it_for_those_who_may_see_it(db, superuser):
    assert URL in signed_in(superuser).get("/admin/").content.decode()
    assert URL in signed_in(staff("vera", "viewer")).get("/admin/").content.decode()
    assert URL not in signed_in(staff("sam")).get("/admin/").content.decode()


# --- Who may see it ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("groups", [("viewer",), ("operator",)])
def test_the_roles_see_it(db, groups):
    response = signed_in(staff("someone", *groups)).get(URL)
    assert response.status_code == 200
    assert "Requests by status" in response.content.decode()


def test_superusers_see_it(db, superuser):
    assert signed_in(superuser).get(URL).status_code == 200


def test_staff_without_a_role_are_refused(db):
    assert signed_in(staff("sam")).get(URL).status_code == 403


def test_staff_with_the_view_permission_alone_see_it(db):
    user = staff("pat")
    user.user_permissions.add(Permission.objects.get(codename="view_approvalrequest"))
    assert signed_in(user).get(URL).status_code == 200


def test_anonymous_people_are_sent_to_the_admins_sign_in(db):
    response = Client().get(URL)
    assert response.status_code == 302
    assert response["Location"] == f"/admin/login/?next={URL}"


def test_people_who_are_not_staff_are_sent_to_the_admins_sign_in(db):
    user = get_user_model().objects.create_user("carol", password=factories.PASSWORD)
    user.user_permissions.add(Permission.objects.get(codename="view_approvalrequest"))
    response = signed_in(user).get(URL)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


def test_it_only_reads(data, superuser):
    http = signed_in(superuser)
    assert http.post(URL).status_code == 405
    # Query parameters are ignored, hostile or not.
    before = list(ApprovalRequest.objects.order_by("pk").values_list("pk", "status"))
    response = http.get(URL, {"since": "'; DROP TABLE x; --", "status": "\u00ff", "page": "-1"})
    assert response.status_code == 200
    assert list(ApprovalRequest.objects.order_by("pk").values_list("pk", "status")) == before


# --- Cost -------------------------------------------------------------------------------------------------------------


def page_queries(user: Any) -> list[str]:
    http = signed_in(user)
    with CaptureQueriesContext(connection) as queries:
        assert http.get(URL).status_code == 200
    return [q["sql"] for q in queries.captured_queries]


def more_requests(n: int) -> None:
    alice = ApprovalRequest.objects.first().user.approver
    for k in range(n):
        agent, _ = factories.make_agent_client(name=f"Agent {k}")
        factories.make_approval_request(alice, SimpleNamespace(application=agent), created_ago=k * 3000)


def test_a_fixed_number_of_queries_whatever_the_data(frozen, superuser):
    viewer = staff("vera", "viewer")
    DataSet(superuser)
    first = page_queries(viewer)  # nothing cached yet
    warm = page_queries(viewer)
    more_requests(30)
    cache.clear()
    assert len(page_queries(viewer)) == len(first)
    assert len(page_queries(viewer)) == len(warm)
    # Session, user, the viewer's permissions (user's and group's), the savepoint the test's transaction makes of
    # the page's; then JIT off, the oldest live request, the four figures of the minutes not settled, the four of
    # the settled hours missing from the cache (only the first time) and the busiest agents' names.
    figures = [sql for sql in first if "approvals_" in sql]
    assert len(figures) == 1 + 4 + 4, figures
    assert len(first) == 4 + 2 + 1 + len(figures) + 1, first
    assert len(warm) == len(first) - 4, warm
    # None counts the whole table: each reads the indexed created_at range, the first the live requests' expiry.
    assert '"approvals_approvalrequest"."expires_at" >' in figures[0]
    for sql in figures[1:]:
        assert '"approvals_approvalrequest"."created_at" >=' in sql, sql
    # Once cached, settled hours are not read again: only minutes are (DATE_TRUNC('minute', ...)).
    assert not [sql for sql in warm if "DATE_TRUNC('hour'" in sql]


def test_settled_hours_come_from_the_cache_and_live_requests_from_the_tables(frozen, superuser):
    data = DataSet(superuser)
    # A request asked 50 minutes ago for an hour: still pending, so its hour and the next are read on each load.
    waiting = services.approval_request_create(
        client=data.travel, user=data.alice.user, scope="openid", hint_type="login_hint", now=ago(minutes=50),
        **factories.as_bc_authorize(requested_expiry=3600),
    )  # fmt: skip
    before = overview()
    assert before.day.statuses[Status.PENDING] == 3
    assert services.approval_request_decide(approval_request_id=waiting.pk, user=data.alice.user, approve=True)
    after = overview()
    assert after.day.statuses[Status.PENDING] == 2 and after.day.statuses[Status.APPROVED] == 1
    assert (after.day.decided, after.day.approved) == (4, 3)
    # What settled hours held is as before, read from the cache.
    assert after.week.statuses[Status.EXPIRED] == before.week.statuses[Status.EXPIRED] == 6
    assert [bucket.counts for bucket in after.days[:-1]] == [bucket.counts for bucket in before.days[:-1]]


def test_a_periodic_task_keeps_the_cache_warm(data, settings):
    assert "authz.tasks.warm_review_overview_task" in {
        entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()
    }
    warm_review_overview_task.delay()
    with CaptureQueriesContext(connection) as queries:
        overview()
    assert not [q["sql"] for q in queries.captured_queries if "DATE_TRUNC('hour'" in q["sql"]]


def test_without_a_cache_the_figures_are_the_same(data, settings):
    expected = overview()
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}
    }
    assert overview() == expected


# --- The chart drawing alone ------------------------------------------------------------------------------------------


def test_chart_text_is_escaped_and_the_result_is_xml():
    series = [charts.Series(key="a", label='<b>"A" & co</b>', color="#000000")]
    bars = [charts.Bar(label="<1>", name="</title><script>alert(1)</script>", values={"a": 3})]
    markup = charts.stacked_bars(chart_id="c1", title="T <x>", description="D & d", series=series, bars=bars)
    svg = ET.fromstring(str(markup))
    assert svg.find(f"{SVG}title").text == "T <x>"
    assert "<script" not in markup
    assert [t.text for t in svg.iter(f"{SVG}title")][-1] == '</title><script>alert(1)</script>: <b>"A" & co</b> 3'
    with pytest.raises(ValueError):
        charts.stacked_bars(chart_id='x" onload="y', title="", description="", series=series, bars=bars)


@pytest.mark.parametrize(("peak", "top"), [(0, 4), (3, 4), (4, 4), (5, 6), (9, 10), (41, 60), (1234, 1500)])
def test_axis_tops_are_round(peak, top):
    assert charts.nice_ceiling(peak)[0] == top
