"""What an administrator may do from the review (issue 18 item 2): cancel a pending request, revoke the tokens a
request led to, suspend an agent and resume it. Nothing here approves or denies anything.

Each is one transaction, audited with the acting administrator: per request as an approvals AuditEvent (cancelled,
revoked), per agent as an AgentEvent (suspended, resumed). Each is idempotent: doing it again changes nothing and
records nothing.

Revocation follows DOT's semantics (an access token is revoked by deleting it; a refresh token is marked revoked,
together with its whole rotation family) and this server's decision that a token exchanged from a revoked one goes
with it (authz.tokens.exchange.token_family_lock). Locks are taken in the order refresh and exchange take them
(the access token, then the tokens exchanged from it, then its refresh token), so neither can interleave with a
revocation: a refresh that waited finds its refresh token revoked, an exchange finds its subject gone.

A suspended agent (CibaClient.suspended_at) is refused at bc-authorize and for every grant at the token endpoint
with unauthorized_client, its CIBA polls included (the database path reads the flag, and the poll fast path's
client entry is dropped, see authz.ciba.poll); no token it holds stands (authz.models.CibaClient.allows_grant, read
by authz.tokens.policy). Its pending requests are cancelled: a ping or push agent is still sent that outcome
(access_denied, never tokens), so it stops waiting. A request already approved but not redeemed is refused while
the agent is suspended and expires as usual. Resuming lets it make new requests; nothing revoked or cancelled
comes back.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any
from uuid import UUID

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from oauth2_provider.generators import generate_client_secret
from oauth2_provider.models import get_access_token_model, get_refresh_token_model
from oauth2_provider.settings import oauth2_settings

from approvals import services as approval_services
from approvals.audit import audit
from approvals.models import ApprovalRequest, AuditEvent
from authz.ciba import poll
from authz.clients.registration.tokens import INITIAL_ACCESS_TOKEN_SCOPE
from authz.models import AgentEvent, CibaClient, TokenDetails
from authz.tokens.policy import MAX_CHAIN_DEPTH

logger = logging.getLogger(__name__)

Status = ApprovalRequest.Status
DecidedVia = ApprovalRequest.DecidedVia
Kind = AuditEvent.Kind

# As authz.tokens.trail: enough of DOT's checksum to tell tokens apart, nothing to use one with.
CHECKSUM_PREFIX = 12


# --- cancel -----------------------------------------------------------------------------------------------------------


def requests_cancel(*, request_ids: Sequence[UUID | str], actor: User) -> int:
    """Cancel those of the requests that are still pending (approvals.services.approval_request_cancel, audited
    with `actor`); the others are left as they are. The agent gets access_denied at its next poll, and a ping or
    push agent is sent that outcome (authz.ciba.notify). Returns how many were cancelled."""
    cancelled = 0
    for request_id in request_ids:
        cancelled += approval_services.approval_request_cancel(
            approval_request_id=request_id, actor=actor, via=DecidedVia.ADMIN
        )
    return cancelled


# --- revoke -----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Revoked:
    access_tokens: int = 0
    refresh_tokens: int = 0

    def __add__(self, other: Revoked) -> Revoked:
        return Revoked(self.access_tokens + other.access_tokens, self.refresh_tokens + other.refresh_tokens)

    def __bool__(self) -> bool:
        return bool(self.access_tokens or self.refresh_tokens)


def request_tokens_revoke(
    *, approval_request_id: UUID | str, actor: User | None, via: str = DecidedVia.ADMIN, now: datetime | None = None
) -> Revoked:
    """Revoke the tokens a request led to: its access token (the latest, approvals moves it on each refresh), the
    refresh tokens of its rotation family and every token exchanged from it, down the chain. Audited as REVOKED on
    the request with `actor` when anything was revoked; a request with nothing left to revoke is left alone."""
    now = now or timezone.now()
    with transaction.atomic():
        revoked, root = _revoke_request_tokens(approval_request_id)
        if revoked:
            audit(
                approval_request_id,
                Kind.REVOKED,
                actor=actor,
                at=now,
                via=str(via),
                **root,
                access_tokens_revoked=revoked.access_tokens,
                refresh_tokens_revoked=revoked.refresh_tokens,
            )
    return revoked


def requests_tokens_revoke(*, request_ids: Sequence[UUID | str], actor: User) -> tuple[int, Revoked]:
    """request_tokens_revoke for each request, each in its own transaction: (how many requests had tokens revoked,
    the total revoked)."""
    requests, total = 0, Revoked()
    for request_id in request_ids:
        revoked = request_tokens_revoke(approval_request_id=request_id, actor=actor)
        requests += bool(revoked)
        total += revoked
    return requests, total


def _revoke_request_tokens(approval_request_id: UUID | str) -> tuple[Revoked, dict[str, Any]]:
    AccessToken = get_access_token_model()
    for _attempt in range(3):
        root_id = (
            ApprovalRequest.objects.filter(pk=approval_request_id).values_list("access_token_id", flat=True).first()
        )
        if root_id is None:
            return Revoked(), {}
        root = AccessToken.objects.select_for_update().filter(pk=root_id).only("pk", "token_checksum").first()
        # A refresh that committed meanwhile moved the request to a new token: start again from that one.
        current = (
            ApprovalRequest.objects.filter(pk=approval_request_id).values_list("access_token_id", flat=True).first()
        )
        if root is None or current != root_id:
            continue
        label = {"access_token_id": root.pk, "token_checksum_prefix": root.token_checksum[:CHECKSUM_PREFIX]}
        return _revoke_tokens([root.pk]), label
    logger.warning("Approval request %s kept changing tokens; nothing revoked", approval_request_id)
    return Revoked(), {}


def _revoke_tokens(access_token_ids: list[int], *, refresh_tokens: Q | None = None) -> Revoked:
    """Revoke the (already locked) access tokens, everything exchanged from them, their refresh tokens' rotation
    families and the refresh tokens `refresh_tokens` selects. Inside the caller's transaction."""
    AccessToken = get_access_token_model()
    RefreshToken = get_refresh_token_model()
    tokens = set(access_token_ids) | _exchanged_from(access_token_ids)
    selected = Q(access_token_id__in=tokens)
    if refresh_tokens is not None:
        selected |= refresh_tokens
    families = set(
        RefreshToken.objects.filter(selected).exclude(token_family=None).values_list("token_family", flat=True)
    )
    if families:
        selected |= Q(token_family__in=families)
    # DOT's RefreshToken.revoke and revoke_family: the live ones are marked revoked, their access tokens deleted.
    live = RefreshToken.objects.select_for_update().filter(selected, revoked__isnull=True)
    live_ids = list(live.values_list("pk", flat=True))
    tokens |= {pk for pk in live.values_list("access_token_id", flat=True) if pk is not None}
    refreshed = RefreshToken.objects.filter(pk__in=live_ids).update(revoked=timezone.now()) if live_ids else 0
    deleted = 0
    if tokens:
        # Deleting an access token is DOT's AccessToken.revoke(); its TokenDetails go with it (CASCADE).
        deleted = AccessToken.objects.filter(pk__in=tokens).count()
        AccessToken.objects.filter(pk__in=tokens).delete()
    return Revoked(access_tokens=deleted, refresh_tokens=refreshed)


def _exchanged_from(access_token_ids: list[int] | set[int]) -> set[int]:
    """Every token exchanged from these, down the chain, locked (as authz.tokens.exchange.token_family_lock)."""
    found: set[int] = set()
    frontier = set(access_token_ids)
    for _hop in range(MAX_CHAIN_DEPTH + 1):
        children = set(
            TokenDetails.objects.select_for_update()
            .filter(subject_token_id__in=frontier)
            .values_list("access_token_id", flat=True)
        )
        children -= found | set(access_token_ids)
        if not children:
            break
        found |= children
        frontier = children
    return found


# --- suspend and resume -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Suspension:
    cancelled: int = 0
    revoked: Revoked = Revoked()
    requests_revoked: int = 0

    def detail(self) -> dict[str, int]:
        """For the AgentEvent."""
        return {
            "requests_cancelled": self.cancelled,
            "access_tokens_revoked": self.revoked.access_tokens,
            "refresh_tokens_revoked": self.revoked.refresh_tokens,
        }


# The suspension reason a deregistered agent shows in admin.
DEREGISTERED_REASON = "Deleted its registration (RFC 7592)."


class AgentSuspended(Exception):
    """agent_deregister of an agent an administrator suspended: it may not delete its registration until resumed."""


def agent_suspend(*, ciba: CibaClient, actor: User, reason: str = "", now: datetime | None = None) -> Suspension | None:
    """Suspend the agent: refused from now on (unauthorized_client), its pending requests cancelled (decided via
    "suspension"), every token it holds revoked, and an AgentEvent with `actor`. None if it was suspended already."""
    now = now or timezone.now()
    reason = reason.strip()[:255]
    with transaction.atomic():
        # The row lock orders concurrent suspensions; the conditional UPDATE makes a second one a no-op. It also waits
        # for each bc-authorize in flight (it holds this row FOR KEY SHARE until it commits, authz.views), so that the
        # pending requests read below are all there are.
        CibaClient.objects.select_for_update().filter(pk=ciba.pk).values_list("pk", flat=True).first()
        won = CibaClient.objects.filter(pk=ciba.pk, suspended_at__isnull=True).update(
            suspended_at=now, suspended_by=actor, suspension_reason=reason
        )
        if not won:
            return None
        # Every token of the agent's but the registration tokens (RFC 7592), which only let its operator manage or
        # delete its registration: kept, so that a resumed agent can still do that.
        done = _withdraw(ciba, actor=actor, via=DecidedVia.SUSPENSION, now=now, registration_tokens=False)
        AgentEvent.objects.create(
            client=ciba, kind=AgentEvent.Kind.SUSPENDED, actor=actor, at=now, detail={"reason": reason, **done.detail()}
        )
        client_id = ciba.application.client_id
        _forget(client_id)
    logger.info("Agent %s suspended by %s", client_id, actor.get_username())
    return done


def agent_deregister(*, application: Any, now: datetime | None = None) -> Suspension | None:
    """RFC 7592 §2.3, DELETE of the agent's own registration. The client_id, secret, keys and registration access
    token stop working at once (the client is unknown to authentication from now on, authz.clients.auth), its pending
    requests are cancelled (decided via "deregistration"), every token it holds is revoked, and it stays suspended for
    good. Its rows stay: deleting them would CASCADE away its requests and their audit trail, which is append-only
    (issue 18) and must outlive an agent that would rather it did not. An AgentEvent without an actor records it.

    None if it was deregistered already; AgentSuspended if an administrator suspended it (read under its row lock, so
    a suspension that committed while this waited counts, and its actor and reason stay as they were). An application
    without CIBA settings has no requests, so no trail: it is deleted as RFC 7592 says."""
    now = now or timezone.now()
    Application = type(application)
    with transaction.atomic():
        # Locks in the order a registration update (PUT) takes them: the application, then its CIBA settings. FOR NO
        # KEY UPDATE on the application, which does not wait for the KEY SHARE locks that foreign key checks take
        # (a bc-authorize's or a refresh's INSERT), so that neither can deadlock with this.
        Application.objects.select_for_update(no_key=True).filter(pk=application.pk).values_list("pk").first()
        ciba = CibaClient.objects.select_for_update().filter(pk=application.pk).first()
        if ciba is None:
            application.delete()
            return Suspension()
        if ciba.deregistered_at is not None:
            return None
        if ciba.suspended_at is not None:
            raise AgentSuspended(application.client_id)
        won = CibaClient.objects.filter(pk=ciba.pk, deregistered_at__isnull=True).update(
            deregistered_at=now,
            suspended_at=now,
            suspended_by=None,
            suspension_reason=str(DEREGISTERED_REASON),
        )
        if not won:
            return None
        done = _withdraw(ciba, actor=None, via=DecidedVia.DEREGISTRATION, now=now, registration_tokens=True)
        # The secret stops matching too (DOT hashes the new one on save; nobody ever sees it).
        application.client_secret = generate_client_secret()
        application.save(update_fields=["client_secret"])
        AgentEvent.objects.create(
            client=ciba, kind=AgentEvent.Kind.DEREGISTERED, actor=None, at=now, detail=done.detail()
        )
        _forget(application.client_id)
    logger.info("Agent %s deleted its registration", application.client_id)
    return done


def _withdraw(
    ciba: CibaClient, *, actor: User | None, via: str, now: datetime, registration_tokens: bool
) -> Suspension:
    """Cancel the agent's pending requests and revoke every token it holds (with the registration tokens if asked),
    each request audited with `actor` and `via`. Inside the caller's transaction, with the CibaClient row locked."""
    AccessToken = get_access_token_model()
    application_id = ciba.application_id
    pending = list(
        ApprovalRequest.objects.filter(client_id=application_id, status=Status.PENDING).values_list("pk", flat=True)
    )
    cancelled = sum(
        approval_services.approval_request_cancel(approval_request_id=pk, actor=actor, via=via, now=now)
        for pk in pending
    )
    own = AccessToken.objects.select_for_update().filter(application_id=application_id)
    own = own.exclude(scope__contains=INITIAL_ACCESS_TOKEN_SCOPE)
    if not registration_tokens:
        own = own.exclude(scope__contains=oauth2_settings.DCR_REGISTRATION_SCOPE)
    token_ids = list(own.values_list("pk", flat=True))
    # The requests those tokens stand for, read before the rows go (their access_token is SET_NULL).
    by_request = dict(
        ApprovalRequest.objects.filter(access_token_id__in=token_ids).values_list("pk", "access_token_id")
    )
    checksums = dict(AccessToken.objects.filter(pk__in=by_request.values()).values_list("pk", "token_checksum"))
    revoked = _revoke_tokens(token_ids, refresh_tokens=Q(application_id=application_id, revoked__isnull=True))
    for request_id, token_id in by_request.items():
        audit(
            request_id,
            Kind.REVOKED,
            actor=actor,
            at=now,
            via=str(via),
            access_token_id=token_id,
            token_checksum_prefix=checksums.get(token_id, "")[:CHECKSUM_PREFIX],
        )
    return Suspension(cancelled=cancelled, revoked=revoked, requests_revoked=len(by_request))


def _forget(client_id: str) -> None:
    # The poll fast path must not answer for this client on what it proved before (authz.ciba.poll); dropped now and
    # again once committed, after any poll that read the client before this change has stored it back.
    poll.forget_client(client_id)
    transaction.on_commit(partial(poll.forget_client, client_id))


def agent_resume(*, ciba: CibaClient, actor: User, now: datetime | None = None) -> bool:
    """Lift a suspension: the agent may make requests again (nothing revoked or cancelled comes back). False if it
    was not suspended, or deleted its registration: that suspension is for good (agent_deregister)."""
    now = now or timezone.now()
    with transaction.atomic():
        CibaClient.objects.select_for_update().filter(pk=ciba.pk).values_list("pk", flat=True).first()
        suspended = (
            CibaClient.objects.filter(pk=ciba.pk, suspended_at__isnull=False, deregistered_at__isnull=True)
            .values_list("suspended_at", "suspension_reason")
            .first()
        )
        if suspended is None:
            return False
        CibaClient.objects.filter(pk=ciba.pk).update(suspended_at=None, suspended_by=None, suspension_reason="")
        AgentEvent.objects.create(
            client=ciba,
            kind=AgentEvent.Kind.RESUMED,
            actor=actor,
            at=now,
            detail={"suspended_at": suspended[0].isoformat() if suspended[0] else "", "reason": suspended[1]},
        )
        transaction.on_commit(partial(poll.forget_client, ciba.application.client_id))
    logger.info("Agent %s resumed by %s", ciba.application.client_id, actor.get_username())
    return True
