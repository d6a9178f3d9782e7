"""An approver's lockouts as an administrator sees and clears them (issue 18 item 4).

Two counters of approvals.attempts lock a person out: wrong user codes (CIBA Core 7.1, counted per approver across
all agents) and wrong passwords (sign-in and the step-up share one count per username). Each is locked while its
count has reached its limit, until its window ends. Clearing one deletes its counter, so the window ends now, and is
recorded as an ApproverEvent with the administrator as actor, in the same transaction: if Redis cannot be reached
nothing is cleared and nothing recorded. The per-address sign-in counter is not the person's, and is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from approvals import attempts
from approvals.models import Approver, ApproverEvent

USER_CODE = "user_code"
PASSWORD = "password"
KINDS = (USER_CODE, PASSWORD)
LABELS = {USER_CODE: _("user code"), PASSWORD: _("password (sign-in and step-up)")}


@dataclass(frozen=True)
class Lockout:
    kind: str
    failures: int
    max_failures: int
    until: datetime | None  # when the window ends; None when no window runs or it cannot be known

    @property
    def label(self) -> str:
        return str(LABELS[self.kind])

    @property
    def locked(self) -> bool:
        return self.failures >= self.max_failures > 0


def _limit(approver: Approver, kind: str) -> attempts.Limit:
    if kind == USER_CODE:
        return attempts.user_code_limits(approver_id=approver.pk)[0]
    return attempts.password_limits(username=approver.user.get_username())[0]


def approver_lockouts(approver: Approver, *, now: datetime | None = None) -> list[Lockout]:
    """The approver's counters now (RedisError while Redis is unreachable)."""
    now = now or timezone.now()
    limits = [_limit(approver, kind) for kind in KINDS]
    states = attempts.counter_states([limit.key for limit in limits])
    return [
        Lockout(
            kind=kind,
            failures=state.failures,
            max_failures=limit.max_failures,
            until=now + timedelta(seconds=state.seconds_left) if state.seconds_left is not None else None,
        )
        for kind, limit, state in zip(KINDS, limits, states, strict=True)
    ]


class NotYours(PermissionDenied):
    """The approver's account is a staff or superuser account, and the actor is not a superuser."""


def may_clear(approver: Approver, actor: Any) -> bool:
    """Whether `actor` may clear the approver's lockouts. The password count is every sign-in's, the admin's
    included (approvals.backends): an operator clearing a staff or superuser account's would reopen the guessing of
    a password worth more than theirs. Those are a superuser's to clear."""
    user = approver.user
    return bool(getattr(actor, "is_superuser", False)) or not (user.is_staff or user.is_superuser)


def approver_clear_lockouts(
    *, approver: Approver, actor: Any, kinds: tuple[str, ...] = KINDS, now: datetime | None = None
) -> list[str]:
    """Clear the approver's counters of `kinds` that hold wrong guesses; the kinds cleared. Audited as one
    ApproverEvent (LOCKOUT_CLEARED) with `actor` and what each counter held; nothing to clear records nothing.
    NotYours if `actor` may not (may_clear)."""
    if not may_clear(approver, actor):
        raise NotYours
    now = now or timezone.now()
    current = {lockout.kind: lockout for lockout in approver_lockouts(approver, now=now) if lockout.kind in kinds}
    counted = [kind for kind, lockout in current.items() if lockout.failures]
    if not counted:
        return []
    with transaction.atomic():
        ApproverEvent.objects.create(
            approver=approver,
            kind=ApproverEvent.Kind.LOCKOUT_CLEARED,
            actor=actor,
            at=now,
            detail={
                "cleared": counted,
                "failures": {kind: current[kind].failures for kind in counted},
                "locked": [kind for kind in counted if current[kind].locked],
            },
        )
        # Inside the transaction: should Redis refuse, the record rolls back with it.
        attempts.counters_clear([_limit(approver, kind).key for kind in counted])
    return counted
