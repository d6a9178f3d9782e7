"""Issue 18, item 1: the admin's approval request list: its columns for requests decided each way, its filters, its
search (an exact auth_req_id included, never shown), its cost per page, and who may see it."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from approvals import services
from approvals.display import admin_datetime, admin_duration
from approvals.models import ApprovalRequest, AuditEvent
from authz.models import RequestCallback
from tests import factories

pytestmark = pytest.mark.django_db

Status = ApprovalRequest.Status
CHANGELIST = "/admin/approvals/approvalrequest/"
TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"


def change_url(approval_request: ApprovalRequest) -> str:
    return f"{CHANGELIST}{approval_request.pk}/change/"


def listed(response) -> list[str]:
    """The requests on a changelist page, in order (each row links to its page by its id)."""
    assert response.status_code == 200, response.status_code
    found = re.findall(rf'href="{CHANGELIST}([0-9a-f-]{{36}})/change/', response.content.decode())
    return list(dict.fromkeys(found))


def row(response, approval_request: ApprovalRequest) -> list[str]:
    """The cells of the request's row, as text."""
    html = response.content.decode()
    start = html.index(f'href="{change_url(approval_request)}')
    tr = html[html.rindex("<tr", 0, start) : html.index("</tr>", start)]
    cells = re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", tr, re.S)
    return [re.sub(r"<br>", " / ", re.sub(r"<(?!br)[^>]+>", "", cell)).strip() for cell in cells]


def columns(response) -> list[str]:
    html = response.content.decode()
    start = html.index('<table id="result_list">')
    head = html[html.index("<thead>", start) : html.index("</thead>", start)]
    cells = re.findall(r"<th scope=\"col\"[^>]*>(.*?)</th>", head, re.S)
    return [re.sub(r"<[^>]+>", "", cell).strip() for cell in cells]


@pytest.fixture
def bob(db):
    return factories.make_staff("bob", superuser=True)


@pytest.fixture
def admin_http(client, bob):
    client.force_login(bob)
    return client


# --- times ------------------------------------------------------------------------------------------------------------


def test_times_are_to_the_second_with_the_zone(settings):
    moment = datetime(2026, 12, 5, 21, 50, 7, tzinfo=UTC)
    assert admin_datetime(moment) == "2026-12-05 21:50:07 UTC"
    settings.TIME_ZONE = "Europe/Paris"
    assert admin_datetime(moment) == "2026-12-05 22:50:07 CET"
    assert admin_datetime(moment.astimezone(ZoneInfo("America/New_York"))) == "2026-12-05 22:50:07 CET"
    assert admin_datetime(None) == "-"


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0, "0 s"), (12.9, "12 s"), (60, "1 min"), (184, "3 min 4 s"), (3600 + 120, "1 h 2 min"), (86400 * 3, "3 d")],
)
def test_durations_read_in_two_units_at_most(seconds, shown):
    assert admin_duration(seconds) == shown


# --- columns ----------------------------------------------------------------------------------------------------------


def test_the_list_says_who_decided_how_and_when_for_each_way_of_deciding(
    admin_http, bob, agent, approver, obtain_tokens
):
    by_page = factories.make_approval_request(approver, agent, binding_message="Pay 1", created_ago=184)
    now = by_page.created_at + timedelta(seconds=184)
    services.approval_request_decide(approval_request_id=by_page.pk, user=approver.user, approve=True, now=now)
    by_link = factories.make_approval_request(approver, agent, binding_message="Pay 2", created_ago=12)
    services.approval_request_decide(
        approval_request_id=by_link.pk,
        user=approver.user,
        approve=False,
        by_link=True,
        now=by_link.created_at + timedelta(seconds=12),
    )
    automated = factories.make_approval_request(approver, agent, binding_message="Pay 3")
    services.approval_request_decide(
        approval_request_id=automated.pk, user=approver.user, approve=True, automated_by="conformance"
    )
    cancelled = factories.make_approval_request(approver, agent, binding_message="Pay 4")
    services.approval_request_cancel(approval_request_id=cancelled.pk, actor=bob)
    expired = factories.make_approval_request(approver, agent, binding_message="Pay 5", created_ago=3600)
    services.approval_request_expire_due(now=now)
    pending = factories.make_approval_request(approver, agent, binding_message="Pay 6")
    obtain_tokens(agent, approver.user, binding_message="Pay 7")
    consumed = ApprovalRequest.objects.get(binding_message="Pay 7")

    response = admin_http.get(CHANGELIST)

    assert columns(response)[-9:] == [
        "Created",
        "Status",
        "Agent",
        "Approver",
        "Binding message",
        "Decided",
        "Time to decision",
        "Channel",
        "Tokens issued",
    ]
    created, status, agent_name, person, message, decided, took, channel, tokens = row(response, by_page)[-9:]
    assert re.fullmatch(TIME, created)
    assert (status, agent_name, person, message) == ("Approved", "Travel agent", "alice", "Pay 1")
    assert decided == f"{admin_datetime(now)} / alice (page)"
    assert took == "3 min 4 s"
    assert channel == "-"  # decided before any prompt went out (the prompt task never ran here)
    assert tokens == "no"
    assert row(response, by_link)[-9:][1] == "Denied"
    assert row(response, by_link)[-4:-2] == [
        f"{admin_datetime(by_link.created_at + timedelta(seconds=12))} / alice (link)",
        "12 s",
    ]
    assert row(response, automated)[-4].endswith("/ automated")
    assert row(response, cancelled)[-8] == "Cancelled"
    assert row(response, cancelled)[-4].endswith("/ admin: bob")
    expired.refresh_from_db()
    assert row(response, expired)[-8] == "Expired"
    assert row(response, expired)[-4] == f"{admin_datetime(expired.expires_at)} / expired"
    assert row(response, expired)[-3] == "-"  # no decision, no time to it
    assert row(response, pending)[-8] == "Pending" and row(response, pending)[-4] == "-"
    assert row(response, consumed)[-8] == "Tokens issued"
    assert row(response, consumed)[-1] == "yes"
    consumed.refresh_from_db()
    assert f'href="/admin/oauth2_provider/accesstoken/{consumed.access_token_id}/change/"' in response.content.decode()
    # One status column: the stored "consumed" never shows beside "Tokens issued".
    assert "(consumed)" not in response.content.decode() and "Status now" not in response.content.decode()


def test_the_review_columns_are_written_with_each_transition(agent, approver, bob):
    by_page = factories.make_approval_request(approver, agent)
    services.approval_request_decide(approval_request_id=by_page.pk, user=approver.user, approve=True)
    suspended = factories.make_approval_request(approver, agent)
    services.approval_request_cancel(approval_request_id=suspended.pk, actor=bob, via="suspension")
    approved_then_expired = factories.make_approval_request(approver, agent, created_ago=3600)
    ApprovalRequest.objects.filter(pk=approved_then_expired.pk).update(
        status=Status.APPROVED, decided_via="page", decided_by=approver.user
    )
    services.approval_request_expire_due()

    rows = {
        r.pk: (r.status, r.decided_by_id, r.decided_via)
        for r in ApprovalRequest.objects.filter(pk__in=[by_page.pk, suspended.pk, approved_then_expired.pk])
    }
    assert rows[by_page.pk] == (Status.APPROVED, approver.user.pk, "page")
    assert rows[suspended.pk] == (Status.CANCELLED, bob.pk, "suspension")
    # Expired unredeemed: it keeps how it was decided.
    assert rows[approved_then_expired.pk] == (Status.EXPIRED, approver.user.pk, "page")
    cancel_event = AuditEvent.objects.get(request=suspended, kind=AuditEvent.Kind.CANCELLED)
    assert (cancel_event.actor, cancel_event.detail) == (bob, {"via": "suspension"})


def test_the_channel_that_reached_the_person_is_recorded_with_the_prompt(
    admin_http, agent, approver, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):  # the prompt task runs once the request commits
        prompted = factories.make_approval_request(approver, agent)
    prompted.refresh_from_db()
    assert prompted.prompt_channel == "locmem"
    assert row(admin_http.get(CHANGELIST), prompted)[-2] == "locmem"


# --- filters ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def population(agent, make_agent, approver, bob, django_capture_on_commit_callbacks):
    """Requests of two agents for two people, decided different ways, created on different days."""
    other_agent = make_agent(name="Shopping agent")
    bella = factories.make_approver("bella", email="Bella@Example.com")
    with django_capture_on_commit_callbacks(execute=True):
        prompted = factories.make_approval_request(approver, agent, binding_message="Book flight")
    old = factories.make_approval_request(bella, other_agent, binding_message="Buy shoes", created_ago=3 * 86400)
    linked = factories.make_approval_request(bella, agent, binding_message="Pay rent")
    services.approval_request_decide(approval_request_id=linked.pk, user=bella.user, approve=True, by_link=True)
    cancelled = factories.make_approval_request(approver, other_agent, binding_message="Buy hat")
    services.approval_request_cancel(approval_request_id=cancelled.pk, actor=bob)
    RequestCallback.objects.create(request=cancelled, mode="ping", endpoint="https://agent.example/cb", token="t" * 20)
    return {
        "prompted": prompted,
        "old": old,
        "linked": linked,
        "cancelled": cancelled,
        "other_agent": other_agent,
        "bella": bella,
    }


def ids(*requests: ApprovalRequest) -> set[str]:
    return {str(r.pk) for r in requests}


def test_filters(admin_http, population, agent):
    p = population
    everything = ids(p["prompted"], p["old"], p["linked"], p["cancelled"])

    def only(query: str) -> set[str]:
        return set(listed(admin_http.get(CHANGELIST + query)))

    assert only("") == everything
    # As the agent sees it: the three-day-old request is past its expiry, though no sweep has marked it.
    assert only("?status=pending") == ids(p["prompted"])
    assert only("?status=expired") == ids(p["old"])
    assert only("?status=cancelled") == ids(p["cancelled"])
    assert only(f"?agent={agent.client_id}") == ids(p["prompted"], p["linked"])
    assert only("?agent=shopping") == ids(p["old"], p["cancelled"])  # a part of the name, any case
    assert only("?approver=bella") == ids(p["old"], p["linked"])
    assert only("?approver=bella@example.com") == ids(p["old"], p["linked"])
    assert only(f"?approver={p['bella'].user.pk}") == ids(p["old"], p["linked"])
    assert only("?approver=nobody") == set()
    assert only("?channel=locmem") == ids(p["prompted"])
    assert only("?channel=none") == ids(p["old"], p["linked"], p["cancelled"])
    assert only("?decided_via__exact=link") == ids(p["linked"])
    assert only("?decided_via__exact=admin") == ids(p["cancelled"])
    assert only("?mode=ping") == ids(p["cancelled"])
    assert only("?mode=poll") == ids(p["prompted"], p["old"], p["linked"])
    today = timezone.localdate()
    assert only(f"?created_from={today - timedelta(days=1)}") == ids(p["prompted"], p["linked"], p["cancelled"])
    assert only(f"?created_to={today - timedelta(days=1)}") == ids(p["old"])
    assert only(f"?created_from={today}&created_to={today}&agent={agent.client_id}") == ids(p["prompted"], p["linked"])


@pytest.mark.parametrize(
    "query",
    [
        "?created_from=yesterday",
        "?created_to=2026-13-45",
        "?created_from=99999-01-01",
        "?agent=%00",
        "?approver=%00x",
        "?approver=99999999999999999999999",
        "?channel=%3Cscript%3E",
        "?mode=carrier-pigeon",
        "?status=bogus",
        "?decided_via__exact=nonsense",
        "?q=%00",
        "?q=" + "x" * 5000,
        "?p=banana",
        "?o=99",
    ],
)
def test_hostile_filter_values_never_fail(admin_http, population, query):
    response = admin_http.get(CHANGELIST + query, follow=True)
    # NUL is refused before any view (config.middleware); everything else is a page.
    assert response.status_code == (400 if "%00" in query else 200)
    assert "<script>" not in response.content.decode()


def test_a_bad_date_is_said_and_ignored(admin_http, population):
    response = admin_http.get(CHANGELIST + "?created_from=yesterday")
    assert "Not a date: yesterday" in response.content.decode()
    assert len(listed(response)) == 4


def test_the_filters_never_list_every_person_or_agent(admin_http, population):
    html = admin_http.get(CHANGELIST).content.decode()
    # Typed inputs, not a link per approver or agent: the list must work with a million people.
    assert 'name="approver"' in html and 'name="agent"' in html
    assert "?approver=" not in html and "?agent=" not in html


# --- search -----------------------------------------------------------------------------------------------------------


def test_search_finds_agents_approvers_and_binding_messages(admin_http, population, agent):
    p = population

    def found(term: str) -> set[str]:
        return set(listed(admin_http.get(CHANGELIST, {"q": term})))

    assert found("Shopping") == ids(p["old"], p["cancelled"])
    assert found(agent.client_id) == ids(p["prompted"], p["linked"])
    assert found("bella") == ids(p["old"], p["linked"])
    assert found("bella@example.com") == ids(p["old"], p["linked"])
    assert found("flight") == ids(p["prompted"])
    assert found("buy") == ids(p["old"], p["cancelled"])
    assert found(str(p["linked"].pk)) == ids(p["linked"])
    assert found("nothing like it") == set()


def test_an_exact_auth_req_id_leads_to_its_request_and_is_never_shown(admin_http, population):
    target = population["linked"]

    response = admin_http.get(CHANGELIST, {"q": target.auth_req_id})

    assert response.status_code == 302
    assert response["Location"] == change_url(target)
    page = admin_http.get(response["Location"])
    assert page.status_code == 200
    assert target.auth_req_id not in page.content.decode()


def test_a_partial_or_unknown_auth_req_id_finds_nothing_and_is_not_echoed(admin_http, population):
    target = population["linked"]
    partial = target.auth_req_id[:20]
    assert listed(admin_http.get(CHANGELIST, {"q": partial})) == []

    unknown = "A" * len(target.auth_req_id)
    response = admin_http.get(CHANGELIST, {"q": unknown, "status": "approved"}, follow=True)
    assert response.redirect_chain[-1][0] == CHANGELIST + "?status=approved"
    html = response.content.decode()
    assert "No approval request has this auth_req_id." in html
    assert unknown not in html
    # No list page shows any request's auth_req_id.
    for approval_request in ApprovalRequest.objects.all():
        assert approval_request.auth_req_id not in admin_http.get(CHANGELIST).content.decode()


def test_staff_without_a_role_cannot_probe_auth_req_ids(client, population):
    client.force_login(factories.make_staff("nobody"))
    response = client.get(CHANGELIST, {"q": population["linked"].auth_req_id})
    assert response.status_code == 403


# --- cost and roles ---------------------------------------------------------------------------------------------------


def queries_for(http, query: str = "") -> int:
    with CaptureQueriesContext(connection) as queries:
        response = http.get(CHANGELIST + query)
    assert response.status_code == 200
    return len(queries)


def test_the_list_costs_the_same_few_queries_for_5_rows_or_40(admin_http, agent, approver, bob, obtain_tokens):
    def add_requests(n: int) -> None:
        for i in range(n):
            r = factories.make_approval_request(approver, agent, binding_message=f"Request {i}")
            if i % 4 == 1:
                services.approval_request_decide(approval_request_id=r.pk, user=approver.user, approve=True)
            elif i % 4 == 2:
                services.approval_request_cancel(approval_request_id=r.pk, actor=bob)
        obtain_tokens(agent, approver.user)

    add_requests(4)
    few = queries_for(admin_http)
    add_requests(35)
    assert len(listed(admin_http.get(CHANGELIST))) == 41
    many = queries_for(admin_http)
    filtered = queries_for(admin_http, f"?agent={agent.client_id}&approver=alice&status=approved")
    searched = queries_for(admin_http, "?q=Request")

    assert many == few  # nothing per row
    assert many <= 8, many  # session, user, the capped count, the page (with client, user, decider), permissions
    # A typed filter or a search reads the agents and people it names first: one small query each.
    assert filtered <= many + 2 and searched <= many + 2


def test_the_count_is_capped(admin_http, agent, approver):
    factories.make_approval_request(approver, agent)
    with CaptureQueriesContext(connection) as queries:
        admin_http.get(CHANGELIST)
    # No COUNT(*) of the whole table: every count stops after 10,001 rows.
    counts = [q["sql"] for q in queries if "COUNT(" in q["sql"].upper()]
    assert counts and all("LIMIT 10001" in sql for sql in counts), counts


@pytest.mark.parametrize(
    ("groups", "superuser", "allowed"),
    [((), True, True), (("viewer",), False, True), (("operator",), False, True), ((), False, False)],
)
def test_who_sees_the_list_and_the_page(client, agent, approver, groups, superuser, allowed):
    approval_request = factories.make_approval_request(approver, agent, binding_message="Pay 9")
    client.force_login(factories.make_staff("someone", *groups, superuser=superuser))
    for url in (CHANGELIST, change_url(approval_request)):
        response = client.get(url)
        assert response.status_code == (200 if allowed else 403), url
        if allowed:
            assert "Pay 9" in response.content.decode()


def test_anonymous_is_sent_to_sign_in(client, agent, approver):
    response = client.get(CHANGELIST)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
