"""The background-delivery shape (approvals.delivery) that prompts and ping/push callbacks share, seen through the
prompt sweeper: the longest overdue first, and no further enqueueing while the broker is down."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from approvals import prompts
from approvals.delivery import fits_before, full_jitter
from approvals.models import ApprovalRequest
from tests import factories

pytestmark = pytest.mark.django_db


def overdue_requests(approver, agent, *ages: int) -> list[ApprovalRequest]:
    now = timezone.now()
    made = [factories.make_approval_request(approver, agent) for _ in ages]
    for approval_request, age in zip(made, ages, strict=True):
        ApprovalRequest.objects.filter(pk=approval_request.pk).update(prompt_due_at=now - timedelta(seconds=age))
    return made


def test_the_sweep_hands_the_longest_overdue_first_to_the_enqueue_it_was_given(agent, approver):
    made = overdue_requests(approver, agent, 1, 3, 2)
    enqueued: list[str] = []

    assert prompts.approval_request_sweep_unprompted(enqueue=enqueued.append) == 3

    assert enqueued == [str(made[1].pk), str(made[2].pk), str(made[0].pk)]


def test_the_sweep_stops_while_the_broker_is_down_and_the_rest_stay_due(agent, approver, caplog):
    made = overdue_requests(approver, agent, 2, 1)
    now = timezone.now()

    def broker_down(approval_request_id: str) -> None:
        raise ConnectionError("the broker is down")

    assert prompts.approval_request_sweep_unprompted(enqueue=broker_down, now=now) == 0

    assert "The broker is still unavailable; prompts stay due" in caplog.text
    enqueued: list[str] = []
    assert prompts.approval_request_sweep_unprompted(enqueue=enqueued.append, now=now) == 1
    assert enqueued == [str(made[1].pk)]  # the first had its due time moved on before the broker refused it


def test_a_retry_is_scheduled_only_if_it_starts_before_the_deadline():
    now = timezone.now()
    assert fits_before(now + timedelta(seconds=10), delay=9.9, now=now)
    assert not fits_before(now + timedelta(seconds=10), delay=10, now=now)


def test_full_jitter_grows_with_the_attempt_up_to_the_maximum():
    for attempt, ceiling in [(1, 2), (2, 4), (3, 8), (4, 10), (30, 10)]:
        delays = [full_jitter(attempt, base=2, maximum=10) for _ in range(100)]
        assert all(1 <= delay <= ceiling for delay in delays), (attempt, min(delays), max(delays))
