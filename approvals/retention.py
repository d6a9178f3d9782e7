"""How long the audit trail is kept: `manage.py purge_audit_events` deletes the trails older than
APPROVALS["AUDIT_RETENTION_DAYS"] (or a date it is given).

What goes is a request's whole trail, once all of it is older than the cutoff and the request can no longer change:
created before the cutoff, expired before it, not pending, no event of it at or after the cutoff (tokens still
refreshed or exchanged keep their request's trail, from "created" on), and no token of it left (a grant that may
still stand keeps who approved it). Never half a trail: an "approved" without its
"created" would read as a gap, not as retention. The requests themselves stay (with who decided and how).
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.db import transaction
from django.db.models import Exists, OuterRef, Q

from approvals.models import ApprovalRequest, AuditEvent

logger = logging.getLogger(__name__)


def _finished_before(before: datetime) -> Q:
    later = AuditEvent.objects.filter(request=OuterRef("pk"), at__gte=before)
    # A request still pointing to its access token may still stand behind live tokens (a refresh token not yet
    # expired or cleared): who approved them is kept while they exist (the token's row goes when they are revoked,
    # or expired and cleared by DOT's cleartokens).
    return Q(
        ~Q(status=ApprovalRequest.Status.PENDING),
        ~Exists(later),
        created_at__lt=before,
        expires_at__lt=before,
        access_token__isnull=True,
    )


def audit_events_purgeable(*, before: datetime) -> int:
    """How many events audit_events_purge(before=before) would delete."""
    finished = ApprovalRequest.objects.filter(_finished_before(before)).values("pk")
    return AuditEvent.objects.filter(request_id__in=finished).count()


def audit_events_purge(*, before: datetime, batch_size: int = 5000) -> int:
    """Delete the trails of the requests finished before `before` (see above), a batch at a time; returns how many
    events went.

    Walks the events older than the cutoff in (at, id) order, batch_size at a time, and deletes the whole trail of
    each purgeable request among them, each batch in its own transaction: the work is proportional to what is older
    than the cutoff, and no transaction holds a million rows."""
    deleted = 0
    old = AuditEvent.objects.filter(at__lt=before).order_by("at", "id")
    position: tuple[datetime, int] | None = None
    while True:
        page = old
        if position is not None:
            at, pk = position
            page = page.filter(at__gte=at).filter(Q(at__gt=at) | Q(at=at, id__gt=pk))
        batch = list(page.values_list("at", "id", "request_id")[:batch_size])
        if not batch:
            break
        position = batch[-1][0], batch[-1][1]
        request_ids = {request_id for _at, _id, request_id in batch}
        with transaction.atomic():
            purgeable = ApprovalRequest.objects.filter(_finished_before(before), pk__in=request_ids).values("pk")
            count, _per_model = AuditEvent.objects.filter(request_id__in=purgeable).delete()
        deleted += count
        if len(batch) < batch_size:
            break
    logger.info("Purged %d audit events of requests finished before %s", deleted, before.isoformat())
    return deleted
