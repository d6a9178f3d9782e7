"""An agent deleting its own registration (RFC 7592 §2.3): the client is gone for every purpose of the protocol, and
its requests' audit trail stays (issue 18, the trail is append-only; authz.review.actions.agent_deregister)."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from django.db import connection, transaction
from django.test import Client
from oauth2_provider.models import get_access_token_model, get_application_model, get_refresh_token_model

from approvals.models import ApprovalRequest, AuditEvent
from authz.clients.registration import initial_access_token_create
from authz.models import AgentEvent, CibaClient
from authz.review import actions
from tests import factories
from tests.authz.clients.test_private_key_jwt import Signer, private_key, public_jwk
from tests.conftest import CIBA, Agent
from tests.factories import assert_oauth_error
from tests.locks import held_open

pytestmark = pytest.mark.django_db

Status = ApprovalRequest.Status
Kind = AuditEvent.Kind
REGISTER = "/oauth/register/"
APPLICATIONS = "/admin/oauth2_provider/application/"


def register(**metadata: Any) -> dict[str, Any]:
    token = initial_access_token_create(expires_in=3600)
    body = {
        "client_name": "Expense bot",
        "grant_types": [CIBA, "refresh_token"],
        "backchannel_token_delivery_mode": "poll",
        "scope": "openid offline_access",
        **metadata,
    }
    response = Client().post(
        REGISTER, json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert response.status_code == 201, response.content
    registered: dict[str, Any] = response.json()
    return registered


def manage(registered: dict[str, Any], method: str, body: dict[str, Any] | None = None) -> Any:
    uri = registered["registration_client_uri"].removeprefix("http://testserver")
    call = getattr(Client(raise_request_exception=False), method)
    extra = {"HTTP_AUTHORIZATION": f"Bearer {registered['registration_access_token']}"}
    if body is None:
        return call(uri, **extra)
    return call(uri, json.dumps(body), content_type="application/json", **extra)


def agent_of(registered: dict[str, Any]) -> Agent:
    application = get_application_model().objects.get(client_id=registered["client_id"])
    return Agent(registered["client_id"], registered["client_secret"], Client(), application)


def ask(agent: Agent, **params: str) -> ApprovalRequest:
    ack = agent.bc_authorize(scope="openid", login_hint="alice", **params)
    assert ack.status_code == 200, ack.content
    return ApprovalRequest.objects.get(auth_req_id=ack.json()["auth_req_id"])


@pytest.fixture
def registered(db: Any) -> dict[str, Any]:
    return register()


def test_deleting_a_registration_keeps_every_request_and_its_trail(registered, approver, obtain_tokens):
    agent = agent_of(registered)
    assert obtain_tokens(agent, approver.user, scope="openid offline_access")["refresh_token"]
    redeemed = ApprovalRequest.objects.get(client=agent.application, status=Status.CONSUMED)
    pending = ask(agent, binding_message="Still waiting")
    approved = ask(agent, binding_message="Approved, never redeemed")
    factories.decide(approved.auth_req_id)

    response = manage(registered, "delete")

    assert response.status_code == 204, response.content
    application = get_application_model().objects.get(pk=agent.application.pk)
    assert application.client_id == registered["client_id"]  # kept for the admin's search
    ciba = CibaClient.objects.get(application=application)
    assert ciba.deregistered_at is not None and ciba.suspended_at is not None
    pending.refresh_from_db()
    assert (pending.status, pending.decided_via, pending.decided_by) == (Status.CANCELLED, "deregistration", None)
    assert list(AuditEvent.objects.filter(request=pending).values_list("kind", flat=True).order_by("at", "pk")) == [
        Kind.CREATED,
        Kind.CANCELLED,
    ]
    revoked = AuditEvent.objects.get(request=redeemed, kind=Kind.REVOKED)
    assert (revoked.actor, revoked.detail["via"]) == (None, "deregistration")
    assert AuditEvent.objects.filter(request=redeemed, kind=Kind.CONSUMED).exists()
    assert ApprovalRequest.objects.get(pk=approved.pk).status == Status.APPROVED  # expires as usual, unredeemable
    event = AgentEvent.objects.get(client=ciba)
    assert (event.kind, event.actor) == (AgentEvent.Kind.DEREGISTERED, None)
    # Access tokens: the approval's and the registration access token.
    assert event.detail == {"requests_cancelled": 1, "access_tokens_revoked": 2, "refresh_tokens_revoked": 1}
    # Every token it held is gone, its registration access token (RFC 7592 §2.3) included.
    assert not get_access_token_model().objects.filter(application=application).exists()
    assert not get_refresh_token_model().objects.filter(application=application, revoked__isnull=True).exists()


@pytest.mark.redis
def test_the_deleted_client_authenticates_nowhere(registered, approver, obtain_tokens):
    agent = agent_of(registered)
    tokens = obtain_tokens(agent, approver.user, scope="openid offline_access")
    approved = ask(agent)
    factories.decide(approved.auth_req_id)
    pending = ask(agent)
    assert agent.poll(pending.auth_req_id).json()["error"] == "authorization_pending"  # its client entry is cached

    assert manage(registered, "delete").status_code == 204

    # Unknown client, as RFC 7592 §2.3 has it: invalid_client, and nothing says the client_id ever existed.
    for response in (
        agent.bc_authorize(scope="openid", login_hint="alice"),
        agent.poll(approved.auth_req_id),
        agent.poll(pending.auth_req_id),
        agent.post("/oauth/token/", {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}),
        agent.post("/oauth/token/", {"grant_type": "client_credentials"}),
        agent.post("/oauth/introspect/", {"token": tokens["access_token"]}),
    ):
        assert_oauth_error(response, 401, "invalid_client")
        assert "suspended" not in response.json().get("error_description", "")
    userinfo = Client().get("/oauth/userinfo/", HTTP_AUTHORIZATION=f"Bearer {tokens['access_token']}")
    assert userinfo.status_code == 401
    # Its registration is gone for its registration access token too (RFC 7592 §2.3: 401 for an unknown client).
    assert manage(registered, "get").status_code == 401
    assert manage(registered, "put", {"client_id": registered["client_id"], "client_name": "Back"}).status_code == 401
    assert manage(registered, "delete").status_code == 401
    assert AgentEvent.objects.filter(client__application=agent.application).count() == 1


def test_a_private_key_jwt_client_deleted_is_refused_with_a_valid_assertion(approver):
    key = private_key("ES256", "deregistered")
    registered = register(
        token_endpoint_auth_method="private_key_jwt",
        token_endpoint_auth_signing_alg="ES256",
        jwks={"keys": [public_jwk(key, "k1")]},
    )
    signer = Signer(registered["client_id"], "ES256", key, "k1")
    ack = signer.bc_authorize()
    assert ack.status_code == 200, ack.content

    assert manage(registered, "delete").status_code == 204

    assert_oauth_error(signer.bc_authorize(), 401, "invalid_client")
    assert_oauth_error(signer.poll(ack.json()["auth_req_id"]), 401, "invalid_client")


def test_a_second_deregistration_changes_nothing(registered):
    application = agent_of(registered).application

    assert actions.agent_deregister(application=application) is not None
    assert actions.agent_deregister(application=application) is None

    assert AgentEvent.objects.filter(client__application=application).count() == 1


def test_an_application_without_ciba_settings_is_deleted_outright():
    application, _secret = factories.make_agent_client(ciba=False)

    actions.agent_deregister(application=application)

    assert not get_application_model().objects.filter(pk=application.pk).exists()


def test_the_admin_shows_it_deleted_and_can_neither_edit_nor_resume_it(registered):
    application = agent_of(registered).application
    assert manage(registered, "delete").status_code == 204
    root = factories.make_staff("root", superuser=True)
    http = Client(raise_request_exception=False)
    http.force_login(root)

    listing = http.get(APPLICATIONS)
    page = http.get(f"{APPLICATIONS}{application.pk}/change/")
    edit = http.post(f"{APPLICATIONS}{application.pk}/change/", {"name": "Revived", "client_id": "x"})
    resume = http.post(APPLICATIONS, {"action": "resume_agents", "_selected_action": [str(application.pk)]})

    assert "registration deleted" in listing.content.decode()
    assert "Deleted its registration at" in page.content.decode()
    assert edit.status_code == 403
    assert resume.status_code == 302
    ciba = CibaClient.objects.get(application=application)
    assert ciba.suspended_at is not None and ciba.deregistered_at is not None
    assert get_application_model().objects.get(pk=application.pk).name == "Expense bot"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_request_made_while_the_deregistration_commits_is_refused(approver):
    registered = register()
    agent = agent_of(registered)
    # Deleted, not yet committed: a bc-authorize authenticates the client meanwhile, then waits for its row lock.
    thread, started, errors = held_open(lambda: actions.agent_deregister(application=agent.application))
    try:
        assert started.wait(30)
        response = agent.bc_authorize(scope="openid", login_hint="alice")
    finally:
        thread.join(30)
    assert not errors, errors

    assert response.status_code in (400, 401), response.content
    assert response.json()["error"] in ("unauthorized_client", "invalid_client")
    assert not ApprovalRequest.objects.filter(client=agent.application, status=Status.PENDING).exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_deregistration_does_not_wait_for_a_foreign_key_check_in_flight(approver):
    """A bc-authorize's or a refresh's INSERT holds its client's row FOR KEY SHARE until it commits, and may then
    wait for the CIBA settings row the deregistration holds: the deregistration must not wait for the former, or the
    two would deadlock."""
    registered = register()
    application = agent_of(registered).application
    holding, release, errors = threading.Event(), threading.Event(), []

    def insert_in_flight() -> None:
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                table = connection.ops.quote_name(type(application)._meta.db_table)
                cursor.execute(f"SELECT 1 FROM {table} WHERE id = %s FOR KEY SHARE", [application.pk])  # noqa: S608
                holding.set()
                release.wait(30)
        except BaseException as exc:  # reported below
            errors.append(exc)
            holding.set()
        finally:
            connection.close()

    thread = threading.Thread(target=insert_in_flight)
    thread.start()
    try:
        assert holding.wait(30)
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '3s'")
        # Were it to wait, the lock timeout would fail it.
        assert actions.agent_deregister(application=application) is not None
    finally:
        release.set()
        thread.join(30)
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = 0")
    assert not errors, errors
