"""Web Push prompts as FakePushService decrypts them (pywebpush, VAPID, aes128gcm), to every active subscription."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.utils import timezone

from approvals.devices import push_subscription_save
from approvals.links import link_url
from approvals.models import ApprovalRequest, Approver, Delivery, PushSubscription
from approvals.prompts import approval_request_prompt
from tests import prompting
from tests.fakes.push_service import FakePushService

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def keys() -> tuple[str, str]:
    return prompting.vapid_keys()


@pytest.fixture
def push(settings: Any, keys: tuple[str, str]) -> Iterator[FakePushService]:
    with FakePushService(expected_vapid_public_key=keys[1]) as fake:
        prompting.use_webpush(settings, fake, keys)
        yield fake


@pytest.fixture
def person() -> Approver:
    return prompting.make_person()


def subscribe(push: FakePushService, approver: Approver, name: str) -> PushSubscription:
    return push_subscription_save(approver=approver, subscription=push.subscribe(name).info, user_agent=name)


def test_payload_names_the_agent_and_binding_message_and_links_the_request(
    push: FakePushService, person: Approver
) -> None:
    subscribe(push, person, "phone")
    approval_request = prompting.make_request(person, agent_name="Travel agent", binding_message="Pay 420 EUR")

    assert approval_request_prompt(approval_request_id=approval_request.pk).delivered

    [received] = push.wait_for_pushes(1, timeout=2)
    assert received.json() == {
        "title": "Approval requested",
        "body": "Travel agent: Pay 420 EUR",
        "url": link_url(approval_request),
        "tag": str(approval_request.pk),
    }
    assert approval_request.auth_req_id.encode() not in received.payload
    assert push.rejected == []


def test_payload_without_binding_message_names_the_agent(push: FakePushService, person: Approver) -> None:
    subscribe(push, person, "phone")
    approval_request = prompting.make_request(person, binding_message="")

    approval_request_prompt(approval_request_id=approval_request.pk)

    [received] = push.wait_for_pushes(1, timeout=2)
    assert received.json()["body"] == "Travel agent"


def test_headers_ask_for_urgent_delivery_within_the_request_lifetime(push: FakePushService, person: Approver) -> None:
    subscribe(push, person, "phone")
    approval_request = prompting.make_request(person, requested_expiry=120)

    approval_request_prompt(approval_request_id=approval_request.pk)

    [received] = push.wait_for_pushes(1, timeout=2)
    remaining = (approval_request.expires_at - timezone.now()).total_seconds()
    assert remaining - 5 <= int(received.headers["TTL"]) <= 120
    assert received.headers["Urgency"] == "high"
    # RFC 8030 §5.4: at most 32 characters of the URL-safe base64 alphabet; one topic per request.
    topic = received.headers["Topic"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,32}", topic) and topic == approval_request.pk.hex
    assert received.headers["Content-Encoding"] == "aes128gcm"


def test_vapid_claims_name_the_subject_and_the_push_service(
    push: FakePushService, person: Approver, keys: tuple[str, str]
) -> None:
    subscribe(push, person, "phone")

    approval_request_prompt(approval_request_id=prompting.make_request(person).pk)

    [received] = push.wait_for_pushes(1, timeout=2)
    assert received.vapid_claims["sub"] == prompting.SUBJECT
    assert received.vapid_claims["aud"] == push.base_url
    assert time.time() < received.vapid_claims["exp"] <= time.time() + 24 * 60 * 60
    assert received.vapid_public_key == keys[1]


def test_every_active_subscription_gets_the_prompt(push: FakePushService, person: Approver) -> None:
    phone, laptop = subscribe(push, person, "phone"), subscribe(push, person, "laptop")
    approval_request = prompting.make_request(person)

    outcome = approval_request_prompt(approval_request_id=approval_request.pk)

    assert outcome.delivered
    pushes = push.wait_for_pushes(2, timeout=2)
    assert sorted(p.endpoint for p in pushes) == sorted([phone.endpoint, laptop.endpoint])
    deliveries = Delivery.objects.filter(request=approval_request).order_by("subscription_id")
    assert [(d.subscription_id, d.status) for d in deliveries] == [(phone.pk, "sent"), (laptop.pk, "sent")]
    assert approval_request.events.filter(kind="prompted").get().detail == {"channel": "webpush", "destinations": 2}


def test_disabled_and_other_peoples_subscriptions_get_nothing(push: FakePushService, person: Approver) -> None:
    active = subscribe(push, person, "phone")
    old = subscribe(push, person, "old-laptop")
    PushSubscription.objects.filter(pk=old.pk).update(disabled_at=timezone.now(), disabled_reason="gone")
    subscribe(push, prompting.make_person("bob", phone="+14155550124"), "bobs-phone")
    approval_request = prompting.make_request(person)

    approval_request_prompt(approval_request_id=approval_request.pk)

    assert [p.endpoint for p in push.wait_for_pushes(1, timeout=2)] == [active.endpoint]
    assert len(push.attempts) == 1
    assert list(Delivery.objects.filter(request=approval_request).values_list("subscription_id", flat=True)) == [
        active.pk
    ]


def test_gone_subscription_is_disabled_alone(push: FakePushService, person: Approver) -> None:
    phone, laptop = subscribe(push, person, "phone"), subscribe(push, person, "laptop")
    push.respond_with("gone")  # the first push (subscriptions are tried in the order they were stored)
    approval_request = prompting.make_request(person)

    outcome = approval_request_prompt(approval_request_id=approval_request.pk)

    assert outcome.delivered and outcome.retry_in is None
    assert [(a.push.endpoint, a.status) for a in push.attempts] == [(phone.endpoint, 410), (laptop.endpoint, 201)]
    phone.refresh_from_db()
    laptop.refresh_from_db()
    assert phone.disabled_at is not None and "410" in phone.disabled_reason and phone.last_success_at is None
    assert laptop.disabled_at is None and laptop.last_success_at is not None
    statuses = dict(Delivery.objects.filter(request=approval_request).values_list("subscription_id", "status"))
    assert statuses == {phone.pk: "rejected", laptop.pk: "sent"}


def test_success_records_last_success(push: FakePushService, person: Approver) -> None:
    subscription = subscribe(push, person, "phone")
    before = timezone.now()

    approval_request_prompt(approval_request_id=prompting.make_request(person).pk)

    subscription.refresh_from_db()
    assert subscription.last_success_at is not None and before <= subscription.last_success_at <= timezone.now()


def test_retry_skips_the_subscription_that_already_has_the_prompt(
    push: FakePushService, person: Approver, settings: Any, keys: tuple[str, str]
) -> None:
    prompting.use_webpush(settings, push, keys)
    phone, laptop = subscribe(push, person, "phone"), subscribe(push, person, "laptop")
    # Both fail transiently, then the retry reaches both: each gets exactly one push.
    push.respond_with("server_error", "rate_limited")
    approval_request = prompting.make_request(person)

    first = approval_request_prompt(approval_request_id=approval_request.pk, attempt=1)
    second = approval_request_prompt(approval_request_id=approval_request.pk, attempt=2)

    assert first.retry_in is not None and not first.delivered
    assert second.delivered
    assert sorted(p.endpoint for p in push.pushes) == sorted([phone.endpoint, laptop.endpoint])
    rows = Delivery.objects.filter(request=approval_request).order_by("attempt", "subscription_id")
    assert [(d.attempt, d.status) for d in rows] == [(1, "failed"), (1, "failed"), (2, "sent"), (2, "sent")]


def test_subscription_for_another_server_key_is_refused_for_good(
    settings: Any, person: Approver, keys: tuple[str, str]
) -> None:
    # The fake expects another key, as a push service does for a subscription made with another applicationServerKey.
    other = prompting.vapid_keys()
    with FakePushService(expected_vapid_public_key=other[1]) as fake:
        prompting.use_webpush(settings, fake, keys)
        subscription = subscribe(fake, person, "phone")
        approval_request = prompting.make_request(person)

        outcome = approval_request_prompt(approval_request_id=approval_request.pk)

        assert not outcome.delivered and outcome.retry_in is None
        assert [r.status for r in fake.rejected] == [401]
    delivery = Delivery.objects.get(request=approval_request)
    assert delivery.status == "rejected" and "401" in delivery.error
    subscription.refresh_from_db()
    assert subscription.disabled_at is None  # the server's configuration is at fault, not the browser


def test_vapid_subject_py_vapid_refuses_is_a_permanent_failure(
    settings: Any, push: FakePushService, person: Approver, keys: tuple[str, str]
) -> None:
    # py_vapid signs only a mailto: with a domain or a bare https origin; retrying cannot change that.
    prompting.configure(
        settings,
        [prompting.WEBPUSH],
        WEBPUSH=prompting.webpush_config(settings, keys, VAPID_SUBJECT="https://example.com/contact"),
    )
    subscribe(push, person, "phone")
    approval_request = prompting.make_request(person)

    outcome = approval_request_prompt(approval_request_id=approval_request.pk)

    assert not outcome.delivered and outcome.retry_in is None
    assert push.attempts == [] and push.rejected == []
    assert Delivery.objects.get(request=approval_request).status == "rejected"


def test_no_subscription_means_no_push(push: FakePushService, person: Approver) -> None:
    approval_request: ApprovalRequest = prompting.make_request(person)

    outcome = approval_request_prompt(approval_request_id=approval_request.pk)

    assert not outcome.delivered and outcome.retry_in is None
    assert outcome.errors == ("webpush: no destination",)
    assert push.attempts == [] and not Delivery.objects.filter(request=approval_request).exists()
