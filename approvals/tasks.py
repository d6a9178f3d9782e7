"""Thin Celery tasks: they take ids, call a service, and own retries (acks_late is on for all, in settings)."""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

from celery import Task, shared_task
from django.db import transaction

from approvals import prompts, services

logger = logging.getLogger(__name__)


@shared_task(bind=True, ignore_result=True, max_retries=12)
def prompt_approver_task(self: Task[Any, Any], approval_request_id: str) -> None:
    outcome = prompts.approval_request_prompt(approval_request_id=approval_request_id, attempt=self.request.retries + 1)
    if outcome.retry_in is None:
        return
    if self.request.is_eager:
        # No broker to hold a countdown: Celery would re-run the task at once (or raise Retry into the caller when
        # eager exceptions propagate, which the sweeper would take for a broker outage). prompt_due_at is set, so
        # the sweeper's next run retries instead.
        return
    # Should this retry be lost (broker down), prompt_due_at lets the sweeper enqueue the request again.
    raise self.retry(countdown=outcome.retry_in)


@shared_task(ignore_result=True)
def sweep_unprompted_task() -> int:
    return prompts.approval_request_sweep_unprompted(enqueue=prompt_approver_task.delay)


@shared_task(ignore_result=True)
def expire_due_task() -> int:
    return services.approval_request_expire_due()


def prompt_new_request(*, approval_request_id: UUID | str, previous: str | None, **kwargs: Any) -> None:
    """approval_request_changed receiver: a new request is prompted once it has committed."""
    if previous is None:
        transaction.on_commit(lambda: enqueue_prompt(approval_request_id))


def enqueue_prompt(approval_request_id: UUID | str) -> None:
    try:
        prompt_approver_task.delay(str(approval_request_id))
    except Exception:
        # The request is stored and the agent has its auth_req_id; a broker outage must not turn into an error
        # for the agent. The prompt sweeper retries requests that were never prompted.
        logger.exception("Could not enqueue the prompt for approval request %s", approval_request_id)
