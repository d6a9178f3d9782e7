"""Issue 14, item 14: a ping or push callback goes where the client asked at bc-authorize time, the way it asked.

A registration update (RFC 7592 PUT) after bc-authorize used to redirect the push of a full token response, and its
retries for ten minutes, to the new endpoint. The endpoint and the delivery mode are now bound to the request when it
is made; and the stored (encrypted) token response is dropped once the push is delivered or given up.
Both notification endpoints are loopback fakes; the client registers and updates itself over HTTP.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from oauth2_provider.models import get_application_model

from approvals.delivery import Outcome
from approvals.models import ApprovalRequest
from authz.ciba import notify as notifications
from authz.clients.registration import initial_access_token_create
from authz.models import Notification
from tests import factories
from tests.conftest import CIBA, Agent
from tests.fakes.agent_endpoint import FakeAgentEndpoint

pytestmark = pytest.mark.django_db

TOKEN = "agent-callback-token"
NStatus = Notification.Status


@pytest.fixture
def agents_endpoint() -> Iterator[FakeAgentEndpoint]:
    with FakeAgentEndpoint(hang_seconds=5) as fake:
        yield fake


@pytest.fixture
def attackers_endpoint() -> Iterator[FakeAgentEndpoint]:
    with FakeAgentEndpoint(hang_seconds=5) as fake:
        yield fake


class Registered:
    """A client registered over RFC 7591, updating itself over RFC 7592."""

    def __init__(self, mode: str, endpoint: str) -> None:
        token = initial_access_token_create(expires_in=60)
        response = Client().post(
            "/oauth/register/",
            json.dumps(self.metadata(mode, endpoint)),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )
        assert response.status_code == 201, response.content
        body = response.json()
        self.client_id = body["client_id"]
        self.registration_token = body["registration_access_token"]
        self.path = body["registration_client_uri"].removeprefix("http://testserver")
        application = get_application_model().objects.get(client_id=self.client_id)
        self.agent = Agent(self.client_id, body["client_secret"], Client(), application)

    @staticmethod
    def metadata(mode: str, endpoint: str) -> dict[str, Any]:
        body = {
            "client_name": "Push agent",
            "grant_types": [CIBA, "refresh_token"],
            "backchannel_token_delivery_mode": mode,
            "scope": "openid",
        }
        if mode != "poll":
            body["backchannel_client_notification_endpoint"] = endpoint
        return body

    def update(self, mode: str, endpoint: str = "") -> None:
        response = Client().put(
            self.path,
            json.dumps({"client_id": self.client_id, **self.metadata(mode, endpoint)}),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {self.registration_token}",
        )
        assert response.status_code == 200, response.content
        self.registration_token = response.json()["registration_access_token"]

    def ask(self) -> ApprovalRequest:
        response = self.agent.bc_authorize(scope="openid", login_hint="alice", client_notification_token=TOKEN)
        assert response.status_code == 200, response.content
        return ApprovalRequest.objects.get(auth_req_id=response.json()["auth_req_id"])


def deliver(approval_request: ApprovalRequest) -> Outcome:
    notification = Notification.objects.get(request=approval_request)
    return notifications.notification_deliver(notification_id=notification.pk)


def stored_payload(approval_request: ApprovalRequest) -> str:
    return Notification.objects.get(request=approval_request).payload_encrypted


def test_a_push_goes_to_the_endpoint_registered_when_the_request_was_made(
    approver, agents_endpoint, attackers_endpoint
):
    client = Registered("push", agents_endpoint.url)
    approval_request = client.ask()
    client.update("push", attackers_endpoint.url)
    factories.decide(approval_request.auth_req_id)

    assert deliver(approval_request).delivered
    (push,) = agents_endpoint.wait_for(1)
    assert "access_token" in push.json and push.headers["authorization"] == f"Bearer {TOKEN}"
    assert attackers_endpoint.received == []
    # Delivered: the stored token response is gone.
    assert stored_payload(approval_request) == ""

    # The next request goes to the endpoint registered now.
    later = client.ask()
    factories.decide(later.auth_req_id)
    assert deliver(later).delivered
    assert "access_token" in attackers_endpoint.wait_for(1)[0].json


def test_retries_after_an_update_still_go_to_the_bound_endpoint(approver, agents_endpoint, attackers_endpoint):
    client = Registered("push", agents_endpoint.url)
    agents_endpoint.respond_with("server_error", "server_error")
    approval_request = client.ask()
    factories.decide(approval_request.auth_req_id)
    assert deliver(approval_request).retry_in is not None
    assert stored_payload(approval_request)  # kept, encrypted, for the retry

    client.update("push", attackers_endpoint.url)
    assert deliver(approval_request).retry_in is not None
    assert deliver(approval_request).delivered

    pushes = agents_endpoint.wait_for(3)
    assert len({json.dumps(p.json, sort_keys=True) for p in pushes}) == 1  # the same tokens, resent
    assert attackers_endpoint.received == []
    assert stored_payload(approval_request) == ""


def test_a_push_that_is_given_up_drops_its_stored_tokens(approver, agents_endpoint):
    client = Registered("push", agents_endpoint.url)
    agents_endpoint.respond_with("server_error")
    approval_request = client.ask()
    factories.decide(approval_request.auth_req_id)
    assert deliver(approval_request).retry_in is not None
    Notification.objects.filter(request=approval_request).update(deadline=timezone.now() - timedelta(seconds=1))

    assert deliver(approval_request) == Outcome()
    notification = Notification.objects.get(request=approval_request)
    assert notification.status == NStatus.UNDELIVERABLE
    assert notification.payload_encrypted == ""


def test_a_switch_from_ping_to_push_does_not_push_tokens_for_an_earlier_request(
    approver, agents_endpoint, attackers_endpoint
):
    client = Registered("ping", agents_endpoint.url)
    approval_request = client.ask()
    client.update("push", attackers_endpoint.url)
    factories.decide(approval_request.auth_req_id)

    assert deliver(approval_request).delivered
    (ping,) = agents_endpoint.wait_for(1)
    assert ping.json == {"auth_req_id": approval_request.auth_req_id}
    assert attackers_endpoint.received == []
    # The request was made in ping mode: the client redeems it at the token endpoint.
    assert client.agent.poll(approval_request.auth_req_id).status_code == 200


def test_a_switch_from_push_to_poll_still_pushes_an_earlier_request(approver, agents_endpoint):
    client = Registered("push", agents_endpoint.url)
    approval_request = client.ask()
    client.update("poll")
    factories.decide(approval_request.auth_req_id)

    # Made in push mode: its tokens go to the bound endpoint, never to the token endpoint.
    factories.assert_oauth_error(client.agent.poll(approval_request.auth_req_id), 400, "unauthorized_client")
    approval_request.refresh_from_db()
    assert approval_request.status == ApprovalRequest.Status.APPROVED  # nothing issued
    assert deliver(approval_request).delivered
    assert "access_token" in agents_endpoint.wait_for(1)[0].json


def test_a_request_made_in_poll_mode_gets_no_callback_after_a_switch_to_push(approver, attackers_endpoint):
    client = Registered("poll", "")
    approval_request = client.agent.bc_authorize(scope="openid", login_hint="alice")
    assert approval_request.status_code == 200, approval_request.content
    auth_req_id = approval_request.json()["auth_req_id"]
    client.update("push", attackers_endpoint.url)
    factories.decide(auth_req_id)

    assert not Notification.objects.filter(request__auth_req_id=auth_req_id).exists()
    assert client.agent.poll(auth_req_id).status_code == 200
    assert attackers_endpoint.received == []
