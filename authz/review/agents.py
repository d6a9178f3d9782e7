"""Per-agent figures for the admin's application list and page (issue 18 item 3): over the last WINDOW, requests,
approval rate, median time to decision and prompt failures; and the agent's last request, of any age.

The window's figures are one aggregate query for a whole page of agents, grouped by client over the window's
requests (along the (client, -created_at) index), whatever the agents have done. The median is PostgreSQL's
percentile_cont; elsewhere (SQLite, which `make run` uses) the window's times are read and the median computed here
the same way. Decisions and approvals are counted as the overview counts them:
made by a person (or the automated endpoint), an approval read from the audit trail for a request that expired after
it. The last request is a subquery of the list's own query (`with_last_request`): one index probe per agent listed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import (
    Aggregate,
    Count,
    DurationField,
    Exists,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
)
from django.utils import timezone

from approvals.display import admin_duration
from approvals.models import ApprovalRequest, AuditEvent

Status = ApprovalRequest.Status
DecidedVia = ApprovalRequest.DecidedVia

WINDOW = timedelta(days=30)
# Decisions, as the overview counts them: a person's (page, link) or the automated endpoint's; not a cancel or expiry.
DECIDED_BY_PERSON: tuple[str, ...] = (DecidedVia.PAGE, DecidedVia.LINK, DecidedVia.AUTOMATED)


class PercentileCont(Aggregate):
    """PostgreSQL's percentile_cont(fraction) WITHIN GROUP (ORDER BY expression): linear interpolation between the
    two closest ranks; an interval in, an interval out."""

    function = "PERCENTILE_CONT"
    name = "PercentileCont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"

    def __init__(self, expression: Any, fraction: float, **extra: Any) -> None:
        if not 0 <= fraction <= 1:
            raise ValueError(fraction)
        # A number of ours, never input: written into the SQL as a literal.
        super().__init__(expression, fraction=repr(float(fraction)), output_field=DurationField(), **extra)


def percentile(ordered: Sequence[timedelta], fraction: float) -> timedelta | None:
    """percentile_cont over a sorted list, for databases without it."""
    if not ordered:
        return None
    position = fraction * (len(ordered) - 1)
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def approved() -> Q:
    """The decision was to approve: approved or tokens issued, or, for a request that then expired unredeemed (the
    expiry sweep makes a denied request expired too), an "approved" audit event, looked up for those rows alone."""
    approved_event = AuditEvent.objects.filter(request=OuterRef("pk"), kind=AuditEvent.Kind.APPROVED)
    return Q(status__in=(Status.APPROVED, Status.CONSUMED)) | Q(Exists(approved_event), status=Status.EXPIRED)


@dataclass(frozen=True)
class AgentStats:
    requests: int = 0
    decided: int = 0
    approved: int = 0
    median_decision: timedelta | None = None
    prompt_failures: int = 0

    @property
    def approval_rate(self) -> float | None:
        return self.approved / self.decided if self.decided else None


EMPTY = AgentStats()


def agent_stats(application_ids: Iterable[int], *, now: datetime | None = None) -> dict[int, AgentStats]:
    """The figures of each application (by pk) over the WINDOW before `now`; those without requests are absent."""
    ids = sorted(set(application_ids))
    if not ids:
        return {}
    since = (now or timezone.now()) - WINDOW
    in_window = ApprovalRequest.objects.filter(client_id__in=ids, created_at__gte=since).order_by()
    decided = Q(decided_via__in=DECIDED_BY_PERSON, decided_at__isnull=False)
    waited = ExpressionWrapper(F("decided_at") - F("created_at"), output_field=DurationField())
    figures: dict[str, Any] = {
        "requests": Count("pk"),
        "decided": Count("pk", filter=decided),
        "approved": Count("pk", filter=decided & approved()),
        "prompt_failures": Count("pk", filter=Q(prompt_failed_at__isnull=False)),
    }
    postgres = connection.vendor == "postgresql"
    if postgres:
        figures["median"] = PercentileCont(waited, 0.5, filter=decided)
    stats = {
        row["client_id"]: AgentStats(
            requests=row["requests"],
            decided=row["decided"],
            approved=row["approved"],
            median_decision=row.get("median"),
            prompt_failures=row["prompt_failures"],
        )
        for row in in_window.values("client_id").annotate(**figures)
    }
    if not postgres and stats:
        waits: dict[int, list[timedelta]] = {}
        for client_id, wait in in_window.filter(decided).values_list("client_id", waited):
            waits.setdefault(client_id, []).append(wait)
        for client_id, found in waits.items():
            stats[client_id] = replace(stats[client_id], median_decision=percentile(sorted(found), 0.5))
    return stats


def with_last_request(applications: QuerySet[Any]) -> QuerySet[Any]:
    """`applications` with `last_request_at`: when each made its last request, by one probe of the (client,
    -created_at) index per row."""
    latest = ApprovalRequest.objects.filter(client_id=OuterRef("pk")).order_by("-created_at").values("created_at")[:1]
    annotated: QuerySet[Any] = applications.annotate(last_request_at=Subquery(latest))
    return annotated


def duration_text(value: timedelta | None) -> str:
    """A wait as people say it: "12 s", "3 min 4 s", "2 h 5 min", "1 d 3 h"; "-" for none."""
    return "-" if value is None else admin_duration(round(value.total_seconds()))


def percent_text(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f} %"
