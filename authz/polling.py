"""The CIBA poll's database read: the client and its request in one indexed query.

Agents poll every few seconds for minutes, so this is the server's hottest path. Most polls are answered from
Redis (authz.throttle); the rest come here, where building two ORM querysets cost several times the database round
trip itself, so one hand-written join against the models' own table and column names does the work instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from uuid import UUID

from django.db import connection
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from oauth2_provider.models import get_application_model

from approvals.models import ApprovalRequest

from .models import CibaClient


@dataclass(frozen=True)
class PollRecord:
    client_type: str | None  # None: no client with that client_id
    client_secret: str
    ciba_enabled: bool
    registered_method: str | None  # None: the client has no CIBA settings
    request_id: UUID | None  # None: no such auth_req_id for this client
    status: str
    expires_at: datetime | None
    interval: int


@cache
def _sql() -> str:
    app, ciba, req = get_application_model()._meta, CibaClient._meta, ApprovalRequest._meta

    def col(meta, name: str) -> str:
        return connection.ops.quote_name(meta.get_field(name).column)

    q = connection.ops.quote_name
    # Only quoted identifiers from the models' metadata are interpolated; values are query parameters.
    return (
        f"SELECT a.{col(app, 'client_type')}, a.{col(app, 'client_secret')}, c.{col(ciba, 'ciba_enabled')}, "  # noqa: S608
        f"c.{col(ciba, 'token_endpoint_auth_method')}, r.{col(req, 'id')}, r.{col(req, 'status')}, "
        f"r.{col(req, 'expires_at')}, r.{col(req, 'interval')} "
        f"FROM {q(app.db_table)} a "
        f"LEFT JOIN {q(ciba.db_table)} c ON c.{col(ciba, 'application')} = a.{col(app, 'id')} "
        f"LEFT JOIN {q(req.db_table)} r ON r.{col(req, 'client')} = a.{col(app, 'id')} "
        f"AND r.{col(req, 'auth_req_id')} = %s "
        f"WHERE a.{col(app, 'client_id')} = %s"
    )


def load_poll_record(*, client_id: str, auth_req_id: str) -> PollRecord:
    with connection.cursor() as cursor:
        cursor.execute(_sql(), [auth_req_id, client_id])
        row = cursor.fetchone()
    if row is None:
        return PollRecord(None, "", False, None, None, "", None, 0)
    client_type, secret, ciba_enabled, method, request_id, status, expires_at, interval = row
    if isinstance(expires_at, str):  # SQLite hands back text
        expires_at = parse_datetime(expires_at)
    if expires_at is not None and timezone.is_naive(expires_at):
        expires_at = timezone.make_aware(expires_at, UTC)
    if request_id is not None and not isinstance(request_id, UUID):
        request_id = UUID(str(request_id))  # SQLite stores UUIDs as text
    return PollRecord(
        client_type=client_type,
        client_secret=secret,
        ciba_enabled=bool(ciba_enabled),
        registered_method=method,
        request_id=request_id,
        status=status or "",
        expires_at=expires_at,
        interval=interval or 0,
    )
