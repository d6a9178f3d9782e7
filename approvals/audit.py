"""audit() and audit_many(): the one way events join a request's append-only trail (AuditEvent), written by whoever
makes the transition, in its transaction."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

from approvals.models import AuditEvent


def audit(request_id: UUID | str, kind: str, *, actor: Any = None, at: datetime, **detail: Any) -> AuditEvent:
    return AuditEvent.objects.create(request_id=request_id, kind=kind, actor=actor, at=at, detail=detail)


def audit_many(request_ids: Iterable[UUID | str], kind: str, *, at: datetime, **detail: Any) -> list[AuditEvent]:
    """The same event for many requests (a sweep's batch), in one INSERT."""
    events = [AuditEvent(request_id=request_id, kind=kind, at=at, detail=detail) for request_id in request_ids]
    return AuditEvent.objects.bulk_create(events)
