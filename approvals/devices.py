"""Approvers' devices: Web Push subscriptions and Twilio's delivery reports for SMS prompts."""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from approvals.channels.twilio_sms import UNDELIVERABLE_CALLBACK_CODES
from approvals.channels.webpush import MAX_SUBSCRIPTIONS_PER_APPROVER, canonical_endpoint, push_endpoint_problem
from approvals.models import Approver, Delivery, PushSubscription

logger = logging.getLogger(__name__)

# RFC 4648 §5 (what PushSubscription.toJSON() produces), padding optional. base64.urlsafe_b64decode alone would
# also take "+" and "/" and silently drop any other character.
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")


def _b64url(value: object, *, length: int, field: str) -> str:
    if not isinstance(value, str) or len(value) > 200:
        raise ValidationError(f"keys.{field} must be a base64url string.")
    if not _BASE64URL.fullmatch(value):
        raise ValidationError(f"keys.{field} is not valid base64url.")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValidationError(f"keys.{field} is not valid base64url.") from exc
    if len(raw) != length:
        raise ValidationError(f"keys.{field} must be {length} bytes.")
    return value


def push_subscription_save(
    *, approver: Approver, subscription: Mapping[str, Any], user_agent: str = "", now: datetime | None = None
) -> PushSubscription:
    """Store the PushSubscription JSON a browser produced (W3C Push API `PushSubscription.toJSON()`)."""
    now = now or timezone.now()
    endpoint = subscription.get("endpoint")
    keys = subscription.get("keys")
    if not isinstance(endpoint, str) or not endpoint or len(endpoint) > 2048:
        raise ValidationError("endpoint is required.")
    problem = push_endpoint_problem(endpoint)
    if problem:
        raise ValidationError(problem)
    endpoint = canonical_endpoint(endpoint)
    if not isinstance(keys, Mapping):
        raise ValidationError("keys is required.")
    p256dh = _b64url(keys.get("p256dh"), length=65, field="p256dh")  # an uncompressed P-256 point
    auth = _b64url(keys.get("auth"), length=16, field="auth")
    fields = {"p256dh": p256dh, "auth": auth, "user_agent": user_agent[:512]}
    try:
        with transaction.atomic():
            # One person's enrolments one at a time, so that two at once cannot both pass the cap.
            Approver.objects.select_for_update().filter(pk=approver.pk).exists()
            held = PushSubscription.objects.select_for_update().filter(endpoint=endpoint).first()
            if held is not None and held.approver_id != approver.pk:
                # Whoever learnt someone's endpoint must not move that person's prompts onto their own keys.
                raise ValidationError(
                    "This push subscription belongs to another account: remove it there, or unsubscribe this "
                    "browser and enrol it again."
                )
            if held is None:
                _make_room(approver)
                return PushSubscription.objects.create(approver=approver, endpoint=endpoint, created_at=now, **fields)
            # The person's own browser again (new keys after a resubscribe): refresh it and enable it again.
            PushSubscription.objects.filter(pk=held.pk).update(
                created_at=now, disabled_at=None, disabled_reason="", **fields
            )
            held.refresh_from_db()
            return held
    except IntegrityError as exc:
        # Someone else stored the same endpoint between our look-up and our insert.
        raise ValidationError("This push subscription belongs to another account.") from exc


def _make_room(approver: Approver) -> None:
    """Refuse an enrolment beyond MAX_SUBSCRIPTIONS_PER_APPROVER; subscriptions the push service already disabled
    (gone, refused) are dropped first, as they will never take a prompt again."""
    if PushSubscription.objects.filter(approver=approver).count() < MAX_SUBSCRIPTIONS_PER_APPROVER:
        return
    PushSubscription.objects.filter(approver=approver, disabled_at__isnull=False).delete()
    if PushSubscription.objects.filter(approver=approver).count() >= MAX_SUBSCRIPTIONS_PER_APPROVER:
        raise ValidationError(
            f"You can have at most {MAX_SUBSCRIPTIONS_PER_APPROVER} push subscriptions. "
            "Remove one you no longer use, then enrol this device again."
        )


def push_subscription_remove(*, approver: Approver, subscription_id: int) -> bool:
    deleted, _ = PushSubscription.objects.filter(pk=subscription_id, approver=approver).delete()
    return bool(deleted)


# Twilio MessageStatus values (https://www.twilio.com/docs/messaging/api/message-resource#message-status-values).
_FINAL_STATUSES = {"delivered": Delivery.Status.DELIVERED, "undelivered": Delivery.Status.UNDELIVERED}
_FINAL_STATUSES["failed"] = Delivery.Status.UNDELIVERED
# The order in which a message moves through them (final ones last): a report may only move a delivery forward.
_STATUS_ORDER = {"accepted": 1, "scheduled": 2, "queued": 3, "sending": 4, "sent": 5}


def delivery_update_from_twilio(
    *, delivery_id: UUID | str, params: Mapping[str, str], now: datetime | None = None
) -> bool:
    """Apply a (signature-checked) Twilio status callback to its delivery row. Callbacks may arrive out of order,
    and a signed one can be replayed: a report only ever moves a delivery forward (a final state is never replaced,
    an intermediate one only by a later one), so an old or repeated report changes nothing. The caller answers 2xx
    either way, as Twilio expects."""
    now = now or timezone.now()
    message_status = params.get("MessageStatus", params.get("SmsStatus", ""))[:32]
    error_code = params.get("ErrorCode", "")[:16]
    live = Delivery.objects.filter(pk=delivery_id, status__in=(Delivery.Status.SENDING, Delivery.Status.SENT))
    final = _FINAL_STATUSES.get(message_status)
    if final is None:
        # In one UPDATE, so two reports racing each other cannot both apply out of order. A status Twilio adds
        # later ranks lowest: it is recorded over nothing but itself and unknown ones.
        rank = _STATUS_ORDER.get(message_status, 0)
        not_later = {status for status, order in _STATUS_ORDER.items() if order >= rank} | {message_status}
        moving_forward = live.exclude(provider_status__in=not_later)
        return bool(moving_forward.update(provider_status=message_status, updated_at=now))
    error = f"Twilio error {error_code}" if error_code else ""
    updated = live.update(status=final, provider_status=message_status, error=error, updated_at=now)
    if updated and error_code in UNDELIVERABLE_CALLBACK_CODES:
        delivery = Delivery.objects.select_related("request__user").get(pk=delivery_id)
        number = delivery.destination.removeprefix("sms:")
        Approver.objects.filter(user=delivery.request.user, phone_number=number, phone_disabled_at__isnull=True).update(
            phone_disabled_at=now, phone_disabled_reason=f"Undeliverable (Twilio error {error_code})"
        )
    return bool(updated)
