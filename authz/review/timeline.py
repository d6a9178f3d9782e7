"""One approval request's story for its admin page (issue 18): everything that happened to it, in time order.

Read from the rows each part of the system writes: the audit trail (created, prompt sent or failed, link opened,
decided, tokens issued, refreshed, exchanged, revoked), every prompt delivery attempt and its outcome (approvals'
Delivery), and every ping or push to the agent (authz's Notification and NotificationAttempt). It lives in authz
because it needs both apps' rows. A handful of queries per page, whatever the request's history.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop
from oauth2_provider.models import get_access_token_model

from approvals.display import admin_datetime
from approvals.models import ApprovalRequest, AuditEvent, Delivery
from approvals.review import admin_change_url
from authz.models import Notification, NotificationAttempt

Kind = AuditEvent.Kind
DecidedVia = ApprovalRequest.DecidedVia


@dataclass(frozen=True)
class Entry:
    """One line of the timeline: when, what, who or what did it, what else is worth knowing, and links."""

    at: datetime
    what: str
    by: str = ""
    detail: str = ""
    links: tuple[tuple[str, str], ...] = field(default=())
    # Ties (one instant) keep the order things are written in: trail, then deliveries, then notifications.
    order: int = 0


def timeline(approval_request: ApprovalRequest) -> list[Entry]:
    """Every entry of the request's history, oldest first."""
    events = list(approval_request.events.select_related("actor").order_by("at", "pk"))
    deliveries = list(Delivery.objects.filter(request=approval_request).order_by("created_at", "pk"))
    notification = Notification.objects.filter(request=approval_request).first()
    attempts = (
        list(NotificationAttempt.objects.filter(notification=notification).order_by("created_at", "pk"))
        if notification is not None
        else []
    )
    # The tokens the trail names, and which of them still exist (a revoked token's row is gone): one query.
    token_ids = {event.detail.get("access_token_id") for event in events if isinstance(event.detail, dict)}
    token_ids.discard(None)
    existing = set(
        get_access_token_model()
        .objects.filter(pk__in=[pk for pk in token_ids if isinstance(pk, int)])
        .values_list("pk", flat=True)
    )
    entries = [
        *(_from_event(event, approval_request, existing) for event in events),
        *(_from_delivery(delivery) for delivery in deliveries),
        *_from_notification(notification, attempts),
    ]
    return sorted(entries, key=lambda entry: (entry.at, entry.order))


def _actor(event: AuditEvent) -> str:
    return event.actor.get_username() if event.actor is not None else ""


def _token_link(detail: dict[str, Any], existing: set[int]) -> tuple[tuple[str, str], ...]:
    token_id = detail.get("access_token_id")
    prefix = detail.get("token_checksum_prefix", "")
    label = _("access token #%(id)s (%(prefix)s…)") % {"id": token_id, "prefix": prefix}
    if token_id in existing:
        url = admin_change_url(get_access_token_model(), token_id)
        if url:
            return ((label, url),)
    return ((label + " " + _("(no longer exists)"), ""),) if token_id is not None else ()


# Why a request was cancelled or its tokens revoked without an administrator's own action on it.
_WITHDRAWN = {
    DecidedVia.SUSPENSION: gettext_noop("its agent was suspended"),
    DecidedVia.DEREGISTRATION: gettext_noop("its agent deleted its registration"),
}


def _from_event(event: AuditEvent, approval_request: ApprovalRequest, existing: set[int]) -> Entry:
    detail: dict[str, Any] = event.detail if isinstance(event.detail, dict) else {}
    kind = event.kind
    what = str(event.get_kind_display())
    by = _actor(event)
    text = ""
    links: tuple[tuple[str, str], ...] = ()
    if kind == Kind.CREATED:
        by = _("agent %(client_id)s") % {"client_id": detail.get("client_id", approval_request.client.client_id)}
        text = _("scope: %(scope)s") % {"scope": detail.get("scope", approval_request.scope)}
    elif kind == Kind.PROMPTED:
        destinations = detail.get("destinations")
        text = _("reached through %(channel)s") % {"channel": detail.get("channel", "?")}
        if isinstance(destinations, int):
            text += ", " + _("%(n)d destination(s)") % {"n": destinations}
    elif kind == Kind.PROMPT_FAILED:
        errors = detail.get("errors")
        text = "; ".join(str(error) for error in errors) if isinstance(errors, list) else ""
    elif kind == Kind.LINK_OPENED:
        what = _("Prompt's link opened")
        text = _("in a browser signed in as the approver") if detail.get("signed_in") else _("not signed in")
    elif kind in (Kind.APPROVED, Kind.DENIED):
        if detail.get("automated_by"):
            by = _("automated approval endpoint")
            text = _("automated: %(by)s") % {"by": detail["automated_by"]}
        elif detail.get("link"):
            text = _("with the prompt's link")
        else:
            text = _("on the signed-in page")
        if detail.get("acr"):
            text += "; acr " + str(detail["acr"])
    elif kind == Kind.CANCELLED:
        text = _(_WITHDRAWN.get(detail.get("via", DecidedVia.ADMIN), gettext_noop("by an administrator")))
    elif kind == Kind.EXPIRED:
        text = _("undecided or unredeemed at its expiry")
    elif kind == Kind.CONSUMED:
        by = _("agent %(client_id)s") % {"client_id": approval_request.client.client_id}
        links = _token_link(detail, existing)
    elif kind == Kind.REFRESHED:
        by = _("agent %(client_id)s") % {"client_id": detail.get("client_id", "?")}
        links = _token_link(detail, existing)
    elif kind == Kind.EXCHANGED:
        by = _("agent %(client_id)s") % {"client_id": detail.get("client_id", "?")}
        text = _("from access token #%(id)s") % {"id": detail.get("subject_token_id", "?")}
        links = _token_link(detail, existing)
    elif kind == Kind.REVOKED:
        via = detail.get("via", "")
        if via == "revocation_endpoint":
            by = by or _("agent %(client_id)s") % {"client_id": detail.get("client_id", "?")}
            text = _("at the revocation endpoint")
        else:
            text = _(_WITHDRAWN.get(via, gettext_noop("by an administrator")))
        counts = [
            (_("%(n)d exchanged token(s) with it") % {"n": detail["exchanged_revoked"]})
            if detail.get("exchanged_revoked")
            else "",
            (_("%(n)d access token(s)") % {"n": detail["access_tokens_revoked"]})
            if detail.get("access_tokens_revoked")
            else "",
            (_("%(n)d refresh token(s)") % {"n": detail["refresh_tokens_revoked"]})
            if detail.get("refresh_tokens_revoked")
            else "",
        ]
        text = "; ".join([text, *(count for count in counts if count)])
        links = _token_link(detail, existing)
    return Entry(at=event.at, what=what, by=by, detail=text, links=links, order=0)


def _from_delivery(delivery: Delivery) -> Entry:
    latency = f"{delivery.latency_ms} ms" if delivery.latency_ms is not None else ""
    parts = [
        str(delivery.get_status_display()),
        delivery.provider_status,
        latency,
        delivery.error,
    ]
    return Entry(
        at=delivery.created_at,
        what=_("Prompt attempt %(n)d: %(channel)s") % {"n": delivery.attempt, "channel": delivery.channel},
        detail=_("to %(destination)s: %(outcome)s")
        % {"destination": delivery.destination, "outcome": "; ".join(part for part in parts if part)},
        order=1,
    )


def _from_notification(notification: Notification | None, attempts: Iterable[NotificationAttempt]) -> list[Entry]:
    if notification is None:
        return []
    mode = notification.mode
    entries = []
    for attempt in attempts:
        parts = [
            str(attempt.get_status_display()),
            f"HTTP {attempt.http_status}" if attempt.http_status else "",
            f"{attempt.latency_ms} ms" if attempt.latency_ms is not None else "",
            attempt.error,
        ]
        entries.append(
            Entry(
                at=attempt.created_at,
                what=_("%(mode)s to the agent, attempt %(n)d") % {"mode": mode.capitalize(), "n": attempt.attempt},
                detail=_("outcome %(outcome)s: %(result)s")
                % {"outcome": notification.outcome, "result": "; ".join(part for part in parts if part)},
                order=2,
            )
        )
    if notification.status == Notification.Status.UNDELIVERABLE and notification.finished_at is not None:
        entries.append(
            Entry(
                at=notification.finished_at,
                what=_("%(mode)s to the agent given up") % {"mode": mode.capitalize()},
                detail=notification.error,
                order=3,
            )
        )
    return entries


def render(entries: list[Entry]) -> SafeString:
    """The entries as an HTML table for the admin page (every value escaped by format_html)."""
    if not entries:
        return format_html("<p>{}</p>", _("Nothing recorded."))
    rows = format_html_join(
        "\n",
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        ((admin_datetime(entry.at), entry.what, entry.by or "-", _details(entry)) for entry in entries),
    )
    return format_html(
        '<table class="review-timeline"><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead>'
        "<tbody>{}</tbody></table>",
        _("when"),
        _("what"),
        _("by"),
        _("details"),
        rows,
    )


def _details(entry: Entry) -> SafeString:
    """The token an entry is about first (linked while it exists), then the rest, apart: run together, "from access
    token #5 access token #6" left unclear which token was the new one."""
    parts = [
        format_html('<a href="{}">{}</a>', url, label) if url else format_html("{}", label)
        for label, url in entry.links
    ]
    if entry.detail:
        parts.append(format_html("{}", entry.detail))
    return format_html_join("; ", "{}", ((part,) for part in parts))
