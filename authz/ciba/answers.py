"""What an agent is told about its request, by status: the one mapping from ApprovalRequest.Status to CIBA answers,
used by the token endpoint (CIBA Core 11, its fast path and the oauthlib grant) and by ping/push error payloads
(CIBA Core 12). The approver's pages word statuses for people, and are not this.

A cancelled request (an administrator stopped it) is access_denied everywhere: the request was refused by the
side that authorises, as CIBA Core 11 defines that code; transaction_failed would tell the client to retry."""

from __future__ import annotations

from dataclasses import dataclass

from approvals.models import ApprovalRequest
from authz.errors import OAuthError

Status = ApprovalRequest.Status


@dataclass(frozen=True)
class Answer:
    error: str
    description: str

    def payload(self, auth_req_id: str) -> dict[str, str]:
        """The push mode error payload (CIBA Core 10.3.1)."""
        return {"auth_req_id": auth_req_id, "error": self.error, "error_description": self.description}


PENDING = Answer("authorization_pending", "The user has not yet decided.")
DENIED = Answer("access_denied", "The user denied the request.")
CANCELLED = Answer("access_denied", "The request was cancelled.")
EXPIRED = Answer("expired_token", "The request expired before tokens were issued.")
CONSUMED = Answer("invalid_grant", "Tokens for this auth_req_id were already issued.")

_BY_STATUS = {
    Status.PENDING: PENDING,
    Status.DENIED: DENIED,
    Status.CANCELLED: CANCELLED,
    Status.EXPIRED: EXPIRED,
    Status.CONSUMED: CONSUMED,
}


def answer_for(status: str) -> Answer | None:
    """The error for a request in `status` (its effective status: see effective_status); None when approved, the
    one status that gets tokens."""
    if status == Status.APPROVED:
        return None
    return _BY_STATUS[Status(status)]


class AnswerError(OAuthError):
    """The token endpoint's error response (RFC 6749 5.2) for an answer."""

    def __init__(self, answer: Answer) -> None:
        self.error = answer.error  # type: ignore[misc]  # per answer, where OAuthError subclasses fix it per class
        super().__init__(answer.description)
