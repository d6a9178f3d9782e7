"""The prompt pipeline with nothing in-process but the code: bc-authorize over HTTP, the task through the real Redis
broker, a real Celery worker thread, the real Twilio client against FakeTwilio."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.utils import timezone

from approvals.models import ApprovalRequest, Delivery
from approvals.tasks import sweep_unprompted_task
from tests.celery_worker import (
    SHARED_BROKER_URL,
    RedisServer,
    flush_broker_db,
    free_port,
    in_ci,
    redirected_app,
    redis_server_binary,
    running_worker,
    wait_until,
)
from tests.fakes.twilio import FakeTwilio

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]

SMS = "approvals.channels.twilio_sms.TwilioSmsChannel"
PHONE = "+14155550123"
LINK = re.compile(r"https?://\S+")


@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio() as fake:
        yield fake


@pytest.fixture
def sms_only(settings, fake_twilio) -> None:
    # The worker is a thread of this process: it reads these overrides through approvals_settings.
    settings.APPROVALS = {
        **settings.APPROVALS,
        "PROMPT_CHANNELS": [SMS],
        "PROMPT_RETRY_BASE_SECONDS": 0.2,
        "PROMPT_RETRY_MAX_SECONDS": 0.5,
        "TWILIO": {
            "ACCOUNT_SID": fake_twilio.account_sid,
            "AUTH_TOKEN": fake_twilio.auth_token,
            "FROM_NUMBER": "+15005550006",
            "MESSAGING_SERVICE_SID": "",
            "API_BASE": fake_twilio.base_url,
            "STATUS_CALLBACKS": False,
        },
    }


@pytest.fixture
def worker_on_shared_redis(sms_only) -> Iterator[None]:
    flush_broker_db(SHARED_BROKER_URL)
    try:
        with redirected_app(SHARED_BROKER_URL), running_worker():
            yield
    finally:
        flush_broker_db(SHARED_BROKER_URL)


def ask(agent, **params: str):
    response = agent.bc_authorize(scope="openid", login_hint="alice", binding_message="W4X2", **params)
    assert response.status_code == 200, response.content
    return ApprovalRequest.objects.get(auth_req_id=response.json()["auth_req_id"])


def wait_prompted(approval_request, timeout: float = 10) -> ApprovalRequest:
    """The fake records the SMS before it answers; the worker marks the request prompted after the answer."""
    rows = ApprovalRequest.objects.filter(pk=approval_request.pk, prompted_at__isnull=False)
    return wait_until(rows.first, timeout=timeout, what="the request to be marked prompted")


def assert_no_more_sms(fake: FakeTwilio, count: int, grace: float = 1.0) -> None:
    with pytest.raises(AssertionError):
        fake.wait_for_messages(count + 1, timeout=grace)


def test_bc_authorize_prompts_by_sms_through_the_worker(worker_on_shared_redis, agent, approver_client, fake_twilio):
    approval_request = ask(agent)

    (sms,) = fake_twilio.wait_for_messages(1)
    assert sms.to == PHONE and sms.form["From"] == "+15005550006"
    assert '"W4X2"' in sms.body and approval_request.auth_req_id not in sms.body
    (link,) = LINK.findall(sms.body)
    page = approver_client.get(urlsplit(link).path, follow=True)
    assert page.status_code == 200
    assert b"W4X2" in page.content
    wait_prompted(approval_request)
    delivery = Delivery.objects.get(request=approval_request)
    assert delivery.status == Delivery.Status.SENT and delivery.channel == "sms"
    assert delivery.provider_id.startswith("SM")
    assert_no_more_sms(fake_twilio, 1)


def test_a_transient_twilio_failure_is_retried_by_celery(worker_on_shared_redis, agent, approver, fake_twilio):
    fake_twilio.respond_with("server_error")
    approval_request = ask(agent)

    fake_twilio.wait_for_messages(1)
    wait_prompted(approval_request)
    assert [a.status for a in fake_twilio.attempts] == [500, 201]
    rows = list(Delivery.objects.filter(request=approval_request).values_list("attempt", "status"))
    assert rows == [(1, Delivery.Status.FAILED), (2, Delivery.Status.SENT)]
    assert_no_more_sms(fake_twilio, 1)


@pytest.fixture
def dedicated_redis() -> Iterator[RedisServer]:
    binary = redis_server_binary()
    if binary is None:
        if in_ci():
            pytest.fail("redis-server is not installed (required in CI)")
        pytest.skip("redis-server is not installed")
    server = RedisServer(binary, free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_a_prompt_not_enqueued_while_the_broker_was_down_is_sent_once_it_is_back(
    dedicated_redis, sms_only, agent, approver, fake_twilio, caplog
):
    with redirected_app(dedicated_redis.url), running_worker():
        dedicated_redis.stop()

        started = time.monotonic()
        approval_request = ask(agent)
        answered_in = time.monotonic() - started

        # The agent got its auth_req_id at once; the request waits, unprompted, for the sweeper.
        assert answered_in < 5, f"bc-authorize took {answered_in:.1f}s with the broker down"
        assert any(
            r.name == "approvals.tasks" and "Could not enqueue the prompt" in r.getMessage() for r in caplog.records
        ), "the enqueue should have failed"
        approval_request.refresh_from_db()
        assert approval_request.prompted_at is None and approval_request.prompt_failed_at is None
        assert not Delivery.objects.filter(request=approval_request).exists()

        dedicated_redis.start()
        ApprovalRequest.objects.filter(pk=approval_request.pk).update(
            prompt_due_at=timezone.now() - timedelta(seconds=1)
        )
        sweep_unprompted_task.delay()

        (sms,) = fake_twilio.wait_for_messages(1, timeout=30)
        assert sms.to == PHONE
        wait_prompted(approval_request)
        assert_no_more_sms(fake_twilio, 1)
        assert list(Delivery.objects.filter(request=approval_request).values_list("status", flat=True)) == [
            Delivery.Status.SENT
        ]
