"""Ping delivery with nothing in-process but the code: the approver's decision over HTTP, the notification task
through the real Redis broker and a real Celery worker thread, the agent's endpoint a real HTTP server."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from approvals.models import ApprovalRequest
from authz.models import Notification, NotificationAttempt
from tests.celery_worker import SHARED_BROKER_URL, flush_broker_db, redirected_app, running_worker, wait_until
from tests.fakes.agent_endpoint import FakeAgentEndpoint

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]

TOKEN = "worker-callback-token"


@pytest.fixture
def endpoint() -> Iterator[FakeAgentEndpoint]:
    with FakeAgentEndpoint() as fake:
        yield fake


@pytest.fixture
def worker(settings) -> Iterator[None]:
    # The worker is a thread of this process: it reads these overrides through authz_settings.
    settings.AUTHZ = {
        **settings.AUTHZ,
        "NOTIFICATION_RETRY_BASE_SECONDS": 0.2,
        "NOTIFICATION_RETRY_MAX_SECONDS": 0.5,
    }
    flush_broker_db(SHARED_BROKER_URL)
    try:
        with redirected_app(SHARED_BROKER_URL), running_worker():
            yield
    finally:
        flush_broker_db(SHARED_BROKER_URL)


@pytest.fixture
def ping_agent(make_agent, endpoint):
    return make_agent(
        name="Ping agent", backchannel_token_delivery_mode="ping", backchannel_client_notification_endpoint=endpoint.url
    )


def ask_and_approve(agent, approver_client) -> ApprovalRequest:
    ack = agent.bc_authorize(scope="openid", login_hint="alice", client_notification_token=TOKEN)
    assert ack.status_code == 200, ack.content
    approval_request = ApprovalRequest.objects.get(auth_req_id=ack.json()["auth_req_id"])
    decided = approver_client.post(f"/approvals/{approval_request.pk}/decide/", {"decision": "approve"})
    assert decided.status_code == 302, decided.content
    approval_request.refresh_from_db()
    assert approval_request.status == ApprovalRequest.Status.APPROVED
    return approval_request


def delivered(approval_request: ApprovalRequest) -> Notification | None:
    return Notification.objects.filter(request=approval_request, status=Notification.Status.DELIVERED).first()


def assert_no_more_requests(endpoint: FakeAgentEndpoint, count: int, grace: float = 1.0) -> None:
    time.sleep(grace)
    assert len(endpoint.received) == count, endpoint.received


def test_an_approval_pings_the_agent_through_the_worker(worker, ping_agent, approver_client, endpoint):
    approval_request = ask_and_approve(ping_agent, approver_client)

    (ping,) = endpoint.wait_for(1, timeout=20)
    assert ping.method == "POST" and ping.path == "/cb"
    assert ping.json == {"auth_req_id": approval_request.auth_req_id}
    assert ping.headers["content-type"] == "application/json"
    assert ping.headers["authorization"] == f"Bearer {TOKEN}"
    notification = wait_until(lambda: delivered(approval_request), timeout=10, what="the notification delivered")
    assert notification.attempts == 1

    tokens = ping_agent.poll(approval_request.auth_req_id)
    assert tokens.status_code == 200, tokens.content
    assert tokens.json()["access_token"]
    assert_no_more_requests(endpoint, 1)


def test_a_failed_ping_is_retried_by_celery(worker, ping_agent, approver_client, endpoint):
    endpoint.respond_with("server_error")
    approval_request = ask_and_approve(ping_agent, approver_client)

    received = endpoint.wait_for(2, timeout=20)
    assert [r.json for r in received] == [{"auth_req_id": approval_request.auth_req_id}] * 2
    notification = wait_until(lambda: delivered(approval_request), timeout=10, what="the notification delivered")
    assert notification.attempts == 2
    rows = NotificationAttempt.objects.filter(notification=notification).order_by("attempt")
    assert list(rows.values_list("attempt", "status", "http_status")) == [
        (1, NotificationAttempt.Status.FAILED, 500),
        (2, NotificationAttempt.Status.DELIVERED, 204),
    ]
    # The retry waited for its backoff (at least half the base delay).
    assert received[1].received_at - received[0].received_at >= 0.1
    assert_no_more_requests(endpoint, 2)
