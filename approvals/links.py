"""The link in a prompt, and how strongly the approver has authenticated (acr).

A link is `/approvals/l/<token>/`: the request's id and a MAC over (id, approver) keyed from SECRET_KEY, 44
characters so an SMS keeps to one segment. It is unguessable, bound to one request and one person, and useless once
the request expires. It proves possession of one prompt, nothing more: opening it lets this browser see and decide
that one request while it is pending (a hold kept in the session, SESSION_LINKS), and signs no one in, so it can
never decide another request, change settings or devices, or open the admin. The decision spends it
(ApprovalRequest.link_used_at), in the same UPDATE; after that the request needs a real sign-in, except in the
browser that decided, which still sees the result.

Two authentication levels, advertised in discovery's acr_values_supported (OpenID Connect Core §2, acr):
- ACR_SESSION: signed in with the password, or holding this request's prompt link (which only the person's own
  phone received); for a link, auth_time is when it was opened;
- ACR_FRESH_PASSWORD: the password typed within APPROVALS["FRESH_PASSWORD_SECONDS"] (or, by link, just now).
A request's acr_values name the levels the agent accepts; approving needs at least the lowest of those we know.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase
from django.urls import reverse
from django.utils.crypto import constant_time_compare, salted_hmac

from approvals.conf import approvals_settings
from approvals.models import ApprovalRequest

ACR_SESSION = "urn:countersign:acr:session"
ACR_FRESH_PASSWORD = "urn:countersign:acr:password-fresh"
ACR_LEVELS = {ACR_SESSION: 1, ACR_FRESH_PASSWORD: 2}
ACR_VALUES_SUPPORTED = [ACR_SESSION, ACR_FRESH_PASSWORD]

SESSION_AUTH_TIME = "countersign_auth_time"
SESSION_PASSWORD_AT = "countersign_password_at"
# The prompt links this (not signed-in) browser opened: {request id: {"at", "until": timestamps, "spent": bool}}.
SESSION_LINKS = "countersign_links"
# A phone may open several prompts before deciding; the oldest holds beyond this are forgotten.
MAX_HELD_LINKS = 10

_SALT = "countersign.approvals.link"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _mac(request_id: uuid.UUID, user_id: Any) -> bytes:
    return salted_hmac(_SALT, f"{request_id}:{user_id}", algorithm="sha256").digest()[:16]


def link_token(approval_request: ApprovalRequest) -> str:
    return _b64(approval_request.pk.bytes) + _b64(_mac(approval_request.pk, approval_request.user_id))


def link_url(approval_request: ApprovalRequest) -> str:
    return f"{settings.PUBLIC_URL}{reverse('approvals:link', args=[link_token(approval_request)])}"


def _parse(token: str) -> tuple[uuid.UUID, bytes] | None:
    if len(token) != 44:
        return None
    try:
        return uuid.UUID(bytes=base64.urlsafe_b64decode(token[:22] + "==")), base64.urlsafe_b64decode(token[22:] + "==")
    except (binascii.Error, ValueError):
        return None


def named_request(token: str) -> ApprovalRequest | None:
    """The request a well-formed token names, whatever its state, before its MAC is checked (link_authentic)."""
    parsed = _parse(token)
    if parsed is None:
        return None
    return ApprovalRequest.objects.select_related("client", "user").filter(pk=parsed[0]).first()


def link_authentic(token: str, approval_request: ApprovalRequest) -> bool:
    parsed = _parse(token)
    return (
        parsed is not None
        and parsed[0] == approval_request.pk
        and constant_time_compare(parsed[1], _mac(approval_request.pk, approval_request.user_id))
    )


@dataclass(frozen=True)
class LinkHold:
    """This browser opened the request's prompt link at `opened_at`; `spent`: and decided the request with it."""

    opened_at: datetime
    spent: bool


def hold_link(session: SessionBase, approval_request: ApprovalRequest, now: datetime) -> None:
    """Remember that this browser holds the request's link, until the request expires."""
    holds = {
        request_id: hold
        for request_id, hold in session.get(SESSION_LINKS, {}).items()
        if hold["until"] > now.timestamp() and request_id != str(approval_request.pk)
    }
    holds[str(approval_request.pk)] = {
        "at": now.timestamp(),
        "until": approval_request.expires_at.timestamp(),
        "spent": False,
    }
    newest = sorted(holds.items(), key=lambda item: item[1]["at"])[-MAX_HELD_LINKS:]
    session[SESSION_LINKS] = dict(newest)


def held_link(session: SessionBase, request_id: Any, now: datetime) -> LinkHold | None:
    hold = session.get(SESSION_LINKS, {}).get(str(request_id))
    if hold is None or now.timestamp() >= hold["until"]:
        return None
    return LinkHold(opened_at=datetime.fromtimestamp(hold["at"], tz=UTC), spent=bool(hold["spent"]))


def spend_held_link(session: SessionBase, request_id: Any) -> None:
    """The hold's request was decided with it: the browser may still see the result, never decide again."""
    holds = dict(session.get(SESSION_LINKS, {}))
    if str(request_id) in holds:
        holds[str(request_id)] = {**holds[str(request_id)], "spent": True}
        session[SESSION_LINKS] = holds


def drop_held_link(session: SessionBase, request_id: Any) -> None:
    holds = dict(session.get(SESSION_LINKS, {}))
    if holds.pop(str(request_id), None) is not None:
        session[SESSION_LINKS] = holds


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
    """user_logged_in: a sign-in through the login form (or admin) typed the password. Nothing else signs people in
    (a prompt's link never does)."""
    if request is not None and hasattr(request, "session"):
        from django.utils import timezone

        record_authentication(request.session, timezone.now(), password=True)
