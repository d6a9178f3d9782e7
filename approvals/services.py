"""The approval request's state machine and everything that changes it.

Every transition is one conditional UPDATE (status=<from> in the WHERE clause), so a racing approve and deny, or
two pollers redeeming the same request, cannot both win; each winning transition writes its audit event in the
same transaction.
"""

from __future__ import annotations

import logging
import secrets
from datetime import datetime, timedelta
from functools import cache
from typing import Any
from uuid import UUID

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import check_password, make_password
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.db.models import Case, F, Field, Value, When
from django.utils import timezone

from approvals import attempts
from approvals.audit import audit, audit_many
from approvals.conf import approvals_settings
from approvals.models import ApprovalRequest, Approver, AuditEvent
from approvals.signals import approval_request_changed

logger = logging.getLogger(__name__)

Status = ApprovalRequest.Status
DecidedVia = ApprovalRequest.DecidedVia
Kind = AuditEvent.Kind


class TooManyPending(Exception):
    """The person already has APPROVALS["MAX_PENDING_PER_PERSON"] requests waiting (bc-authorize: access_denied)."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


def generate_auth_req_id() -> str:
    # CIBA Core §7.3: at least 128 bits of entropy (160 recommended), only A-Z a-z 0-9 . - _ ; this is 256 bits.
    return secrets.token_urlsafe(32)


def _changed(
    request_id: UUID | str,
    status: str,
    *,
    previous: str | None,
    at: datetime,
    approval_request: ApprovalRequest | None = None,
) -> None:
    """Tell the listeners (approvals.signals) about a transition, inside its transaction."""
    approval_request_changed.send(
        sender=ApprovalRequest,
        approval_request_id=request_id,
        status=status,
        previous=previous,
        at=at,
        approval_request=approval_request,
    )


def approval_request_create(
    *,
    client: Any,
    user: User,
    scope: str,
    hint_type: str,
    binding_message: str = "",
    acr_values: str = "",
    expires_in: int,
    interval: int,
    requested_expiry: int | None = None,
    authorization_details: list[dict[str, Any]] | None = None,
    now: datetime | None = None,
) -> ApprovalRequest:
    """Store a new pending request and, once committed, hand it to the prompt task.

    expires_in (its lifetime in seconds) and interval (between polls) are the protocol's to choose; requested_expiry
    is only kept as what the client asked for.

    authorization_details must already be validated by the caller: they are shown to the approver as they are.
    Call it inside the caller's transaction to store more about the request with it."""
    now = now or timezone.now()
    approval_request = ApprovalRequest(
        auth_req_id=generate_auth_req_id(),
        client=client,
        user=user,
        scope=scope,
        hint_type=hint_type,
        binding_message=binding_message,
        acr_values=acr_values,
        requested_expiry=requested_expiry,
        authorization_details=authorization_details or [],
        interval=interval,
        created_at=now,
        expires_at=now + timedelta(seconds=expires_in),
        # Should the prompt task never run (the broker is down), the sweeper takes over from then on.
        prompt_due_at=now + timedelta(seconds=approvals_settings.PROMPT_SWEEP_GRACE_SECONDS),
    )
    limit = approvals_settings.MAX_PENDING_PER_PERSON
    # No savepoint: a savepoint costs two round trips, and nothing here is retried inside the caller's transaction.
    # TooManyPending is raised once the block has ended, so it leaves the caller's transaction usable.
    with transaction.atomic(savepoint=False):
        created = _insert_with_audit(
            approval_request, limit=limit, at=now, detail={"client_id": client.client_id, "scope": scope}
        )
        if created:
            _changed(approval_request.pk, Status.PENDING, previous=None, at=now, approval_request=approval_request)
    if not created:
        raise TooManyPending(limit)
    return approval_request


def _insert_with_audit(approval_request: ApprovalRequest, *, limit: int, at: datetime, detail: dict[str, Any]) -> bool:
    """INSERT the new request and its CREATED event, unless the person already has `limit` live requests (0: no cap);
    False then, and nothing is written.

    Requests past expires_at do not count, whether or not the sweeper has marked them expired yet. The person's user
    row is locked for the rest of the transaction, so racing creates for one person are counted one after another
    (along the user-status-expires_at index) and the cap holds exactly. On PostgreSQL all of it is one round trip:
    the lock, then one statement that counts and INSERTs both rows: two statements of one simple-protocol query, so
    that under READ COMMITTED the count's snapshot is taken after the lock was granted (one statement would count
    with a snapshot from before its wait, and miss the request of the transaction it waited for)."""
    if connection.vendor != "postgresql":
        if limit:
            get_user_model().objects.select_for_update().filter(pk=approval_request.user_id).values_list(
                "pk", flat=True
            ).first()
            live = ApprovalRequest.objects.filter(
                user_id=approval_request.user_id, status=Status.PENDING, expires_at__gt=at
            )[:limit].count()
            if live >= limit:
                return False
        approval_request.save(force_insert=True)
        audit(approval_request.pk, Kind.CREATED, at=at, **detail)
        return True
    request_fields, event_fields = _insert_fields()
    values = [f.get_db_prep_save(f.pre_save(approval_request, True), connection) for f in request_fields]
    event = AuditEvent(request_id=approval_request.pk, kind=Kind.CREATED, at=at, detail=detail)
    event_values = [f.get_db_prep_save(f.pre_save(event, True), connection) for f in event_fields[1:]]
    cap: list[Any] = [approval_request.user_id, Status.PENDING, at, limit, limit] if limit else []
    params = [*cap[:1], *values, *cap, *event_values]
    with connection.cursor() as cursor:
        cursor.execute(_insert_sql(bool(limit)), params)
        if limit:
            cursor.nextset()  # the lock's row
        row = cursor.fetchone()
    if row is None:
        return False
    approval_request._state.adding = False
    approval_request._state.db = connection.alias
    return True


@cache
def _insert_fields() -> tuple[list[Field[Any, Any]], list[Field[Any, Any]]]:
    request_fields = list(ApprovalRequest._meta.concrete_fields)
    # The request's column first: the statement fills it from the INSERTed request.
    event_fields: list[Field[Any, Any]] = [AuditEvent._meta.get_field("request")]
    event_fields += [f for f in AuditEvent._meta.concrete_fields if not f.primary_key and f.name != "request"]
    return request_fields, event_fields


@cache
def _insert_sql(capped: bool) -> str:
    q = connection.ops.quote_name
    user_table = get_user_model()._meta
    request_fields, event_fields = _insert_fields()
    req, event = ApprovalRequest._meta, AuditEvent._meta

    def column(meta: Any, name: str) -> str:
        return q(meta.get_field(name).column)

    def typed(fields: list[Field[Any, Any]]) -> str:
        # INSERT ... SELECT takes the types of its expressions, not of its target columns: each value is cast, text
        # for varchar(n) so that a value too long is refused by the column, not cut short by the cast.
        types = [str(f.db_type(connection)) for f in fields]
        return ", ".join(f"CAST(%s AS {'text' if t.startswith('varchar') else t})" for t in types)

    lock = (
        f"SELECT 1 FROM {q(user_table.db_table)} WHERE {q(user_table.pk.column)} = %s FOR UPDATE; "  # noqa: S608
        if capped
        else ""
    )
    cap = (
        f"WHERE (SELECT COUNT(*) FROM (SELECT 1 FROM {q(req.db_table)} WHERE {column(req, 'user')} = %s "  # noqa: S608
        f"AND {column(req, 'status')} = %s AND {column(req, 'expires_at')} > %s LIMIT %s) live) < %s "
        if capped
        else ""
    )
    # Only quoted identifiers and type names from the models' metadata are interpolated; values are parameters.
    return (
        lock + f"WITH created AS (INSERT INTO {q(req.db_table)} ({', '.join(q(f.column) for f in request_fields)}) "  # noqa: S608
        f"SELECT {typed(request_fields)} {cap}RETURNING {q(req.pk.column)}) "
        f"INSERT INTO {q(event.db_table)} ({', '.join(q(f.column) for f in event_fields)}) "
        f"SELECT created.{q(req.pk.column)}, {typed(event_fields[1:])} FROM created RETURNING {q(event.pk.column)}"
    )


def approval_request_decide(
    *,
    approval_request_id: UUID | str,
    user: User,
    approve: bool,
    acr: str = "",
    auth_time: datetime | None = None,
    automated_by: str = "",
    by_link: bool = False,
    now: datetime | None = None,
) -> bool:
    """The approver's decision. Only the request's own user can decide, once, before it expires.

    acr and auth_time say how and when the approver authenticated (approvals.links); they go into the ID token.
    `automated_by` marks a decision made by the automated-approval endpoint for certification runs: audited as
    such, with no person as its actor. `by_link`: made by the holder of the prompt's link rather than a signed-in
    session; the same UPDATE spends the link, so a link decides at most once.
    """
    now = now or timezone.now()
    new_status = Status.APPROVED if approve else Status.DENIED
    auth_time = auth_time or getattr(user, "last_login", None) or now
    unspent: dict[str, Any] = {"link_used_at__isnull": True} if by_link else {}
    spend: dict[str, Any] = {"link_used_at": now} if by_link else {}
    via = DecidedVia.AUTOMATED if automated_by else DecidedVia.LINK if by_link else DecidedVia.PAGE
    with transaction.atomic():
        won = ApprovalRequest.objects.filter(
            pk=approval_request_id, user=user, status=Status.PENDING, expires_at__gt=now, **unspent
        ).update(
            status=new_status,
            decided_at=now,
            auth_time=auth_time,
            acr=acr,
            decided_by=None if automated_by else user,
            decided_via=via,
            **spend,
        )
        if won:
            kind = Kind.APPROVED if approve else Kind.DENIED
            if automated_by:
                audit(approval_request_id, kind, actor=None, at=now, acr=acr, automated_by=automated_by)
            elif by_link:
                audit(approval_request_id, kind, actor=user, at=now, acr=acr, link=True)
            else:
                audit(approval_request_id, kind, actor=user, at=now, acr=acr)
            _changed(approval_request_id, new_status, previous=Status.PENDING, at=now)
    return bool(won)


def approval_request_consume(*, approval_request_id: UUID | str, now: datetime | None = None) -> bool:
    """APPROVED → CONSUMED: the single permission to issue tokens for this request. Call inside the
    transaction that creates the tokens, so that a failure to issue leaves the request approved."""
    now = now or timezone.now()
    won = ApprovalRequest.objects.filter(pk=approval_request_id, status=Status.APPROVED, expires_at__gt=now).update(
        status=Status.CONSUMED, consumed_at=now
    )
    if won:
        audit(approval_request_id, Kind.CONSUMED, at=now)
        _changed(approval_request_id, Status.CONSUMED, previous=Status.APPROVED, at=now)
    return bool(won)


def approval_request_attach_token(*, approval_request_id: UUID | str, access_token: Any) -> None:
    """Link the issued access token to its request, for the audit trail in admin."""
    ApprovalRequest.objects.filter(pk=approval_request_id, status=Status.CONSUMED).update(access_token=access_token)
    AuditEvent.objects.filter(request__pk=approval_request_id, kind=Kind.CONSUMED).update(
        detail={"access_token_id": access_token.pk, "token_checksum_prefix": access_token.token_checksum[:12]}
    )


def approval_request_link_opened(
    *, approval_request_id: UUID | str, signed_in: bool, now: datetime | None = None
) -> bool:
    """The prompt's link was opened (with its authentic token): audited as LINK_OPENED the first time only, so that
    a phone re-opening it, or a link-preview robot, does not grow the trail. True if this was the first time.

    The request row is locked while the trail is checked, so two openings at once record one event."""
    now = now or timezone.now()
    with transaction.atomic():
        if not ApprovalRequest.objects.select_for_update().filter(pk=approval_request_id).exists():
            return False
        if AuditEvent.objects.filter(request__pk=approval_request_id, kind=Kind.LINK_OPENED).exists():
            return False
        audit(approval_request_id, Kind.LINK_OPENED, at=now, signed_in=signed_in)
    return True


def approval_request_token_refreshed(
    *, approval_request_id: UUID | str, access_token: Any, at: datetime, **detail: Any
) -> None:
    """The agent refreshed the request's tokens: `access_token` is the request's token from now on (the refresh
    deleted the previous one), so the request still leads to the tokens it stands behind; audited as REFRESHED.
    Call in the refresh's transaction; `detail` names the token without its value."""
    ApprovalRequest.objects.filter(pk=approval_request_id).update(access_token=access_token)
    audit(approval_request_id, Kind.REFRESHED, at=at, **detail)


def approval_request_cancel(
    *,
    approval_request_id: UUID | str,
    actor: User | None,
    via: str = DecidedVia.ADMIN,
    now: datetime | None = None,
) -> bool:
    """PENDING → CANCELLED, e.g. by an admin stopping a suspicious request. Never approves anything.

    `via` says why, for the review columns: "admin" (an admin's action), "suspension" (its agent was suspended) or
    "deregistration" (its agent deleted its registration, with no actor)."""
    now = now or timezone.now()
    with transaction.atomic():
        won = ApprovalRequest.objects.filter(pk=approval_request_id, status=Status.PENDING).update(
            status=Status.CANCELLED, decided_at=now, decided_by=actor, decided_via=via
        )
        if won:
            audit(approval_request_id, Kind.CANCELLED, actor=actor, at=now, via=str(via))
            _changed(approval_request_id, Status.CANCELLED, previous=Status.PENDING, at=now)
    return bool(won)


def approval_request_expire_due(*, now: datetime | None = None, batch_size: int = 500) -> int:
    """Make expiry permanent for requests past expires_at that were never decided or never redeemed."""
    now = now or timezone.now()
    expirable = (Status.PENDING, Status.APPROVED, Status.DENIED)
    expired = 0
    while True:
        with transaction.atomic():
            ids = list(
                ApprovalRequest.objects.filter(status__in=expirable, expires_at__lte=now).values_list("pk", flat=True)[
                    :batch_size
                ]
            )
            if not ids:
                return expired
            # Re-check the status in the UPDATE: a request redeemed meanwhile is not expired.
            won_ids = list(
                ApprovalRequest.objects.filter(pk__in=ids, status__in=expirable, expires_at__lte=now)
                .select_for_update(skip_locked=True)
                .values_list("pk", flat=True)
            )
            previous = dict(ApprovalRequest.objects.filter(pk__in=won_ids).values_list("pk", "status"))
            # An undecided request expired: that is how it ended. One approved or denied, then never redeemed,
            # keeps how it was decided.
            ApprovalRequest.objects.filter(pk__in=won_ids).update(
                status=Status.EXPIRED,
                decided_via=Case(When(status=Status.PENDING, then=Value(DecidedVia.EXPIRY)), default=F("decided_via")),
            )
            audit_many(won_ids, Kind.EXPIRED, at=now)
            for pk in won_ids:
                _changed(pk, Status.EXPIRED, previous=previous[pk], at=now)
            expired += len(won_ids)
            if len(ids) < batch_size:
                return expired


def approver_set_phone(*, approver: Approver, phone_number: str) -> None:
    """A new number (E.164) is a new destination: SMS disabled for the old one is enabled again."""
    if phone_number == approver.phone_number and approver.phone_disabled_at is None:
        return
    Approver.objects.filter(pk=approver.pk).update(
        phone_number=phone_number, phone_disabled_at=None, phone_disabled_reason=""
    )
    approver.refresh_from_db(fields=["phone_number", "phone_disabled_at", "phone_disabled_reason"])


def approver_may_be_asked(*, user: User) -> bool:
    """Whether agents may send this person requests at all (bc-authorize answers unknown_user_id otherwise).

    Staff and superuser accounts may not, unless APPROVALS["STAFF_APPROVERS"]: any client can name anyone in
    login_hint, and an administrator's account is the last one to put in front of prompts an agent controls. An
    administrator who also approves agents uses a second, ordinary account."""
    if not user.is_active:
        return False
    privileged = getattr(user, "is_staff", False) or getattr(user, "is_superuser", False)
    return not privileged or bool(approvals_settings.STAFF_APPROVERS)


def approver_check_step_up_password(*, user: User, password: str) -> bool:
    """The password typed to reach the higher authentication level. It shares its count of wrong guesses with
    sign-in (approvals.attempts.password_limits), so signing in again cannot get round a locked step-up."""
    limits = attempts.password_limits(username=user.get_username())
    verdict = attempts.attempt(limits, lambda: bool(password) and user.check_password(password))
    return verdict is attempts.Verdict.CORRECT


# --- user codes (CIBA Core §7.1 user_code) ----------------------------------------------------------------------------


def approver_set_user_code(*, approver: Approver, user_code: str) -> None:
    # A person's chosen secret: the slow password hasher is right here, unlike machine-generated client secrets.
    Approver.objects.filter(pk=approver.pk).update(user_code_hash=make_password(user_code))
    approver.refresh_from_db(fields=["user_code_hash"])


def approver_check_user_code(*, approver: Approver, user_code: str) -> bool:
    """Check a user_code, each guess counted before it is checked (approvals.attempts), so that agents cannot guess
    it, not even by racing."""
    verdict = attempts.attempt(
        attempts.user_code_limits(approver_id=approver.pk),
        lambda: bool(approver.user_code_hash) and check_password(user_code, approver.user_code_hash),
    )
    return verdict is attempts.Verdict.CORRECT
