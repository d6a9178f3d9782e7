"""Web Push prompts (RFC 8030, RFC 8291 aes128gcm, RFC 8292 VAPID) with pywebpush, to every active subscription.

Settings: APPROVALS["WEBPUSH"] (VAPID_PRIVATE_KEY as the raw base64url key, VAPID_PUBLIC_KEY, VAPID_SUBJECT,
ALLOWED_SERVICES). `push_endpoint_problem` decides which endpoints the workers may POST to (a listed push service on
443), at enrolment (approvals.devices) and again before every send. pywebpush encrypts the payload; the POST goes
through approvals.outbound, the SSRF-safe helper: it parses the URL as the check did, connects only to public addresses,
follows no redirect, and gives the whole call one deadline and a cap on the answer's size.
"""

from __future__ import annotations

import ipaddress
import json
import re
import time
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, ClassVar, cast
from urllib.parse import urlsplit, urlunsplit

from django.db.models import F
from django.utils import timezone
from py_vapid import Vapid, VapidException
from pywebpush import WebPusher, WebPushException

from approvals import outbound
from approvals.channels.base import Channel, ChannelError, Destination, Prompt
from approvals.conf import approvals_settings
from approvals.models import PushSubscription

if TYPE_CHECKING:
    from django.contrib.auth.models import User

# RFC 8030 §5: the push service answers 404/410 for a subscription that has expired or was unsubscribed; 403 means
# it was made for another application server key, 400 that it is malformed. None of them can ever succeed.
DESTINATION_GONE_STATUSES = frozenset({400, 403, 404, 410})
# The cost of one person's Web Push devices to the workers (docs/approvers.md, "Web Push"): at most this many
# subscriptions per person, each send under one deadline (PROMPT_TIMEOUT_SECONDS) and a cap on the answer's size, and
# one prompt round spends at most ROUND_BUDGET_FACTOR deadlines on all of one person's subscriptions together.
MAX_SUBSCRIPTIONS_PER_APPROVER = 10
ROUND_BUDGET_FACTOR = 2
# Push services answer 201 with an empty body, or an error with a short JSON one.
MAX_RESPONSE_BYTES = 16 * 1024


@lru_cache(maxsize=4)
def _vapid(private_key: str) -> Vapid:
    return Vapid.from_string(private_key=private_key)


# host[:port], as push services write them: nothing that parsers could read differently.
_PLAIN_AUTHORITY = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
# What a VAPID token may live (RFC 8292 section 2: no more than 24 hours); pywebpush's own default.
_VAPID_LIFETIME_SECONDS = 12 * 60 * 60


def push_endpoint_problem(endpoint: str) -> str | None:
    """Why the workers must not POST to this endpoint, or None if it is an allowed push service on 443.

    The URL is parsed by approvals.outbound, which also sends the push: the host checked here is the host called (a
    parser that reads a backslash as the end of the host, as requests does, would call another one)."""
    config = approvals_settings.WEBPUSH
    try:
        scheme, host, port, _path = outbound.url_target(endpoint)
    except outbound.OutboundError as exc:
        return f"The endpoint is refused. {exc}"
    if not _PLAIN_AUTHORITY.fullmatch(urlsplit(endpoint).netloc):
        # urlsplit reads "fcm.googleapis.com[::1]" as the host ::1; other parsers read it otherwise or not at all.
        return "The endpoint's host must be a plain DNS name or IP address."
    host = host.lower()
    if scheme == "http":
        try:
            if config["ALLOW_LOOPBACK_HTTP"] and ipaddress.ip_address(host).is_loopback:
                return None
        except ValueError:
            pass
        return "The endpoint must use https (only loopback addresses may use http, in development)."
    if port != 443:
        return "The endpoint must use the push service's standard https port (443)."
    for allowed in config["ALLOWED_SERVICES"]:
        allowed = allowed.lower()
        if host == allowed or (allowed.startswith(".") and host.endswith(allowed)):
            return None
    return "This push service is not allowed on this server."


def canonical_endpoint(endpoint: str) -> str:
    """One spelling of an endpoint push_endpoint_problem accepted: the scheme and host in lower case and no default
    port, so that "https://FCM.googleapis.com:443/x" is the subscription "https://fcm.googleapis.com/x" holds, and
    cannot be enrolled beside it by someone who learnt it (devices.push_subscription_save)."""
    parts = urlsplit(endpoint)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    default = {"https": 443, "http": 80}[scheme]
    netloc = host if parts.port in (None, default) else f"{host}:{parts.port}"
    return urlunsplit((scheme, netloc, parts.path, parts.query, ""))


def push_payload(prompt: Prompt) -> dict[str, str]:
    """What the service worker shows: a title, a short body and the link to open (never the auth_req_id)."""
    body = prompt.agent_name
    if prompt.binding_message:
        body = f"{prompt.agent_name}: {prompt.binding_message}"
    return {"title": "Approval requested", "body": body, "url": prompt.link, "tag": prompt.approval_request_id}


def _subscription_pk(destination: Destination) -> int:
    # Every destination of this channel names its subscription (WebPushChannel.destinations).
    return cast(int, destination.subscription_id)


class WebPushChannel(Channel):
    """One instance per prompt round (approvals.prompts): the round's time budget for one person starts at its first
    send, so that however many subscriptions the person has, or however slowly their push services answer, one prompt
    holds a worker for at most ROUND_BUDGET_FACTOR x PROMPT_TIMEOUT_SECONDS on them."""

    name: ClassVar[str] = "webpush"

    def __init__(self) -> None:
        self._round_ends: float | None = None

    def destinations(self, user: User) -> list[Destination]:
        # Devices that worked most recently first: they get the prompt before dead ones can spend the budget.
        subscriptions = PushSubscription.objects.filter(approver__user=user, disabled_at__isnull=True).order_by(
            F("last_success_at").desc(nulls_last=True), "pk"
        )[:MAX_SUBSCRIPTIONS_PER_APPROVER]
        return [
            Destination(key=f"webpush:{subscription.pk}", label=str(subscription), subscription_id=subscription.pk)
            for subscription in subscriptions
        ]

    def send(self, prompt: Prompt, destination: Destination, *, delivery_id: str) -> str:
        config = approvals_settings.WEBPUSH
        subscription = PushSubscription.objects.filter(pk=_subscription_pk(destination)).first()
        if subscription is None:
            raise ChannelError("The subscription was removed.", permanent=True)
        problem = push_endpoint_problem(subscription.endpoint)
        if problem:
            # Stored before the rules tightened, or written around them: never called, and no use trying again.
            raise ChannelError(f"Endpoint refused: {problem}", destination_gone=True)
        timeout = float(approvals_settings.PROMPT_TIMEOUT_SECONDS)
        if self._round_ends is None:
            self._round_ends = time.monotonic() + ROUND_BUDGET_FACTOR * timeout
        remaining = self._round_ends - time.monotonic()
        if remaining <= 0:
            raise ChannelError("The time budget of this prompt for this person's devices is spent.")
        ttl = max(int((prompt.expires_at - timezone.now()).total_seconds()), 0)
        parts = urlsplit(subscription.endpoint)
        claims = {
            "sub": config["VAPID_SUBJECT"],
            "aud": f"{parts.scheme}://{parts.netloc}",  # RFC 8292 section 2: the push resource's origin
            "exp": int(time.time()) + _VAPID_LIFETIME_SECONDS,
        }
        try:
            vapid_headers = _vapid(config["VAPID_PRIVATE_KEY"]).sign(claims)
            body = WebPusher(subscription.info).encode(json.dumps(push_payload(prompt)).encode(), "aes128gcm")["body"]
        except VapidException as exc:
            # py_vapid refuses the claims (VAPID_SUBJECT) or the key: a configuration error, the same on every retry.
            raise ChannelError(f"VAPID signing failed: {exc}"[:200], permanent=True) from exc
        except (WebPushException, ValueError) as exc:
            # The stored keys do not make a usable P-256 point: this subscription can never be written to.
            raise ChannelError(
                f"The subscription's keys are unusable: {type(exc).__name__}", destination_gone=True
            ) from exc
        headers = {
            **vapid_headers,
            "Content-Encoding": "aes128gcm",  # RFC 8291 section 4
            "TTL": str(ttl),
            # RFC 8030 sections 5.3, 5.4: deliver now, and let a newer push for the same request replace this one.
            "Urgency": "high",
            "Topic": prompt.approval_request_id.replace("-", ""),
        }
        try:
            response = outbound.request(
                "POST",
                subscription.endpoint,
                body=body,
                headers=headers,
                timeout=min(timeout, remaining),
                max_bytes=MAX_RESPONSE_BYTES,
            )
        except outbound.OutboundError as exc:
            # Refused: the push service's name resolves to an address we never call; retrying will not change that.
            raise ChannelError(f"Push service not called: {exc}"[:200], permanent=exc.refused) from exc
        status = response.status
        if status <= 202:
            return response.headers.get("location", "")[:255]
        if 300 <= status < 400:
            raise ChannelError("The push service redirected; redirects are not followed.", permanent=True)
        description = f"Push service answered HTTP {status}"
        if status in DESTINATION_GONE_STATUSES:
            raise ChannelError(description, destination_gone=True)
        if status == 429 or status >= 500:
            raise ChannelError(description)
        raise ChannelError(description, permanent=True)

    def disable(self, destination: Destination, *, reason: str, now: datetime) -> None:
        PushSubscription.objects.filter(pk=_subscription_pk(destination), disabled_at__isnull=True).update(
            disabled_at=now, disabled_reason=reason[:255]
        )

    def succeeded(self, destination: Destination, *, now: datetime) -> None:
        PushSubscription.objects.filter(pk=_subscription_pk(destination)).update(last_success_at=now)
