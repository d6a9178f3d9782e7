"""Thin Celery tasks of the OAuth side: they take ids, call a service, and own retries (acks_late is on for all)."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from celery import Task, shared_task
from django.db import transaction

from authz.ciba import notify, poll
from authz.review import overview as review_overview

logger = logging.getLogger(__name__)


@shared_task(bind=True, ignore_result=True, max_retries=30)
def notify_client_task(self: Task[Any, Any], notification_id: int) -> None:
    outcome = notify.notification_deliver(notification_id=notification_id)
    if outcome.retry_in is None or self.request.is_eager:
        return  # eager (no broker): the notification stays due and the sweeper retries it
    raise self.retry(countdown=outcome.retry_in)


@shared_task(ignore_result=True)
def sweep_notifications_task() -> int:
    return notify.notification_sweep_due(enqueue=notify_client_task.delay)


@shared_task(ignore_result=True)
def resettle_mirror_task() -> int:
    return poll.resettle_decided()


@shared_task(ignore_result=True)
def warm_review_overview_task() -> None:
    # The admin's overview (issue 18) reads settled hours from the cache: filled here, its page stays fast.
    review_overview.overview()


def notify_client_on_change(**change: Any) -> None:
    """approval_request_changed receiver: the callback a ping or push client is owed is written in the transition's
    transaction, and its task enqueued once that commits."""
    notification = notify.notification_for_change(**change)
    if notification is not None:
        transaction.on_commit(partial(enqueue_notification, notification.pk))


def enqueue_notification(notification_id: int) -> None:
    try:
        notify_client_task.delay(notification_id)
    except Exception:
        # The row is committed; the sweeper delivers it once the broker is back.
        logger.exception("Could not enqueue client notification %s", notification_id)
