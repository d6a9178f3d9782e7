"""Approvers' devices: Web Push subscriptions and Twilio's delivery reports for SMS prompts."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

from django.core.exceptions import ValidationError
from django.utils import timezone

from .channels.twilio_sms import UNDELIVERABLE_CALLBACK_CODES
from .conf import approvals_settings
from .models import Approver, Delivery, PushSubscription

logger = logging.getLogger(__name__)

# RFC 4648 §5 (what PushSubscription.toJSON() produces), padding optional. base64.urlsafe_b64decode alone would
# also take "+" and "/" and silently drop any other character.
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")
# What no URL carries unencoded (push services hand out plain ASCII URLs): NUL among them, which PostgreSQL text
# cannot hold, so a JSON body's `\u0000` would otherwise reach the subscription's lookup as a 500.
_NOT_IN_URLS = re.compile(r"[\x00-\x20\x7f-\U0010ffff\\]")


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


def push_endpoint_problem(endpoint: str) -> str | None:
    """Why the workers must not POST to this endpoint, or None if it belongs to an allowed push service."""
    config = approvals_settings.WEBPUSH
    if _NOT_IN_URLS.search(endpoint):
        return "The endpoint must be a URL of plain ASCII, without spaces or control characters."
    parts = urlsplit(endpoint)
    host = (parts.hostname or "").lower()
    if parts.username or parts.password:
        return "The endpoint must not carry credentials."
    if parts.scheme == "http" and config["ALLOW_LOOPBACK_HTTP"]:
        try:
            if ipaddress.ip_address(host).is_loopback:
                return None
        except ValueError:
            pass
        return "Only loopback addresses may use http."
    if parts.scheme != "https":
        return "The endpoint must use https."
    for allowed in config["ALLOWED_SERVICES"]:
        allowed = allowed.lower()
        if host == allowed or (allowed.startswith(".") and host.endswith(allowed)):
            return None
    return "This push service is not allowed on this server."


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
    if not isinstance(keys, Mapping):
        raise ValidationError("keys is required.")
    p256dh = _b64url(keys.get("p256dh"), length=65, field="p256dh")  # an uncompressed P-256 point
    auth = _b64url(keys.get("auth"), length=16, field="auth")
    saved, _created = PushSubscription.objects.update_or_create(
        endpoint=endpoint,
        defaults={
            "approver": approver,
            "p256dh": p256dh,
            "auth": auth,
            "user_agent": user_agent[:512],
            "created_at": now,
            "disabled_at": None,
            "disabled_reason": "",
        },
    )
    return saved


def push_subscription_remove(*, approver: Approver, subscription_id: int) -> bool:
    deleted, _ = PushSubscription.objects.filter(pk=subscription_id, approver=approver).delete()
    return bool(deleted)


# Twilio MessageStatus values (https://www.twilio.com/docs/messaging/api/message-resource#message-status-values).
_FINAL_STATUSES = {"delivered": Delivery.Status.DELIVERED, "undelivered": Delivery.Status.UNDELIVERED}
_FINAL_STATUSES["failed"] = Delivery.Status.UNDELIVERED


def delivery_update_from_twilio(
    *, delivery_id: UUID | str, params: Mapping[str, str], now: datetime | None = None
) -> bool:
    """Apply a (signature-checked) Twilio status callback to its delivery row. Callbacks may arrive out of order:
    a final state is never replaced."""
    now = now or timezone.now()
    message_status = params.get("MessageStatus", params.get("SmsStatus", ""))[:32]
    error_code = params.get("ErrorCode", "")[:16]
    live = Delivery.objects.filter(pk=delivery_id, status__in=(Delivery.Status.SENDING, Delivery.Status.SENT))
    final = _FINAL_STATUSES.get(message_status)
    if final is None:
        return bool(live.update(provider_status=message_status, updated_at=now))
    error = f"Twilio error {error_code}" if error_code else ""
    updated = live.update(status=final, provider_status=message_status, error=error, updated_at=now)
    if updated and error_code in UNDELIVERABLE_CALLBACK_CODES:
        delivery = Delivery.objects.select_related("request__user").get(pk=delivery_id)
        number = delivery.destination.removeprefix("sms:")
        Approver.objects.filter(user=delivery.request.user, phone_number=number, phone_disabled_at__isnull=True).update(
            phone_disabled_at=now, phone_disabled_reason=f"Undeliverable (Twilio error {error_code})"
        )
    return bool(updated)
