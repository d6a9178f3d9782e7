"""Issue 15 item 7b: a signed Twilio status callback replayed later (or an old one delivered late) cannot move a
delivery's recorded status backwards: reports move forward only (approvals.devices.delivery_update_from_twilio),
and a replay is answered 2xx, as Twilio expects, while changing nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from approvals.models import Approver, Delivery
from tests import prompting
from tests.approvals.test_twilio_sms import post_status, prompt_by_sms, report
from tests.fakes.twilio import FakeTwilio

pytestmark = pytest.mark.django_db


@pytest.fixture
def sms(settings: Any) -> Iterator[FakeTwilio]:
    with FakeTwilio() as fake:
        prompting.use_sms(settings, fake)
        yield fake


@pytest.fixture
def person() -> Approver:
    return prompting.make_person()


@pytest.fixture
def sent(sms: FakeTwilio, person: Approver) -> tuple[Delivery, str]:
    """A delivery the fake accepted, and the StatusCallback URL Twilio was given for it."""
    approval_request = prompting.make_request(person)
    message = prompt_by_sms(approval_request, sms)
    return Delivery.objects.get(request=approval_request), message.form["StatusCallback"]


def test_a_replayed_earlier_report_does_not_move_the_status_back(sent: tuple[Delivery, str], sms: Any) -> None:
    delivery, url = sent
    assert post_status(Client(), url, report("queued"), token=sms.auth_token).status_code == 204
    assert post_status(Client(), url, report("sent"), token=sms.auth_token).status_code == 204

    replay = post_status(Client(), url, report("queued"), token=sms.auth_token)

    assert replay.status_code == 204
    delivery.refresh_from_db()
    assert (delivery.status, delivery.provider_status) == ("sent", "sent")


def test_the_same_report_twice_is_applied_once(sent: tuple[Delivery, str], sms: Any) -> None:
    delivery, url = sent
    post_status(Client(), url, report("sent"), token=sms.auth_token)
    delivery.refresh_from_db()
    first = delivery.updated_at

    replay = post_status(Client(), url, report("sent"), token=sms.auth_token)

    assert replay.status_code == 204
    delivery.refresh_from_db()
    assert delivery.updated_at == first


def test_a_replayed_undeliverable_report_does_not_disable_the_phone_again(
    sent: tuple[Delivery, str], sms: Any, person: Approver
) -> None:
    delivery, url = sent
    undeliverable = report("undelivered", error_code="30006")
    post_status(Client(), url, undeliverable, token=sms.auth_token)
    # The number is enabled again (say, by an administrator once the person has fixed it).
    Approver.objects.filter(pk=person.pk).update(phone_disabled_at=None, phone_disabled_reason="")

    replay = post_status(Client(), url, undeliverable, token=sms.auth_token)

    assert replay.status_code == 204
    person.refresh_from_db()
    assert person.phone_disabled_at is None


def test_forward_reports_still_apply(sent: tuple[Delivery, str], sms: Any) -> None:
    delivery, url = sent
    for status in ("queued", "sending", "sent", "delivered"):
        assert post_status(Client(), url, report(status), token=sms.auth_token).status_code == 204

    delivery.refresh_from_db()
    assert (delivery.status, delivery.provider_status) == ("delivered", "delivered")
