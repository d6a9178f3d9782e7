"""Background delivery, one shape for prompting approvers (approvals.prompts) and for ping and push callbacks: claim
the row, write an attempt row before the call and its outcome after it, retry with backoff and full jitter while the
next attempt still starts before the deadline, and let a beat sweeper re-enqueue rows whose task was lost.

Exactly once rests on the row, not on the broker: a conditional UPDATE of its "claimed until" column lets one worker
at a time work on it, and its "due at" column (always ahead of the task that should run next) tells the sweeper when
that task must have been lost. The callers own their tasks: a sweep is handed an `enqueue` callable (a task's
`.delay`), so nothing here or in the services imports a task module.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import models
from django.db.models import Q, QuerySet
from django.utils import timezone

logger = logging.getLogger(__name__)

# The length of the error column that every delivered row and attempt row has.
ERROR_LENGTH = 500


@dataclass(frozen=True)
class Outcome:
    """What one run of a delivery task did."""

    delivered: bool = False
    # Seconds until the task should run again; None when there is nothing more to do.
    retry_in: float | None = None
    errors: tuple[str, ...] = ()


def full_jitter(attempt: int, *, base: float, maximum: float) -> float:
    """Exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter"): a random
    delay up to base * 2^(attempt-1), capped at maximum, and never below half the base."""
    ceiling = min(maximum, base * 2 ** max(attempt - 1, 0))
    return random.uniform(base / 2, max(ceiling, base / 2))  # noqa: S311 (jitter, not a secret)


def fits_before(deadline: datetime, *, delay: float, now: datetime) -> bool:
    """Whether an attempt `delay` seconds from now still starts before the deadline; if not, give up now."""
    return now + timedelta(seconds=delay) < deadline


def finish_attempt(
    rows: QuerySet[Any], status: str, *, error: str = "", at: datetime | None = None, **fields: Any
) -> None:
    """Record how an attempt ended on its attempt row (`rows`: that row, with any condition the update must meet)."""
    rows.update(status=status, error=error[:ERROR_LENGTH], finished_at=at or timezone.now(), **fields)


@dataclass(frozen=True)
class Queue:
    """A table whose rows are delivered in the background: `claimed_until` holds a row for one worker, `due_at` is
    when the sweeper may conclude that the task meant to run by then was lost."""

    model: type[models.Model]
    claimed_until: str
    due_at: str

    @property
    def rows(self) -> QuerySet[Any]:
        return self.model._default_manager.all()

    def claim(self, pk: Any, *, now: datetime, until: datetime, due_at: datetime, eligible: Q) -> bool:
        """Hold an eligible row until `until`, unless another worker's claim is still running."""
        lapsed = Q(**{f"{self.claimed_until}__isnull": True}) | Q(**{f"{self.claimed_until}__lte": now})
        claimed = (
            self.rows.filter(eligible, pk=pk).filter(lapsed).update(**{self.claimed_until: until, self.due_at: due_at})
        )
        return claimed == 1

    def release(self, pk: Any, *, until: datetime) -> None:
        # Only our own claim: a run slower than its claim may have been overtaken by another worker.
        self.rows.filter(pk=pk, **{self.claimed_until: until}).update(**{self.claimed_until: None})

    def unclaimed(self, pk: Any, *, now: datetime, watched: Q) -> Outcome:
        """The outcome for a row we could not claim: while a `watched` row is held by another worker, look again once
        its claim lapses, in case that worker died; otherwise there is nothing to do."""
        held_until = self.rows.filter(watched, pk=pk).values_list(self.claimed_until, flat=True).first()
        if held_until and held_until > now:
            return Outcome(retry_in=(held_until - now).total_seconds() + 1)
        return Outcome()

    def run(
        self,
        pk: Any,
        work: Callable[[], Outcome],
        *,
        now: datetime,
        until: datetime,
        due_at: datetime,
        eligible: Q,
        watched: Q,
    ) -> Outcome:
        """Claim the row, do `work` and release the claim; or, unclaimed, say when to look again."""
        if not self.claim(pk, now=now, until=until, due_at=due_at, eligible=eligible):
            return self.unclaimed(pk, now=now, watched=watched)
        try:
            return work()
        finally:
            self.release(pk, until=until)

    def retry(self, pk: Any, *, delay: float, now: datetime, deadline: datetime, grace: float, **fields: Any) -> bool:
        """Schedule the next attempt `delay` seconds from now if it fits before the deadline (the sweeper takes over
        `grace` seconds after it, should the retry be lost); False means give up."""
        if not fits_before(deadline, delay=delay, now=now):
            return False
        self.rows.filter(pk=pk).update(**{self.due_at: now + timedelta(seconds=delay + grace)}, **fields)
        return True

    def sweep(
        self,
        *,
        due: Q,
        now: datetime,
        next_due_at: datetime,
        enqueue: Callable[[Any], object],
        limit: int,
        what: str,
    ) -> int:
        """Enqueue the rows (matching `due`) whose due_at has passed, the longest overdue first; stop while the
        broker is down. Returns how many were enqueued."""
        overdue = {f"{self.due_at}__lte": now}
        # Ordered by due_at under the caller's condition, so a partial index on due_at serves it.
        pks = list(self.rows.filter(due, **overdue).order_by(self.due_at).values_list("pk", flat=True)[:limit])
        enqueued = 0
        for pk in pks:
            # Moving due_at first keeps two sweepers (or two beats by mistake) from enqueueing a row twice.
            if not self.rows.filter(pk=pk, **overdue).update(**{self.due_at: next_due_at}):
                continue
            try:
                enqueue(pk)
            except Exception:
                logger.exception("The broker is still unavailable; %s stay due", what)
                break
            enqueued += 1
        return enqueued
