"""Issue 15, push endpoint abuse: subscriptions reach only the listed push services on 443 (checked as the sender
parses the URL, at enrolment and again at send time), one person's subscriptions are capped and cost one prompt a
bounded time and bounded bytes, and nobody can take over someone else's subscription."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.utils import timezone

from approvals.channels.webpush import MAX_SUBSCRIPTIONS_PER_APPROVER, ROUND_BUDGET_FACTOR
from approvals.devices import push_subscription_save
from approvals.models import Approver, Delivery, PushSubscription
from approvals.prompts import approval_request_prompt
from tests import prompting
from tests.fakes.push_service import FakePushService

pytestmark = pytest.mark.django_db

KEYS = {"p256dh": "B" + "A" * 86, "auth": "A" * 22}  # a well-formed (65-byte point, 16-byte secret) pair
SEND_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def keys() -> tuple[str, str]:
    return prompting.vapid_keys()


@pytest.fixture
def push(settings: Any, keys: tuple[str, str]) -> Iterator[FakePushService]:
    with FakePushService(expected_vapid_public_key=keys[1], hang_seconds=10) as fake:
        prompting.use_webpush(settings, fake, keys, timeout=SEND_TIMEOUT)
        yield fake


@pytest.fixture
def person() -> Approver:
    return prompting.make_person()


def enrol(http: Client, endpoint: str) -> Any:
    body = json.dumps({"endpoint": endpoint, "keys": KEYS})
    return http.post("/approvals/devices/", body, content_type="application/json")


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://127.0.0.1\\.notify.windows.com/push/abc",  # urlsplit: one host; the sender: 127.0.0.1
        "https://evil.com\\.notify.windows.com/",
        "https://fcm.googleapis.com:8443/x",  # the listed host, another port
        "https://fcm.googleapis.com:80/x",
        "https://fcm.googleapis.com:0/x",
        "https://fcm.googleapis.com:99999/x",
        "https://user@fcm.googleapis.com/x",
        "https://fcm.googleapis.com/x#frag",
        "https://fcm.googleapis.com.evil.com/x",
        "https://notify.windows.com.evil.com/x",
        "https://127.0.0.1/push/abc",
    ],
)
def test_enrolment_refuses_endpoints_off_the_list_or_off_443(
    push: FakePushService, person: Approver, endpoint: str
) -> None:
    http = Client()
    http.force_login(person.user)

    response = enrol(http, endpoint)

    assert response.status_code == 400, response.content
    assert response.json()["error"]
    assert not PushSubscription.objects.exists()


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://fcm.googleapis.com/fcm/send/abc",
        "https://fcm.googleapis.com:443/x",
        "https://wns2-by3p.notify.windows.com/w/?token=x",
    ],
)
def test_enrolment_accepts_listed_services_on_443(push: FakePushService, person: Approver, endpoint: str) -> None:
    http = Client()
    http.force_login(person.user)

    assert enrol(http, endpoint).status_code == 201


def test_send_time_check_refuses_a_stored_endpoint_that_escapes_the_list(
    push: FakePushService, person: Approver
) -> None:
    """A row stored before the enrolment check was fixed (or written by hand) is checked again before every send."""
    good = push_subscription_save(approver=person, subscription=push.subscribe("phone").info)
    sneaky = push.subscribe("sneaky")
    # requests reads the backslash as the end of the host: this would POST to the fake at 127.0.0.1.
    escaped = sneaky.endpoint.replace("/push/", "\\.notify.windows.com/push/")
    bad = PushSubscription.objects.create(approver=person, endpoint=escaped, **sneaky.info["keys"])
    approval_request = prompting.make_request(person)

    assert approval_request_prompt(approval_request_id=approval_request.pk).delivered

    push.wait_for_pushes(1, timeout=2)
    assert [p.endpoint for p in push.pushes] == [good.endpoint]
    assert push.rejected == []
    bad.refresh_from_db()
    assert bad.disabled_at is not None
    delivery = Delivery.objects.get(subscription=bad)
    assert delivery.status == Delivery.Status.REJECTED


def test_subscriptions_per_person_are_capped(push: FakePushService, person: Approver) -> None:
    http = Client()
    http.force_login(person.user)
    for n in range(MAX_SUBSCRIPTIONS_PER_APPROVER):
        assert enrol(http, f"https://fcm.googleapis.com/fcm/send/{n}").status_code == 201

    refused = enrol(http, "https://fcm.googleapis.com/fcm/send/one-too-many")

    assert refused.status_code == 400
    assert f"at most {MAX_SUBSCRIPTIONS_PER_APPROVER}" in refused.json()["error"]
    assert PushSubscription.objects.filter(approver=person).count() == MAX_SUBSCRIPTIONS_PER_APPROVER
    # Enrolling one of the person's own endpoints again (a browser refreshing its keys) is not a new subscription.
    assert enrol(http, "https://fcm.googleapis.com/fcm/send/3").status_code == 201


def test_a_disabled_subscription_makes_room_for_a_new_one(push: FakePushService, person: Approver) -> None:
    http = Client()
    http.force_login(person.user)
    for n in range(MAX_SUBSCRIPTIONS_PER_APPROVER):
        assert enrol(http, f"https://fcm.googleapis.com/fcm/send/{n}").status_code == 201
    PushSubscription.objects.filter(endpoint__endswith="/0").update(disabled_at=timezone.now())

    assert enrol(http, "https://fcm.googleapis.com/fcm/send/new").status_code == 201
    assert PushSubscription.objects.filter(approver=person).count() == MAX_SUBSCRIPTIONS_PER_APPROVER


def test_an_endpoint_held_by_someone_else_is_refused_not_moved(push: FakePushService, person: Approver) -> None:
    owner_sub = push_subscription_save(approver=person, subscription=push.subscribe("phone").info)
    mallory = prompting.make_person("mallory", phone="+14155550199")
    http = Client()
    http.force_login(mallory.user)

    response = enrol(http, owner_sub.endpoint)

    assert response.status_code == 400
    with pytest.raises(ValidationError):
        push_subscription_save(approver=mallory, subscription={"endpoint": owner_sub.endpoint, "keys": KEYS})
    owner_sub.refresh_from_db()
    assert owner_sub.approver == person
    assert owner_sub.p256dh != KEYS["p256dh"]


@pytest.mark.parametrize(
    "spelling",
    ["https://FCM.googleapis.com/fcm/send/abc", "https://fcm.googleapis.com:443/fcm/send/abc"],
)
def test_another_spelling_of_a_held_endpoint_is_refused_too(person: Approver, spelling: str) -> None:
    owner_sub = push_subscription_save(
        approver=person, subscription={"endpoint": "https://fcm.googleapis.com/fcm/send/abc", "keys": KEYS}
    )
    mallory = prompting.make_person("mallory", phone="+14155550199")

    with pytest.raises(ValidationError):
        push_subscription_save(approver=mallory, subscription={"endpoint": spelling, "keys": KEYS})

    assert list(PushSubscription.objects.values_list("endpoint", "approver")) == [(owner_sub.endpoint, person.pk)]


def test_a_trickling_push_service_gets_one_deadline_per_send(push: FakePushService, person: Approver) -> None:
    push_subscription_save(approver=person, subscription=push.subscribe("phone").info)
    push.respond_with("trickle")  # one byte every 0.5 s for 6 s: each read is quick, the whole answer is not
    approval_request = prompting.make_request(person)

    started = time.monotonic()
    outcome = approval_request_prompt(approval_request_id=approval_request.pk)
    elapsed = time.monotonic() - started

    assert not outcome.delivered
    assert elapsed < SEND_TIMEOUT + 1.5, elapsed
    assert "No answer within" in Delivery.objects.get(request=approval_request).error


def test_a_huge_answer_is_cut_off(push: FakePushService, person: Approver) -> None:
    push_subscription_save(approver=person, subscription=push.subscribe("phone").info)
    push.respond_with("huge")
    approval_request = prompting.make_request(person)

    outcome = approval_request_prompt(approval_request_id=approval_request.pk)

    assert not outcome.delivered
    assert "larger than" in Delivery.objects.get(request=approval_request).error


def test_one_prompt_spends_a_bounded_time_on_one_persons_devices(push: FakePushService, person: Approver) -> None:
    for n in range(6):
        push_subscription_save(approver=person, subscription=push.subscribe(f"hang{n}").info)
    push.respond_with(*["hang"] * 6)
    approval_request = prompting.make_request(person)

    started = time.monotonic()
    outcome = approval_request_prompt(approval_request_id=approval_request.pk)
    elapsed = time.monotonic() - started

    assert not outcome.delivered
    assert elapsed < ROUND_BUDGET_FACTOR * SEND_TIMEOUT + 1.5, elapsed
    errors = " ".join(outcome.errors)
    assert "time budget" in errors
