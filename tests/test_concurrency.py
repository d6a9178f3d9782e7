"""Races against the real PostgreSQL: every transition is a conditional UPDATE, so exactly one contender wins.

Each test runs its contenders in real threads (each with its own database connection), released together by a
barrier, in a transactional test so that every thread sees the committed rows.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_id_token_model, get_refresh_token_model

from approvals import services
from approvals.models import ApprovalRequest, AuditEvent
from tests import factories
from tests.conftest import Agent

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

Status = ApprovalRequest.Status
Kind = AuditEvent.Kind
ITERATIONS = 10


def run_together(*calls: Callable[[], Any], timeout: float = 60) -> list[Any]:
    """Run each call in its own thread, all released at once; return their results in order."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def worker(index: int, call: Callable[[], Any]) -> None:
        try:
            barrier.wait(timeout=timeout)
            results[index] = call()
        except BaseException as exc:  # reported to the test below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    assert not any(thread.is_alive() for thread in threads), "a contender hung"
    assert not errors, errors
    return results


def new_request(approver, client_application, **kwargs: Any) -> ApprovalRequest:
    return services.approval_request_create(
        client=client_application,
        user=approver.user,
        scope="openid",
        hint_type="login_hint",
        **factories.as_bc_authorize(**kwargs),
    )


def decision_events(approval_request: ApprovalRequest) -> list[str]:
    decisions = (Kind.APPROVED, Kind.DENIED, Kind.CANCELLED, Kind.EXPIRED, Kind.CONSUMED)
    return list(approval_request.events.filter(kind__in=decisions).values_list("kind", flat=True))


def test_twenty_simultaneous_redemptions_issue_tokens_once(agent, approver):
    ack = agent.bc_authorize(scope="openid profile", login_hint="alice")
    assert ack.status_code == 200, ack.content
    auth_req_id = ack.json()["auth_req_id"]
    approval_request = ApprovalRequest.objects.get(auth_req_id=auth_req_id)
    assert services.approval_request_decide(approval_request_id=approval_request.pk, user=approver.user, approve=True)

    def redeem() -> tuple[int, dict]:
        poller = Agent(agent.client_id, agent.client_secret, Client(), agent.application)
        response = poller.poll(auth_req_id)
        return response.status_code, response.json()

    results = run_together(*[redeem] * 20)

    successes = [body for status, body in results if status == 200]
    failures = [(status, body) for status, body in results if status != 200]
    assert len(successes) == 1, results
    assert successes[0]["access_token"] and successes[0]["id_token"]
    assert len(failures) == 19
    assert all(status == 400 and body["error"] == "invalid_grant" for status, body in failures), failures

    AccessToken = get_access_token_model()
    tokens = AccessToken.objects.filter(application=agent.application)
    assert tokens.count() == 1
    assert get_refresh_token_model().objects.filter(application=agent.application).count() == 1
    assert get_id_token_model().objects.filter(application=agent.application).count() == 1
    approval_request.refresh_from_db()
    assert approval_request.status == Status.CONSUMED
    assert approval_request.access_token_id == tokens.get().pk
    assert approval_request.events.filter(kind=Kind.CONSUMED).count() == 1


def test_approve_racing_deny_has_exactly_one_winner(approver, make_agent):
    agent = make_agent()
    for _ in range(ITERATIONS):
        approval_request = new_request(approver, agent.application)

        def decide(approve: bool, pk=approval_request.pk) -> bool:
            return services.approval_request_decide(approval_request_id=pk, user=approver.user, approve=approve)

        approved, denied = run_together(lambda: decide(True), lambda: decide(False))

        assert approved != denied, "exactly one decision wins"
        approval_request.refresh_from_db()
        winner = Status.APPROVED if approved else Status.DENIED
        assert approval_request.status == winner
        assert decision_events(approval_request) == [Kind.APPROVED if approved else Kind.DENIED]
        assert approval_request.decided_at is not None


def test_decide_racing_cancel_has_exactly_one_winner(approver, make_agent):
    agent = make_agent()
    admin = factories.make_approver("root").user
    for i in range(ITERATIONS):
        approval_request = new_request(approver, agent.application)
        approve = i % 2 == 0

        def decide(pk=approval_request.pk, approve=approve) -> bool:
            return services.approval_request_decide(approval_request_id=pk, user=approver.user, approve=approve)

        def cancel(pk=approval_request.pk) -> bool:
            return services.approval_request_cancel(approval_request_id=pk, actor=admin)

        decided, cancelled = run_together(decide, cancel)

        assert decided != cancelled, "exactly one transition wins"
        approval_request.refresh_from_db()
        decision = Kind.APPROVED if approve else Kind.DENIED
        if decided:
            assert approval_request.status == (Status.APPROVED if approve else Status.DENIED)
            assert decision_events(approval_request) == [decision]
        else:
            assert approval_request.status == Status.CANCELLED
            assert decision_events(approval_request) == [Kind.CANCELLED]
            assert approval_request.events.get(kind=Kind.CANCELLED).actor == admin


def test_expire_due_racing_consume_expires_only_what_is_still_expirable(approver, make_agent):
    agent = make_agent()
    # Bystanders the sweeper must leave alone: not yet due, and already redeemed.
    not_due = new_request(approver, agent.application)
    redeemed = new_request(approver, agent.application)
    services.approval_request_decide(approval_request_id=redeemed.pk, user=approver.user, approve=True)
    assert services.approval_request_consume(approval_request_id=redeemed.pk)

    consumed_count = expired_count = 0
    for i in range(ITERATIONS):
        approval_request = new_request(approver, agent.application)
        assert services.approval_request_decide(
            approval_request_id=approval_request.pk, user=approver.user, approve=True
        )
        # The request expires at `deadline`: a redemption that started just before it races the sweeper that runs
        # just after it. Both are entitled to try; only one may succeed.
        deadline = timezone.now() + timedelta(seconds=1)
        ApprovalRequest.objects.filter(pk=approval_request.pk).update(expires_at=deadline)
        redemption_time = deadline - timedelta(milliseconds=500)
        sweep_time = deadline + timedelta(milliseconds=500)

        # The redemption's head start varies (none, or a few milliseconds' delay), so that both orders and the
        # overlap in between occur: the sweeper's select-then-lock is slower than the single UPDATE.
        delay = (0, 0.002, 0.005, 0.01, 0.02)[i % 5]

        def consume(pk=approval_request.pk, now=redemption_time, delay=delay) -> bool:
            time.sleep(delay)
            return services.approval_request_consume(approval_request_id=pk, now=now)

        def sweep(now=sweep_time) -> int:
            return services.approval_request_expire_due(now=now)

        consumed, expired = run_together(consume, sweep)

        approval_request.refresh_from_db()
        if consumed:
            assert expired == 0
            assert approval_request.status == Status.CONSUMED
            assert decision_events(approval_request) == [Kind.APPROVED, Kind.CONSUMED]
            consumed_count += 1
        else:
            assert expired == 1
            assert approval_request.status == Status.EXPIRED
            assert decision_events(approval_request) == [Kind.APPROVED, Kind.EXPIRED]
            expired_count += 1

    assert consumed_count + expired_count == ITERATIONS
    not_due.refresh_from_db()
    redeemed.refresh_from_db()
    assert not_due.status == Status.PENDING
    assert redeemed.status == Status.CONSUMED
    assert not not_due.events.filter(kind=Kind.EXPIRED).exists()
    assert not redeemed.events.filter(kind=Kind.EXPIRED).exists()
