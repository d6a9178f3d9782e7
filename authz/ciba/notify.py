"""Ping and push callbacks to agents (CIBA Core §10.2, §10.3), through the SSRF-safe helper (approvals.outbound).

When a ping or push client's request stops being pending (approved, denied, cancelled, expired), approvals' signal
(approval_request_changed) reaches authz.tasks inside the transition's transaction, and `notification_for_change`
writes a Notification; once it commits a Celery task delivers it, and the beat sweeper re-enqueues any that are due
(broker down, worker lost); claim, attempt rows, retry and sweep are approvals.delivery's. The mode and the endpoint
are those the client had registered when it made the request (stored with it), so a registration update meanwhile
cannot redirect the callback. Delivery:
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
from collections.abc import Callable, Mapping
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
from approvals.conf import approvals_settings
from approvals.delivery import ERROR_LENGTH, Outcome, Queue, finish_attempt, full_jitter
from approvals.models import ApprovalRequest
from authz.ciba import answers
from authz.conf import authz_settings
from authz.constants import CIBA_GRANT_TYPE
from authz.models import Notification, NotificationAttempt, RequestCallback

logger = logging.getLogger(__name__)

Status = ApprovalRequest.Status
NStatus = Notification.Status
AStatus = NotificationAttempt.Status

CLAIM_SECONDS = 30
# How long after a task was meant to run the sweeper concludes it was lost.
SWEEP_GRACE_SECONDS = 30

queue = Queue(Notification, claimed_until="claimed_until", due_at="due_at")


def _fernet() -> Fernet:
    key = hashlib.sha256(b"countersign.notifications" + settings.SECRET_KEY.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(key))


def notification_for_change(
    *, approval_request_id: UUID | str, status: str, previous: str | None, at: datetime, **kwargs: Any
) -> Notification | None:
    """On approval_request_changed (authz.tasks receives it): a request that stops being pending owes its ping or push
    client a callback (an approved one that expires unredeemed had its callback at approval). Returns the
    notification written, for the caller to enqueue once the transition commits."""
    if previous == Status.PENDING and status != Status.PENDING:
        return notification_create(approval_request_id=approval_request_id, outcome=status, now=at)
    return None


def notification_create(*, approval_request_id: UUID | str, outcome: str, now: datetime) -> Notification | None:
    """Inside the transition's transaction: the callback a ping or push client is owed for this outcome, or None
    when the client is owed none or already has it."""
    # The mode bound to the request when it was made, not the client's registration now.
    mode = RequestCallback.objects.filter(request__pk=approval_request_id).values_list("mode", flat=True).first()
    if mode not in Notification.Mode.values:
        return None
    deadline = now + timedelta(seconds=authz_settings.NOTIFICATION_DEADLINE_SECONDS)
    notification, created = Notification.objects.get_or_create(
        request_id=approval_request_id,
        # due_at: when the sweeper may take over, should the task enqueued at commit never run.
        defaults={
            "mode": mode,
            "outcome": outcome,
            "created_at": now,
            "deadline": deadline,
            "due_at": now + timedelta(seconds=SWEEP_GRACE_SECONDS),
        },
    )
    return notification if created else None


def _retry_delay(attempt: int) -> float:
    return full_jitter(
        attempt,
        base=float(authz_settings.NOTIFICATION_RETRY_BASE_SECONDS),
        maximum=float(authz_settings.NOTIFICATION_RETRY_MAX_SECONDS),
    )


def notification_deliver(*, notification_id: int, now: datetime | None = None) -> Outcome:
    """One delivery attempt (called by the Celery task). Only one worker at a time holds a notification."""
    now = now or timezone.now()
    # The hold outlasts the call (its timeout), so that no other worker sends the same notification meanwhile.
    claim = now + timedelta(seconds=CLAIM_SECONDS + float(approvals_settings.OUTBOUND_TIMEOUT_SECONDS))
    pending = Q(status=NStatus.PENDING)
    return queue.run(
        notification_id,
        lambda: _attempt(notification_id, now),
        now=now,
        until=claim,
        due_at=claim + timedelta(seconds=5),
        eligible=pending,
        watched=pending,
    )


def _attempt(notification_id: int, now: datetime) -> Outcome:
    notification = Notification.objects.select_related("request__callback").get(pk=notification_id)
    callback = notification.request.callback
    if now >= notification.deadline:
        _give_up(notification, "The deadline passed before the notification could be delivered.")
        return Outcome()
    try:
        payload = _payload(notification)
    except Exception as exc:
        logger.exception("Could not build the %s notification %s", notification.mode, notification.pk)
        _give_up(notification, f"Could not build the payload: {type(exc).__name__}")
        return Outcome()
    number = notification.attempts + 1
    Notification.objects.filter(pk=notification.pk).update(attempts=number)
    attempt = NotificationAttempt.objects.create(notification=notification, attempt=number, created_at=timezone.now())
    headers = {"Authorization": f"Bearer {callback.token}"}
    retry = False
    started = time.monotonic()
    try:
        response = outbound.post_json(callback.endpoint, payload, headers=headers)
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
            return Outcome(delivered=True)
        retry = response.status == 429 or response.status >= 500
        error = f"HTTP {response.status}" + (" (redirects are not followed)" if 300 <= response.status < 400 else "")
        status = AStatus.FAILED if retry else AStatus.REJECTED
        _finish_attempt(attempt, status, http_status=response.status, latency=response.elapsed_ms, error=error)
    if retry:
        delay = _retry_delay(number)
        scheduled = queue.retry(
            notification.pk,
            delay=delay,
            now=now,
            deadline=notification.deadline,
            grace=SWEEP_GRACE_SECONDS,
            error=error[:ERROR_LENGTH],
        )
        if scheduled:
            return Outcome(retry_in=delay)
    _give_up(notification, error)
    return Outcome()


def _finish_attempt(
    attempt: NotificationAttempt,
    status: str,
    *,
    http_status: int | None = None,
    latency: int | None = None,
    error: str = "",
) -> None:
    rows = NotificationAttempt.objects.filter(pk=attempt.pk)
    finish_attempt(rows, status, error=error, http_status=http_status, latency_ms=latency)


def _give_up(notification: Notification, error: str) -> None:
    # Never sent again: the token response of a push is not kept either.
    Notification.objects.filter(pk=notification.pk, status=NStatus.PENDING).update(
        status=NStatus.UNDELIVERABLE, error=error[:ERROR_LENGTH], finished_at=timezone.now(), payload_encrypted=""
    )
    logger.warning("Client notification %s is undeliverable: %s", notification.pk, error)


def _payload(notification: Notification) -> Mapping[str, object]:
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
        token_response: dict[str, object] = json.loads(_fernet().decrypt(notification.payload_encrypted.encode()))
    except InvalidToken as exc:  # SECRET_KEY rotated since the tokens were issued
        raise ValueError("The stored token response cannot be decrypted.") from exc
    return token_response


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


def notification_sweep_due(*, enqueue: Callable[[int], object], now: datetime | None = None, limit: int = 500) -> int:
    """Enqueue, through `enqueue` (the notify task's delay), pending notifications whose delivery is overdue (run by
    Celery beat)."""
    now = now or timezone.now()
    return queue.sweep(
        due=Q(status=NStatus.PENDING),  # along authz_notify_due_idx
        now=now,
        next_due_at=now + timedelta(seconds=SWEEP_GRACE_SECONDS),
        enqueue=enqueue,
        limit=limit,
        what="notifications",
    )


class PushTokenError(Exception):
    pass


def issue_push_tokens(approval_request: ApprovalRequest) -> dict[str, Any]:
    server = get_oauthlib_core().server
    issuer = oauth2_settings.OIDC_ISS_ENDPOINT or settings.PUBLIC_URL
    body = urlencode({"grant_type": CIBA_GRANT_TYPE, "auth_req_id": approval_request.auth_req_id})
    request = Request(
        f"{issuer}/oauth/token/", http_method="POST", body=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    # Ours, not body parameters: the validator reads them with vars() (CountersignValidator.authenticate_client).
    vars(request)["countersign_push"] = approval_request.client
    # No HTTP request to derive the issuer from (DOT would build one from the missing Host header): the ID token
    # names the configured public issuer (CountersignValidator.get_oidc_issuer_endpoint).
    vars(request)["countersign_issuer"] = issuer
    request.client = approval_request.client
    request.client_id = approval_request.client.client_id
    request.grant_type = CIBA_GRANT_TYPE
    vars(request)["auth_req_id"] = approval_request.auth_req_id  # CIBA's; oauthlib's Request declares no such attribute
    _headers, response_body, status = server.ciba_grant.create_token_response(request, server.default_token_type)
    token = json.loads(response_body)
    if status != 200:
        raise PushTokenError(f"{token.get('error')}: {token.get('error_description', '')}")
    return {"auth_req_id": approval_request.auth_req_id, **token}
