"""The contract every prompt channel keeps (house style 17), driven through approvals.prompts.approval_request_prompt.

Each channel runs alone in PROMPT_CHANNELS and talks to what stands in for its provider: SMS to FakeTwilio and Web
Push to FakePushService through the real client libraries, locmem through its `failures` list, console to stdout.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.utils import timezone

from approvals.channels import locmem
from approvals.channels.base import ChannelError
from approvals.devices import push_subscription_save
from approvals.models import ApprovalRequest, Approver, AuditEvent, Delivery, PushSubscription
from approvals.prompts import approval_request_prompt
from tests import prompting
from tests.fakes.push_service import FakePushService
from tests.fakes.twilio import FakeTwilio

pytestmark = pytest.mark.django_db

HANG_TIMEOUT = 0.5


class Harness:
    """What a test needs to know about one channel: how many prompts went out, how to make the next one fail."""

    name: str
    failures: dict[str, str]  # kind ("gone", "gone_alt", "server_error", "rate_limited", "hang") -> provider mode

    def __init__(self, settings: Any, approver: Approver) -> None:
        self.settings = settings
        self.approver = approver

    def received(self) -> int:
        raise NotImplementedError

    def fail_next(self, kind: str) -> None:
        raise NotImplementedError

    def destination_disabled(self) -> bool:
        raise NotImplementedError

    def check_provider_id(self, provider_id: str) -> None:
        raise NotImplementedError


class SmsHarness(Harness):
    name = "sms"
    failures = {
        "gone": "invalid_number",
        "gone_alt": "unsubscribed",
        "server_error": "server_error",
        "rate_limited": "rate_limited",
        "hang": "hang",
    }

    def __init__(self, settings: Any, approver: Approver, fake: FakeTwilio) -> None:
        super().__init__(settings, approver)
        self.fake = fake
        prompting.use_sms(settings, fake)

    def received(self) -> int:
        return len(self.fake.messages)

    def fail_next(self, kind: str) -> None:
        if kind == "hang":
            prompting.use_sms(self.settings, self.fake, timeout=HANG_TIMEOUT)
        self.fake.respond_with(self.failures[kind])

    def destination_disabled(self) -> bool:
        self.approver.refresh_from_db()
        return self.approver.phone_disabled_at is not None

    def check_provider_id(self, provider_id: str) -> None:
        assert provider_id.startswith("SM") and len(provider_id) == 34
        assert provider_id in [attempt.sid for attempt in self.fake.attempts]


class WebPushHarness(Harness):
    name = "webpush"
    failures = {
        "gone": "gone",
        "gone_alt": "not_found",
        "server_error": "server_error",
        "rate_limited": "rate_limited",
        "hang": "hang",
    }

    def __init__(self, settings: Any, approver: Approver, fake: FakePushService, keys: tuple[str, str]) -> None:
        super().__init__(settings, approver)
        self.fake = fake
        self.keys = keys
        prompting.use_webpush(settings, fake, keys)
        self.subscription = push_subscription_save(approver=approver, subscription=fake.subscribe("phone").info)

    def received(self) -> int:
        assert self.fake.rejected == []  # VAPID and encryption were right on every push
        return len(self.fake.pushes)

    def fail_next(self, kind: str) -> None:
        if kind == "hang":
            prompting.use_webpush(self.settings, self.fake, self.keys, timeout=HANG_TIMEOUT)
        self.fake.respond_with(self.failures[kind])

    def destination_disabled(self) -> bool:
        self.subscription.refresh_from_db()
        return self.subscription.disabled_at is not None

    def check_provider_id(self, provider_id: str) -> None:
        assert provider_id.startswith(f"{self.fake.base_url}/message/")


class LocmemHarness(Harness):
    name = "locmem"
    failures = {"gone": "gone", "server_error": "transient"}

    def __init__(self, settings: Any, approver: Approver) -> None:
        super().__init__(settings, approver)
        prompting.configure(settings, [prompting.LOCMEM])

    def received(self) -> int:
        return len(locmem.outbox)

    def fail_next(self, kind: str) -> None:
        if kind == "gone":
            locmem.failures.append(ChannelError("Destination gone", destination_gone=True))
        else:
            locmem.failures.append(ChannelError("Provider unavailable"))

    def destination_disabled(self) -> bool:
        return [key for key, _reason in locmem.disabled] == [f"locmem:{self.approver.user.pk}"]

    def check_provider_id(self, provider_id: str) -> None:
        assert provider_id == "locmem-1"


class ConsoleHarness(Harness):
    name = "console"
    failures: dict[str, str] = {}

    def __init__(self, settings: Any, approver: Approver, capsys: pytest.CaptureFixture[str]) -> None:
        super().__init__(settings, approver)
        self.capsys = capsys
        self.printed = ""
        prompting.configure(settings, [prompting.CONSOLE])

    def received(self) -> int:
        self.printed += self.capsys.readouterr().out
        return self.printed.count("Approval prompt for ")

    def check_provider_id(self, provider_id: str) -> None:
        assert provider_id == ""


HARNESSES: list[type[Harness]] = [SmsHarness, WebPushHarness, LocmemHarness, ConsoleHarness]
CHANNELS = [harness.name for harness in HARNESSES]
PERMANENT = ["gone", "gone_alt"]
TRANSIENT = ["server_error", "rate_limited", "hang"]


def failure_cases(kinds: list[str]) -> list[Any]:
    """(channel, kind) for every failure a channel's provider can produce. The console has no provider, so it has
    no failure cases; locmem raises one ChannelError of each kind."""
    return [
        pytest.param(harness.name, kind, id=f"{harness.name}-{kind}")
        for harness in HARNESSES
        for kind in kinds
        if kind in harness.failures
    ]


@pytest.fixture
def person() -> Approver:
    return prompting.make_person()


@pytest.fixture
def harness(request: pytest.FixtureRequest, settings: Any, person: Approver) -> Iterator[Harness]:
    name = request.param
    if name == "sms":
        with FakeTwilio(hang_seconds=30) as fake:
            yield SmsHarness(settings, person, fake)
    elif name == "webpush":
        keys = prompting.vapid_keys()
        with FakePushService(expected_vapid_public_key=keys[1], hang_seconds=30) as fake:
            yield WebPushHarness(settings, person, fake, keys)
    elif name == "locmem":
        yield LocmemHarness(settings, person)
    else:
        yield ConsoleHarness(settings, person, request.getfixturevalue("capsys"))


def assert_prompted(approval_request: ApprovalRequest, channel: str) -> None:
    approval_request.refresh_from_db()
    assert approval_request.prompted_at is not None
    assert approval_request.prompt_failed_at is None
    [event] = AuditEvent.objects.filter(request=approval_request, kind=AuditEvent.Kind.PROMPTED)
    assert event.at == approval_request.prompted_at
    assert event.detail == {"channel": channel, "destinations": 1}


def assert_not_prompted(approval_request: ApprovalRequest) -> None:
    approval_request.refresh_from_db()
    assert approval_request.prompted_at is None
    assert not AuditEvent.objects.filter(request=approval_request, kind=AuditEvent.Kind.PROMPTED).exists()


@pytest.mark.parametrize("harness", CHANNELS, indirect=True)
def test_prompt_is_sent_once_and_recorded(harness: Harness, person: Approver) -> None:
    approval_request = prompting.make_request(person)
    before = timezone.now()

    outcome = approval_request_prompt(approval_request_id=approval_request.pk, attempt=1)

    assert outcome.delivered and outcome.retry_in is None and outcome.errors == ()
    assert harness.received() == 1
    [delivery] = Delivery.objects.filter(request=approval_request)
    assert (delivery.channel, delivery.status, delivery.attempt, delivery.error) == (harness.name, "sent", 1, "")
    assert before <= delivery.created_at <= delivery.finished_at <= timezone.now()
    harness.check_provider_id(delivery.provider_id)
    assert_prompted(approval_request, harness.name)

    again = approval_request_prompt(approval_request_id=approval_request.pk, attempt=2)

    assert not again.delivered and again.retry_in is None
    assert harness.received() == 1
    assert Delivery.objects.filter(request=approval_request).count() == 1
    assert AuditEvent.objects.filter(request=approval_request, kind=AuditEvent.Kind.PROMPTED).count() == 1


@pytest.mark.parametrize(("harness", "kind"), failure_cases(PERMANENT), indirect=["harness"])
def test_destination_gone_is_rejected_disabled_and_not_retried(harness: Harness, person: Approver, kind: str) -> None:
    approval_request = prompting.make_request(person)
    harness.fail_next(kind)

    outcome = approval_request_prompt(approval_request_id=approval_request.pk, attempt=1)

    assert not outcome.delivered and outcome.retry_in is None and outcome.errors
    assert harness.received() == 0
    [delivery] = Delivery.objects.filter(request=approval_request)
    assert delivery.status == "rejected" and delivery.error and delivery.finished_at is not None
    assert harness.destination_disabled()
    assert_not_prompted(approval_request)
    assert approval_request.prompt_failed_at is not None
    assert AuditEvent.objects.filter(request=approval_request, kind=AuditEvent.Kind.PROMPT_FAILED).count() == 1

    # The destination is gone: a later round (or the next request) does not try it again.
    later = prompting.make_request(person)
    assert approval_request_prompt(approval_request_id=later.pk, attempt=1).retry_in is None
    assert harness.received() == 0
    assert not Delivery.objects.filter(request=later).exists()


@pytest.mark.parametrize(("harness", "kind"), failure_cases(TRANSIENT), indirect=["harness"])
def test_transient_failure_is_retried_and_the_retry_sends_once(harness: Harness, person: Approver, kind: str) -> None:
    approval_request = prompting.make_request(person)
    harness.fail_next(kind)

    outcome = approval_request_prompt(approval_request_id=approval_request.pk, attempt=1)

    assert not outcome.delivered and outcome.errors
    assert outcome.retry_in is not None and outcome.retry_in > 0
    assert harness.received() == 0
    [failed] = Delivery.objects.filter(request=approval_request)
    assert failed.status == "failed" and failed.error and failed.finished_at is not None
    assert not harness.destination_disabled()
    assert_not_prompted(approval_request)
    assert approval_request.prompt_failed_at is None

    retried = approval_request_prompt(approval_request_id=approval_request.pk, attempt=2)

    assert retried.delivered and retried.retry_in is None
    assert harness.received() == 1
    statuses = list(Delivery.objects.filter(request=approval_request).values_list("attempt", "status"))
    assert statuses == [(1, "failed"), (2, "sent")]
    assert_prompted(approval_request, harness.name)


def test_every_channel_is_in_the_contract() -> None:
    import pkgutil

    import approvals.channels

    modules = {module.name for module in pkgutil.iter_modules(approvals.channels.__path__)} - {"base"}
    assert modules == {"twilio_sms", "webpush", "locmem", "console"}, "add the new channel to CHANNELS"
    assert len(CHANNELS) == len(modules)


def test_subscription_rows_are_kept_for_the_record(settings: Any, person: Approver) -> None:
    """A push delivery names its subscription; removing the device keeps the delivery row."""
    keys = prompting.vapid_keys()
    with FakePushService(expected_vapid_public_key=keys[1]) as fake:
        prompting.use_webpush(settings, fake, keys)
        subscription = push_subscription_save(approver=person, subscription=fake.subscribe().info)
        approval_request = prompting.make_request(person)
        approval_request_prompt(approval_request_id=approval_request.pk)

    [delivery] = Delivery.objects.filter(request=approval_request)
    assert delivery.subscription_id == subscription.pk and delivery.destination == f"webpush:{subscription.pk}"
    PushSubscription.objects.filter(pk=subscription.pk).delete()
    delivery.refresh_from_db()
    assert delivery.subscription_id is None and delivery.status == "sent"
