"""Web Push prompts (RFC 8030, RFC 8291 aes128gcm, RFC 8292 VAPID) with pywebpush, to every active subscription.

Settings: APPROVALS["WEBPUSH"] (VAPID_PRIVATE_KEY as the raw base64url key, VAPID_PUBLIC_KEY, VAPID_SUBJECT,
ALLOWED_SERVICES). Subscriptions are only stored for allowed push services (approvals.prompts), and no redirect is
followed, so a subscription cannot aim the workers at the private network.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, ClassVar

import requests
from django.utils import timezone
from py_vapid import Vapid, VapidException
from pywebpush import WebPushException, webpush

from ..conf import approvals_settings
from ..models import PushSubscription
from .base import Channel, ChannelError, Destination, Prompt

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

# RFC 8030 §5: the push service answers 404/410 for a subscription that has expired or was unsubscribed; 403 means
# it was made for another application server key, 400 that it is malformed. None of them can ever succeed.
DESTINATION_GONE_STATUSES = frozenset({400, 403, 404, 410})


@lru_cache(maxsize=4)
def _vapid(private_key: str) -> Vapid:
    return Vapid.from_string(private_key=private_key)


@lru_cache(maxsize=1)
def _session() -> requests.Session:
    session = requests.Session()
    session.max_redirects = 0  # a redirect raises instead of being followed
    return session


def push_payload(prompt: Prompt) -> dict[str, str]:
    """What the service worker shows: a title, a short body and the link to open (never the auth_req_id)."""
    body = prompt.agent_name
    if prompt.binding_message:
        body = f"{prompt.agent_name}: {prompt.binding_message}"
    return {"title": "Approval requested", "body": body, "url": prompt.link, "tag": prompt.approval_request_id}


class WebPushChannel(Channel):
    name: ClassVar[str] = "webpush"

    def destinations(self, user: AbstractBaseUser) -> list[Destination]:
        subscriptions = PushSubscription.objects.filter(approver__user=user, disabled_at__isnull=True).order_by("pk")
        return [
            Destination(key=f"webpush:{subscription.pk}", label=str(subscription), subscription_id=subscription.pk)
            for subscription in subscriptions
        ]

    def send(self, prompt: Prompt, destination: Destination, *, delivery_id: str) -> str:
        config = approvals_settings.WEBPUSH
        subscription = PushSubscription.objects.filter(pk=destination.subscription_id).first()
        if subscription is None:
            raise ChannelError("The subscription was removed.", permanent=True)
        ttl = max(int((prompt.expires_at - timezone.now()).total_seconds()), 0)
        try:
            response = webpush(
                subscription.info,
                data=json.dumps(push_payload(prompt)),
                vapid_private_key=_vapid(config["VAPID_PRIVATE_KEY"]),
                vapid_claims={"sub": config["VAPID_SUBJECT"]},  # a fresh dict: webpush() writes aud and exp into it
                ttl=ttl,
                timeout=float(approvals_settings.PROMPT_TIMEOUT_SECONDS),
                # RFC 8030 §5.3, §5.4: deliver now, and let a newer push for the same request replace this one.
                headers={"Urgency": "high", "Topic": prompt.approval_request_id.replace("-", "")},
                requests_session=_session(),
            )
        except WebPushException as exc:
            status = exc.response.status_code if exc.response is not None else None
            description = f"Push service answered HTTP {status}" if status else f"Push failed: {exc.message[:200]}"
            if status in DESTINATION_GONE_STATUSES:
                raise ChannelError(description, destination_gone=True) from exc
            if status is not None and (status == 429 or status >= 500):
                raise ChannelError(description) from exc
            raise ChannelError(description, permanent=True) from exc
        except VapidException as exc:
            # py_vapid refuses the claims (VAPID_SUBJECT) or the key: a configuration error, the same on every retry.
            raise ChannelError(f"VAPID signing failed: {exc}"[:200], permanent=True) from exc
        except requests.TooManyRedirects as exc:
            raise ChannelError("The push service redirected; redirects are not followed.", permanent=True) from exc
        except requests.RequestException as exc:  # timeouts and connection errors
            raise ChannelError(f"Push service unreachable: {type(exc).__name__}") from exc
        return response.headers.get("Location", "")[:255] if isinstance(response, requests.Response) else ""

    def disable(self, destination: Destination, *, reason: str, now: datetime) -> None:
        PushSubscription.objects.filter(pk=destination.subscription_id, disabled_at__isnull=True).update(
            disabled_at=now, disabled_reason=reason[:255]
        )

    def succeeded(self, destination: Destination, *, now: datetime) -> None:
        PushSubscription.objects.filter(pk=destination.subscription_id).update(last_success_at=now)
