"""Ping and push callbacks to agents (CIBA Core §10.2, §10.3), through the SSRF-safe helper (approvals.outbound).

When a ping or push client's request stops being pending (approved, denied, cancelled, expired), approvals' signal
(approval_request_changed) reaches `on_approval_request_changed` inside the transition's transaction, which writes a
Notification; once it commits a Celery task delivers it, and the beat sweeper re-enqueues any that are due (broker
down, worker lost). The mode and the endpoint are those the client had registered when it made the request
(stored with it), so a registration update meanwhile cannot redirect the callback. Delivery:
- ping: `{"auth_req_id": …}` and nothing else; the client then redeems it at the token endpoint (or gets the error);
- push: on approval the token response itself, with the ID token's auth_req_id claim, at_hash and rt_hash (issued
  once, encrypted at rest, resent unchanged on retries, dropped once delivered or given up); otherwise the error
  (authz.ciba.answers: access_denied, expired_token) with the auth_req_id.
Both carry `Authorization: Bearer <client_notification_token>`. Any 2xx is delivered. 5xx, 429, timeouts and
connection errors retry with backoff and jitter until the deadline; 4xx (401 and 403 included) and redirects (never
followed) are recorded and not retried. A notification that cannot be delivered is kept (without tokens) and marked
undeliverable.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from oauth2_provider.oauth2_backends import get_oauthlib_core
from oauth2_provider.settings import oauth2_settings
from oauthlib.common import Request

from approvals import outbound
from approvals.backoff import full_jitter
from approvals.conf import approvals_settings
from approvals.models import ApprovalRequest
from authz.ciba import answers
from authz.models import Notification, NotificationAttempt

logger = logging.getLogger(__name__)

Status = ApprovalRequest.Status
NStatus = Notification.Status
AStatus = NotificationAttempt.Status

CLAIM_SECONDS = 30


@dataclass(frozen=True)
class DeliveryOutcome:
    delivered: bool = False
    retry_in: float | None = None


def _fernet() -> Fernet:
    key = hashlib.sha256(b"countersign.notifications" + settings.SECRET_KEY.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(key))


def on_approval_request_changed(
    *, approval_request_id: UUID | str, status: str, previous: str | None, at: datetime, **kwargs: Any
) -> None:
    """approval_request_changed receiver: a request that stops being pending owes its ping or push client a
    callback (an approved one that expires unredeemed had its callback at approval)."""
    if previous == Status.PENDING and status != Status.PENDING:
        notification_create(approval_request_id=approval_request_id, outcome=status, now=at)


def notification_create(*, approval_request_id: UUID | str, outcome: str, now: datetime) -> Notification | None:
    """Inside the transition's transaction: the callback a ping or push client is owed for this outcome."""
    # The mode bound to the request when it was made, not the client's registration now.
    row = ApprovalRequest.objects.filter(pk=approval_request_id).values("notification_mode").first()
    mode = row and row["notification_mode"]
    if mode not in Notification.Mode.values:
        return None
    deadline = now + timedelta(seconds=approvals_settings.NOTIFICATION_DEADLINE_SECONDS)
    notification, created = Notification.objects.get_or_create(
        request_id=approval_request_id,
        # due_at: when the sweeper may take over, should the task enqueued at commit never run.
        defaults={
            "mode": mode,
            "outcome": outcome,
            "created_at": now,
            "deadline": deadline,
            "due_at": now + timedelta(seconds=30),
        },
    )
    if created:
        transaction.on_commit(lambda: _enqueue(notification.pk))
    return notification


def _enqueue(notification_id: int) -> None:
    from authz.tasks import notify_client_task

    try:
        notify_client_task.delay(notification_id)
    except Exception:
        # The row is committed; the sweeper delivers it once the broker is back.
        logger.exception("Could not enqueue client notification %s", notification_id)


def _retry_delay(attempt: int) -> float:
    return full_jitter(
        attempt,
        base=float(approvals_settings.NOTIFICATION_RETRY_BASE_SECONDS),
        maximum=float(approvals_settings.NOTIFICATION_RETRY_MAX_SECONDS),
    )


def notification_deliver(*, notification_id: int, now: datetime | None = None) -> DeliveryOutcome:
    """One delivery attempt (called by the Celery task). Only one worker at a time holds a notification."""
    now = now or timezone.now()
    # The hold outlasts the call (its timeout), so that no other worker sends the same notification meanwhile.
    claim = now + timedelta(seconds=CLAIM_SECONDS + float(approvals_settings.OUTBOUND_TIMEOUT_SECONDS))
    claimed = (
        Notification.objects.filter(pk=notification_id, status=NStatus.PENDING)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lte=now))
        .update(claimed_until=claim, due_at=claim + timedelta(seconds=5))
    )
    if not claimed:
        held = Notification.objects.filter(pk=notification_id, status=NStatus.PENDING).values("claimed_until").first()
        if held and held["claimed_until"] and held["claimed_until"] > now:
            return DeliveryOutcome(retry_in=(held["claimed_until"] - now).total_seconds() + 1)
        return DeliveryOutcome()
    try:
        return _attempt(notification_id, now)
    finally:
        Notification.objects.filter(pk=notification_id, claimed_until=claim).update(claimed_until=None)


def _attempt(notification_id: int, now: datetime) -> DeliveryOutcome:
    notification = Notification.objects.select_related("request").get(pk=notification_id)
    approval_request = notification.request
    if now >= notification.deadline:
        _give_up(notification, "The deadline passed before the notification could be delivered.")
        return DeliveryOutcome()
    try:
        payload = _payload(notification)
    except Exception as exc:
        logger.exception("Could not build the %s notification %s", notification.mode, notification.pk)
        _give_up(notification, f"Could not build the payload: {type(exc).__name__}")
        return DeliveryOutcome()
    number = notification.attempts + 1
    Notification.objects.filter(pk=notification.pk).update(attempts=number)
    attempt = NotificationAttempt.objects.create(notification=notification, attempt=number, created_at=timezone.now())
    headers = {"Authorization": f"Bearer {approval_request.client_notification_token}"}
    retry = False
    started = time.monotonic()
    try:
        response = outbound.post_json(approval_request.notification_endpoint, payload, headers=headers)
    except outbound.OutboundError as exc:
        retry = not exc.refused
        error = str(exc)
        latency = None if exc.refused else int((time.monotonic() - started) * 1000)  # refused: nothing was sent
        _finish_attempt(attempt, AStatus.FAILED if retry else AStatus.REJECTED, latency=latency, error=error)
    else:
        if 200 <= response.status < 300:
            _finish_attempt(attempt, AStatus.DELIVERED, http_status=response.status, latency=response.elapsed_ms)
            finished = timezone.now()
            # Delivered: the token response is the client's now, and no longer kept here.
            Notification.objects.filter(pk=notification.pk).update(
                status=NStatus.DELIVERED, finished_at=finished, error="", payload_encrypted=""
            )
            return DeliveryOutcome(delivered=True)
        retry = response.status == 429 or response.status >= 500
        error = f"HTTP {response.status}" + (" (redirects are not followed)" if 300 <= response.status < 400 else "")
        status = AStatus.FAILED if retry else AStatus.REJECTED
        _finish_attempt(attempt, status, http_status=response.status, latency=response.elapsed_ms, error=error)
    if retry:
        delay = _retry_delay(number)
        if now + timedelta(seconds=delay) < notification.deadline:
            Notification.objects.filter(pk=notification.pk).update(
                error=error[:500], due_at=now + timedelta(seconds=delay + 30)
            )
            return DeliveryOutcome(retry_in=delay)
    _give_up(notification, error)
    return DeliveryOutcome()


def _finish_attempt(
    attempt: NotificationAttempt,
    status: str,
    *,
    http_status: int | None = None,
    latency: int | None = None,
    error: str = "",
) -> None:
    NotificationAttempt.objects.filter(pk=attempt.pk).update(
        status=status, http_status=http_status, latency_ms=latency, error=error[:500], finished_at=timezone.now()
    )


def _give_up(notification: Notification, error: str) -> None:
    # Never sent again: the token response of a push is not kept either.
    Notification.objects.filter(pk=notification.pk, status=NStatus.PENDING).update(
        status=NStatus.UNDELIVERABLE, error=error[:500], finished_at=timezone.now(), payload_encrypted=""
    )
    logger.warning("Client notification %s is undeliverable: %s", notification.pk, error)


def _payload(notification: Notification) -> dict[str, object]:
    approval_request = notification.request
    auth_req_id = approval_request.auth_req_id
    if notification.mode == Notification.Mode.PING:
        return {"auth_req_id": auth_req_id}  # CIBA Core §10.2: nothing else
    answer = answers.answer_for(notification.outcome)
    if answer is not None:
        return answer.payload(auth_req_id)
    if not notification.payload_encrypted:
        try:
            _issue_push_tokens(notification)
        except Exception:
            # Approved, but it expired before the tokens could be issued (the delivery was late, e.g. the broker
            # was down): the client is owed the expiry (CIBA Core §10.3.1), not silence.
            approval_request.refresh_from_db(fields=["status", "expires_at"])
            if approval_request.effective_status() == Status.EXPIRED:
                return answers.EXPIRED.payload(auth_req_id)
            raise
        notification.refresh_from_db(fields=["payload_encrypted"])
    try:
        return json.loads(_fernet().decrypt(notification.payload_encrypted.encode()))
    except InvalidToken as exc:  # SECRET_KEY rotated since the tokens were issued
        raise ValueError("The stored token response cannot be decrypted.") from exc


def _issue_push_tokens(notification: Notification) -> None:
    """Issue the tokens once: consuming the request and storing the encrypted response share one transaction, so a
    retry (or a worker that dies after it) resends the same tokens instead of issuing new ones."""
    with transaction.atomic():
        locked = Notification.objects.select_for_update().get(pk=notification.pk)
        if locked.payload_encrypted:
            return
        token_response = issue_push_tokens(locked.request)
        locked.payload_encrypted = _fernet().encrypt(json.dumps(token_response).encode()).decode()
        locked.save(update_fields=["payload_encrypted"])


def notification_sweep_due(*, now: datetime | None = None, limit: int = 500) -> int:
    """Enqueue pending notifications whose delivery is overdue (run by Celery beat)."""
    from authz.tasks import notify_client_task

    now = now or timezone.now()
    due = list(
        Notification.objects.filter(status=NStatus.PENDING, due_at__lte=now)
        .order_by("due_at")
        .values_list("pk", flat=True)[:limit]
    )
    enqueued = 0
    for pk in due:
        if not Notification.objects.filter(pk=pk, due_at__lte=now).update(due_at=now + timedelta(seconds=30)):
            continue
        try:
            notify_client_task.delay(pk)
        except Exception:
            logger.exception("The broker is still unavailable; notifications stay due")
            break
        enqueued += 1
    return enqueued


class PushTokenError(Exception):
    pass


def issue_push_tokens(approval_request: ApprovalRequest) -> dict[str, Any]:
    server = get_oauthlib_core().server
    issuer = oauth2_settings.OIDC_ISS_ENDPOINT or settings.PUBLIC_URL
    body = urlencode({"grant_type": settings.CIBA_GRANT_TYPE, "auth_req_id": approval_request.auth_req_id})
    request = Request(
        f"{issuer}/oauth/token/", http_method="POST", body=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    request.countersign_push = approval_request.client
    # No HTTP request to derive the issuer from (DOT would build one from the missing Host header): the ID token
    # names the configured public issuer (CountersignValidator.get_oidc_issuer_endpoint).
    request.countersign_issuer = issuer
    request.client = approval_request.client
    request.client_id = approval_request.client.client_id
    request.grant_type = settings.CIBA_GRANT_TYPE
    request.auth_req_id = approval_request.auth_req_id
    _headers, response_body, status = server.ciba_grant.create_token_response(request, server.default_token_type)
    token = json.loads(response_body)
    if status != 200:
        raise PushTokenError(f"{token.get('error')}: {token.get('error_description', '')}")
    return {"auth_req_id": approval_request.auth_req_id, **token}
