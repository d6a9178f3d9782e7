"""Adversarial review of issue 18 (admin review): the admin pages, the review API and its tokens, the export, the
actions (cancel, revoke, suspend, clear lockouts), the trail's new writes and the purge, attacked from outside: a
hostile client, a self-registered agent, a careless or malicious staff member of each role, a review token holder.

Findings (each test below failed on the build as it was):
- A viewer could read an agent's auth_req_id out of the request list one character at a time: Django's admin lets
  any query parameter filter on the list's own columns (`?auth_req_id__startswith=Ab`), declared filter or not. The
  same oracle read an approver's user-code hash (then brute-forced offline: user codes are short) and Web Push keys.
- The push subscription page showed every viewer the devices' Web Push secrets (`auth`, `p256dh`; RFC 8291).
- A 500 on hostile input: a non-ASCII digit ("²" passes str.isdigit, int() refuses it) in the request list's
  search or approver filter, and in the review API's `limit`; a date no datetime holds in any review list's query
  (`?at__year=99999`, a date drill-down to 9999-12-31).
- An admin's search by an exact auth_req_id (a GET, `?q=<auth_req_id>`) wrote the agent's credential to the access
  log in clear.
- Suspension could be undone without a trace: any save of a CibaClient read before the suspension (an agent's
  RFC 7592 update in flight, its window stretched by a slow jwks_uri host; an administrator's form) wrote
  `suspended_at = NULL` back.
- A bc-authorize that had passed the suspension check when the suspension committed created a request the
  suspension never cancelled: a suspended agent's person was prompted, and the request could be approved.
- A suspended agent could delete its registration (RFC 7592) and, through CASCADE, the record of its suspension and
  every request's audit trail.
- The purge deleted the trail of a request whose tokens still stood: the grant in force lost who approved it.
- An operator could clear the password lockout of a superuser's (or any staff) account that had an approver row (any
  account gets one by opening the approver's pages): that count guards the admin's sign-in too, so the operator
  reopened the guessing of a password worth more than theirs.
- A client secret an administrator kept unhashed (DOT's "Hash client secret" unticked) was on every viewer's page of
  the application, and readable through the same column-lookup oracle.
- "Revoke" on every request across the list's pages built a confirmation page of every id (a million at scale) whose
  form Django then refused (more than 1,000 fields).

- An agent that was not suspended erased its requests' trails by deleting its registration (RFC 7592 DELETE
  CASCADE). A deleted registration now keeps its rows, the client unknown to authentication from then on
  (authz.review.actions.agent_deregister; tests/authz/clients/test_deregistration.py).
- Then, attacking that: a registration update (PUT) authenticated just before the DELETE committed waited for the
  row lock and rewrote the kept record (the name the trail shows) with a fresh registration access token that
  reopened the endpoint; a DELETE queued behind a suspension overwrote who suspended the agent and why; token
  exchange still accepted the deleted client_id as an audience; an administrator's change form saved while the
  deletion committed wrote the kept record back.

The other tests guard what held: XSS through agent names, binding messages and suspension reasons on every new page,
CSV injection in the export, secrets absent from the API and the export, CSRF on the actions, the trail surviving an
administrator's delete of an agent or a person, and review tokens that stop with their holder's role.
"""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.core.management import call_command
from django.db import transaction
from django.test import Client, RequestFactory
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_application_model
from oauth2_provider.views.dynamic_client_registration import _issue_registration_token

from approvals.models import ApprovalRequest, Approver, ApproverEvent, AuditEvent, PushSubscription
from authz.models import AgentEvent, CibaClient, RequestCallback
from authz.review import actions
from authz.review.tokens import review_token_create
from config.logs import redact
from tests import factories
from tests.authz.clients.test_deregistration import agent_of, manage, register
from tests.conftest import CIBA, Agent
from tests.factories import assert_oauth_error
from tests.locks import held_open

pytestmark = pytest.mark.django_db

Status = ApprovalRequest.Status
Kind = AuditEvent.Kind
REQUESTS = "/admin/approvals/approvalrequest/"
APPROVERS = "/admin/approvals/approver/"
APPLICATIONS = "/admin/oauth2_provider/application/"
AUDIT_EVENTS = "/admin/approvals/auditevent/"
REGISTER = "/oauth/register/"
CALLBACK = "http://127.0.0.1:8765/cb"
HOSTILE = '<img src=x onerror="alert(1)">'


def staff(*groups: str, superuser: bool = False, name: str = "") -> tuple[Client, Any]:
    user = factories.make_staff(
        name or "-".join(groups) or ("root" if superuser else "plain"), *groups, superuser=superuser
    )
    http = Client(raise_request_exception=False)
    http.force_login(user)
    return http, user


def ask(agent: Agent, **params: str) -> ApprovalRequest:
    ack = agent.bc_authorize(scope="openid", login_hint="alice", **params)
    assert ack.status_code == 200, ack.content
    return ApprovalRequest.objects.get(auth_req_id=ack.json()["auth_req_id"])


def act(http: Client, url: str, action: str, *pks: Any, **extra: str) -> Any:
    return http.post(url, {"action": action, helpers.ACTION_CHECKBOX_NAME: [str(pk) for pk in pks], **extra})


# --- finding: the list's column lookups as an oracle for secrets ----------------------------------------------------


def test_a_viewer_cannot_read_an_auth_req_id_through_a_column_lookup(agent, approver):
    pending = ask(agent)
    http, _ = staff("viewer")
    right, wrong = pending.auth_req_id[:6], "~" + pending.auth_req_id[1:6]

    for lookup in ("auth_req_id__startswith", "auth_req_id__regex", "auth_req_id__gte", "auth_req_id"):
        hit = http.get(REQUESTS, {lookup: right if lookup != "auth_req_id" else pending.auth_req_id})
        miss = http.get(REQUESTS, {lookup: wrong})
        # Refused outright: a list that answers differently for a right and a wrong prefix is an oracle.
        assert hit.status_code == miss.status_code == 400, (lookup, hit.status_code, miss.status_code)
    # What the issue asks for still works: the exact value in the search box, leading to the request's page.
    found = http.get(REQUESTS, {"q": pending.auth_req_id})
    assert found.status_code == 302 and found["Location"].endswith(f"{pending.pk}/change/")


def test_a_viewer_cannot_read_an_approvers_user_code_hash_or_push_keys_through_a_column_lookup(agent):
    approver = factories.make_approver("bob", user_code="8164")
    PushSubscription.objects.create(
        approver=approver, endpoint="https://fcm.googleapis.com/fcm/send/abc", p256dh="BPkey" * 10, auth="secretauth"
    )
    http, _ = staff("viewer")
    stored = Approver.objects.get(pk=approver.pk).user_code_hash
    assert stored

    assert http.get(APPROVERS, {"user_code_hash__startswith": stored[:8]}).status_code == 400
    for field in ("auth", "p256dh"):
        response = http.get("/admin/approvals/pushsubscription/", {f"{field}__startswith": "s"})
        assert response.status_code == 400, field


def test_the_push_subscription_page_shows_no_web_push_secret(agent):
    approver = factories.make_approver("bob")
    device = PushSubscription.objects.create(
        approver=approver,
        endpoint="https://fcm.googleapis.com/fcm/send/abc",
        p256dh="BKeyKeyKeyKeyKeyKeyKeyKeyKeyKeyKeyKeyKey",
        auth="AuthSecretAuthSecret",
    )
    for http, _user in (staff("viewer"), staff(superuser=True, name="root")):
        page = http.get(f"/admin/approvals/pushsubscription/{device.pk}/change/")
        assert page.status_code == 200
        html = page.content.decode()
        assert "fcm.googleapis.com" in html  # which service it is, still shown
        assert device.auth not in html and device.p256dh not in html


# --- finding: 500s on non-ASCII digits ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["²", "٣", "१२३"])
def test_non_ascii_digits_are_no_500_in_the_request_list(agent, approver, value):
    factories.make_approval_request(approver, agent)
    http, _ = staff("viewer")
    for params in ({"q": value}, {"approver": value}):
        response = http.get(REQUESTS, params)
        assert response.status_code == 200, (params, response.status_code)


@pytest.mark.parametrize("value", ["²", "¹⁰"])
def test_non_ascii_digits_are_a_400_in_the_review_api(agent, approver, value):
    factories.make_approval_request(approver, agent)
    http, _ = staff("viewer")
    for path in ("/api/review/audit-events/", "/api/review/approval-requests/"):
        response = http.get(path, {"limit": value})
        assert response.status_code == 400, (path, response.status_code)
        assert "limit" in response.json()["error"]


OUT_OF_RANGE = [
    (AUDIT_EVENTS, {"at__year": "99999"}),
    (REQUESTS, {"created_at__year": "99999"}),
    ("/admin/authz/notification/", {"created_at__year": "9999", "created_at__month": "12", "created_at__day": "31"}),
    ("/admin/authz/notification/", {"created_at__year": "9999"}),
    ("/admin/approvals/delivery/", {"created_at__year": "9999", "created_at__month": "12", "created_at__day": "31"}),
    ("/admin/authz/agentevent/", {"at__year": "99999"}),
    ("/admin/approvals/approverevent/", {"at__year": "99999"}),
    (APPROVERS, {"created_at__year": "99999"}),
    ("/admin/approvals/pushsubscription/", {"created_at__year": "99999"}),
    ("/admin/oauth2_provider/accesstoken/", {"expires__year": "99999"}),
    ("/admin/oauth2_provider/refreshtoken/", {"created__year": "99999"}),
    (APPLICATIONS, {"created__year": "99999"}),
]


@pytest.mark.parametrize(("url", "params"), OUT_OF_RANGE, ids=[f"{u}?{'&'.join(p)}" for u, p in OUT_OF_RANGE])
def test_out_of_range_dates_in_a_lists_query_are_no_500(agent, approver, url, params):
    factories.make_approval_request(approver, agent)
    http, _ = staff("viewer")

    response = http.get(url, params)

    # Django's answer to a lookup it cannot use: back to the list, flagged.
    assert response.status_code == 302 and response["Location"].endswith("?e=1"), (url, response.status_code)


# --- finding: an auth_req_id searched for lands in the access log ---------------------------------------------------


def test_an_admin_search_by_auth_req_id_leaves_no_credential_in_the_access_log(agent, approver):
    pending = ask(agent)
    # As gunicorn's access log and runserver's write the request line (every record passes config.logs.redact).
    for line in (
        f'127.0.0.1 - - [06/Dec/2026:05:00:00 +0000] "GET {REQUESTS}?q={pending.auth_req_id} HTTP/1.1" 302 0',
        f'"GET {REQUESTS}?status=pending&q={pending.auth_req_id}&agent=x HTTP/1.1" 302 0',
    ):
        assert pending.auth_req_id not in redact(line)
    # Other searches stay readable.
    assert "q=alice" in redact(f'"GET {REQUESTS}?q=alice HTTP/1.1" 200 1234')


# --- finding: suspension undone by a stale save ---------------------------------------------------------------------


def test_a_save_of_settings_read_before_a_suspension_does_not_lift_it(agent, approver):
    _http, operator = staff("operator")
    # What an RFC 7592 update in flight, or an administrator's form, holds: the client's settings as they were.
    stale = CibaClient.objects.get(application=agent.application)
    assert actions.agent_suspend(ciba=stale, actor=operator, reason="leaked key") is not None

    stale.prompt_channels = []
    stale.save()

    ciba = CibaClient.objects.get(pk=stale.pk)
    assert ciba.suspended_at is not None and ciba.suspended_by == operator and ciba.suspension_reason == "leaked key"
    assert_oauth_error(agent.bc_authorize(scope="openid", login_hint="alice"), 400, "unauthorized_client")


# --- finding: a suspended agent deletes the record of its suspension ------------------------------------------------


@pytest.fixture
def registered(db: Any) -> dict[str, Any]:
    return register()


def test_a_suspended_agent_cannot_delete_its_registration_and_with_it_the_trail(registered, approver):
    application = get_application_model().objects.get(client_id=registered["client_id"])
    agent = Agent(registered["client_id"], registered["client_secret"], Client(), application)
    pending = ask(agent)
    _http, operator = staff("operator")
    actions.agent_suspend(ciba=CibaClient.objects.get(application=application), actor=operator, reason="fraud")

    response = manage(registered, "delete")

    assert response.status_code == 403, response.content
    assert response.json()["error"] == "access_denied"
    assert get_application_model().objects.filter(pk=application.pk).exists()
    assert AgentEvent.objects.filter(client__application=application, kind="suspended").exists()
    assert list(AuditEvent.objects.filter(request=pending).values_list("kind", flat=True).order_by("at", "pk")) == [
        Kind.CREATED,
        Kind.CANCELLED,
    ]
    # Reading its registration still works, and so does deleting it once resumed (RFC 7592 §2.3).
    assert manage(registered, "get").status_code == 200
    actions.agent_resume(ciba=CibaClient.objects.get(application=application), actor=operator)
    assert manage(registered, "delete").status_code == 204


def test_an_agent_deleting_its_registration_keeps_its_requests_trail(registered, approver):
    application = get_application_model().objects.get(client_id=registered["client_id"])
    agent = Agent(registered["client_id"], registered["client_secret"], Client(), application)
    pending = ask(agent)

    assert manage(registered, "delete").status_code == 204

    assert list(AuditEvent.objects.filter(request=pending).values_list("kind", flat=True).order_by("at", "pk")) == [
        Kind.CREATED,
        Kind.CANCELLED,
    ]
    assert AgentEvent.objects.filter(client__application=application, kind="deregistered").exists()


# --- finding: a bc-authorize racing a suspension --------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_request_made_while_the_suspension_commits_is_refused(agent, approver):
    operator = factories.make_staff("op", "operator")
    ciba = CibaClient.objects.get(application=agent.application)
    # Suspended, not yet committed: a bc-authorize reads the agent as active, then waits for its row lock.
    thread, suspended, errors = held_open(lambda: actions.agent_suspend(ciba=ciba, actor=operator, reason="race"))
    try:
        assert suspended.wait(30)
        response = agent.bc_authorize(scope="openid", login_hint="alice")
    finally:
        thread.join(30)
    assert not errors, errors

    assert not ApprovalRequest.objects.filter(client=agent.application, status=Status.PENDING).exists()
    assert_oauth_error(response, 400, "unauthorized_client")


# --- finding: the purge and a grant still in force ------------------------------------------------------------------


def test_the_purge_keeps_the_trail_of_a_request_whose_tokens_still_stand(agent, approver, obtain_tokens):
    tokens = obtain_tokens(agent, approver.user, scope="openid offline_access")
    consumed = ApprovalRequest.objects.get(client=agent.application, status=Status.CONSUMED)
    assert consumed.access_token_id is not None
    # Its whole story two hours old: created, decided, redeemed and expired before the cutoff an hour ago.
    shift = timedelta(hours=2)
    for field in ("created_at", "expires_at", "decided_at", "consumed_at", "prompted_at", "auth_time"):
        if getattr(consumed, field) is not None:
            ApprovalRequest.objects.filter(pk=consumed.pk).update(**{field: getattr(consumed, field) - shift})
    for event in AuditEvent.objects.filter(request=consumed):
        AuditEvent.objects.filter(pk=event.pk).update(at=event.at - shift)
    before = AuditEvent.objects.filter(request=consumed).count()

    output = StringIO()
    call_command("purge_audit_events", "--before", (timezone.now() - timedelta(hours=1)).isoformat(), stdout=output)

    assert AuditEvent.objects.filter(request=consumed).count() == before, output.getvalue()
    # The grant does still stand: its refresh token works.
    refreshed = agent.post("/oauth/token/", {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.content


# --- guards: what held ----------------------------------------------------------------------------------------------


def test_guard_hostile_names_and_messages_are_escaped_on_every_review_page(make_agent, approver):
    agent = make_agent(name="Travel agent")
    get_application_model().objects.filter(pk=agent.application.pk).update(name=HOSTILE)
    pending = ask(agent)
    ApprovalRequest.objects.filter(pk=pending.pk).update(binding_message=HOSTILE)
    http, _ = staff("operator")
    act(http, APPLICATIONS, "suspend_agents", agent.application.pk, post="yes", reason=HOSTILE)

    pages = [
        REQUESTS,
        f"{REQUESTS}{pending.pk}/change/",
        APPLICATIONS,
        f"{APPLICATIONS}{agent.application.pk}/change/",
        "/admin/authz/agentevent/",
        AUDIT_EVENTS,
        f"{APPROVERS}{approver.pk}/change/",
        "/admin/review/overview/",
    ]
    for page in pages:
        response = http.get(page)
        assert response.status_code == 200, page
        html = response.content.decode()
        assert "<img src=x" not in html, page
    # The confirmation pages too.
    confirm = act(http, REQUESTS, "revoke_tokens", pending.pk)
    assert confirm.status_code == 200 and "<img src=x" not in confirm.content.decode()


def test_guard_the_export_defuses_formulas_and_carries_no_secret(make_agent, approver, obtain_tokens):
    agent = make_agent(name="Travel agent")
    get_application_model().objects.filter(pk=agent.application.pk).update(name='=HYPERLINK("http://evil")')
    tokens = obtain_tokens(agent, approver.user, scope="openid offline_access")
    consumed = ApprovalRequest.objects.get(client=agent.application)
    http, _ = staff("viewer")
    today = timezone.localdate().isoformat()

    exported = {}
    for fmt in ("csv", "jsonl"):
        response = http.get(f"{AUDIT_EVENTS}export/", {"start": today, "end": today, "format": fmt})
        assert response.status_code == 200
        exported[fmt] = b"".join(response.streaming_content).decode()
    rows = list(csv.DictReader(io.StringIO(exported["csv"])))
    assert rows and all(row["agent_name"] == '\'=HYPERLINK("http://evil")' for row in rows)
    for text in exported.values():
        for secret in (consumed.auth_req_id, tokens["access_token"], tokens["refresh_token"], agent.client_secret):
            assert secret not in text


def test_guard_the_api_carries_no_secret(make_agent, approver):
    agent = make_agent(
        name="Ping agent", backchannel_token_delivery_mode="ping", backchannel_client_notification_endpoint=CALLBACK
    )
    ack = agent.bc_authorize(scope="openid", login_hint="alice", client_notification_token="agent-secret-1234567")
    assert ack.status_code == 200, ack.content
    pending = ApprovalRequest.objects.get(auth_req_id=ack.json()["auth_req_id"])
    assert RequestCallback.objects.filter(request=pending).exists()
    http, _ = staff("viewer")
    bodies = [
        http.get("/api/review/audit-events/").content.decode(),
        http.get("/api/review/approval-requests/").content.decode(),
        http.get(f"/api/review/approval-requests/{pending.pk}/").content.decode(),
        http.get(f"{REQUESTS}{pending.pk}/change/").content.decode(),
        http.get(REQUESTS).content.decode(),
    ]
    for body in bodies:
        assert pending.auth_req_id not in body and "agent-secret-1234567" not in body


def test_guard_state_changing_admin_views_need_the_csrf_token(agent, approver):
    user = factories.make_staff("op", "operator")
    http = Client(enforce_csrf_checks=True, raise_request_exception=False)
    http.force_login(user)
    pending = ask(agent)
    owner = Approver.objects.get(pk=approver.pk)

    assert act(http, REQUESTS, "cancel_requests", pending.pk).status_code == 403
    assert act(http, APPLICATIONS, "suspend_agents", agent.application.pk, post="yes").status_code == 403
    assert http.post(f"{APPROVERS}{owner.pk}/clear-lockouts/").status_code == 403

    pending.refresh_from_db()
    assert pending.status == Status.PENDING
    assert CibaClient.objects.get(application=agent.application).suspended_at is None


def test_guard_a_superuser_cannot_delete_an_agent_or_a_person_with_a_trail(agent, approver):
    pending = ask(agent)
    http, _ = staff(superuser=True, name="root")

    act(http, APPLICATIONS, "delete_selected", agent.application.pk, post="yes")
    http.post(f"{APPLICATIONS}{agent.application.pk}/delete/", {"post": "yes"})
    http.post(f"/admin/auth/user/{approver.user.pk}/delete/", {"post": "yes"})

    assert AuditEvent.objects.filter(request=pending).exists()
    assert get_application_model().objects.filter(pk=agent.application.pk).exists()


def test_guard_a_review_token_stops_with_its_holders_role(agent, approver, obtain_tokens):
    tokens = obtain_tokens(agent, approver.user)
    _http, holder = staff("viewer", name="siem")
    _row, raw = review_token_create(user=holder, name="siem", expires_in=timedelta(days=1))
    api = Client()

    assert api.get("/api/review/audit-events/", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200
    # An agent's OAuth access token opens nothing here.
    assert (
        api.get("/api/review/audit-events/", HTTP_AUTHORIZATION=f"Bearer {tokens['access_token']}").status_code == 401
    )
    holder.groups.clear()
    assert api.get("/api/review/audit-events/", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 403
    holder.is_active = False
    holder.save()
    assert api.get("/api/review/audit-events/", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 401


def test_guard_cancelling_twice_at_once_cancels_once(agent, approver):
    pending = ask(agent)
    http_one, _ = staff("operator", name="op1")
    http_two, _ = staff("operator", name="op2")

    act(http_one, REQUESTS, "cancel_requests", pending.pk)
    act(http_two, REQUESTS, "cancel_requests", pending.pk)

    assert AuditEvent.objects.filter(request=pending, kind=Kind.CANCELLED).count() == 1
    assert_oauth_error(agent.poll(pending.auth_req_id), 400, "access_denied")


# --- finding: "revoke" on every request across pages -----------------------------------------------------------------


def test_revoking_the_tokens_of_every_request_across_pages_is_refused_at_once(agent, approver):
    now = timezone.now()
    ApprovalRequest.objects.bulk_create(
        ApprovalRequest(
            client=agent.application,
            user=approver.user,
            scope="openid",
            auth_req_id=f"bulk-{index:06d}",
            created_at=now,
            expires_at=now + timedelta(minutes=5),
        )
        for index in range(1001)
    )
    http, _ = staff("operator")

    # "Select all 1,001" then the action: the confirmation page would carry every id back, a form Django refuses
    # beyond 1,000 fields (and, at a million requests, a page of a million ids).
    on_the_page = ApprovalRequest.objects.values_list("pk", flat=True).first()
    response = http.post(
        REQUESTS,
        {"action": "revoke_tokens", "select_across": "1", "index": "0", helpers.ACTION_CHECKBOX_NAME: on_the_page},
        follow=True,
    )

    assert response.status_code == 200
    html = response.content.decode()
    assert "Revoke the tokens of these requests?" not in html
    assert "at most" in " ".join(str(m) for m in response.context["messages"])


# --- finding: an operator clears a superuser's password lockout -----------------------------------------------------


def admin_sign_in(username: str, password: str) -> bool:
    response = Client().post("/admin/login/", {"username": username, "password": password})
    return response.status_code == 302


@pytest.mark.redis
def test_an_operator_cannot_clear_the_lockout_that_guards_a_superusers_sign_in(agent):
    root = factories.make_staff("root", superuser=True)
    # Any signed-in account that opens the approver's pages gets an Approver row (approvals.views.user_code).
    browser = Client()
    browser.force_login(root)
    assert browser.get("/approvals/user-code/").status_code == 200
    victim = Approver.objects.get(user=root)
    # Someone guesses the superuser's password at the admin's sign-in until it locks.
    for _ in range(5):
        assert not admin_sign_in("root", "guess")
    assert not admin_sign_in("root", factories.PASSWORD)  # locked: the right password is refused too
    http, _operator = staff("operator", name="ops")

    # The operator's "clear lockouts" would reopen the guessing: the password count is the admin sign-in's too.
    refused = http.post(f"{APPROVERS}{victim.pk}/clear-lockouts/", follow=True)
    act(http, APPROVERS, "clear_lockouts", victim.pk)

    assert "a superuser's to clear" in " ".join(str(m) for m in refused.context["messages"])
    assert not admin_sign_in("root", factories.PASSWORD)
    assert not ApproverEvent.objects.filter(approver=victim).exists()
    # A superuser may.
    other_root, _ = staff(superuser=True, name="root2")
    other_root.post(f"{APPROVERS}{victim.pk}/clear-lockouts/")
    assert admin_sign_in("root", factories.PASSWORD)


# --- finding: a client secret stored in clear, read by a viewer -----------------------------------------------------


def test_a_viewer_cannot_read_a_client_secret_kept_in_clear(make_agent):
    # DOT's form lets a superuser keep a client's secret unhashed ("Hash client secret" unticked).
    agent = make_agent(name="Legacy agent")
    secret = "LegacyPlainSecret" + "x" * 30
    get_application_model().objects.filter(pk=agent.application.pk).update(
        client_secret=secret, hash_client_secret=False
    )
    http, _ = staff("viewer")

    page = http.get(f"{APPLICATIONS}{agent.application.pk}/change/")
    assert page.status_code == 200 and secret not in page.content.decode()
    assert http.get(APPLICATIONS, {"client_secret__startswith": secret[:6]}).status_code == 400


# --- findings: deregistration (RFC 7592 DELETE keeps the record) raced and named --------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_registration_update_queued_behind_the_deletion_does_not_bring_the_registration_back():
    """A PUT authenticated with the registration access token just before the DELETE committed waits for the
    client's row lock, then found the client deleted: it must not rewrite the kept record (its name is how the audit
    trail names the agent) nor issue a new registration access token that opens the endpoint again."""
    registered = register()
    application = agent_of(registered).application
    thread, started, errors = held_open(lambda: actions.agent_deregister(application=application))
    try:
        assert started.wait(30)
        update = {
            "client_id": registered["client_id"],
            "client_name": "Renamed after its deletion",
            "grant_types": [CIBA, "refresh_token"],
            "backchannel_token_delivery_mode": "poll",
            "scope": "openid offline_access",
        }
        response = manage(registered, "put", update)
    finally:
        thread.join(30)
    assert not errors, errors

    assert response.status_code == 401, response.content
    assert get_application_model().objects.get(pk=application.pk).name == "Expense bot"
    assert not get_access_token_model().objects.filter(application=application).exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_deletion_queued_behind_a_suspension_leaves_the_suspension_as_the_admin_made_it():
    """The DELETE's "suspended agents may not delete their registration" check reads the row before taking its lock:
    a suspension committing meanwhile must still be honoured (403), not overwritten (its actor and reason gone from
    the agent's record, the agent deleted after all)."""
    registered = register()
    application = agent_of(registered).application
    ciba = CibaClient.objects.get(application=application)
    admin = factories.make_staff("ops", superuser=True)
    thread, started, errors = held_open(
        lambda: actions.agent_suspend(ciba=ciba, actor=admin, reason="Under investigation")
    )
    try:
        assert started.wait(30)
        response = manage(registered, "delete")
    finally:
        thread.join(30)
    assert not errors, errors

    assert response.status_code == 403, response.content
    ciba.refresh_from_db()
    assert ciba.deregistered_at is None
    assert (ciba.suspended_by, ciba.suspension_reason) == (admin, "Under investigation")


def test_a_registration_access_token_left_over_from_before_the_deletion_opens_nothing(registered):
    """Such as one the race above issued on an earlier build: the registration endpoint asks the client, not only
    whether the token exists."""
    application = agent_of(registered).application
    assert manage(registered, "delete").status_code == 204
    leftover = {**registered, "registration_access_token": _issue_registration_token(application, None)}

    for method, body in (("get", None), ("put", {"client_id": registered["client_id"], "client_name": "Back"})):
        response = manage(leftover, method, body)
        assert response.status_code == 401, response.content
        assert response.json()["error"] == "invalid_token"
    assert manage(leftover, "delete").status_code == 401
    assert get_application_model().objects.get(pk=application.pk).name == "Expense bot"


def test_a_token_exchange_cannot_name_a_deleted_client_as_its_audience(make_agent, approver, obtain_tokens):
    """RFC 7592 §2.3: the deleted client_id is unknown, here too (RFC 8693 invalid_target for an unknown audience)."""
    gone = register()
    assert manage(gone, "delete").status_code == 204
    agent = make_agent()
    tokens = obtain_tokens(agent, approver.user)

    response = agent.post(
        "/oauth/token/",
        {
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "subject_token": tokens["access_token"],
            "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "audience": gone["client_id"],
        },
    )

    assert_oauth_error(response, 400, "invalid_target")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_admin_save_queued_behind_the_deletion_writes_nothing_back():
    """The admin's change form passed its permission check (the agent not yet deleted) and saves while the
    deregistration commits: it must not write the kept record back (a new name, secret or keys)."""
    registered = register()
    on_the_form = agent_of(registered).application  # read before the deletion, as the form was
    on_the_form.name = "Revived by a stale form"
    root = factories.make_staff("root", superuser=True)
    request = RequestFactory().post("/")
    request.user = root
    model_admin = admin.site._registry[type(on_the_form)]
    deleting = get_application_model().objects.get(pk=on_the_form.pk)
    thread, started, errors = held_open(lambda: actions.agent_deregister(application=deleting))
    try:
        assert started.wait(30)
        with pytest.raises(PermissionDenied), transaction.atomic():
            model_admin.save_model(request, on_the_form, None, True)
    finally:
        thread.join(30)
    assert not errors, errors

    assert get_application_model().objects.get(pk=on_the_form.pk).name == "Expense bot"
    assert CibaClient.objects.get(application_id=on_the_form.pk).deregistered_at is not None
