"""The review API (/api/review/, authz.review.api): who may read it, with which credentials, its filters, its keyset
pages and what it never shows."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from oauth2_provider.models import get_access_token_model

from approvals import services
from approvals.models import ApprovalRequest, AuditEvent
from authz.models import RequestCallback, ReviewToken
from authz.review import tokens
from tests import factories

pytestmark = pytest.mark.django_db

EVENTS = "/api/review/audit-events/"
REQUESTS = "/api/review/approval-requests/"
Kind = AuditEvent.Kind
AccessToken = get_access_token_model()
T0 = datetime(2026, 12, 5, 21, 50, 7, tzinfo=UTC)


def signed_in(user: Any) -> Client:
    http = Client()
    http.force_login(user)
    return http


def bearer(raw: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


def event(approval_request: ApprovalRequest, kind: str, at: datetime, **detail: Any) -> AuditEvent:
    return AuditEvent.objects.create(request=approval_request, kind=kind, at=at, detail=detail)


@pytest.fixture
def viewer():
    return factories.make_staff("vera", "viewer")


@pytest.fixture
def viewer_token(viewer) -> str:
    _row, raw = tokens.review_token_create(user=viewer, name="SIEM", expires_in=timedelta(days=1))
    return raw


# --- who may read it --------------------------------------------------------------------------------------------------


def test_without_credentials_the_answer_is_401_with_a_bearer_challenge(client):
    for url in (EVENTS, REQUESTS):
        response = client.get(url)
        assert response.status_code == 401
        assert response["WWW-Authenticate"].startswith("Bearer ")
        assert response.json() == {"error": "Authentication credentials were not provided."}


@pytest.mark.parametrize(
    ("groups", "superuser", "status"),
    [((), False, 403), (("viewer",), False, 200), (("operator",), False, 200), ((), True, 200)],
    ids=["staff without a role", "viewer", "operator", "superuser"],
)
def test_who_may_read_signed_in_or_with_a_token(groups, superuser, status):
    user = factories.make_staff("sam", *groups, superuser=superuser)
    _row, raw = tokens.review_token_create(user=user, expires_in=None)
    for url in (EVENTS, REQUESTS):
        assert signed_in(user).get(url).status_code == status
        assert Client().get(url, **bearer(raw)).status_code == status


def test_a_person_who_is_not_staff_is_refused_even_in_the_viewer_group(approver):
    approver.user.groups.add(Group.objects.get(name="viewer"))
    assert signed_in(approver.user).get(EVENTS).status_code == 403


def test_refusal_for_missing_role_says_why(client):
    response = signed_in(factories.make_staff("sam")).get(EVENTS)
    assert response.status_code == 403
    assert response.json() == {"error": "This needs the viewer or operator role."}


def test_the_token_command_prints_a_token_once_and_stores_only_its_hash(viewer):
    output = StringIO()
    call_command("create_review_token", "vera", "--name", "SIEM pull", "--expires-in-days", "30", stdout=output)
    printed = json.loads(output.getvalue())
    assert set(printed) == {"token", "id", "username", "name", "expires_at"}
    raw = printed["token"]
    assert raw.startswith("csrv-") and len(raw) == 48
    row = ReviewToken.objects.get(pk=printed["id"])
    assert row.user == viewer and row.name == "SIEM pull"
    assert row.digest == tokens.digest(raw) != raw
    assert all(raw not in str(value) for value in ReviewToken.objects.values().get(pk=row.pk).values())
    assert timedelta(days=29, hours=23) < row.expires_at - timezone.now() <= timedelta(days=30)

    response = Client().get(EVENTS, **bearer(raw))
    assert response.status_code == 200
    row.refresh_from_db()
    assert row.last_used_at is not None


def test_the_token_command_refuses_people_who_are_not_staff(approver):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="not active staff"):
        call_command("create_review_token", "alice", stdout=StringIO())
    with pytest.raises(CommandError, match="No user"):
        call_command("create_review_token", "nobody", stdout=StringIO())
    assert not ReviewToken.objects.exists()


def test_a_role_less_user_gets_a_token_with_a_note(db):
    factories.make_staff("sam")
    output, errors = StringIO(), StringIO()
    call_command("create_review_token", "sam", "--expires-in-days", "0", stdout=output, stderr=errors)
    assert "403" in errors.getvalue()
    assert json.loads(output.getvalue())["expires_at"] is None


@pytest.mark.parametrize(
    "spoil",
    ["revoked", "expired", "inactive", "unknown", "truncated"],
)
def test_tokens_that_no_longer_open_the_api(viewer, viewer_token, spoil):
    row = ReviewToken.objects.get()
    raw = viewer_token
    if spoil == "revoked":
        assert tokens.review_tokens_revoke([row.pk]) == 1
    elif spoil == "expired":
        ReviewToken.objects.filter(pk=row.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    elif spoil == "inactive":
        viewer.is_active = False
        viewer.save()
    elif spoil == "unknown":
        raw = tokens.PREFIX + "x" * 43
    else:
        raw = raw[:-1]
    response = Client().get(EVENTS, **bearer(raw))
    assert response.status_code == 401
    assert response.json() == {"error": "The token is not valid."}


def test_a_token_follows_its_user_s_role(viewer, viewer_token):
    assert Client().get(EVENTS, **bearer(viewer_token)).status_code == 200
    viewer.groups.clear()
    assert Client().get(EVENTS, **bearer(viewer_token)).status_code == 403
    viewer.is_staff = False
    viewer.groups.add(Group.objects.get(name="operator"))
    viewer.save()
    assert Client().get(EVENTS, **bearer(viewer_token)).status_code == 403


@pytest.mark.parametrize("header", ["Bearer", "Bearer a b", "Bearer \u00e9t\u00e9"])
def test_malformed_bearer_headers_are_401_not_500(viewer_token, header):
    response = Client().get(EVENTS, HTTP_AUTHORIZATION=header.encode().decode("latin-1"))
    assert response.status_code == 401


def test_the_session_keeps_its_csrf_check_and_nothing_but_reading_is_allowed(viewer):
    http = Client(enforce_csrf_checks=True)
    http.force_login(viewer)
    assert http.get(EVENTS).status_code == 200
    refused = http.post(EVENTS, {}, content_type="application/json")
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["error"]


def test_only_get_even_with_a_token(viewer_token):
    for method in ("post", "put", "patch", "delete"):
        assert getattr(Client(), method)(EVENTS, **bearer(viewer_token)).status_code == 405


def test_answers_are_never_stored_and_always_json(viewer_token):
    response = Client().get(EVENTS, HTTP_ACCEPT="text/html", **bearer(viewer_token))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert "no-store" in response["Cache-Control"]


def test_a_review_token_is_redacted_from_logs(viewer_token):
    from config.logs import redact

    assert viewer_token not in redact(f"GET /api/review/audit-events/ Authorization: Bearer {viewer_token}")


# --- what it shows ----------------------------------------------------------------------------------------------------


def test_events_carry_no_secret(viewer_token, agent, approver, obtain_tokens):
    issued = obtain_tokens(agent, approver.user)
    approval_request = ApprovalRequest.objects.get()
    RequestCallback.objects.create(
        request=approval_request, mode="ping", endpoint="https://agent.example/cb", token="callback-secret-123456789"
    )
    for url in (EVENTS, REQUESTS, f"{REQUESTS}{approval_request.pk}/"):
        response = Client().get(url, **bearer(viewer_token))
        assert response.status_code == 200
        text = response.content.decode()
        for secret in (
            approval_request.auth_req_id,
            issued["access_token"],
            issued["refresh_token"],
            issued["id_token"],
            "callback-secret-123456789",
            agent.client_secret,
        ):
            assert secret not in text, url
        # A token's checksum is how a database copy finds it: at most a short prefix is named (H1's token events).
        for checksum in AccessToken.objects.values_list("token_checksum", flat=True):
            assert checksum not in text
        assert "auth_req_id" not in text


def test_an_event_as_the_api_shows_it(viewer_token, agent, approver):
    approval_request = factories.make_approval_request(approver, agent, binding_message="Pay 12")
    services.approval_request_decide(approval_request_id=approval_request.pk, user=approver.user, approve=True)
    results = Client().get(EVENTS, **bearer(viewer_token)).json()["results"]
    assert [row["kind"] for row in results] == ["created", "approved"]
    approved = results[1]
    assert set(approved) == {"id", "at", "kind", "request", "agent", "agent_name", "approver", "actor", "detail"}
    assert approved["request"] == str(approval_request.pk)
    assert approved["agent"] == agent.client_id and approved["agent_name"] == "Travel agent"
    assert approved["approver"] == "alice" and approved["actor"] == "alice"
    assert results[0]["actor"] is None
    at = AuditEvent.objects.get(kind=Kind.APPROVED).at
    assert datetime.fromisoformat(approved["at"]) == at


def test_a_request_as_the_api_shows_it_with_its_trail(viewer_token, agent, approver):
    approval_request = factories.make_approval_request(
        approver, agent, binding_message="Pay 12", scope="openid profile"
    )
    services.approval_request_decide(approval_request_id=approval_request.pk, user=approver.user, approve=False)
    listed = Client().get(REQUESTS, **bearer(viewer_token)).json()["results"]
    assert len(listed) == 1
    row = listed[0]
    assert row["id"] == str(approval_request.pk)
    assert row["scope"] == ["openid", "profile"]
    assert row["status"] == row["effective_status"] == "denied"
    assert row["binding_message"] == "Pay 12"
    assert row["decided_by"] == "alice" and row["decided_via"] == "page"
    assert row["consumed_at"] is None and row["decided_at"] is not None

    detail = Client().get(f"{REQUESTS}{approval_request.pk}/", **bearer(viewer_token))
    assert detail.status_code == 200
    body = detail.json()
    assert {key: value for key, value in body.items() if key != "events"} == row
    assert [e["kind"] for e in body["events"]] == ["created", "denied"]


def test_an_unknown_request_is_a_json_404(viewer_token):
    response = Client().get(f"{REQUESTS}00000000-0000-0000-0000-000000000000/", **bearer(viewer_token))
    assert response.status_code == 404
    assert response.json() == {"error": "Not found."}


# --- filters ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def trail(agent, make_agent, approver):
    """Two agents, two approvers, events at known times."""
    other_agent = make_agent(name="Other agent")
    bob = factories.make_approver("bob")
    first = factories.make_approval_request(approver, agent)
    second = factories.make_approval_request(bob, other_agent)
    AuditEvent.objects.all().delete()  # the services' own "created" events, at now: replaced by known times
    return {
        "first": first,
        "second": second,
        "other_agent": other_agent,
        "events": [
            event(first, Kind.CREATED, T0),
            event(first, Kind.PROMPTED, T0 + timedelta(seconds=1), channel="sms"),
            event(first, Kind.APPROVED, T0 + timedelta(minutes=1)),
            event(second, Kind.CREATED, T0 + timedelta(hours=1)),
            event(second, Kind.DENIED, T0 + timedelta(hours=2)),
        ],
    }


def ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


def test_filters(viewer_token, trail, agent):
    e = [item.pk for item in trail["events"]]
    http = Client()

    def get(**params: Any) -> list[int]:
        return ids(http.get(EVENTS, params, **bearer(viewer_token)))

    assert get() == e
    assert get(since="2026-12-05T21:50:08Z") == e[1:]  # inclusive
    assert get(until="2026-12-05T21:51:07Z") == e[:2]  # exclusive
    assert get(since="2026-12-05T22:00:00+00:00", until="2026-12-05T23:50:07Z") == [e[3]]
    assert get(since="2026-12-05T23:00:00+01:00") == e[3:]  # an offset
    assert get(since="2026-12-05") == e and get(since="2026-12-06") == []  # a date: midnight, server time
    assert get(agent=agent.client_id) == e[:3]
    assert get(agent=[agent.client_id, trail["other_agent"].client_id]) == e
    assert get(agent="nobody") == []
    assert get(approver="bob") == e[3:]
    assert get(kind="created") == [e[0], e[3]]
    assert get(kind=["approved", "denied"]) == [e[2], e[4]]
    assert get(request=str(trail["second"].pk)) == e[3:]
    assert get(agent=agent.client_id, kind="approved", since="2026-12-05T21:51:00Z") == [e[2]]


def test_an_unencoded_plus_in_an_offset_still_reads(viewer_token, trail):
    e = [item.pk for item in trail["events"]]
    # "+01:00" sent raw in a query string arrives as " 01:00".
    response = Client().get(f"{EVENTS}?since=2026-12-05T23:00:00+01:00", **bearer(viewer_token))
    assert ids(response) == e[3:]


def test_request_filters(viewer_token, agent, approver, make_agent):
    pending = factories.make_approval_request(approver, agent)
    overdue = factories.make_approval_request(approver, agent, created_ago=400)
    denied = factories.make_approval_request(approver, make_agent(name="Other"))
    services.approval_request_decide(approval_request_id=denied.pk, user=approver.user, approve=False)
    cancelled = factories.make_approval_request(approver, agent)
    services.approval_request_cancel(approval_request_id=cancelled.pk, actor=None)
    http = Client()

    def get(**params: Any) -> set[str]:
        response = http.get(REQUESTS, params, **bearer(viewer_token))
        assert response.status_code == 200, response.content
        return {row["id"] for row in response.json()["results"]}

    assert get(status="pending") == {str(pending.pk)}
    assert get(status="expired") == {str(overdue.pk)}  # as the agent sees it
    assert get(status=["denied", "cancelled"]) == {str(denied.pk), str(cancelled.pk)}
    assert get(agent=agent.client_id) == {str(pending.pk), str(overdue.pk), str(cancelled.pk)}
    assert get(approver="alice", status="denied") == {str(denied.pk)}
    assert get(decided_via="page") == {str(denied.pk)}
    since = (overdue.created_at + timedelta(seconds=1)).isoformat()
    assert str(overdue.pk) not in get(since=since)
    assert get(until=since) == {str(overdue.pk)}


@pytest.mark.parametrize(
    ("url", "params", "names"),
    [
        (EVENTS, {"since": "yesterday"}, "since"),
        (EVENTS, {"until": "2026-13-01"}, "until"),
        (EVENTS, {"since": "0001-01-01T00:00:00+01:00"}, "since"),
        (EVENTS, {"since": "2026-12-06", "until": "2026-12-05"}, "since must be before until"),
        (EVENTS, {"since": ["2026-12-01", "2026-12-02"]}, "since"),
        (EVENTS, {"kind": "approved_by_admin"}, "kind"),
        (EVENTS, {"request": "not-a-uuid"}, "request"),
        (EVENTS, {"limit": "0"}, "limit"),
        (EVENTS, {"limit": "1001"}, "limit"),
        (EVENTS, {"limit": "ten"}, "limit"),
        (EVENTS, {"limit": "-1"}, "limit"),
        (EVENTS, {"cursor": "garbage"}, "cursor"),
        (EVENTS, {"cursor": "WyIyMDI2LTEyLTA1VDIxOjUwOjA3KzAwOjAwIiwiOTk5OTk5OTk5OTk5OTk5OTk5OTk5OSJd"}, "cursor"),
        (EVENTS, {"sinse": "2026-12-01"}, "Unknown parameter 'sinse'"),
        (EVENTS, {"status": "pending"}, "Unknown parameter 'status'"),
        (EVENTS, {"agent": [f"a{n}" for n in range(101)]}, "agent"),
        (REQUESTS, {"status": "lost"}, "status"),
        (REQUESTS, {"decided_via": "magic"}, "decided_via"),
        (REQUESTS, {"kind": "created"}, "Unknown parameter 'kind'"),
        (REQUESTS, {"cursor": "WyIyMDI2LTEyLTA1VDIxOjUwOjA3KzAwOjAwIiwibm90LWEtdXVpZCJd"}, "cursor"),
        (f"{REQUESTS}00000000-0000-0000-0000-000000000000/", {"x": "1"}, "no parameters"),
    ],
)
def test_bad_filter_values_are_400_with_a_message(viewer_token, url, params, names):
    response = Client().get(url, params, **bearer(viewer_token))
    assert response.status_code == 400, response.content
    body = response.json()
    assert set(body) == {"error"} and names in body["error"]


# --- pages ------------------------------------------------------------------------------------------------------------


def walk(http: Client, url: str, headers: dict[str, str], **params: Any) -> tuple[list[Any], str | None, int]:
    """Every row, page by page, following `next`; the rows, the last cursor and how many pages."""
    rows, pages = [], 0
    response = http.get(url, params, **headers)
    while True:
        assert response.status_code == 200, response.content
        body = response.json()
        rows += body["results"]
        pages += 1
        if body["next"] is None:
            return rows, body["cursor"], pages
        assert body["cursor"] == parse_qs(urlsplit(body["next"]).query)["cursor"][0]
        response = http.get(body["next"], **headers)


def test_pages_neither_repeat_nor_skip_rows_with_equal_timestamps(viewer_token, agent, approver):
    approval_request = factories.make_approval_request(approver, agent)
    AuditEvent.objects.all().delete()
    # Seven events share one instant, around others: every page boundary falls inside a tie at some limit.
    times = [T0] + [T0 + timedelta(seconds=1)] * 7 + [T0 + timedelta(seconds=2)] * 2
    made = [event(approval_request, Kind.PROMPTED, at).pk for at in times]
    for limit in (1, 2, 3, 4, 7, 10, 11):
        rows, cursor, pages = walk(Client(), EVENTS, bearer(viewer_token), limit=limit)
        assert [row["id"] for row in rows] == made, limit
        assert pages == -(-len(made) // limit)  # no empty last page: `next` only while rows remain
        assert cursor is not None

    # The last cursor is where the tooling comes back to for what was written since.
    rows, cursor, _ = walk(Client(), EVENTS, bearer(viewer_token), limit=4)
    later = event(approval_request, Kind.APPROVED, T0 + timedelta(seconds=1)).pk  # same instant, higher id
    newest = event(approval_request, Kind.CONSUMED, T0 + timedelta(seconds=3)).pk
    response = Client().get(EVENTS, {"cursor": cursor}, **bearer(viewer_token))
    assert ids(response) == [newest]  # an event written late with an old time is behind the cursor: see docs
    assert later not in ids(response)
    nothing_new = Client().get(EVENTS, {"cursor": response.json()["cursor"]}, **bearer(viewer_token))
    assert ids(nothing_new) == [] and nothing_new.json()["cursor"] == response.json()["cursor"]


def test_request_pages_walk_every_request_once(viewer_token, agent, approver):
    made = [factories.make_approval_request(approver, agent) for _ in range(5)]
    same_instant = made[0].created_at
    ApprovalRequest.objects.filter(pk__in=[r.pk for r in made[:3]]).update(created_at=same_instant)
    rows, _cursor, pages = walk(Client(), REQUESTS, bearer(viewer_token), limit=2)
    assert sorted(row["id"] for row in rows) == sorted(str(r.pk) for r in made)
    assert len(rows) == 5 and pages == 3
    keys = [(row["created_at"], row["id"]) for row in rows]
    assert keys == sorted(keys)


def test_a_page_costs_the_same_queries_however_many_rows(viewer_token, agent, approver, django_assert_num_queries):
    approval_request = factories.make_approval_request(approver, agent)
    for n in range(60):
        event(approval_request, Kind.PROMPTED, T0 + timedelta(seconds=n))
    http = Client()
    # The token (one query; last_used_at is written once a minute, here on the first call), then the user's
    # permissions (the user's own and the groups'), then the page.
    http.get(EVENTS, {"limit": 1}, **bearer(viewer_token))
    with django_assert_num_queries(4):
        assert len(ids(http.get(EVENTS, {"limit": 50}, **bearer(viewer_token)))) == 50
    with django_assert_num_queries(4):
        assert len(ids(http.get(REQUESTS, {"limit": 50}, **bearer(viewer_token)))) == 1


# --- the tokens in admin ----------------------------------------------------------------------------------------------

TOKENS = "/admin/authz/reviewtoken/"


def test_superusers_list_and_revoke_tokens_in_admin(admin_client, viewer, viewer_token):
    row = ReviewToken.objects.get()
    listing = admin_client.get(TOKENS)
    assert listing.status_code == 200
    html = listing.content.decode()
    assert "SIEM" in html and "vera" in html
    assert viewer_token not in html and row.digest not in html
    page = admin_client.get(f"{TOKENS}{row.pk}/change/")
    assert page.status_code == 200 and row.digest not in page.content.decode()
    assert admin_client.get(f"{TOKENS}add/").status_code == 403

    done = admin_client.post(TOKENS, {"action": "revoke_tokens", "_selected_action": [row.pk]}, follow=True)
    assert "Revoked 1 token(s)" in done.content.decode()
    row.refresh_from_db()
    assert row.revoked_at is not None
    assert Client().get(EVENTS, **bearer(viewer_token)).status_code == 401


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_the_roles_do_not_see_tokens(role, viewer_token):
    http = signed_in(factories.make_staff("olga", role))
    assert http.get(TOKENS).status_code == 403
    assert "reviewtoken" not in http.get("/admin/").content.decode()
