from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from uuid import UUID

from django.contrib.auth.models import User
from django.core.paginator import Page, Paginator
from django.db.models import QuerySet
from django.utils import timezone
from oauth2_provider.settings import oauth2_settings

from approvals.models import ApprovalRequest


def approval_requests_pending_for(*, user: User, now: datetime | None = None) -> QuerySet[ApprovalRequest]:
    now = now or timezone.now()
    return (
        ApprovalRequest.objects.filter(user=user, status=ApprovalRequest.Status.PENDING, expires_at__gt=now)
        .select_related("client")
        .order_by("-created_at")
    )


# The inbox shows this many requests a page (and pending.json answers as many): what a person has pending is also
# capped (APPROVALS_MAX_PENDING_PER_PERSON), but the page a phone refreshes every 5 s stays small either way.
INBOX_PAGE_SIZE = 20


def approval_requests_pending_page(
    *, user: User, page: int | str | None, now: datetime | None = None
) -> Page[ApprovalRequest]:
    """One page of the person's pending requests, newest first. A missing, malformed or out-of-range page number
    gives the nearest page (Paginator.get_page), so no query string can make the inbox fail."""
    pending = approval_requests_pending_for(user=user, now=now)
    return Paginator(pending, INBOX_PAGE_SIZE).get_page(page)


def scope_descriptions(scopes: list[str]) -> list[tuple[str, str]]:
    """Each scope with the human description the server registered for it."""
    known = oauth2_settings.SCOPES
    return [(scope, str(known.get(scope, scope))) for scope in scopes]


def approval_request_poll_key(*, approval_request_id: UUID | str) -> tuple[str, datetime]:
    """(auth_req_id, expires_at) of one request: what the poll mirror names it by and how long it lasts."""
    return ApprovalRequest.objects.filter(pk=approval_request_id).values_list("auth_req_id", "expires_at").get()


def approval_requests_decided_unexpired(*, now: datetime) -> Iterator[tuple[str, datetime]]:
    """(auth_req_id, expires_at) of every request decided but not yet expired, streamed."""
    return (
        ApprovalRequest.objects.filter(expires_at__gt=now)
        .exclude(status=ApprovalRequest.Status.PENDING)
        .values_list("auth_req_id", "expires_at")
        .iterator(chunk_size=1000)
    )
