"""SMS prompts as FakeTwilio receives them from the real twilio client, and Twilio's signed delivery reports."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from django.conf import settings as django_settings
from django.test import Client
from twilio.request_validator import RequestValidator

from approvals.links import link_url
from approvals.models import ApprovalRequest, Approver, Delivery
from approvals.prompts import approval_request_prompt
from tests import prompting
from tests.fakes.twilio import FakeTwilio, ReceivedSms, segments

pytestmark = pytest.mark.django_db

SERVICE_SID = "MG" + "b" * 32
FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    with FakeTwilio() as twilio:
        yield twilio


@pytest.fixture
def sms(settings: Any, fake: FakeTwilio) -> FakeTwilio:
    prompting.use_sms(settings, fake)
    return fake


@pytest.fixture
def person() -> Approver:
    return prompting.make_person()


def prompt_by_sms(approval_request: ApprovalRequest, fake: FakeTwilio) -> ReceivedSms:
    assert approval_request_prompt(approval_request_id=approval_request.pk).delivered
    [message] = fake.wait_for_messages(1, timeout=2)
    return message


def link(approval_request: ApprovalRequest) -> str:
    return link_url(approval_request)


# --- what Twilio receives ---------------------------------------------------------------------------------------------


def test_sms_goes_to_the_approver_from_the_configured_number(sms: FakeTwilio, person: Approver) -> None:
    message = prompt_by_sms(prompting.make_request(person), sms)

    assert message.to == prompting.PHONE
    assert message.form["From"] == prompting.FROM_NUMBER
    assert "MessagingServiceSid" not in message.form
    assert message.account_sid == sms.account_sid and sms.rejected == []


def test_messaging_service_replaces_the_from_number(settings: Any, fake: FakeTwilio, person: Approver) -> None:
    prompting.use_sms(settings, fake, FROM_NUMBER="", MESSAGING_SERVICE_SID=SERVICE_SID)

    message = prompt_by_sms(prompting.make_request(person), fake)

    assert message.form["MessagingServiceSid"] == SERVICE_SID
    assert "From" not in message.form


def test_body_names_the_agent_and_shows_the_binding_message_and_link(sms: FakeTwilio, person: Approver) -> None:
    approval_request = prompting.make_request(person, agent_name="Travel agent", binding_message="Pay 420 EUR to ACME")

    body = prompt_by_sms(approval_request, sms).body

    assert "Travel agent" in body
    assert '"Pay 420 EUR to ACME"' in body
    assert body.endswith(link(approval_request))
    assert approval_request.auth_req_id not in body
    assert segments(body) == 1


def test_body_without_binding_message_still_has_the_link(sms: FakeTwilio, person: Approver) -> None:
    approval_request = prompting.make_request(person, binding_message="")

    body = prompt_by_sms(approval_request, sms).body

    assert body == f"Travel agent asks for your approval: {link(approval_request)}"


def test_long_agent_name_is_shortened_to_fit_one_segment(sms: FakeTwilio, person: Approver) -> None:
    agent_name = "Acme Corporation Autonomous Procurement and Travel Booking Assistant"
    binding = "Pay 420 EUR to ACME"
    approval_request = prompting.make_request(person, agent_name=agent_name, binding_message=binding)

    body = prompt_by_sms(approval_request, sms).body

    assert segments(body) == 1
    assert agent_name not in body
    shortened = body.split(" asks for your approval")[0]
    assert shortened.endswith("...") and agent_name.startswith(shortened.removesuffix("..."))
    assert len(shortened) >= 12
    assert f'"{binding}"' in body and body.endswith(link(approval_request))


def test_non_gsm_binding_message_is_sent_whole(sms: FakeTwilio, person: Approver) -> None:
    binding = "Überweisung 42 € an Жанна → OK? 🙂"
    approval_request = prompting.make_request(person, binding_message=binding)

    body = prompt_by_sms(approval_request, sms).body

    assert f'"{binding}"' in body and body.endswith(link(approval_request))
    # UCS-2 allows 70 characters a segment: the binding message and link need several whatever the agent's name.
    assert "Travel agent" in body
    assert segments(body) > 1


def test_status_callback_points_at_the_delivery_hook(sms: FakeTwilio, person: Approver) -> None:
    approval_request = prompting.make_request(person)

    message = prompt_by_sms(approval_request, sms)

    [delivery] = Delivery.objects.filter(request=approval_request)
    assert message.form["StatusCallback"] == f"{django_settings.PUBLIC_URL}/approvals/hooks/twilio/{delivery.pk}/"


def test_status_callbacks_can_be_turned_off(settings: Any, fake: FakeTwilio, person: Approver) -> None:
    prompting.use_sms(settings, fake, STATUS_CALLBACKS=False)

    message = prompt_by_sms(prompting.make_request(person), fake)

    assert "StatusCallback" not in message.form


def test_wrong_credentials_are_a_permanent_failure_that_keeps_the_number(
    settings: Any, fake: FakeTwilio, person: Approver
) -> None:
    prompting.use_sms(settings, fake, AUTH_TOKEN="not-the-token")
    approval_request = prompting.make_request(person)

    outcome = approval_request_prompt(approval_request_id=approval_request.pk)

    assert not outcome.delivered and outcome.retry_in is None
    assert [(r.status, r.code) for r in fake.rejected] == [(401, 20003)]
    [delivery] = Delivery.objects.filter(request=approval_request)
    assert delivery.status == "rejected" and "20003" in delivery.error
    person.refresh_from_db()
    assert person.phone_disabled_at is None


def test_no_sms_without_a_phone_number(sms: FakeTwilio) -> None:
    approver = prompting.make_person("bob", phone="")

    outcome = approval_request_prompt(approval_request_id=prompting.make_request(approver).pk)

    assert not outcome.delivered and outcome.retry_in is None
    assert sms.attempts == [] and sms.rejected == []


# --- delivery reports -------------------------------------------------------------------------------------------------


def post_status(
    http: Client, url: str, params: dict[str, str], *, token: str | None, signed_params: dict[str, str] | None = None
) -> Any:
    headers = {}
    if token is not None:
        signature = RequestValidator(token).compute_signature(url, signed_params or params)
        headers["HTTP_X_TWILIO_SIGNATURE"] = signature
    return http.post(urlsplit(url).path, urlencode(params), content_type=FORM, **headers)


def report(status: str, *, error_code: str = "", sid: str = "SM" + "c" * 32) -> dict[str, str]:
    params = {"MessageSid": sid, "MessageStatus": status, "SmsStatus": status, "AccountSid": "AC" + "a" * 32}
    if error_code:
        params["ErrorCode"] = error_code
    return params


@pytest.fixture
def sent(sms: FakeTwilio, person: Approver) -> tuple[Delivery, str]:
    """A delivery the fake accepted, and the StatusCallback URL Twilio was given for it."""
    approval_request = prompting.make_request(person)
    message = prompt_by_sms(approval_request, sms)
    delivery = Delivery.objects.get(request=approval_request)
    assert delivery.status == "sent"
    return delivery, message.form["StatusCallback"]


def test_signed_delivered_report_marks_the_delivery_delivered(sent: tuple[Delivery, str], sms: FakeTwilio) -> None:
    delivery, url = sent

    response = post_status(Client(), url, report("delivered"), token=sms.auth_token)

    assert response.status_code == 204
    delivery.refresh_from_db()
    assert (delivery.status, delivery.provider_status, delivery.error) == ("delivered", "delivered", "")


def test_intermediate_report_only_records_the_provider_status(sent: tuple[Delivery, str], sms: FakeTwilio) -> None:
    delivery, url = sent

    assert post_status(Client(), url, report("sent"), token=sms.auth_token).status_code == 204

    delivery.refresh_from_db()
    assert (delivery.status, delivery.provider_status) == ("sent", "sent")


def test_undeliverable_number_report_disables_the_phone(
    sent: tuple[Delivery, str], sms: FakeTwilio, person: Approver
) -> None:
    delivery, url = sent

    response = post_status(Client(), url, report("undelivered", error_code="30006"), token=sms.auth_token)

    assert response.status_code == 204
    delivery.refresh_from_db()
    assert (delivery.status, delivery.error) == ("undelivered", "Twilio error 30006")
    person.refresh_from_db()
    assert person.phone_disabled_at is not None and "30006" in person.phone_disabled_reason


def test_temporary_undelivered_report_keeps_the_phone(
    sent: tuple[Delivery, str], sms: FakeTwilio, person: Approver
) -> None:
    delivery, url = sent

    # 30003: the handset is unreachable (switched off); a later SMS may well arrive.
    post_status(Client(), url, report("undelivered", error_code="30003"), token=sms.auth_token)

    delivery.refresh_from_db()
    assert delivery.status == "undelivered"
    person.refresh_from_db()
    assert person.phone_disabled_at is None


def test_final_state_is_not_overwritten_by_a_late_report(sent: tuple[Delivery, str], sms: FakeTwilio) -> None:
    delivery, url = sent
    post_status(Client(), url, report("delivered"), token=sms.auth_token)

    response = post_status(Client(), url, report("sent"), token=sms.auth_token)
    post_status(Client(), url, report("undelivered", error_code="30006"), token=sms.auth_token)

    assert response.status_code == 204
    delivery.refresh_from_db()
    assert (delivery.status, delivery.provider_status, delivery.error) == ("delivered", "delivered", "")


@pytest.mark.parametrize(
    "token",
    [pytest.param(None, id="missing"), pytest.param("another-token", id="forged"), pytest.param("", id="empty")],
)
def test_unsigned_or_forged_report_is_refused(sent: tuple[Delivery, str], person: Approver, token: str | None) -> None:
    delivery, url = sent
    params = report("undelivered", error_code="30006")

    if token == "":
        response = Client().post(urlsplit(url).path, urlencode(params), content_type=FORM, HTTP_X_TWILIO_SIGNATURE="")
    else:
        response = post_status(Client(), url, params, token=token)

    assert response.status_code == 403
    delivery.refresh_from_db()
    assert (delivery.status, delivery.provider_status) == ("sent", "")
    person.refresh_from_db()
    assert person.phone_disabled_at is None


def test_report_with_tampered_parameters_is_refused(sent: tuple[Delivery, str], sms: FakeTwilio) -> None:
    delivery, url = sent

    response = post_status(
        Client(), url, report("undelivered", error_code="30006"), token=sms.auth_token, signed_params=report("sent")
    )

    assert response.status_code == 403
    delivery.refresh_from_db()
    assert delivery.status == "sent"


def test_report_signed_for_another_delivery_is_refused(sent: tuple[Delivery, str], sms: FakeTwilio) -> None:
    delivery, url = sent
    other_url = url.replace(str(delivery.pk), str(uuid.uuid4()))
    params = report("undelivered", error_code="30006")
    signature = RequestValidator(sms.auth_token).compute_signature(other_url, params)

    response = Client().post(
        urlsplit(url).path, urlencode(params), content_type=FORM, HTTP_X_TWILIO_SIGNATURE=signature
    )

    assert response.status_code == 403
    delivery.refresh_from_db()
    assert delivery.status == "sent"


def test_report_for_unknown_delivery_changes_nothing(sent: tuple[Delivery, str], sms: FakeTwilio) -> None:
    delivery, url = sent
    unknown = url.replace(str(delivery.pk), str(uuid.uuid4()))

    response = post_status(Client(), unknown, report("undelivered", error_code="30006"), token=sms.auth_token)

    assert response.status_code == 204
    delivery.refresh_from_db()
    assert delivery.status == "sent"
    assert not Approver.objects.filter(phone_disabled_at__isnull=False).exists()


def test_report_hook_is_404_when_twilio_is_not_configured(
    sent: tuple[Delivery, str], sms: FakeTwilio, settings: Any
) -> None:
    delivery, url = sent
    prompting.configure(settings, [prompting.LOCMEM], TWILIO=prompting.twilio_config(settings, sms, AUTH_TOKEN=""))

    response = post_status(Client(), url, report("delivered"), token=sms.auth_token)

    assert response.status_code == 404
    delivery.refresh_from_db()
    assert delivery.status == "sent"


def test_report_hook_accepts_only_post(sent: tuple[Delivery, str]) -> None:
    _delivery, url = sent

    assert Client().get(urlsplit(url).path).status_code == 405
