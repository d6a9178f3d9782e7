"""Ping and push delivery to agents' notification endpoints (CIBA Core §7.1, §10.2, §10.3, §12).

The agent's endpoint is a real HTTP server on 127.0.0.1 (tests/fakes/agent_endpoint.py). Delivery attempts are driven
by calling authz.ciba.notify.notification_deliver, as the Celery task does (the real worker has its own tests in
test_notifications_worker.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import jwt
import pytest
from django.test import Client
from django.utils import timezone
from oauth2_provider.models import AccessToken, RefreshToken

from approvals import services
from approvals.delivery import Outcome
from approvals.models import ApprovalRequest
from authz.ciba import notify as notifications
from authz.models import Notification, NotificationAttempt, RequestCallback
from authz.tasks import notify_client_task
from tests import factories
from tests.fakes.agent_endpoint import REDIRECT_PATH, FakeAgentEndpoint

pytestmark = pytest.mark.django_db

TOKEN = "agent-callback-token.v1~+/=="
NStatus = Notification.Status
AStatus = NotificationAttempt.Status
AUTH_REQ_ID_CLAIM = "urn:openid:params:jwt:claim:auth_req_id"
RT_HASH_CLAIM = "urn:openid:params:jwt:claim:rt_hash"


@pytest.fixture
def endpoint() -> Iterator[FakeAgentEndpoint]:
    with FakeAgentEndpoint(hang_seconds=5) as fake:
        yield fake


@pytest.fixture
def ping_agent(make_agent, endpoint):
    return make_agent(
        name="Ping agent", backchannel_token_delivery_mode="ping", backchannel_client_notification_endpoint=endpoint.url
    )


@pytest.fixture
def push_agent(make_agent, endpoint):
    return make_agent(
        name="Push agent", backchannel_token_delivery_mode="push", backchannel_client_notification_endpoint=endpoint.url
    )


def ask(agent, token: str = TOKEN, **params: str) -> ApprovalRequest:
    response = agent.bc_authorize(scope="openid", login_hint="alice", client_notification_token=token, **params)
    assert response.status_code == 200, response.content
    return ApprovalRequest.objects.get(auth_req_id=response.json()["auth_req_id"])


def notification_of(approval_request: ApprovalRequest) -> Notification:
    return Notification.objects.get(request=approval_request)


def deliver(approval_request: ApprovalRequest) -> Outcome:
    return notifications.notification_deliver(notification_id=notification_of(approval_request).pk)


def sweep(**kwargs: Any) -> int:
    return notifications.notification_sweep_due(enqueue=notify_client_task.delay, **kwargs)


def attempt_log(approval_request: ApprovalRequest) -> list[tuple[int, str, int | None]]:
    rows = NotificationAttempt.objects.filter(notification__request=approval_request).order_by("attempt")
    return list(rows.values_list("attempt", "status", "http_status"))


def settle(approval_request: ApprovalRequest, outcome: str) -> None:
    """Take the request out of pending the way each outcome happens in production."""
    if outcome == "approved":
        factories.decide(approval_request.auth_req_id)
    elif outcome == "denied":
        factories.decide(approval_request.auth_req_id, approve=False)
    elif outcome == "cancelled":
        assert services.approval_request_cancel(approval_request_id=approval_request.pk, actor=None)
    elif outcome == "expired":
        ApprovalRequest.objects.filter(pk=approval_request.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
        assert services.approval_request_expire_due() >= 1
    else:  # pragma: no cover
        raise AssertionError(outcome)


def assert_no_more_requests(endpoint: FakeAgentEndpoint, count: int, grace: float = 0.3) -> None:
    time.sleep(grace)
    assert len(endpoint.received) == count, endpoint.received


def left_hash(value: str) -> str:
    digest = hashlib.sha256(value.encode()).digest()
    return base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")


def verified_id_token(token: str, audience: str) -> dict[str, Any]:
    jwks = Client().get("/oauth/jwks/").json()
    kid = jwt.get_unverified_header(token)["kid"]
    (key,) = [jwt.PyJWK(k) for k in jwks["keys"] if k["kid"] == kid]
    return jwt.decode(token, key=key, algorithms=["RS256"], audience=audience, issuer="http://testserver")


# --- registration and validation (CIBA Core §7.1) ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["ping", "push"])
def test_ping_and_push_requests_need_a_client_notification_token(make_agent, approver, endpoint, mode):
    agent = make_agent(backchannel_token_delivery_mode=mode, backchannel_client_notification_endpoint=endpoint.url)
    response = agent.bc_authorize(scope="openid", login_hint="alice")
    factories.assert_oauth_error(response, 400, "invalid_request")
    empty = agent.bc_authorize(scope="openid", login_hint="alice", client_notification_token="")
    factories.assert_oauth_error(empty, 400, "invalid_request")
    assert not ApprovalRequest.objects.exists()


@pytest.mark.parametrize(
    "token",
    ["has space", "ab=c", "=abc", "tök", "a,b", "a\tb", 'quote"d', "x" * 1025],
    ids=["space", "inner-equals", "leading-equals", "non-ascii", "comma", "tab", "quote", "too-long"],
)
@pytest.mark.parametrize("mode", ["ping", "push"])
def test_client_notification_token_must_be_a_bearer_token_of_at_most_1024_characters(
    make_agent, approver, endpoint, mode, token
):
    agent = make_agent(backchannel_token_delivery_mode=mode, backchannel_client_notification_endpoint=endpoint.url)
    response = agent.bc_authorize(scope="openid", login_hint="alice", client_notification_token=token)
    factories.assert_oauth_error(response, 400, "invalid_request")
    assert not ApprovalRequest.objects.exists()


@pytest.mark.parametrize("token", ["x" * 1024, "a", "A-z0.9_~+/b==", "abc="])
def test_valid_client_notification_tokens_are_accepted_and_stored(ping_agent, approver, token):
    approval_request = ask(ping_agent, token=token)
    assert RequestCallback.objects.get(request=approval_request).token == token


def test_poll_clients_may_omit_the_client_notification_token(agent, approver):
    response = agent.bc_authorize(scope="openid", login_hint="alice")
    assert response.status_code == 200, response.content
    approval_request = ApprovalRequest.objects.get(auth_req_id=response.json()["auth_req_id"])
    assert not RequestCallback.objects.filter(request=approval_request).exists()
    factories.decide(approval_request.auth_req_id)
    assert not Notification.objects.exists()  # poll clients are owed no callback


def test_discovery_lists_poll_ping_and_push(client):
    for path in ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"):
        data = client.get(path).json()
        assert data["backchannel_token_delivery_modes_supported"] == ["poll", "ping", "push"]


# --- ping (CIBA Core §10.2) -------------------------------------------------------------------------------------------


def assert_ping(received, auth_req_id: str, token: str = TOKEN) -> None:
    assert received.method == "POST" and received.path == "/cb"
    assert received.headers["content-type"] == "application/json"
    assert received.headers["authorization"] == f"Bearer {token}"
    assert received.json == {"auth_req_id": auth_req_id}


def test_ping_on_approval_then_the_one_token_request_gets_the_tokens(ping_agent, approver, endpoint):
    approval_request = ask(ping_agent)
    # A ping client may poll before the ping arrives.
    factories.assert_oauth_error(ping_agent.poll(approval_request.auth_req_id), 400, "authorization_pending")

    factories.decide(approval_request.auth_req_id)
    assert endpoint.received == []  # nothing is sent before the transaction commits and the task runs
    assert deliver(approval_request) == Outcome(delivered=True)

    (ping,) = endpoint.wait_for(1)
    assert_ping(ping, approval_request.auth_req_id)
    notification = notification_of(approval_request)
    assert (notification.mode, notification.outcome) == ("ping", "approved")
    assert notification.status == NStatus.DELIVERED and notification.attempts == 1
    assert notification.finished_at is not None and notification.payload_encrypted == ""

    tokens = ping_agent.poll(approval_request.auth_req_id)
    assert tokens.status_code == 200, tokens.content
    body = tokens.json()
    assert body["access_token"] and body["token_type"] == "Bearer" and body["id_token"]
    factories.assert_oauth_error(ping_agent.poll(approval_request.auth_req_id), 400, "invalid_grant")

    # A delivered notification is never sent again.
    assert deliver(approval_request) == Outcome()
    assert_no_more_requests(endpoint, 1)


def test_the_ping_is_delivered_when_the_transaction_commits(
    ping_agent, approver, endpoint, django_capture_on_commit_callbacks
):
    approval_request = ask(ping_agent)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        factories.decide(approval_request.auth_req_id)
    assert callbacks
    (ping,) = endpoint.wait_for(1)
    assert_ping(ping, approval_request.auth_req_id)
    assert notification_of(approval_request).status == NStatus.DELIVERED


@pytest.mark.parametrize(
    ("outcome", "error"),
    [("denied", "access_denied"), ("cancelled", "access_denied"), ("expired", "expired_token")],
)
def test_ping_on_every_other_outcome_then_the_token_request_gets_the_error(
    ping_agent, approver, endpoint, outcome, error
):
    approval_request = ask(ping_agent)
    settle(approval_request, outcome)
    assert deliver(approval_request).delivered

    (ping,) = endpoint.wait_for(1)
    assert_ping(ping, approval_request.auth_req_id)
    assert notification_of(approval_request).outcome == outcome
    factories.assert_oauth_error(ping_agent.poll(approval_request.auth_req_id), 400, error)
    assert not AccessToken.objects.exists()


def test_a_ping_carries_the_requests_own_notification_token(ping_agent, approver, endpoint):
    first = ask(ping_agent, token="first-token")
    second = ask(ping_agent, token="second-token")
    factories.decide(second.auth_req_id)
    factories.decide(first.auth_req_id, approve=False)
    deliver(first)
    deliver(second)
    received = endpoint.wait_for(2)
    assert {(r.json["auth_req_id"], r.headers["authorization"]) for r in received} == {
        (first.auth_req_id, "Bearer first-token"),
        (second.auth_req_id, "Bearer second-token"),
    }


def test_a_200_with_a_body_is_success(ping_agent, approver, endpoint):
    endpoint.respond_with("ok_body")
    approval_request = ask(ping_agent)
    factories.decide(approval_request.auth_req_id)
    assert deliver(approval_request).delivered
    assert attempt_log(approval_request) == [(1, AStatus.DELIVERED, 200)]
    assert notification_of(approval_request).status == NStatus.DELIVERED


@pytest.mark.parametrize(("mode", "http_status"), [("server_error", 500), ("rate_limited", 429), ("hang", None)])
def test_transient_failures_are_retried_with_backoff(settings, ping_agent, approver, endpoint, mode, http_status):
    settings.APPROVALS = {**settings.APPROVALS, "OUTBOUND_TIMEOUT_SECONDS": 0.5}
    endpoint.respond_with(mode)
    approval_request = ask(ping_agent)
    factories.decide(approval_request.auth_req_id)

    before = timezone.now()
    first = deliver(approval_request)
    assert not first.delivered
    assert first.retry_in is not None and 0 < first.retry_in <= 60
    notification = notification_of(approval_request)
    assert notification.status == NStatus.PENDING and notification.attempts == 1
    assert notification.error
    assert notification.due_at > before  # the sweeper takes over only if the retry is lost
    assert notification.claimed_until is None
    (failed,) = NotificationAttempt.objects.filter(notification=notification)
    assert (failed.status, failed.http_status) == (AStatus.FAILED, http_status)
    assert failed.finished_at is not None and failed.error
    assert failed.latency_ms is not None
    if mode == "hang":
        assert "No answer" in failed.error and failed.latency_ms >= 400

    assert deliver(approval_request).delivered
    received = endpoint.wait_for(2)
    for ping in received:
        assert_ping(ping, approval_request.auth_req_id)
    assert attempt_log(approval_request) == [(1, AStatus.FAILED, http_status), (2, AStatus.DELIVERED, 204)]
    notification.refresh_from_db()
    assert notification.status == NStatus.DELIVERED and notification.attempts == 2 and notification.error == ""


def test_retry_delays_back_off_up_to_the_maximum(settings):
    settings.AUTHZ = {
        **settings.AUTHZ,
        "NOTIFICATION_RETRY_BASE_SECONDS": 2,
        "NOTIFICATION_RETRY_MAX_SECONDS": 10,
    }
    for attempt, ceiling in [(1, 2), (2, 4), (3, 8), (4, 10), (12, 10)]:
        delays = [notifications._retry_delay(attempt) for _ in range(200)]
        assert all(1 <= d <= ceiling for d in delays), (attempt, min(delays), max(delays))
    assert max(notifications._retry_delay(4) for _ in range(200)) > 8  # grows with the attempt, with jitter


@pytest.mark.parametrize(("mode", "http_status"), [("unauthorized", 401), ("forbidden", 403)])
def test_401_and_403_are_recorded_and_not_retried(ping_agent, approver, endpoint, mode, http_status):
    endpoint.respond_with(mode)
    approval_request = ask(ping_agent)
    factories.decide(approval_request.auth_req_id)

    assert deliver(approval_request) == Outcome()
    notification = notification_of(approval_request)
    assert notification.status == NStatus.UNDELIVERABLE and notification.attempts == 1
    assert str(http_status) in notification.error and notification.finished_at is not None
    assert attempt_log(approval_request) == [(1, AStatus.REJECTED, http_status)]

    assert deliver(approval_request) == Outcome()
    assert_no_more_requests(endpoint, 1)
    assert notification_of(approval_request).attempts == 1


def test_a_redirect_is_not_followed_and_not_retried(ping_agent, approver, endpoint):
    endpoint.respond_with("redirect")
    approval_request = ask(ping_agent)
    factories.decide(approval_request.auth_req_id)

    assert deliver(approval_request) == Outcome()
    assert_no_more_requests(endpoint, 1)
    assert [r.path for r in endpoint.received] == ["/cb"]
    assert not any(r.path == REDIRECT_PATH for r in endpoint.received)
    notification = notification_of(approval_request)
    assert notification.status == NStatus.UNDELIVERABLE
    assert "301" in notification.error and "redirect" in notification.error
    assert attempt_log(approval_request) == [(1, AStatus.REJECTED, 301)]
    assert deliver(approval_request) == Outcome()
    assert_no_more_requests(endpoint, 1, grace=0.1)


def test_retries_stop_at_the_deadline_and_the_notification_is_kept_undeliverable(ping_agent, approver, endpoint):
    endpoint.respond_with(*["server_error"] * 10)
    approval_request = ask(ping_agent)
    factories.decide(approval_request.auth_req_id)

    for _ in range(3):
        outcome = deliver(approval_request)
        assert not outcome.delivered and outcome.retry_in is not None
    assert len(endpoint.wait_for(3)) == 3

    Notification.objects.filter(request=approval_request).update(deadline=timezone.now() - timedelta(seconds=1))
    assert deliver(approval_request) == Outcome()
    assert_no_more_requests(endpoint, 3)  # past the deadline, nothing more is sent
    notification = notification_of(approval_request)
    assert notification.status == NStatus.UNDELIVERABLE and notification.attempts == 3
    assert "deadline" in notification.error and notification.finished_at is not None
    assert attempt_log(approval_request) == [(n, AStatus.FAILED, 500) for n in (1, 2, 3)]

    # Kept, and never sent again (not even by the sweeper).
    assert sweep(now=timezone.now() + timedelta(days=1)) == 0
    assert deliver(approval_request) == Outcome()
    assert_no_more_requests(endpoint, 3, grace=0.1)
    assert Notification.objects.filter(request=approval_request, status=NStatus.UNDELIVERABLE).exists()


def test_a_retry_that_would_fall_after_the_deadline_gives_up_at_once(settings, ping_agent, approver, endpoint):
    settings.AUTHZ = {**settings.AUTHZ, "NOTIFICATION_RETRY_BASE_SECONDS": 30}
    endpoint.respond_with("server_error")
    approval_request = ask(ping_agent)
    factories.decide(approval_request.auth_req_id)
    Notification.objects.filter(request=approval_request).update(deadline=timezone.now() + timedelta(seconds=5))

    assert deliver(approval_request) == Outcome()
    notification = notification_of(approval_request)
    assert notification.status == NStatus.UNDELIVERABLE and notification.error == "HTTP 500"
    assert attempt_log(approval_request) == [(1, AStatus.FAILED, 500)]


def test_a_notification_held_by_another_worker_is_not_sent_twice(ping_agent, approver, endpoint):
    approval_request = ask(ping_agent)
    factories.decide(approval_request.auth_req_id)
    now = timezone.now()
    Notification.objects.filter(request=approval_request).update(claimed_until=now + timedelta(seconds=10))

    outcome = deliver(approval_request)
    assert not outcome.delivered and outcome.retry_in is not None and 9 < outcome.retry_in <= 11
    assert endpoint.received == []
    # A lapsed claim (the worker died) is taken over.
    Notification.objects.filter(request=approval_request).update(claimed_until=now - timedelta(seconds=1))
    assert deliver(approval_request).delivered
    assert len(endpoint.wait_for(1)) == 1


def test_the_sweeper_delivers_a_notification_whose_task_was_lost(ping_agent, approver, endpoint):
    approval_request = ask(ping_agent)
    factories.decide(approval_request.auth_req_id)  # the commit's task never runs here (no on_commit)
    assert sweep() == 0  # not yet due
    Notification.objects.filter(request=approval_request).update(due_at=timezone.now() - timedelta(seconds=1))

    assert sweep() == 1  # eager: the task runs at once
    (ping,) = endpoint.wait_for(1)
    assert_ping(ping, approval_request.auth_req_id)
    assert notification_of(approval_request).status == NStatus.DELIVERED
    assert sweep(now=timezone.now() + timedelta(days=1)) == 0


# --- push (CIBA Core §10.3) -------------------------------------------------------------------------------------------


def test_push_on_approval_delivers_the_token_response(push_agent, approver, endpoint):
    approval_request = ask(push_agent)
    factories.decide(approval_request.auth_req_id)
    assert deliver(approval_request).delivered

    (push,) = endpoint.wait_for(1)
    assert push.method == "POST" and push.path == "/cb"
    assert push.headers["content-type"] == "application/json"
    assert push.headers["authorization"] == f"Bearer {TOKEN}"
    body = push.json
    assert {"auth_req_id", "access_token", "token_type", "expires_in", "refresh_token", "id_token"} <= set(body)
    assert "error" not in body
    assert body["auth_req_id"] == approval_request.auth_req_id
    assert body["token_type"] == "Bearer" and body["expires_in"] > 0

    claims = verified_id_token(body["id_token"], push_agent.client_id)
    assert claims["iss"] == "http://testserver"
    assert claims["aud"] == push_agent.client_id
    assert claims["sub"] == str(approver.user.pk)
    assert claims[AUTH_REQ_ID_CLAIM] == approval_request.auth_req_id
    assert claims["at_hash"] == left_hash(body["access_token"])
    assert claims[RT_HASH_CLAIM] == left_hash(body["refresh_token"])
    assert "auth_time" in claims

    introspection = push_agent.post("/oauth/introspect/", {"token": body["access_token"]})
    assert introspection.status_code == 200
    assert introspection.json()["active"] is True
    assert introspection.json()["client_id"] == push_agent.client_id
    assert introspection.json()["username"] == "alice"
    refresh_checksum = hashlib.sha256(body["refresh_token"].encode()).hexdigest()
    assert RefreshToken.objects.filter(token_checksum=refresh_checksum, application=push_agent.application).exists()

    approval_request.refresh_from_db()
    assert approval_request.status == ApprovalRequest.Status.CONSUMED
    # Stored as a checksum only (COMPLIANT_BCP_RFC9700_TOKEN_STORAGE).
    assert approval_request.access_token.token_checksum == hashlib.sha256(body["access_token"].encode()).hexdigest()
    notification = notification_of(approval_request)
    assert notification.status == NStatus.DELIVERED and notification.outcome == "approved"
    assert attempt_log(approval_request) == [(1, AStatus.DELIVERED, 204)]


def test_push_without_refresh_tokens_sends_no_refresh_token_and_no_rt_hash(make_agent, approver, endpoint):
    agent = make_agent(
        backchannel_token_delivery_mode="push",
        backchannel_client_notification_endpoint=endpoint.url,
        refresh_tokens=False,
    )
    approval_request = ask(agent)
    factories.decide(approval_request.auth_req_id)
    assert deliver(approval_request).delivered

    (push,) = endpoint.wait_for(1)
    body = push.json
    assert "refresh_token" not in body
    assert {"auth_req_id", "access_token", "token_type", "expires_in", "id_token"} <= set(body)
    claims = verified_id_token(body["id_token"], agent.client_id)
    assert RT_HASH_CLAIM not in claims
    assert claims[AUTH_REQ_ID_CLAIM] == approval_request.auth_req_id
    assert claims["at_hash"] == left_hash(body["access_token"])
    assert not RefreshToken.objects.exists()


def test_poll_and_ping_id_tokens_carry_no_push_claims(ping_agent, approver, endpoint):
    approval_request = ask(ping_agent)
    factories.decide(approval_request.auth_req_id)
    tokens = ping_agent.poll(approval_request.auth_req_id).json()
    claims = verified_id_token(tokens["id_token"], ping_agent.client_id)
    assert AUTH_REQ_ID_CLAIM not in claims and RT_HASH_CLAIM not in claims


def test_push_tokens_are_issued_once_and_resent_unchanged_on_retries(push_agent, approver, endpoint):
    endpoint.respond_with("server_error", "rate_limited")
    approval_request = ask(push_agent)
    factories.decide(approval_request.auth_req_id)

    assert deliver(approval_request).retry_in is not None
    notification = notification_of(approval_request)
    first_body = endpoint.wait_for(1)[0].json
    # Encrypted at rest: neither the tokens nor the ID token appear in the stored payload.
    assert notification.payload_encrypted
    for secret in (first_body["access_token"], first_body["refresh_token"], first_body["id_token"]):
        assert secret not in notification.payload_encrypted
    assert "access_token" not in notification.payload_encrypted

    assert deliver(approval_request).retry_in is not None
    assert deliver(approval_request).delivered
    pushes = endpoint.wait_for(3)
    assert [p.json for p in pushes] == [first_body] * 3
    assert AccessToken.objects.filter(application=push_agent.application).count() == 1
    assert RefreshToken.objects.filter(application=push_agent.application).count() == 1
    assert attempt_log(approval_request) == [
        (1, AStatus.FAILED, 500),
        (2, AStatus.FAILED, 429),
        (3, AStatus.DELIVERED, 204),
    ]
    notification.refresh_from_db()
    assert notification.payload_encrypted == ""  # delivered: the stored token response is dropped


def test_a_push_clients_token_request_gets_unauthorized_client_and_issues_nothing(push_agent, approver, endpoint):
    approval_request = ask(push_agent)
    factories.decide(approval_request.auth_req_id)

    factories.assert_oauth_error(push_agent.poll(approval_request.auth_req_id), 400, "unauthorized_client")
    assert not AccessToken.objects.exists()
    approval_request.refresh_from_db()
    assert approval_request.status == ApprovalRequest.Status.APPROVED

    # The tokens still go to the endpoint, once.
    assert deliver(approval_request).delivered
    assert "access_token" in endpoint.wait_for(1)[0].json
    after = push_agent.poll(approval_request.auth_req_id)
    assert after.status_code == 400 and "access_token" not in after.json()
    assert AccessToken.objects.count() == 1


@pytest.mark.parametrize(
    ("outcome", "error"),
    [("denied", "access_denied"), ("expired", "expired_token"), ("cancelled", "access_denied")],
)
def test_push_of_every_other_outcome_is_the_error(push_agent, approver, endpoint, outcome, error):
    approval_request = ask(push_agent)
    settle(approval_request, outcome)
    assert deliver(approval_request).delivered

    (push,) = endpoint.wait_for(1)
    assert push.headers["authorization"] == f"Bearer {TOKEN}"
    assert push.headers["content-type"] == "application/json"
    assert set(push.json) == {"auth_req_id", "error", "error_description"}
    assert push.json["auth_req_id"] == approval_request.auth_req_id
    assert push.json["error"] == error and push.json["error_description"]
    notification = notification_of(approval_request)
    assert notification.outcome == outcome and notification.payload_encrypted == ""
    assert not AccessToken.objects.exists()


@pytest.mark.parametrize("swept", [False, True], ids=["unswept", "expired-by-the-sweeper"])
def test_a_push_approved_but_delivered_after_the_expiry_sends_expired_token(push_agent, approver, endpoint, swept):
    approval_request = ask(push_agent)
    factories.decide(approval_request.auth_req_id)
    # The delivery comes late (the broker was down): the request expired before any tokens were issued.
    ApprovalRequest.objects.filter(pk=approval_request.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    if swept:
        assert services.approval_request_expire_due() == 1
    assert deliver(approval_request).delivered

    (push,) = endpoint.wait_for(1)
    assert set(push.json) == {"auth_req_id", "error", "error_description"}
    assert push.json["auth_req_id"] == approval_request.auth_req_id
    assert push.json["error"] == "expired_token"
    assert not AccessToken.objects.exists()
    assert notification_of(approval_request).status == NStatus.DELIVERED


def test_an_expiry_notifies_only_requests_that_were_still_pending(ping_agent, approver, endpoint):
    decided = ask(ping_agent)
    pending = ask(ping_agent)
    factories.decide(decided.auth_req_id, approve=False)
    ApprovalRequest.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert services.approval_request_expire_due() == 2

    assert notification_of(decided).outcome == "denied"  # its one notification, not a second one
    assert notification_of(pending).outcome == "expired"
    assert Notification.objects.count() == 2


def test_an_undeliverable_push_is_kept_and_shown_in_admin_without_its_tokens(
    push_agent, approver, endpoint, admin_client
):
    endpoint.respond_with(*["server_error"] * 3)
    approval_request = ask(push_agent)
    factories.decide(approval_request.auth_req_id)
    for _ in range(2):
        assert deliver(approval_request).retry_in is not None
    pushes = endpoint.wait_for(2)
    access_token = pushes[0].json["access_token"]
    refresh_token = pushes[0].json["refresh_token"]
    Notification.objects.filter(request=approval_request).update(deadline=timezone.now() - timedelta(seconds=1))
    assert deliver(approval_request) == Outcome()
    notification = notification_of(approval_request)
    assert notification.status == NStatus.UNDELIVERABLE
    assert notification.payload_encrypted == ""  # given up: the stored token response is dropped

    listing = admin_client.get("/admin/authz/notification/")
    assert listing.status_code == 200
    html = listing.content.decode()
    assert "Undeliverable" in html and "push" in html
    filtered = admin_client.get("/admin/authz/notification/?status__exact=undeliverable")
    assert filtered.status_code == 200 and f"/admin/authz/notification/{notification.pk}/" in filtered.content.decode()

    detail = admin_client.get(f"/admin/authz/notification/{notification.pk}/change/")
    assert detail.status_code == 200
    page = detail.content.decode()
    assert "Undeliverable" in page and "Failed (retried)" in page and "500" in page
    request_page = admin_client.get(f"/admin/approvals/approvalrequest/{approval_request.pk}/change/")
    assert request_page.status_code == 200
    assert "Undeliverable" in request_page.content.decode()
    for page_html in (html, page, request_page.content.decode()):
        assert access_token not in page_html and refresh_token not in page_html
        assert TOKEN not in page_html and approval_request.auth_req_id not in page_html


def test_admin_shows_every_attempt_inline(ping_agent, approver, endpoint, admin_client):
    endpoint.respond_with("rate_limited")
    approval_request = ask(ping_agent)
    factories.decide(approval_request.auth_req_id)
    deliver(approval_request)
    deliver(approval_request)
    notification = notification_of(approval_request)
    attempts = list(NotificationAttempt.objects.filter(notification=notification).order_by("attempt"))
    assert [(a.status, a.http_status) for a in attempts] == [(AStatus.FAILED, 429), (AStatus.DELIVERED, 204)]
    assert all(a.latency_ms is not None and a.finished_at is not None for a in attempts)

    page = admin_client.get(f"/admin/authz/notification/{notification.pk}/change/").content.decode()
    assert "Failed (retried)" in page and "Delivered (2xx)" in page and "429" in page and "204" in page
    # No way to change or delete the record.
    assert admin_client.post(f"/admin/authz/notification/{notification.pk}/change/", {}).status_code == 403
    assert admin_client.get(f"/admin/authz/notification/{notification.pk}/delete/").status_code == 403


def test_the_request_page_shows_where_the_agent_is_called_back_but_never_its_token(ping_agent, approver, admin_client):
    token = "bearer-" + "s" * 40
    approval_request = ask(ping_agent, token=token)

    page = admin_client.get(f"/admin/approvals/approvalrequest/{approval_request.pk}/change/").content.decode()

    callback = RequestCallback.objects.get(request=approval_request)
    assert callback.endpoint in page and "ping" in page
    assert token not in page


# --- SSRF at call time ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["https://10.0.0.1/cb", "http://169.254.169.254/", "https://169.254.169.254/latest"])
@pytest.mark.parametrize("mode", ["ping", "push"])
def test_an_endpoint_that_now_points_at_a_refused_address_is_rejected_without_sending(
    make_agent, approver, endpoint, mode, url
):
    agent = make_agent(backchannel_token_delivery_mode=mode, backchannel_client_notification_endpoint=endpoint.url)
    approval_request = ask(agent)
    # The endpoint bound to the request (e.g. a name that now resolves to a refused address) is checked at call time.
    RequestCallback.objects.filter(request=approval_request).update(endpoint=url)
    factories.decide(approval_request.auth_req_id)

    assert deliver(approval_request) == Outcome()
    notification = notification_of(approval_request)
    assert notification.status == NStatus.UNDELIVERABLE and notification.attempts == 1
    (attempt,) = NotificationAttempt.objects.filter(notification=notification)
    assert attempt.status == AStatus.REJECTED and attempt.http_status is None and attempt.error
    assert deliver(approval_request) == Outcome()
    assert NotificationAttempt.objects.filter(notification=notification).count() == 1
    assert endpoint.received == []


def test_a_notification_payload_is_the_json_documented(ping_agent, approver, endpoint):
    approval_request = ask(ping_agent)
    factories.decide(approval_request.auth_req_id)
    deliver(approval_request)
    (ping,) = endpoint.wait_for(1)
    assert json.loads(ping.body) == {"auth_req_id": approval_request.auth_req_id}
    assert ping.headers["content-length"] == str(len(ping.body))
