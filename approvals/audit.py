"""audit(): the one way an event joins a request's append-only trail (AuditEvent), written by whoever makes the
transition, in its transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from approvals.models import AuditEvent


def audit(request_id: UUID | str, kind: str, *, actor: Any = None, at: datetime, **detail: Any) -> AuditEvent:
    return AuditEvent.objects.create(request_id=request_id, kind=kind, actor=actor, at=at, detail=detail)
