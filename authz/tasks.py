"""Thin Celery tasks of the OAuth side: they take ids, call a service, and own retries (acks_late is on for all)."""

from __future__ import annotations

from celery import Task, shared_task

from authz.ciba import notify, poll


@shared_task(bind=True, ignore_result=True, max_retries=30)
def notify_client_task(self: Task, notification_id: int) -> None:
    outcome = notify.notification_deliver(notification_id=notification_id)
    if outcome.retry_in is None or self.request.is_eager:
        return  # eager (no broker): the notification stays due and the sweeper retries it
    raise self.retry(countdown=outcome.retry_in)


@shared_task(ignore_result=True)
def sweep_notifications_task() -> int:
    return notify.notification_sweep_due()


@shared_task(ignore_result=True)
def resettle_mirror_task() -> int:
    return poll.resettle_decided()
