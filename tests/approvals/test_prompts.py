"""Prompting the approver (approvals.prompts): channel order and fallback, retries, idempotency, the claim, the
sweeper, and the abuse limit at bc-authorize. Channels are the locmem outbox and the real Twilio client talking to
FakeTwilio on 127.0.0.1; Celery runs eagerly, or publishes to the in-process memory broker for the sweeper."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import ClassVar

import pytest
from django.utils import timezone

from approvals import prompts, services, tasks
from approvals.channels.base import Channel, ChannelError, Destination, Prompt
from approvals.channels.locmem import failures
from approvals.conf import approvals_settings
from approvals.delivery import Outcome
from approvals.links import link_url
from approvals.models import ApprovalRequest, Approver, AuditEvent, Delivery
from approvals.prompts import approval_request_prompt
from tests import factories
from tests.celery_worker import published_tasks
from tests.factories import assert_oauth_error
from tests.fakes.twilio import FakeTwilio

pytestmark = pytest.mark.django_db

LOCMEM = "approvals.channels.locmem.LocmemChannel"
SMS = "approvals.channels.twilio_sms.TwilioSmsChannel"
EXPLODING = "tests.approvals.test_prompts.ExplodingChannel"
OVERTAKEN = "tests.approvals.test_prompts.OvertakenChannel"
PHONE = "+14155550123"
Status = Delivery.Status


class ExplodingChannel(Channel):
    """A channel with a bug: send raises something that is not a ChannelError."""

    name: ClassVar[str] = "exploding"

    def send(self, prompt: Prompt, destination: Destination, *, delivery_id: str) -> str:
        raise RuntimeError("a bug in the channel")


class OvertakenChannel(Channel):
    """A channel so slow that the round's claim lapses and another worker claims the request during the call."""

    name: ClassVar[str] = "overtaken"
    successor_claim = timezone.now() + timedelta(hours=1)

    def send(self, prompt: Prompt, destination: Destination, *, delivery_id: str) -> str:
        ApprovalRequest.objects.filter(pk=prompt.approval_request_id).update(prompt_claimed_until=self.successor_claim)
        raise ChannelError("timed out")


@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio() as fake:
        yield fake


@pytest.fixture
def use_channels(settings, fake_twilio):
    """Set the server's channel order (dotted paths), with the SMS channel aimed at FakeTwilio."""

    def configure(*paths: str, **approvals: object) -> None:
        settings.APPROVALS = {
            **settings.APPROVALS,
            "PROMPT_CHANNELS": list(paths),
            "TWILIO": {
                "ACCOUNT_SID": fake_twilio.account_sid,
                "AUTH_TOKEN": fake_twilio.auth_token,
                "FROM_NUMBER": "+15005550006",
                "MESSAGING_SERVICE_SID": "",
                "API_BASE": fake_twilio.base_url,
                "STATUS_CALLBACKS": False,
            },
            **approvals,
        }

    return configure


def sweep(**kwargs) -> int:
    return prompts.approval_request_sweep_unprompted(enqueue=tasks.prompt_approver_task.delay, **kwargs)


def new_request(approver, agent, **kwargs) -> ApprovalRequest:
    # The on_commit hook that enqueues the prompt does not run inside the test's transaction: no prompt yet.
    return factories.make_approval_request(approver, agent, **kwargs)


def deliveries(approval_request) -> list[tuple[str, str]]:
    return list(Delivery.objects.filter(request=approval_request).values_list("channel", "status"))


def events(approval_request, kind: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(request=approval_request, kind=kind))


def assert_prompted(approval_request, channel: str) -> None:
    approval_request.refresh_from_db()
    assert approval_request.prompted_at is not None
    assert approval_request.prompt_failed_at is None
    assert approval_request.prompt_claimed_until is None
    (event,) = events(approval_request, AuditEvent.Kind.PROMPTED)
    assert event.detail["channel"] == channel


# --- channel order and fallback ---------------------------------------------------------------------------------------


def test_channel_without_destination_falls_back_to_the_next(use_channels, agent, outbox, fake_twilio):
    use_channels(SMS, LOCMEM)
    nobody_to_text = factories.make_approver("bob", phone="")
    approval_request = new_request(nobody_to_text, agent)

    outcome = approval_request_prompt(approval_request_id=approval_request.pk)

    assert outcome.delivered and outcome.retry_in is None
    assert outcome.errors == ("sms: no destination",)
    assert [p.approval_request_id for p in outbox] == [str(approval_request.pk)]
    assert fake_twilio.attempts == []
    assert deliveries(approval_request) == [("locmem", Status.SENT)]
    assert_prompted(approval_request, "locmem")


def test_permanent_failure_on_the_first_channel_falls_back_and_disables_the_number(
    use_channels, agent, approver, outbox, fake_twilio
):
    use_channels(SMS, LOCMEM)
    fake_twilio.respond_with("invalid_number")
    approval_request = new_request(approver, agent)

    outcome = approval_request_prompt(approval_request_id=approval_request.pk)

    assert outcome.delivered
    assert len(fake_twilio.attempts) == 1 and fake_twilio.messages == []
    assert len(outbox) == 1
    assert deliveries(approval_request) == [("sms", Status.REJECTED), ("locmem", Status.SENT)]
    assert Approver.objects.get(pk=approver.pk).phone_disabled_at is not None
    assert_prompted(approval_request, "locmem")


@pytest.mark.parametrize(
    ("order", "sent_on"),
    [((SMS, LOCMEM), "sms"), ((LOCMEM, SMS), "locmem")],
)
def test_the_first_channel_that_reaches_the_person_ends_the_round(
    use_channels, agent, approver, outbox, fake_twilio, order, sent_on
):
    use_channels(*order)
    approval_request = new_request(approver, agent)

    assert approval_request_prompt(approval_request_id=approval_request.pk).delivered

    assert len(fake_twilio.messages) == (1 if sent_on == "sms" else 0)
    assert len(outbox) == (1 if sent_on == "locmem" else 0)
    assert deliveries(approval_request) == [(sent_on, Status.SENT)]
    assert_prompted(approval_request, sent_on)


def test_the_clients_channel_order_overrides_the_servers(use_channels, make_agent, approver, outbox, fake_twilio):
    use_channels(LOCMEM, SMS)
    agent = make_agent(name="SMS first", prompt_channels="sms,locmem")
    approval_request = new_request(approver, agent)

    assert approval_request_prompt(approval_request_id=approval_request.pk).delivered

    (sms,) = fake_twilio.messages
    assert sms.to == PHONE and link_url(approval_request) in sms.body
    assert outbox == []
    assert_prompted(approval_request, "sms")


def test_unknown_or_unconfigured_channel_names_of_a_client_are_ignored(
    use_channels, make_agent, approver, outbox, fake_twilio
):
    use_channels(LOCMEM, SMS)
    # webpush exists but is not configured on this server; carrier-pigeon does not exist at all.
    agent = make_agent(name="Odd order", prompt_channels=" webpush, carrier-pigeon ,sms")
    approval_request = new_request(approver, agent)

    outcome = approval_request_prompt(approval_request_id=approval_request.pk)

    assert outcome.delivered and outcome.errors == ()
    assert len(fake_twilio.messages) == 1 and outbox == []
    assert deliveries(approval_request) == [("sms", Status.SENT)]


def test_a_client_whose_channels_are_all_gone_is_prompted_the_servers_way(use_channels, make_agent, approver, outbox):
    use_channels(LOCMEM)
    agent = make_agent(name="Set up for SMS", prompt_channels="sms")  # then the server dropped SMS
    approval_request = new_request(approver, agent)

    assert approval_request_prompt(approval_request_id=approval_request.pk).delivered

    assert len(outbox) == 1
    assert deliveries(approval_request) == [("locmem", Status.SENT)]


def test_every_channel_failing_permanently_gives_up_without_retry(use_channels, agent, approver, outbox, fake_twilio):
    use_channels(LOCMEM, SMS)
    failures.append(ChannelError("push refused for good", permanent=True))
    fake_twilio.respond_with("unsubscribed")
    approval_request = new_request(approver, agent)

    outcome = approval_request_prompt(approval_request_id=approval_request.pk)

    assert not outcome.delivered and outcome.retry_in is None
    assert len(outcome.errors) == 2
    approval_request.refresh_from_db()
    assert approval_request.prompt_failed_at is not None and approval_request.prompted_at is None
    (failed,) = events(approval_request, AuditEvent.Kind.PROMPT_FAILED)
    assert failed.detail["errors"] == list(outcome.errors)
    assert "push refused for good" in failed.detail["errors"][0]
    assert "21610" in failed.detail["errors"][1]
    assert deliveries(approval_request) == [("locmem", Status.REJECTED), ("sms", Status.REJECTED)]
    # Given up: neither the task nor the sweeper tries again.
    tasks.prompt_approver_task.delay(str(approval_request.pk))
    assert sweep(now=timezone.now() + timedelta(hours=1)) == 0
    assert outbox == [] and fake_twilio.messages == []
    assert len(fake_twilio.attempts) == 1


def test_a_person_no_channel_can_reach_is_given_up_on(use_channels, agent, outbox, fake_twilio):
    use_channels(SMS)
    approval_request = new_request(factories.make_approver("bob", phone=""), agent)

    outcome = approval_request_prompt(approval_request_id=approval_request.pk)

    assert outcome == Outcome(errors=("sms: no destination",))
    approval_request.refresh_from_db()
    assert approval_request.prompt_failed_at is not None
    assert events(approval_request, AuditEvent.Kind.PROMPT_FAILED)[0].detail["errors"] == ["sms: no destination"]


# --- transient failures -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", [1, 2, 4, 12])
def test_transient_failure_retries_with_bounded_backoff(use_channels, agent, approver, outbox, attempt):
    use_channels(LOCMEM, PROMPT_RETRY_BASE_SECONDS=4, PROMPT_RETRY_MAX_SECONDS=20, PROMPT_SWEEP_GRACE_SECONDS=7)
    approval_request = new_request(approver, agent)
    failures.append(ChannelError("503 from the provider"))
    now = timezone.now()

    outcome = approval_request_prompt(approval_request_id=approval_request.pk, attempt=attempt, now=now)

    # Full jitter between base/2 and min(max, base * 2^(attempt-1)).
    assert outcome.retry_in is not None
    assert 2 <= outcome.retry_in <= min(20, 4 * 2 ** (attempt - 1))
    assert not outcome.delivered and "503 from the provider" in outcome.errors[0]
    approval_request.refresh_from_db()
    assert approval_request.prompted_at is None and approval_request.prompt_failed_at is None
    assert approval_request.prompt_claimed_until is None
    expected_due = now + timedelta(seconds=outcome.retry_in + 7)
    assert abs((approval_request.prompt_due_at - expected_due).total_seconds()) < 0.01
    assert deliveries(approval_request) == [("locmem", Status.FAILED)]
    assert Delivery.objects.get(request=approval_request).attempt == attempt
    assert outbox == []


def test_retry_delay_stays_within_its_bounds(settings):
    settings.APPROVALS = {**settings.APPROVALS, "PROMPT_RETRY_BASE_SECONDS": 1, "PROMPT_RETRY_MAX_SECONDS": 8}
    delays = [prompts.retry_delay(attempt) for attempt in range(1, 30) for _ in range(20)]
    assert min(delays) >= 0.5 and max(delays) <= 8
    # The ceiling grows with the attempt: the tenth attempt can wait far longer than the first.
    assert max(prompts.retry_delay(1) for _ in range(50)) <= 1
    assert max(prompts.retry_delay(10) for _ in range(50)) > 2


def test_transient_failure_whose_retry_would_come_after_expiry_gives_up(use_channels, agent, approver, outbox):
    use_channels(LOCMEM, PROMPT_RETRY_BASE_SECONDS=30, PROMPT_RETRY_MAX_SECONDS=60)
    approval_request = new_request(approver, agent)
    now = timezone.now()
    ApprovalRequest.objects.filter(pk=approval_request.pk).update(expires_at=now + timedelta(seconds=10))
    failures.append(ChannelError("timeout"))

    outcome = approval_request_prompt(approval_request_id=approval_request.pk, now=now)

    assert outcome.retry_in is None and not outcome.delivered
    approval_request.refresh_from_db()
    assert approval_request.prompt_failed_at is not None
    assert events(approval_request, AuditEvent.Kind.PROMPT_FAILED)[0].detail["errors"] == ["locmem alice: timeout"]


# --- idempotency ------------------------------------------------------------------------------------------------------


def test_a_second_round_after_success_sends_nothing(use_channels, agent, approver, outbox, fake_twilio):
    use_channels(SMS, LOCMEM)
    approval_request = new_request(approver, agent)
    assert approval_request_prompt(approval_request_id=approval_request.pk).delivered

    assert approval_request_prompt(approval_request_id=approval_request.pk) == Outcome()
    tasks.prompt_approver_task.delay(str(approval_request.pk))

    assert len(fake_twilio.attempts) == 1 and outbox == []
    assert deliveries(approval_request) == [("sms", Status.SENT)]


def test_a_destination_that_already_took_the_prompt_is_not_texted_again(
    use_channels, agent, approver, outbox, fake_twilio
):
    """A worker that recorded the Delivery as sent but died before marking the request prompted: the task runs
    again (redelivery or the sweeper), sends no second SMS and marks the request prompted."""
    use_channels(SMS, LOCMEM)
    approval_request = new_request(approver, agent)
    assert approval_request_prompt(approval_request_id=approval_request.pk).delivered
    ApprovalRequest.objects.filter(pk=approval_request.pk).update(prompted_at=None)
    AuditEvent.objects.filter(request=approval_request, kind=AuditEvent.Kind.PROMPTED).delete()

    tasks.prompt_approver_task.delay(str(approval_request.pk))

    assert len(fake_twilio.attempts) == 1 and outbox == []
    assert deliveries(approval_request) == [("sms", Status.SENT)]
    assert_prompted(approval_request, "sms")


def test_a_row_left_sending_by_a_dead_worker_is_marked_interrupted_and_the_prompt_is_sent_again(
    use_channels, agent, approver, outbox
):
    """Chosen policy: at least once. A worker died during the provider call (the row is still "sending" and its
    claim lapsed); whether that prompt went out is unknown, so the row becomes "interrupted" and the prompt is
    sent again: a possible duplicate is better than an approver who never hears of the request."""
    use_channels(LOCMEM)
    approval_request = new_request(approver, agent)
    now = timezone.now()
    stale = Delivery.objects.create(
        request=approval_request,
        channel="locmem",
        destination=f"locmem:{approver.user.pk}",
        status=Status.SENDING,
        created_at=now - timedelta(minutes=2),
    )
    ApprovalRequest.objects.filter(pk=approval_request.pk).update(prompt_claimed_until=now - timedelta(seconds=1))

    assert approval_request_prompt(approval_request_id=approval_request.pk).delivered

    stale.refresh_from_db()
    assert stale.status == Status.INTERRUPTED and stale.finished_at is not None
    assert len(outbox) == 1
    assert deliveries(approval_request) == [("locmem", Status.INTERRUPTED), ("locmem", Status.SENT)]
    assert_prompted(approval_request, "locmem")


def test_a_claim_held_by_another_worker_sends_nothing_and_looks_again_when_it_lapses(
    use_channels, agent, approver, outbox
):
    use_channels(LOCMEM)
    approval_request = new_request(approver, agent)
    now = timezone.now()
    ApprovalRequest.objects.filter(pk=approval_request.pk).update(prompt_claimed_until=now + timedelta(seconds=12))

    outcome = approval_request_prompt(approval_request_id=approval_request.pk, now=now)

    assert not outcome.delivered
    assert outcome.retry_in is not None and 12 <= outcome.retry_in <= 13.5
    assert outbox == [] and deliveries(approval_request) == []
    approval_request.refresh_from_db()
    assert approval_request.prompt_claimed_until == now + timedelta(seconds=12)  # the other worker's claim stays
    assert approval_request.prompted_at is None


def test_a_round_that_outlived_its_claim_leaves_the_successors_claim_alone(use_channels, agent, approver, outbox):
    """A round slower than PROMPT_CLAIM_SECONDS (a hanging provider): another worker took the lapsed claim meanwhile.
    Releasing that worker's claim would let a third one prompt at the same time."""
    use_channels(OVERTAKEN)
    approval_request = new_request(approver, agent)

    outcome = approval_request_prompt(approval_request_id=approval_request.pk)

    assert outcome.retry_in is not None
    approval_request.refresh_from_db()
    assert approval_request.prompt_claimed_until == OvertakenChannel.successor_claim


@pytest.mark.parametrize("state", ["approved", "denied", "cancelled", "expired", "prompted", "given_up", "unknown"])
def test_requests_that_are_not_waiting_for_a_prompt_are_not_prompted(use_channels, agent, approver, outbox, state):
    use_channels(LOCMEM)
    approval_request = new_request(approver, agent)
    now = timezone.now()
    request_id = approval_request.pk
    rows = ApprovalRequest.objects.filter(pk=request_id)
    if state in ("approved", "denied"):
        services.approval_request_decide(
            approval_request_id=request_id, user=approver.user, approve=state == "approved"
        )
    elif state == "cancelled":
        services.approval_request_cancel(approval_request_id=request_id, actor=None)
    elif state == "expired":
        rows.update(expires_at=now - timedelta(seconds=1))  # still "pending" in the table, expired by the clock
    elif state == "prompted":
        rows.update(prompted_at=now)
    elif state == "given_up":
        rows.update(prompt_failed_at=now)
    else:
        rows.delete()

    assert approval_request_prompt(approval_request_id=request_id, now=now) == Outcome()
    tasks.prompt_approver_task.delay(str(request_id))

    assert outbox == []
    assert not Delivery.objects.filter(request_id=request_id).exists()


# --- a channel with a bug ---------------------------------------------------------------------------------------------


def test_an_unexpected_exception_in_a_channel_leaves_the_delivery_failed_and_later_channels_run(
    use_channels, agent, approver, outbox
):
    use_channels(EXPLODING, LOCMEM)
    approval_request = new_request(approver, agent)

    outcome = approval_request_prompt(approval_request_id=approval_request.pk)

    assert outcome.delivered
    assert outcome.errors == ("exploding alice: unexpected RuntimeError",)
    exploded = Delivery.objects.get(request=approval_request, channel="exploding")
    assert exploded.status == Status.FAILED and exploded.finished_at is not None
    assert "RuntimeError" in exploded.error and "a bug in the channel" not in exploded.error
    assert len(outbox) == 1
    assert_prompted(approval_request, "locmem")


def test_an_unexpected_exception_alone_is_retried_like_a_transient_failure(use_channels, agent, approver):
    use_channels(EXPLODING)
    approval_request = new_request(approver, agent)

    outcome = approval_request_prompt(approval_request_id=approval_request.pk)

    assert outcome.retry_in is not None
    approval_request.refresh_from_db()
    assert approval_request.prompt_failed_at is None and approval_request.prompt_claimed_until is None
    assert deliveries(approval_request) == [("exploding", Status.FAILED)]


# --- the sweeper ------------------------------------------------------------------------------------------------------


def test_the_sweeper_enqueues_only_overdue_unprompted_pending_requests_once(
    use_channels, agent, approver, make_agent, outbox
):
    use_channels(LOCMEM, PROMPT_SWEEP_GRACE_SECONDS=20)
    now = timezone.now()
    past = now - timedelta(seconds=1)
    made = {name: new_request(approver, agent) for name in ("due", "due_too", "not_yet", "prompted", "given_up")}
    made |= {name: new_request(approver, agent) for name in ("approved", "expired", "no_due_date")}
    rows = ApprovalRequest.objects.filter
    rows(pk__in=[r.pk for r in made.values()]).update(prompt_due_at=past)
    rows(pk=made["not_yet"].pk).update(prompt_due_at=now + timedelta(seconds=5))
    rows(pk=made["prompted"].pk).update(prompted_at=past)
    rows(pk=made["given_up"].pk).update(prompt_failed_at=past)
    services.approval_request_decide(approval_request_id=made["approved"].pk, user=approver.user, approve=True)
    rows(pk=made["expired"].pk).update(expires_at=past)
    rows(pk=made["no_due_date"].pk).update(prompt_due_at=None)

    with published_tasks() as take:
        assert sweep(now=now) == 2
        queued = take()
        assert sorted(queued) == sorted(
            [("approvals.tasks.prompt_approver_task", [str(made[name].pk)]) for name in ("due", "due_too")]
        )
        # prompt_due_at moved on: a second sweep right after (or a second beat by mistake) enqueues nothing.
        for name in ("due", "due_too"):
            made[name].refresh_from_db()
            assert made[name].prompt_due_at == now + timedelta(seconds=20)
        assert sweep(now=now) == 0
        assert sweep(now=now + timedelta(seconds=4)) == 0
        assert take() == []
        # Once the new due time passes with a request still unprompted, it is enqueued again (with not_yet, now due).
        assert sweep(now=now + timedelta(seconds=21)) == 3
        assert len(take()) == 3
    assert outbox == []


def test_a_transient_failure_during_an_eager_sweep_does_not_stop_the_sweep(use_channels, agent, approver, outbox):
    """Without a broker (eager tasks) a retry cannot be scheduled: the task leaves the request to the sweeper's next
    run instead of raising Retry into its caller, which the sweeper would take for a broker outage and stop."""
    use_channels(LOCMEM, PROMPT_SWEEP_GRACE_SECONDS=20)
    now = timezone.now()
    first, second = new_request(approver, agent), new_request(approver, agent)
    ApprovalRequest.objects.filter(pk=first.pk).update(prompt_due_at=now - timedelta(seconds=2))
    ApprovalRequest.objects.filter(pk=second.pk).update(prompt_due_at=now - timedelta(seconds=1))
    failures.append(ChannelError("busy"))

    assert sweep(now=now) == 2

    assert [p.approval_request_id for p in outbox] == [str(second.pk)]
    first.refresh_from_db()
    assert first.prompted_at is None and first.prompt_failed_at is None and first.prompt_due_at > now
    assert deliveries(first) == [("locmem", Status.FAILED)]


def test_the_sweeper_task_prompts_overdue_requests(use_channels, agent, approver, outbox):
    use_channels(LOCMEM)
    approval_request = new_request(approver, agent)
    ApprovalRequest.objects.filter(pk=approval_request.pk).update(prompt_due_at=timezone.now() - timedelta(seconds=1))

    tasks.sweep_unprompted_task.delay()

    assert [p.approval_request_id for p in outbox] == [str(approval_request.pk)]
    assert_prompted(approval_request, "locmem")


def test_beat_runs_the_sweeper(settings):
    schedule = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert "approvals.tasks.sweep_unprompted_task" in schedule
    # The broker redelivers a task whose worker died only after visibility_timeout: it must outlast any countdown.
    assert settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] > approvals_settings.PROMPT_RETRY_MAX_SECONDS


# --- the abuse limit at bc-authorize ----------------------------------------------------------------------------------


def _minute() -> int:
    return int(time.time()) // 60


def _within_one_minute(run):
    """Run a scenario that must fit in one fixed rate window; once more with fresh parties if it straddled two."""
    for _ in range(2):
        started = _minute()
        outcome = run()
        if _minute() == started:
            return outcome
    raise AssertionError("two runs in a row straddled a minute boundary")


def test_the_abuse_limit_refuses_the_third_request_within_the_minute(settings, make_agent):
    settings.APPROVALS = {**settings.APPROVALS, "PROMPTS_PER_MINUTE": 2}
    counter = iter(range(100))

    def run():
        n = next(counter)
        agent = make_agent(name=f"Agent {n}")
        person = factories.make_approver(f"carol{n}")
        answers = [agent.bc_authorize(scope="openid", login_hint=person.user.username) for _ in range(3)]
        return agent, person, answers

    agent, person, answers = _within_one_minute(run)

    assert [a.status_code for a in answers[:2]] == [200, 200]
    body = assert_oauth_error(answers[2], 403, "access_denied")
    assert "Too many requests" in body["error_description"]
    assert 1 <= int(answers[2]["Retry-After"]) <= 60
    assert answers[2]["Cache-Control"] == "no-store"
    assert ApprovalRequest.objects.filter(client=agent.application, user=person.user).count() == 2


def test_the_abuse_limit_counts_each_client_and_approver_apart(settings, make_agent):
    settings.APPROVALS = {**settings.APPROVALS, "PROMPTS_PER_MINUTE": 2}
    counter = iter(range(100))

    def run():
        n = next(counter)
        agent, other_agent = make_agent(name=f"A{n}"), make_agent(name=f"B{n}")
        person, other_person = factories.make_approver(f"dave{n}"), factories.make_approver(f"erin{n}")
        for _ in range(2):
            assert agent.bc_authorize(scope="openid", login_hint=person.user.username).status_code == 200
        refused = agent.bc_authorize(scope="openid", login_hint=person.user.username)
        other_client = other_agent.bc_authorize(scope="openid", login_hint=person.user.username)
        other_approver = agent.bc_authorize(scope="openid", login_hint=other_person.user.username)
        return refused, other_client, other_approver

    refused, other_client, other_approver = _within_one_minute(run)

    assert refused.status_code == 403
    assert other_client.status_code == 200, other_client.content
    assert other_approver.status_code == 200, other_approver.content


def test_the_abuse_limit_is_off_when_zero(settings, agent, approver):
    settings.APPROVALS = {**settings.APPROVALS, "PROMPTS_PER_MINUTE": 0}

    answers = [agent.bc_authorize(scope="openid", login_hint="alice") for _ in range(6)]

    assert [a.status_code for a in answers] == [200] * 6
    assert ApprovalRequest.objects.filter(user=approver.user).count() == 6
