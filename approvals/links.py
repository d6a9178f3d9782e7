"""The link in a prompt, and how strongly the approver has authenticated (acr).

A link is `/approvals/l/<token>/`: the request's id and a MAC over (id, approver) keyed from SECRET_KEY, 44
characters so an SMS keeps to one segment. It is unguessable, bound to one request and one person, useless once the
request expires, and signs the person in at most once (ApprovalRequest.link_used_at); after that the page needs their
session. Nothing about it is stored but the time it was used.

Two authentication levels, advertised in discovery's acr_values_supported (OpenID Connect Core §2, acr):
- ACR_SESSION: signed in, by password or by a prompt's link (which only the person's own phone received);
- ACR_FRESH_PASSWORD: the password typed within APPROVALS["FRESH_PASSWORD_SECONDS"].
A request's acr_values name the levels the agent accepts; approving needs at least the lowest of those we know.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase
from django.urls import reverse
from django.utils.crypto import constant_time_compare, salted_hmac

from .conf import approvals_settings
from .models import ApprovalRequest

ACR_SESSION = "urn:countersign:acr:session"
ACR_FRESH_PASSWORD = "urn:countersign:acr:password-fresh"
ACR_LEVELS = {ACR_SESSION: 1, ACR_FRESH_PASSWORD: 2}
ACR_VALUES_SUPPORTED = [ACR_SESSION, ACR_FRESH_PASSWORD]

SESSION_AUTH_TIME = "countersign_auth_time"
SESSION_PASSWORD_AT = "countersign_password_at"
# The request whose prompt link this (not yet signed-in) browser opened.
SESSION_LINK = "countersign_link"

_SALT = "countersign.approvals.link"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _mac(request_id: uuid.UUID, user_id: Any) -> bytes:
    return salted_hmac(_SALT, f"{request_id}:{user_id}", algorithm="sha256").digest()[:16]


def link_token(approval_request: ApprovalRequest) -> str:
    return _b64(approval_request.pk.bytes) + _b64(_mac(approval_request.pk, approval_request.user_id))


def link_url(approval_request: ApprovalRequest) -> str:
    return f"{settings.PUBLIC_URL}{reverse('approvals:link', args=[link_token(approval_request)])}"


def resolve_link(token: str) -> ApprovalRequest | None:
    """The request a well-formed, authentic token names, whatever its state; None for anything else."""
    if len(token) != 44:
        return None
    try:
        request_id = uuid.UUID(bytes=base64.urlsafe_b64decode(token[:22] + "=="))
        mac = base64.urlsafe_b64decode(token[22:] + "==")
    except (binascii.Error, ValueError):
        return None
    approval_request = ApprovalRequest.objects.select_related("client", "user").filter(pk=request_id).first()
    if approval_request is None or not constant_time_compare(mac, _mac(request_id, approval_request.user_id)):
        return None
    return approval_request


def required_acr(acr_values: str) -> str:
    """The weakest level the agent accepts among those we support; ACR_SESSION when it named none of them."""
    known = [value for value in acr_values.split() if value in ACR_LEVELS]
    return min(known, key=ACR_LEVELS.__getitem__) if known else ACR_SESSION


def achieved_acr(session: SessionBase, now: datetime) -> str:
    password_at = session.get(SESSION_PASSWORD_AT)
    if password_at is not None and now.timestamp() - password_at <= approvals_settings.FRESH_PASSWORD_SECONDS:
        return ACR_FRESH_PASSWORD
    return ACR_SESSION


def satisfies(achieved: str, required: str) -> bool:
    return ACR_LEVELS[achieved] >= ACR_LEVELS[required]


def auth_time(session: SessionBase) -> datetime | None:
    value = session.get(SESSION_AUTH_TIME)
    return datetime.fromtimestamp(value, tz=UTC) if value is not None else None


def record_authentication(session: SessionBase, now: datetime, *, password: bool) -> None:
    """Called on every sign-in and password re-entry: feeds the ID token's auth_time and acr."""
    session[SESSION_AUTH_TIME] = now.timestamp()
    if password:
        session[SESSION_PASSWORD_AT] = now.timestamp()
    else:
        session.pop(SESSION_PASSWORD_AT, None)


def on_password_login(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    """user_logged_in: a sign-in through the login form (or admin) typed the password. The link view signs people
    in with `login()` too and then records its own, lower, level."""
    if request is not None and hasattr(request, "session"):
        from django.utils import timezone

        record_authentication(request.session, timezone.now(), password=True)
