"""Prompting the approver: which channels, in what order, retries, and never twice to the same destination.

Policy: the agent's own channel order (approvals.agents) or the server's (APPROVALS["PROMPT_CHANNELS"]).
Each channel is tried on every destination it has for the person (every active push subscription); the first channel
that reaches at least one destination ends the round. When none did and some failure was transient, the Celery task
retries the round with exponential backoff and full jitter while the request is pending; a destination that already
took the prompt is skipped on retries, so a retried or redelivered task never sends a second SMS.

One worker at a time prompts a request (a conditional UPDATE claims it for PROMPT_CLAIM_SECONDS). A request whose
prompt task was never enqueued (broker down) or was lost (worker killed) is still unprompted when its prompt_due_at
passes, and the sweeper enqueues it again. Claim, retry and sweep are approvals.delivery's, shared with callbacks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from uuid import UUID

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from approvals import agents, attempts
from approvals.audit import audit
from approvals.channels.base import Channel, ChannelError, Prompt
from approvals.conf import approvals_settings
from approvals.delivery import Outcome, Queue, finish_attempt, full_jitter
from approvals.models import ApprovalRequest, AuditEvent, Delivery

logger = logging.getLogger(__name__)

Status = ApprovalRequest.Status
Kind = AuditEvent.Kind
DeliveryStatus = Delivery.Status

queue = Queue(ApprovalRequest, claimed_until="prompt_claimed_until", due_at="prompt_due_at")


def retry_delay(attempt: int) -> float:
    return full_jitter(
        attempt,
        base=float(approvals_settings.PROMPT_RETRY_BASE_SECONDS),
        maximum=float(approvals_settings.PROMPT_RETRY_MAX_SECONDS),
    )


def due_after(seconds: float, now: datetime) -> datetime:
    """When the sweeper may conclude that a prompt expected `seconds` from now was lost."""
    return now + timedelta(seconds=seconds + approvals_settings.PROMPT_SWEEP_GRACE_SECONDS)


def _waiting(now: datetime) -> Q:
    """Requests still waiting for their prompt (the condition of approvals_unprompted_idx, and not expired)."""
    return Q(status=Status.PENDING, prompted_at__isnull=True, prompt_failed_at__isnull=True, expires_at__gt=now)


def approval_request_prompt(
    *, approval_request_id: UUID | str, attempt: int = 1, now: datetime | None = None
) -> Outcome:
    """One round of prompting for a pending request (called by the Celery task)."""
    now = now or timezone.now()
    claim_seconds = approvals_settings.PROMPT_CLAIM_SECONDS
    return queue.run(
        approval_request_id,
        lambda: _prompt_round(approval_request_id, attempt=attempt, now=now),
        now=now,
        until=now + timedelta(seconds=claim_seconds),
        due_at=due_after(claim_seconds, now),
        eligible=_waiting(now),
        watched=Q(),  # held in any state: look again once that claim lapses, in case its worker died
    )


def _prompt_round(approval_request_id: UUID | str, *, attempt: int, now: datetime) -> Outcome:
    approval_request = ApprovalRequest.objects.select_related("client", "user").get(pk=approval_request_id)
    agent = agents.profile(approval_request.client)
    prompt = Prompt.for_request(approval_request, agent)
    channel_classes = approvals_settings.channels_for(list(agent.prompt_channels))
    transient: list[str] = []
    permanent: list[str] = []
    for channel_class in channel_classes:
        channel = channel_class()
        reached = _send_on_channel(channel, prompt, approval_request, attempt, transient, permanent)
        if reached:
            sent_at = timezone.now()
            with transaction.atomic():
                won = ApprovalRequest.objects.filter(pk=approval_request.pk, prompted_at__isnull=True).update(
                    prompted_at=sent_at, prompt_channel=channel.name[:32]
                )
                if won:
                    audit(approval_request.pk, Kind.PROMPTED, at=sent_at, channel=channel.name, destinations=reached)
            return Outcome(delivered=True, errors=tuple(transient + permanent))
    errors = tuple(transient + permanent) or ("No channel has a way to reach this person.",)
    if transient:
        grace = approvals_settings.PROMPT_SWEEP_GRACE_SECONDS
        delay = retry_delay(attempt)
        if queue.retry(approval_request.pk, delay=delay, now=now, deadline=approval_request.expires_at, grace=grace):
            return Outcome(retry_in=delay, errors=errors)
    failed_at = timezone.now()
    with transaction.atomic():
        won = ApprovalRequest.objects.filter(
            pk=approval_request.pk, prompted_at__isnull=True, prompt_failed_at__isnull=True
        ).update(prompt_failed_at=failed_at)
        if won:
            audit(approval_request.pk, Kind.PROMPT_FAILED, at=failed_at, errors=list(errors))
    return Outcome(errors=errors)


def _send_on_channel(
    channel: Channel,
    prompt: Prompt,
    approval_request: ApprovalRequest,
    attempt: int,
    transient: list[str],
    permanent: list[str],
) -> int:
    """Send to every destination of the channel; return how many have the prompt (now or from an earlier try)."""
    destinations = channel.destinations(approval_request.user)
    if not destinations:
        permanent.append(f"{channel.name}: no destination")
        return 0
    reached = 0
    for destination in destinations:
        done = Delivery.objects.filter(
            request=approval_request,
            destination=destination.key,
            status__in=(DeliveryStatus.SENT, DeliveryStatus.DELIVERED),
        )
        if done.exists():
            reached += 1
            continue
        started = timezone.now()
        # A row still "sending" was left by a worker that died during the call: whether it went out is unknown.
        Delivery.objects.filter(
            request=approval_request, destination=destination.key, status=DeliveryStatus.SENDING
        ).update(
            status=DeliveryStatus.INTERRUPTED,
            error="The worker stopped during the call; sent again.",
            finished_at=started,
            updated_at=started,
        )
        delivery = Delivery.objects.create(
            request=approval_request,
            channel=channel.name,
            destination=destination.key,
            subscription_id=destination.subscription_id,
            attempt=attempt,
            status=DeliveryStatus.SENDING,
            created_at=started,
            updated_at=started,
        )
        try:
            provider_id = channel.send(prompt, destination, delivery_id=str(delivery.pk))
        except ChannelError as exc:
            _finish(delivery, DeliveryStatus.REJECTED if exc.permanent else DeliveryStatus.FAILED, error=str(exc))
            if exc.destination_gone:
                channel.disable(destination, reason=str(exc), now=timezone.now())
            (permanent if exc.permanent else transient).append(f"{channel.name} {destination.label}: {exc}")
            continue
        except Exception as exc:
            # A bug or an unforeseen library error must not leave the row "sending" nor stop the other channels.
            logger.exception("Prompt channel %s failed unexpectedly", channel.name)
            _finish(delivery, DeliveryStatus.FAILED, error=f"Unexpected error: {type(exc).__name__}")
            transient.append(f"{channel.name} {destination.label}: unexpected {type(exc).__name__}")
            continue
        _finish(delivery, DeliveryStatus.SENT, provider_id=provider_id)
        channel.succeeded(destination, now=timezone.now())
        reached += 1
    return reached


def _finish(delivery: Delivery, status: str, *, error: str = "", provider_id: str = "") -> None:
    finished = timezone.now()
    sending = Delivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.SENDING)
    finish_attempt(sending, status, error=error, at=finished, provider_id=provider_id[:255], updated_at=finished)


def approval_request_sweep_unprompted(
    *, enqueue: Callable[[str], object], now: datetime | None = None, limit: int = 500
) -> int:
    """Enqueue the prompt again, through `enqueue` (the prompt task's delay), for pending requests whose prompt is
    overdue (run by Celery beat)."""
    now = now or timezone.now()
    return queue.sweep(
        due=_waiting(now),  # along approvals_unprompted_idx
        now=now,
        next_due_at=due_after(0, now),
        enqueue=lambda pk: enqueue(str(pk)),
        limit=limit,
        what="prompts",
    )


# --- abuse limit ------------------------------------------------------------------------------------------------------


def prompt_rate_exceeded(*, client_id: str, user: AbstractBaseUser, now: datetime | None = None) -> int:
    """Count a request from the client for the user; seconds to wait if over APPROVALS["PROMPTS_PER_MINUTE"] (this
    client, this person) or APPROVALS["PROMPTS_PER_PERSON_PER_MINUTE"] (all clients, this person), else 0.

    Fixed one-minute windows in the cache (Redis in production, approvals.attempts' atomic counter): cheap, shared by
    every web process, and at most twice the limit across a window's edge. The per-person count is what keeps a
    crowd of clients, each within its own limit, from bombing one person; a request refused by its client's limit
    is not counted against the person, so one noisy client cannot lock the others out.
    """
    now = now or timezone.now()
    window = int(now.timestamp()) // 60
    # The client's counter first: a request it refuses never reaches the person's (see above). Without Redis the
    # request is still validated and stored; the limit comes back with Redis.
    over = attempts.count_until_over(
        (
            (f"approvals:prompt-rate:{client_id}:{user.pk}:{window}", approvals_settings.PROMPTS_PER_MINUTE),
            (f"approvals:prompt-rate-person:{user.pk}:{window}", approvals_settings.PROMPTS_PER_PERSON_PER_MINUTE),
        ),
        timeout=120,
    )
    return 60 - int(now.timestamp()) % 60 if over else 0
