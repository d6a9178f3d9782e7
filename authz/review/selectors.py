"""The queries behind the review API and the audit export: filters read from query parameters, and keyset pages.

Pages are keyset ("cursor") pages ordered by (time, id): the audit events by (at, id), the requests by (created_at,
id). A cursor is the position after a row, so a page costs one indexed range read however deep it is, and rows with
the same timestamp are neither repeated nor skipped across pages (the id breaks the tie). Any value the caller sends
that these cannot use raises BadFilter, with a message naming the parameter (the API answers 400 with it).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Q, QuerySet
from django.http import QueryDict
from django.utils import timezone

from approvals.models import ApprovalRequest, AuditEvent
from authz.review.serializers import APPROVAL_REQUEST_COLUMNS, AUDIT_EVENT_COLUMNS

# A request's query parameters (QueryDict, each name with all its values), or a plain mapping of lists.
Params = QueryDict | Mapping[str, list[str]]

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# More values than this for one parameter (agent=a&agent=b…) is not a filter but a dump.
MAX_VALUES = 100

_USERNAME = get_user_model().USERNAME_FIELD
# An offset after a space, as "+01:00" arrives when the "+" was not encoded as %2B in the query string.
_SPACE_FOR_PLUS = re.compile(r"^(.*\d[T ]\d\d:\d\d(?::\d\d(?:\.\d+)?)?) (\d\d(?::?\d\d)?)$")


class BadFilter(ValueError):
    """A query parameter the API cannot use; str() is the message for the caller."""


@dataclass(frozen=True)
class Cursor:
    at: datetime
    id: Any


def cursor_encode(at: datetime, pk: Any) -> str:
    raw = json.dumps([at.isoformat(), str(pk)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def cursor_decode(text: str, *, id_type: Callable[[str], Any]) -> Cursor:
    try:
        padded = text + "=" * (-len(text) % 4)
        at_text, pk_text = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        at = datetime.fromisoformat(at_text)
        if at.tzinfo is None:
            raise ValueError("naive")
        return Cursor(at=at, id=id_type(pk_text))
    except (ValueError, TypeError, binascii.Error, UnicodeError, OverflowError) as exc:
        raise BadFilter("cursor: not a cursor this API gave; start again without it.") from exc


def parse_time(name: str, raw: str) -> datetime:
    """An ISO 8601 date or date-time; without an offset, in the server's time zone."""
    text = raw.strip()
    spaced = _SPACE_FOR_PLUS.match(text)
    if spaced:
        text = f"{spaced[1]}+{spaced[2]}"
    try:
        value = datetime.fromisoformat(text)
        if timezone.is_naive(value):
            value = timezone.make_aware(value, timezone.get_current_timezone())
        return value.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise BadFilter(
            f"{name}: {raw!r} is not an ISO 8601 date or date-time, e.g. 2026-12-05 or 2026-12-05T21:50:07Z "
            "(send a + in an offset as %2B)."
        ) from exc


def _values(params: Params, name: str) -> list[str]:
    if isinstance(params, QueryDict):
        return params.getlist(name)  # .get() would give the last value only
    return list(params.get(name, ()))


def _one(params: Params, name: str) -> str | None:
    values = _values(params, name)
    if len(values) > 1:
        raise BadFilter(f"{name}: give it once.")
    return values[0] if values else None


def _many(params: Params, name: str, *, choices: Sequence[str] | None = None) -> list[str]:
    values = [value.strip() for value in _values(params, name)]
    if len(values) > MAX_VALUES:
        raise BadFilter(f"{name}: at most {MAX_VALUES} values.")
    if choices is not None:
        unknown = [value for value in values if value not in choices]
        if unknown:
            raise BadFilter(f"{name}: {unknown[0]!r} is not one of {', '.join(choices)}.")
    return values


def _check_names(params: Params, allowed: Sequence[str]) -> None:
    # A misspelt filter must not quietly return everything.
    for name in params:
        if name not in allowed:
            raise BadFilter(f"Unknown parameter {name!r}; the parameters are {', '.join(allowed)}.")


def limit_from(params: Params) -> int:
    raw = _one(params, "limit")
    if raw is None:
        return DEFAULT_LIMIT
    # ASCII digits only: str.isdigit() holds for "²", which int() refuses.
    if not (raw.strip().isascii() and raw.strip().isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadFilter(f"limit: a whole number from 1 to {MAX_LIMIT}.")
    return int(raw)


def _time_range(params: Params, field: str) -> Q:
    since_raw, until_raw = _one(params, "since"), _one(params, "until")
    since = parse_time("since", since_raw) if since_raw is not None else None
    until = parse_time("until", until_raw) if until_raw is not None else None
    if since is not None and until is not None and since >= until:
        raise BadFilter("since must be before until.")
    q = Q()
    if since is not None:
        q &= Q(**{f"{field}__gte": since})  # inclusive
    if until is not None:
        q &= Q(**{f"{field}__lt": until})  # exclusive
    return q


AUDIT_EVENT_PARAMETERS = ("since", "until", "agent", "approver", "kind", "request", "cursor", "limit")


def audit_events(params: Params) -> QuerySet[AuditEvent, dict[str, Any]]:
    """The audit events the parameters select, as rows of AUDIT_EVENT_COLUMNS in (at, id) order."""
    _check_names(params, AUDIT_EVENT_PARAMETERS)
    q = _time_range(params, "at")
    if agents := _many(params, "agent"):
        q &= Q(request__client__client_id__in=agents)
    if approvers := _many(params, "approver"):
        q &= Q(**{f"request__user__{_USERNAME}__in": approvers})
    if kinds := _many(params, "kind", choices=AuditEvent.Kind.values):
        q &= Q(kind__in=kinds)
    if requests := _many(params, "request"):
        q &= Q(request_id__in=[_uuid("request", value) for value in requests])
    rows: QuerySet[AuditEvent, dict[str, Any]] = (
        AuditEvent.objects.filter(q).order_by("at", "id").values(*AUDIT_EVENT_COLUMNS)
    )
    return rows


APPROVAL_REQUEST_PARAMETERS = ("since", "until", "agent", "approver", "status", "decided_via", "cursor", "limit")
_LIVE = (ApprovalRequest.Status.PENDING, ApprovalRequest.Status.APPROVED, ApprovalRequest.Status.DENIED)


def approval_requests(params: Params, *, now: datetime) -> QuerySet[ApprovalRequest, dict[str, Any]]:
    """The requests the parameters select (created in the time range), as rows of APPROVAL_REQUEST_COLUMNS in
    (created_at, id) order. `status` is the status as the agent sees it, as in the admin's filter: an undecided or
    unredeemed request past its expiry counts as expired."""
    _check_names(params, APPROVAL_REQUEST_PARAMETERS)
    q = _time_range(params, "created_at")
    if agents := _many(params, "agent"):
        q &= Q(client__client_id__in=agents)
    if approvers := _many(params, "approver"):
        q &= Q(**{f"user__{_USERNAME}__in": approvers})
    if statuses := _many(params, "status", choices=ApprovalRequest.Status.values):
        by_status = Q()
        for value in statuses:
            if value == ApprovalRequest.Status.EXPIRED:
                by_status |= Q(status=value) | Q(status__in=_LIVE, expires_at__lte=now)
            elif value in _LIVE:
                by_status |= Q(status=value, expires_at__gt=now)
            else:
                by_status |= Q(status=value)
        q &= by_status
    if via := _many(params, "decided_via", choices=ApprovalRequest.DecidedVia.values):
        q &= Q(decided_via__in=via)
    rows: QuerySet[ApprovalRequest, dict[str, Any]] = (
        ApprovalRequest.objects.filter(q).order_by("created_at", "id").values(*APPROVAL_REQUEST_COLUMNS)
    )
    return rows


def _uuid(name: str, value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError as exc:
        raise BadFilter(f"{name}: {value!r} is not an approval request's id (a UUID).") from exc


def event_id(text: str) -> int:
    """An audit event's id from a cursor: a PostgreSQL bigint (a larger number would fail in the database, a 500)."""
    value = int(text)
    if not 0 < value < 2**63:
        raise ValueError("out of range")
    return value


def after(rows: QuerySet[Any, Any], field: str, cursor: Cursor) -> QuerySet[Any, Any]:
    """The rows after `cursor` in (field, id) order. The first condition alone is what the index on `field` ranges
    over; the second breaks ties on the id."""
    return rows.filter(**{f"{field}__gte": cursor.at}).filter(
        Q(**{f"{field}__gt": cursor.at}) | Q(**{field: cursor.at, "id__gt": cursor.id})
    )


@dataclass
class Page:
    rows: list[dict[str, Any]]
    more: bool
    # The position after this page's last row (or the one given when the page is empty): where the next read starts,
    # now or later, when newer rows have been written.
    cursor: str | None


def keyset_page(
    rows: QuerySet[Any, dict[str, Any]], field: str, *, cursor: str | None, limit: int, id_type: Callable[[str], Any]
) -> Page:
    if cursor:
        rows = after(rows, field, cursor_decode(cursor, id_type=id_type))
    found = list(rows[: limit + 1])
    page = found[:limit]
    last = cursor_encode(page[-1][field], page[-1]["id"]) if page else cursor
    return Page(rows=page, more=len(found) > limit, cursor=last)


def keyset_batches(rows: QuerySet[Any, dict[str, Any]], field: str, *, size: int) -> Iterator[list[dict[str, Any]]]:
    """All of `rows` (ordered by (field, id)) in batches of `size`, one indexed query each: no server-side cursor
    held open while a slow download drains, and never more than one batch in memory."""
    batch = list(rows[:size])
    while batch:
        yield batch
        if len(batch) < size:
            return
        last = batch[-1]
        batch = list(after(rows, field, Cursor(at=last[field], id=last["id"]))[:size])
