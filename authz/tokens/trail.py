"""A token's life after issuance in its approval request's audit trail (issue 18): refreshed, exchanged, revoked.

Each event is written by the code that does the thing, in its transaction, through approvals.audit.audit(), with no
actor (the agent did it) and a detail that names the token by its row id and the first characters of DOT's
checksum, never by its value. A token belongs to the request whose `access_token` it is (moved to the new token on
each refresh, approvals.services.approval_request_token_refreshed) or, for an exchanged token, to the request of
the token it was exchanged from, up the chain.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from oauth2_provider.models import get_access_token_model

from approvals.audit import audit
from approvals.models import ApprovalRequest, AuditEvent
from authz.models import TokenDetails
from authz.tokens.policy import MAX_CHAIN_DEPTH

Kind = AuditEvent.Kind

# As approvals.services.approval_request_attach_token: enough to tell tokens apart, nothing to use one with.
CHECKSUM_PREFIX = 12


def token_label(access_token: Any) -> dict[str, Any]:
    """How the trail names a token: its row id and a prefix of its SHA-256 checksum."""
    return {"access_token_id": access_token.pk, "token_checksum_prefix": access_token.token_checksum[:CHECKSUM_PREFIX]}


def request_of_token(access_token_id: int | None) -> UUID | None:
    """The approval request the access token descends from: the request whose token it is (issued, or refreshed
    since), or, for an exchanged token, the request of the token it was exchanged from, up the chain (RFC 8693). None
    for a token of no request (client credentials) or a chain whose subject is gone."""
    current = access_token_id
    for _hop in range(MAX_CHAIN_DEPTH + 1):
        if current is None:
            return None
        request_id: UUID | None = (
            ApprovalRequest.objects.filter(access_token_id=current).values_list("pk", flat=True).first()
        )
        if request_id is not None:
            return request_id
        current = (
            TokenDetails.objects.filter(access_token_id=current).values_list("subject_token_id", flat=True).first()
        )
    return None


def record_exchanged(*, subject: Any, issued: Any, client_id: str | None, at: datetime) -> None:
    """RFC 8693: `issued` was exchanged from `subject` by `client_id`; recorded on the subject's request."""
    request_id = request_of_token(subject.pk)
    if request_id is None:
        return
    audit(
        request_id,
        Kind.EXCHANGED,
        at=at,
        client_id=client_id,
        **token_label(issued),
        subject_token_id=subject.pk,
        subject_checksum_prefix=subject.token_checksum[:CHECKSUM_PREFIX],
    )


def revocation_target(access_token_id: int) -> tuple[UUID, dict[str, Any]] | None:
    """Read before a revocation deletes the token: its request and how the trail names the token (with its client's
    client_id); None for a token of no request."""
    request_id = request_of_token(access_token_id)
    if request_id is None:
        return None
    row = (
        get_access_token_model()
        .objects.filter(pk=access_token_id)
        .values("pk", "token_checksum", "application__client_id")
        .first()
    )
    if row is None:
        return None
    return request_id, {
        "client_id": row["application__client_id"],
        "access_token_id": row["pk"],
        "token_checksum_prefix": row["token_checksum"][:CHECKSUM_PREFIX],
    }


def record_revoked(
    *, target: tuple[UUID, dict[str, Any]], exchanged: int, at: datetime, actor: Any = None, **detail: Any
) -> None:
    """The token `target` names (revocation_target's answer) was revoked, and `exchanged` tokens exchanged from it
    with it. Recorded only if the row is gone: RFC 7009 §2.2 answers 200 for a token the caller may not revoke."""
    request_id, label = target
    if get_access_token_model().objects.filter(pk=label["access_token_id"]).exists():
        return
    audit(request_id, Kind.REVOKED, actor=actor, at=at, **label, exchanged_revoked=exchanged, **detail)
