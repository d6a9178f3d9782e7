"""Thin Celery tasks: they take ids, call a service, and own retries (acks_late is on for all, in settings)."""

from __future__ import annotations

from celery import Task, shared_task

from . import notifications, prompts, services


@shared_task(bind=True, ignore_result=True, max_retries=12)
def prompt_approver_task(self: Task, approval_request_id: str) -> None:
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
    return prompts.approval_request_sweep_unprompted()


@shared_task(ignore_result=True)
def expire_due_task() -> int:
    return services.approval_request_expire_due()


@shared_task(ignore_result=True)
def resettle_mirror_task() -> int:
    return services.approval_request_resettle_mirror()


@shared_task(bind=True, ignore_result=True, max_retries=30)
def notify_client_task(self: Task, notification_id: int) -> None:
    outcome = notifications.notification_deliver(notification_id=notification_id)
    if outcome.retry_in is None or self.request.is_eager:
        return  # eager (no broker): the notification stays due and the sweeper retries it
    raise self.retry(countdown=outcome.retry_in)


@shared_task(ignore_result=True)
def sweep_notifications_task() -> int:
    return notifications.notification_sweep_due()
