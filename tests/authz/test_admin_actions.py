"""Issue 18 item 2: what an administrator may do from the admin (cancel a pending request, revoke a request's tokens,
suspend and resume an agent), per role, with its effects on the wire and its audit entries; and that nothing in the
admin approves or denies on a person's behalf."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.admin import helpers
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from oauth2_provider.models import get_access_token_model, get_application_model, get_refresh_token_model

from approvals.models import ApprovalRequest, AuditEvent
from approvals.store import redis_store
from authz.ciba import notify, poll
from authz.models import AgentEvent, CibaClient
from tests import factories
from tests.factories import assert_oauth_error
from tests.fakes.agent_endpoint import FakeAgentEndpoint

pytestmark = pytest.mark.django_db

Status = ApprovalRequest.Status
Kind = AuditEvent.Kind
REQUESTS = "/admin/approvals/approvalrequest/"
APPLICATIONS = "/admin/oauth2_provider/application/"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
BANK = "https://bank.example/payments"
AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()


def staff_client(*groups: str, superuser: bool = False, name: str = "") -> tuple[Client, Any]:
    user = factories.make_staff(
        name or "-".join(groups) or ("root" if superuser else "plain"), *groups, superuser=superuser
    )
    http = Client()
    http.force_login(user)
    return http, user


@pytest.fixture
def operator() -> tuple[Client, Any]:
    return staff_client("operator")


@pytest.fixture
def viewer() -> tuple[Client, Any]:
    return staff_client("viewer")


@pytest.fixture
def endpoint():
    with FakeAgentEndpoint(hang_seconds=5) as fake:
        yield fake


def ask(agent: Any, **params: str) -> ApprovalRequest:
    ack = agent.bc_authorize(scope="openid profile", login_hint="alice", **params)
    assert ack.status_code == 200, ack.content
    return ApprovalRequest.objects.get(auth_req_id=ack.json()["auth_req_id"])


def offered_actions(http: Client, url: str) -> set[str]:
    response = http.get(url)
    assert response.status_code == 200
    return set(re.findall(r'<option value="([a-z_]+)"', response.content.decode())) - {""}


def act(http: Client, url: str, action: str, *pks: Any, **extra: str):
    data = {"action": action, helpers.ACTION_CHECKBOX_NAME: [str(pk) for pk in pks], **extra}
    return http.post(url, data, follow=True)


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def tokens_of(agent: Any, approver: Any) -> tuple[ApprovalRequest, dict[str, Any]]:
    approval_request = ask(agent)
    factories.decide(approval_request.auth_req_id)
    response = agent.poll(approval_request.auth_req_id)
    assert response.status_code == 200, response.content
    return approval_request, response.json()


def introspect(agent: Any, value: str) -> dict[str, Any]:
    response = agent.post("/oauth/introspect/", {"token": value})
    assert response.status_code == 200, response.content
    return response.json()


def userinfo(access_token: str) -> int:
    return Client().get("/oauth/userinfo/", HTTP_AUTHORIZATION=f"Bearer {access_token}").status_code


def refresh(agent: Any, refresh_token: str):
    return agent.post("/oauth/token/", {"grant_type": "refresh_token", "refresh_token": refresh_token})


def exchange(agent: Any, subject: str, **params: str):
    form = {"grant_type": TOKEN_EXCHANGE, "subject_token": subject, "subject_token_type": ACCESS_TOKEN_TYPE}
    return agent.post("/oauth/token/", {**form, **params})


# --- cancel -----------------------------------------------------------------------------------------------------------


def test_operator_cancels_a_pending_request_and_the_agent_gets_access_denied(operator, agent, approver):
    http, user = operator
    pending = ask(agent)

    response = act(http, REQUESTS, "cancel_requests", pending.pk)

    assert messages_of(response) == ["Cancelled 1 pending request(s); their agents get access_denied."]
    pending.refresh_from_db()
    assert (pending.status, pending.decided_by, pending.decided_via) == (Status.CANCELLED, user, "admin")
    event = pending.events.get(kind=Kind.CANCELLED)
    assert event.actor == user
    assert_oauth_error(agent.poll(pending.auth_req_id), 400, "access_denied")
    # Idempotent: a second cancel changes nothing and records nothing.
    act(http, REQUESTS, "cancel_requests", pending.pk)
    assert pending.events.filter(kind=Kind.CANCELLED).count() == 1


@pytest.mark.parametrize(("mode", "expected"), [("ping", None), ("push", "access_denied")])
def test_a_cancelled_ping_or_push_request_notifies_the_agent(operator, make_agent, approver, endpoint, mode, expected):
    http, _user = operator
    agent = make_agent(
        name=f"{mode} agent",
        backchannel_token_delivery_mode=mode,
        backchannel_client_notification_endpoint=endpoint.url,
    )
    pending = ask(agent, client_notification_token="callback-token")

    act(http, REQUESTS, "cancel_requests", pending.pk)

    # The callback is written in the cancel's transaction; a worker delivers it (as authz.tasks does).
    outcome = notify.notification_deliver(notification_id=pending.notification.pk)
    assert outcome.delivered
    (callback,) = endpoint.wait_for(1)
    assert callback.headers["authorization"] == "Bearer callback-token"
    assert callback.json["auth_req_id"] == pending.auth_req_id
    assert callback.json.get("error") == expected
    assert_oauth_error(agent.poll(pending.auth_req_id), 400, "access_denied")


def test_viewer_is_not_offered_cancel_or_revoke_and_posting_them_changes_nothing(viewer, agent, approver):
    http, _user = viewer
    pending = ask(agent)
    consumed, tokens = tokens_of(agent, approver)

    assert offered_actions(http, REQUESTS) == set()
    for action, pk in (
        ("cancel_requests", pending.pk),
        ("revoke_tokens", consumed.pk),
        ("expire_due_requests", pending.pk),
    ):
        response = act(http, REQUESTS, action, pk, post="yes")
        # The list has no actions for a viewer: the POST just shows the list again.
        assert response.status_code == 200 and messages_of(response) == []

    pending.refresh_from_db()
    assert pending.status == Status.PENDING
    assert introspect(agent, tokens["access_token"])["active"] is True
    assert not AuditEvent.objects.filter(kind__in=(Kind.CANCELLED, Kind.REVOKED)).exists()


def test_staff_without_a_role_sees_no_requests_and_cannot_act(agent, approver):
    http, _user = staff_client()
    pending = ask(agent)
    assert http.get(REQUESTS).status_code == 403
    assert (
        http.post(REQUESTS, {"action": "cancel_requests", helpers.ACTION_CHECKBOX_NAME: [pending.pk]}).status_code
        == 403
    )
    pending.refresh_from_db()
    assert pending.status == Status.PENDING


def test_operator_is_offered_exactly_cancel_expire_and_revoke(operator):
    http, _user = operator
    assert offered_actions(http, REQUESTS) == {"cancel_requests", "expire_due_requests", "revoke_tokens"}


# --- revoke -----------------------------------------------------------------------------------------------------------


def test_revoke_asks_first_then_revokes_every_token_of_the_request(operator, agent, make_agent, approver):
    http, user = operator
    booker = make_agent(name="Booking agent")
    approval_request, first = tokens_of(agent, approver)
    refreshed = refresh(agent, first["refresh_token"])
    assert refreshed.status_code == 200, refreshed.content
    current = refreshed.json()
    hop1 = exchange(agent, current["access_token"], audience=booker.client_id)
    assert hop1.status_code == 200, hop1.content
    hop2 = exchange(booker, hop1.json()["access_token"], resource=BANK)
    assert hop2.status_code == 200, hop2.content
    other_request, other = tokens_of(agent, approver)

    confirm = act(http, REQUESTS, "revoke_tokens", approval_request.pk)

    # The confirmation page: what will happen, to which request; nothing revoked yet.
    html = confirm.content.decode()
    assert confirm.status_code == 200 and "Revoke the tokens of these requests?" in html
    assert str(approval_request.pk)[:8] in html and 'name="post" value="yes"' in html
    assert introspect(agent, current["access_token"])["active"] is True

    done = act(http, REQUESTS, "revoke_tokens", approval_request.pk, post="yes")

    assert messages_of(done) == ["Revoked the tokens of 1 request(s): 3 access token(s) and 1 refresh token(s)."]
    for holder, value in ((agent, current["access_token"]), (booker, hop1.json()["access_token"])):
        assert introspect(holder, value) == {"active": False}
    assert introspect(booker, hop2.json()["access_token"]) == {"active": False}
    assert userinfo(current["access_token"]) == 401
    assert_oauth_error(refresh(agent, current["refresh_token"]), 400, "invalid_grant")
    assert_oauth_error(refresh(agent, first["refresh_token"]), 400, "invalid_grant")
    event = approval_request.events.get(kind=Kind.REVOKED)
    assert event.actor == user
    assert event.detail["via"] == "admin" and event.detail["access_tokens_revoked"] == 3
    assert "access_token" not in str(event.detail.get("token_checksum_prefix", ""))
    checksum = hashlib.sha256(current["access_token"].encode()).hexdigest()
    assert event.detail["token_checksum_prefix"] == checksum[:12]
    # Another request's tokens are untouched.
    assert introspect(agent, other["access_token"])["active"] is True
    assert not other_request.events.filter(kind=Kind.REVOKED).exists()

    again = act(http, REQUESTS, "revoke_tokens", approval_request.pk, post="yes")
    assert messages_of(again) == ["1 request(s) had no live tokens; nothing to revoke."]
    assert approval_request.events.filter(kind=Kind.REVOKED).count() == 1


# --- suspend and resume -----------------------------------------------------------------------------------------------


def test_suspending_an_agent_cancels_revokes_and_refuses_it_until_resumed(operator, make_agent, approver):
    http, user = operator
    agent = make_agent(name="Worker agent", client_credentials_enabled=True)
    issued_request, tokens = tokens_of(agent, approver)
    own = agent.post("/oauth/token/", {"grant_type": "client_credentials", "scope": "openid"})
    assert own.status_code == 200, own.content
    pending = ask(agent)
    other = make_agent(name="Other agent")
    _other_request, other_tokens = tokens_of(other, approver)
    application = agent.application

    confirm = act(http, APPLICATIONS, "suspend_agents", application.pk)
    assert confirm.status_code == 200 and "Suspend these agents?" in confirm.content.decode()
    assert CibaClient.objects.get(pk=application.pk).suspended_at is None

    done = act(http, APPLICATIONS, "suspend_agents", application.pk, post="yes", reason="Leaked secret")

    assert messages_of(done) == [
        "Suspended 1 agent(s): 1 pending request(s) cancelled, 2 access token(s) and 1 refresh token(s) revoked."
    ]
    ciba = CibaClient.objects.get(pk=application.pk)
    assert ciba.suspended_at is not None and ciba.suspended_by == user and ciba.suspension_reason == "Leaked secret"
    event = AgentEvent.objects.get(client=ciba)
    assert (event.kind, event.actor, event.detail["reason"]) == ("suspended", user, "Leaked secret")
    pending.refresh_from_db()
    assert (pending.status, pending.decided_via, pending.decided_by) == (Status.CANCELLED, "suspension", user)
    revoked = issued_request.events.get(kind=Kind.REVOKED)
    assert revoked.actor == user and revoked.detail["via"] == "suspension"

    assert not AccessToken.objects.filter(application=application).exists()
    assert RefreshToken.objects.filter(application=application, revoked__isnull=True).count() == 0
    assert userinfo(tokens["access_token"]) == 401
    assert_oauth_error(agent.bc_authorize(scope="openid", login_hint="alice"), 400, "unauthorized_client")
    assert_oauth_error(agent.poll(pending.auth_req_id), 400, "unauthorized_client")
    assert_oauth_error(refresh(agent, tokens["refresh_token"]), 400, "unauthorized_client")
    cc = agent.post("/oauth/token/", {"grant_type": "client_credentials", "scope": "openid"})
    assert_oauth_error(cc, 400, "unauthorized_client")
    assert_oauth_error(exchange(agent, tokens["access_token"], resource=BANK), 400, "unauthorized_client")
    assert introspect(other, other_tokens["access_token"])["active"] is True

    # Suspending again changes nothing.
    again = act(http, APPLICATIONS, "suspend_agents", application.pk, post="yes")
    assert messages_of(again) == ["1 agent(s) were suspended already; left as they were."]
    assert AgentEvent.objects.filter(client=ciba).count() == 1

    resumed = act(http, APPLICATIONS, "resume_agents", application.pk)

    assert messages_of(resumed) == ["Resumed 1 agent(s): they may make requests again."]
    assert CibaClient.objects.get(pk=application.pk).suspended_at is None
    assert list(AgentEvent.objects.filter(client=ciba).values_list("kind", "actor")) == [
        ("resumed", user.pk),
        ("suspended", user.pk),
    ]
    fresh = ask(agent)
    assert_oauth_error(agent.poll(fresh.auth_req_id), 400, "authorization_pending")
    # What was revoked or cancelled stays so.
    assert userinfo(tokens["access_token"]) == 401
    assert_oauth_error(agent.poll(pending.auth_req_id), 400, "access_denied")


@pytest.mark.redis
def test_suspension_takes_effect_on_the_poll_fast_path_at_once(
    operator, agent, approver, django_capture_on_commit_callbacks
):
    http, _user = operator
    with django_capture_on_commit_callbacks(execute=True):  # the mirror is written when the request commits
        pending = ask(agent)
    assert_oauth_error(agent.poll(pending.auth_req_id), 400, "authorization_pending")  # proves the client
    cache.delete(f"ciba:poll:{poll.request_ref(pending.auth_req_id)}")
    with CaptureQueriesContext(connection) as queries:
        assert_oauth_error(agent.poll(pending.auth_req_id), 400, "authorization_pending")
    assert queries.captured_queries == []  # answered by Redis alone
    store = redis_store()
    assert store is not None
    assert store.client.exists(store.key(poll.client_key(agent.client_id)))

    with django_capture_on_commit_callbacks(execute=True):
        act(http, APPLICATIONS, "suspend_agents", agent.application.pk, post="yes")

    assert not store.client.exists(store.key(poll.client_key(agent.client_id)))
    # Even a request the cancel sweep could not see (a bc-authorize in flight at that moment) is mirrored pending:
    # the fast path no longer knows the client, and the database path refuses it.
    poll.mirror_pending(
        auth_req_id=pending.auth_req_id,
        client_id=agent.client_id,
        expires_at=pending.expires_at,
        interval=pending.interval,
        now=pending.created_at,
    )
    ApprovalRequest.objects.filter(pk=pending.pk).update(status=Status.PENDING)
    cache.delete(f"ciba:poll:{poll.request_ref(pending.auth_req_id)}")
    assert_oauth_error(agent.poll(pending.auth_req_id), 400, "unauthorized_client")


def test_a_suspended_ping_agent_is_told_its_requests_were_cancelled(operator, make_agent, approver, endpoint):
    http, _user = operator
    agent = make_agent(
        name="Ping agent", backchannel_token_delivery_mode="ping", backchannel_client_notification_endpoint=endpoint.url
    )
    pending = ask(agent, client_notification_token="callback-token")

    act(http, APPLICATIONS, "suspend_agents", agent.application.pk, post="yes")

    assert notify.notification_deliver(notification_id=pending.notification.pk).delivered
    (ping,) = endpoint.wait_for(1)
    assert ping.json == {"auth_req_id": pending.auth_req_id}
    # Redeeming the ping: the agent learns it is suspended.
    assert_oauth_error(agent.poll(pending.auth_req_id), 400, "unauthorized_client")


def test_viewer_is_not_offered_suspend_and_posting_it_changes_nothing(viewer, agent, approver):
    http, _user = viewer
    pending = ask(agent)
    assert offered_actions(http, APPLICATIONS) == set()
    act(http, APPLICATIONS, "suspend_agents", agent.application.pk, post="yes")
    act(http, APPLICATIONS, "resume_agents", agent.application.pk)
    assert CibaClient.objects.get(pk=agent.application.pk).suspended_at is None
    assert not AgentEvent.objects.exists()
    pending.refresh_from_db()
    assert pending.status == Status.PENDING


def test_operator_is_offered_suspend_and_resume(operator, agent):
    http, _user = operator
    assert {"suspend_agents", "resume_agents"} <= offered_actions(http, APPLICATIONS)


def test_the_application_page_says_who_suspended_it_and_why(operator, agent, approver):
    http, user = operator
    act(http, APPLICATIONS, "suspend_agents", agent.application.pk, post="yes", reason="Phishing <b>reports</b>")
    page = http.get(f"{APPLICATIONS}{agent.application.pk}/change/")
    html = page.content.decode()
    assert page.status_code == 200
    assert f"by {user.get_username()}" in html and "unauthorized_client" in html
    assert "Phishing &lt;b&gt;reports&lt;/b&gt;" in html and "<b>reports</b>" not in html
    listing = http.get(APPLICATIONS).content.decode()
    assert ">suspended<" in listing


# --- nobody approves or denies on a person's behalf -------------------------------------------------------------------


def test_no_admin_action_url_or_field_approves_or_denies_for_a_superuser(agent, approver, make_agent):
    http, _user = staff_client(superuser=True, name="root")
    pending = ask(agent)
    _consumed, _tokens = tokens_of(agent, approver)
    pending_two = ask(make_agent(name="Second agent"))

    # Every action the request list offers, confirmed where it asks.
    for action in offered_actions(http, REQUESTS):
        act(http, REQUESTS, action, pending.pk, pending_two.pk, post="yes")
    for action in offered_actions(http, APPLICATIONS) - {"delete_selected"}:
        act(http, APPLICATIONS, action, *get_application_model().objects.values_list("pk", flat=True), post="yes")
    # The change form refuses a decision.
    for status in (Status.APPROVED, Status.DENIED):
        assert http.post(f"{REQUESTS}{pending.pk}/change/", {"status": status, "_save": "Save"}).status_code == 403
    # No admin URL is about deciding.
    names = [url.name or "" for model_admin in admin.site._registry.values() for url in model_admin.get_urls()]
    assert not [name for name in names if re.search("approve(?!r)|deny|decide", name)]

    assert (
        not ApprovalRequest.objects.filter(status__in=(Status.APPROVED, Status.DENIED))
        .exclude(decided_via__in=("page", "link"))
        .exists()
    )
    assert not AuditEvent.objects.filter(kind__in=(Kind.APPROVED, Kind.DENIED)).exclude(actor=approver.user).exists()
    assert not AuditEvent.objects.filter(
        kind__in=(Kind.APPROVED, Kind.DENIED), request__in=[pending, pending_two]
    ).exists()


def test_a_suspended_resource_server_learns_nothing_from_introspection(operator, make_agent, agent, approver):
    http, _user = operator
    resource_server = make_agent(name="Payments API", ciba_enabled=False, resource_server=True, resources=[BANK])
    _request, tokens = tokens_of(agent, approver)
    assert introspect(resource_server, tokens["access_token"])["active"] is True  # a token bound to nothing

    act(http, APPLICATIONS, "suspend_agents", resource_server.application.pk, post="yes")

    assert introspect(resource_server, tokens["access_token"]) == {"active": False}
    assert introspect(agent, tokens["access_token"])["active"] is True


@pytest.mark.parametrize("selected", ["not-a-uuid", "00000000-0000-0000-0000-000000000000", "1' OR '1'='1"])
def test_hostile_selections_are_no_500(operator, agent, approver, selected):
    http, _user = operator
    pending = ask(agent)
    for action in ("cancel_requests", "revoke_tokens"):
        assert act(http, REQUESTS, action, selected, post="yes").status_code in (200, 400)
    assert act(http, APPLICATIONS, "suspend_agents", selected, post="yes").status_code in (200, 400)
    pending.refresh_from_db()
    assert pending.status == Status.PENDING
