"""The figures of the admin's overview page (issue 18 item 5): the last 24 hours and the last 7 days.

Every figure is about the requests created in the window: their status as the agent sees it now, the decisions made
on them, their prompt deliveries, their agents. Windows are made of whole clock hours (in the server's time zone):
the last 24 hours are the 24 hours before the current one, and the current one so far; the last 7 days, 168 hours
and the current one. Requests are read by their indexed created_at, never the whole table.

A million requests a week is a million rows in the 7-day window, and aggregating them takes seconds. But requests
stop changing once each is decided and redeemed, cancelled, or past its expiry (an agent's request lives at most
AUTHZ["MAX_EXPIRY_SECONDS"]). Each page load asks PostgreSQL when the oldest request still live was created (through
the expiry sweep's partial index, which holds only those); everything created before that, less SETTLE_MARGIN, is
settled. A settled hour is read once and kept in the cache (Redis), an hour per key; the hours not settled yet are
cached in five-minute slices as those settle, so that a load reads from the tables only the minutes since the oldest
live request, and whatever is missing from the cache (everything, after a cache flush: that one load takes seconds,
which is why a periodic task keeps the cache warm, warm_overview_task). Four aggregate queries read them, grouped by
hour or by minute:

1. requests by status (as the agent sees it now) and whether no prompt ever reached anybody;
2. decisions made by a person (or the automated endpoint): how many, how many approved, and a histogram of the time
   to decision, from which the median and the 90th percentile are computed as PostgreSQL's percentile_cont would
   (to the second under two minutes, to 10 s under twenty, to the minute beyond; the same on SQLite, which
   `make run` uses);
3. prompt delivery attempts (approvals' Delivery rows) per channel and status, by their request's hour;
4. requests per agent, for the busiest five.

Every one of them is a sum, so hours add up to windows and days. A request approved or denied and then never
redeemed ends up "expired" (approvals' expiry sweep): its status says so, and its decision still counts as the one it
was, read from its audit event for those rows alone.

What is cached is not corrected afterwards: a provider's delivery report that arrives more than SETTLE_MARGIN after
the request settled, or requests deleted with their agent, change the figures only once that hour leaves the window.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from typing import Any

from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import (
    BooleanField,
    Case,
    CharField,
    Count,
    Exists,
    F,
    Func,
    IntegerField,
    Min,
    OuterRef,
    Q,
    Value,
    When,
)
from django.db.models.functions import TruncHour, TruncMinute
from django.utils import timezone
from oauth2_provider.models import get_application_model

from approvals.models import ApprovalRequest, AuditEvent, Delivery

logger = logging.getLogger(__name__)

Status = ApprovalRequest.Status
DecidedVia = ApprovalRequest.DecidedVia

HOUR = timedelta(hours=1)
SLICE = timedelta(minutes=5)
DAY = timedelta(hours=24)
WEEK = timedelta(days=7)

# The order statuses are listed and stacked in, from still open to finished.
STATUSES: tuple[str, ...] = (
    Status.PENDING,
    Status.APPROVED,
    Status.CONSUMED,
    Status.DENIED,
    Status.EXPIRED,
    Status.CANCELLED,
)
# A decision is a person's (signed-in page or the prompt's link) or the automated endpoint's, never an admin's
# cancel, a suspension or an expiry.
DECIDED_BY_PERSON: tuple[str, ...] = (DecidedVia.PAGE, DecidedVia.LINK, DecidedVia.AUTOMATED)
_EXPIRABLE = (Status.PENDING, Status.APPROVED, Status.DENIED)

# Delivery statuses, by what they say of the attempt. SENDING (under way) and INTERRUPTED (outcome unknown) count
# as attempts, but neither as accepted nor as failed.
ACCEPTED = (Delivery.Status.SENT, Delivery.Status.DELIVERED)
FAILED = (Delivery.Status.FAILED, Delivery.Status.REJECTED, Delivery.Status.UNDELIVERED)

TOP_AGENTS = 5

# After its last request settled, an hour is still read live this long: a provider's delivery report may follow.
SETTLE_MARGIN = timedelta(minutes=15)
# Cached hours outlive the 7-day window they serve; the version changes whenever what is cached does.
CACHE_KEY = "review:overview:v1:{zone}:{length}:{start}"
CACHE_SECONDS = int((WEEK + DAY).total_seconds())


# --- What the page is given -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelFailures:
    """Prompt delivery attempts through one channel."""

    channel: str
    attempts: int = 0
    accepted: int = 0
    failed: int = 0

    @property
    def unknown(self) -> int:
        return self.attempts - self.accepted - self.failed

    @property
    def failure_rate(self) -> float | None:
        """Failed attempts out of those whose outcome is known; None when there is none."""
        known = self.accepted + self.failed
        return self.failed / known if known else None


@dataclass(frozen=True)
class BusyAgent:
    application_id: int
    name: str
    client_id: str
    requests: int


@dataclass(frozen=True)
class Window:
    """The figures of one window: requests created from `since` to `until`."""

    key: str
    label: str
    since: datetime
    until: datetime
    statuses: dict[str, int]
    decided: int
    approved: int
    median: timedelta | None
    p90: timedelta | None
    never_delivered: int
    channels: list[ChannelFailures]
    agents: list[BusyAgent]

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    @property
    def approval_rate(self) -> float | None:
        """Approved (tokens issued or not) out of the requests a person decided; None when nobody decided any."""
        return self.approved / self.decided if self.decided else None


@dataclass(frozen=True)
class Bucket:
    """One bar of a chart: the requests created from `start` (a clock hour or a day, in the server's time zone)
    within the window, by status."""

    start: datetime | date
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class Overview:
    now: datetime
    day: Window
    week: Window
    hours: list[Bucket]
    days: list[Bucket]

    @property
    def windows(self) -> tuple[Window, Window]:
        return (self.day, self.week)


# --- Sums of an hour (or part of one) ---------------------------------------------------------------------------------


@dataclass
class Tally:
    """What the figures are made of, for some set of requests; tallies add up."""

    statuses: Counter[str] = field(default_factory=Counter)
    never_delivered: int = 0
    decided: int = 0
    approved: int = 0
    # Time to decision in whole seconds (see _wait_bin) -> how many decisions took it.
    waits: Counter[int] = field(default_factory=Counter)
    # channel -> attempts, accepted, failed
    channels: dict[str, list[int]] = field(default_factory=dict)
    # application pk -> requests
    agents: Counter[int] = field(default_factory=Counter)

    def add(self, other: Tally) -> Tally:
        self.statuses.update(other.statuses)
        self.never_delivered += other.never_delivered
        self.decided += other.decided
        self.approved += other.approved
        self.waits.update(other.waits)
        for channel, counts in other.channels.items():
            mine = self.channels.setdefault(channel, [0, 0, 0])
            for index, value in enumerate(counts):
                mine[index] += value
        self.agents.update(other.agents)
        return self

    def dump(self) -> dict[str, Any]:
        """Plain data, for the cache."""
        return {
            "statuses": dict(self.statuses),
            "never_delivered": self.never_delivered,
            "decided": self.decided,
            "approved": self.approved,
            "waits": dict(self.waits),
            "channels": self.channels,
            "agents": dict(self.agents),
        }

    @classmethod
    def load(cls, data: dict[str, Any]) -> Tally:
        # As dumped: the cache pickles, so keys keep their types.
        return cls(
            statuses=Counter(data["statuses"]),
            never_delivered=data["never_delivered"],
            decided=data["decided"],
            approved=data["approved"],
            waits=Counter(data["waits"]),
            channels=data["channels"],
            agents=Counter(data["agents"]),
        )


def total(tallies: Iterable[Tally]) -> Tally:
    result = Tally()
    for tally in tallies:
        result.add(tally)
    return result


# --- The overview -----------------------------------------------------------------------------------------------------


def overview(*, now: datetime | None = None) -> Overview:
    """Everything the overview page shows, as of `now`."""
    now = now or timezone.now()
    tz = timezone.get_current_timezone()
    current = _hour_start(now, tz)
    day_since, week_since = current - DAY, current - WEEK
    hours = list(_hours(week_since, now, tz))
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # For this transaction only (SET LOCAL): no JIT, whose compiling would take a second for aggregates
            # estimated dear (a subplan per row) that run in milliseconds once the cache is warm; and room to sort
            # and hash a cold week in memory rather than on disk.
            with connection.cursor() as cursor:
                cursor.execute("SELECT set_config('jit', 'off', true), set_config('work_mem', '64MB', true)")
        settled_before = _settled_before(now)
        pieces = list(_pieces(hours, settled_before=settled_before, now=now))
        cacheable = [piece for piece in pieces if piece[0] + piece[1] <= settled_before]
        cached = _cache_get(cacheable, tz)
        read: dict[Piece, Tally] = {}
        for length in (HOUR, SLICE):
            unread = [piece for piece in pieces if piece[1] == length and piece not in cached]
            read |= _read(_merge_ranges((start, start + length) for start, _ in unread), length, now=now, tz=tz)
        _cache_set({piece: read.get(piece, Tally()) for piece in cacheable if piece not in cached}, tz)
        # Summed as few times as possible: a week of hours is a few hundred thousand counts.
        tallies: dict[datetime, Tally] = {}
        for start, length in pieces:
            found = cached.get((start, length)) or read.get((start, length)) or Tally()
            if length == HOUR:
                tallies[start] = found  # only read from here on: a cached tally is never changed
            else:
                tallies.setdefault(_hour_start(start, tz), Tally()).add(found)
        days: dict[date, Tally] = {}
        for hour, tally in tallies.items():
            days.setdefault(timezone.localtime(hour, tz).date(), Tally()).add(tally)
        day = total(tally for hour, tally in tallies.items() if hour >= day_since)
        week = total(days.values())
        names = _agent_names({pk for tally in (day, week) for pk, _ in _top(tally.agents)})
    return Overview(
        now=now,
        day=_window("24h", "Last 24 hours", day_since, now, day, names),
        week=_window("7d", "Last 7 days", week_since, now, week, names),
        hours=[Bucket(start=hour, counts=dict(tally.statuses)) for hour, tally in tallies.items() if hour >= day_since],
        days=[Bucket(start=day_, counts=dict(tally.statuses)) for day_, tally in days.items()],
    )


def _settled_before(now: datetime) -> datetime:
    """Requests created before the returned time can no longer change: the oldest still live (undecided, or decided
    and unredeemed, before its expiry; or past it by less than SETTLE_MARGIN) was created then. Read through the
    expiry sweep's partial index, which holds only requests the sweep has not finished."""
    oldest_live = ApprovalRequest.objects.filter(status__in=_EXPIRABLE, expires_at__gt=now - SETTLE_MARGIN).aggregate(
        oldest=Min("created_at")
    )["oldest"]
    return min(oldest_live, now - SETTLE_MARGIN) if oldest_live is not None else now - SETTLE_MARGIN


# A stretch of time whose requests are tallied together: a whole hour, or five minutes of an hour not yet settled.
Piece = tuple[datetime, timedelta]


def _pieces(hours: Iterable[datetime], *, settled_before: datetime, now: datetime) -> Iterator[Piece]:
    """Each hour whole once settled; before that, in five-minute slices (up to now), so that only the minutes since
    the oldest live request are read on every load."""
    for hour in hours:
        if hour + HOUR <= settled_before:
            yield (hour, HOUR)
            continue
        start = hour
        while start < hour + HOUR and start <= now:
            yield (start, SLICE)
            start += SLICE


def _hour_start(value: datetime, tz: tzinfo) -> datetime:
    """The start of `value`'s clock hour in `tz`, as an aware datetime."""
    local = timezone.localtime(value, tz)
    return local - timedelta(minutes=local.minute, seconds=local.second, microseconds=local.microsecond)


def _hours(since: datetime, until: datetime, tz: tzinfo) -> Iterator[datetime]:
    """The clock hours from `since`'s to `until`'s, both included: 169 for a week, 25 for a day."""
    hour = _hour_start(since, tz)
    while hour <= until:
        yield hour
        hour = _hour_start(hour + HOUR, tz)


def _merge_ranges(ranges: Iterable[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    merged: list[tuple[datetime, datetime]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _top(agents: Counter[int]) -> list[tuple[int, int]]:
    # Ties go to the agent registered first, so that the list does not shuffle between loads.
    return sorted(agents.items(), key=lambda item: (-item[1], item[0]))[:TOP_AGENTS]


def _agent_names(pks: set[int]) -> dict[int, tuple[str, str]]:
    if not pks:
        return {}
    rows = get_application_model().objects.filter(pk__in=pks).values_list("pk", "name", "client_id")
    return {pk: (name or client_id, client_id) for pk, name, client_id in rows}


def _window(
    key: str, label: str, since: datetime, until: datetime, tally: Tally, names: dict[int, tuple[str, str]]
) -> Window:
    waits = sorted(tally.waits.items())
    median, p90 = percentile(waits, 0.5), percentile(waits, 0.9)
    return Window(
        key=key,
        label=label,
        since=since,
        until=until,
        statuses={status: tally.statuses.get(status, 0) for status in STATUSES},
        decided=tally.decided,
        approved=tally.approved,
        median=None if median is None else timedelta(seconds=median),
        p90=None if p90 is None else timedelta(seconds=p90),
        never_delivered=tally.never_delivered,
        channels=[
            ChannelFailures(channel=channel, attempts=attempts, accepted=accepted, failed=failed)
            for channel, (attempts, accepted, failed) in sorted(tally.channels.items())
            if attempts
        ],
        agents=[
            BusyAgent(
                application_id=pk,
                name=names.get(pk, ("?", ""))[0],
                client_id=names.get(pk, ("?", ""))[1],
                requests=count,
            )
            for pk, count in _top(tally.agents)
            if pk in names  # an agent deleted since its hour was cached
        ],
    )


def percentile(histogram: list[tuple[int, int]], fraction: float) -> float | None:
    """percentile_cont(fraction) over the values of a histogram ((value, count) pairs, by value): linear
    interpolation between the two values closest to rank fraction * (n - 1)."""
    n = sum(count for _, count in histogram)
    if not n:
        return None
    position = fraction * (n - 1)
    lower_rank = int(position)
    upper_rank = min(lower_rank + 1, n - 1)
    lower = upper = None
    seen = 0
    for value, count in histogram:
        seen += count  # ranks up to seen - 1 hold `value` or less
        if lower is None and lower_rank < seen:
            lower = value
        if upper_rank < seen:
            upper = value
            break
    assert lower is not None and upper is not None
    return lower + (upper - lower) * (position - lower_rank)


# --- The cache --------------------------------------------------------------------------------------------------------


def _key(piece: Piece, tz: tzinfo) -> str:
    start, length = piece
    return CACHE_KEY.format(zone=str(tz), length=int(length.total_seconds()), start=int(start.timestamp()))


def _cache_get(pieces: list[Piece], tz: tzinfo) -> dict[Piece, Tally]:
    if not pieces:
        return {}
    keys = {_key(piece, tz): piece for piece in pieces}
    try:
        found = cache.get_many(list(keys))
    except Exception:  # the cache is a shortcut: without it, everything is read from the database
        logger.warning("review overview: the cache could not be read", exc_info=True)
        return {}
    return {keys[key]: Tally.load(value) for key, value in found.items()}


def _cache_set(tallies: dict[Piece, Tally], tz: tzinfo) -> None:
    if not tallies:
        return
    try:
        cache.set_many({_key(piece, tz): tally.dump() for piece, tally in tallies.items()}, timeout=CACHE_SECONDS)
    except Exception:
        logger.warning("review overview: the cache could not be written", exc_info=True)


# --- The four queries -------------------------------------------------------------------------------------------------


class _WaitSeconds(Func):
    """decided_at - created_at in whole seconds, rounded (PostgreSQL, and SQLite for `make run`)."""

    output_field = IntegerField()
    arity = 2

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        template = "ROUND(EXTRACT(EPOCH FROM (%(expressions)s)))::integer"
        return self.as_sql(compiler, connection, template=template, arg_joiner=" - ", **extra)

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        template = "CAST(ROUND((julianday(%(expressions)s)) * 86400.0) AS INTEGER)"
        return self.as_sql(compiler, connection, template=template, arg_joiner=") - julianday(", **extra)


def _wait_bin() -> Case:
    """The time to decision, to the second under two minutes, to 10 s under twenty, to the minute beyond: enough for
    the page, which shows seconds, and few enough values to cache an hour's histogram."""
    seconds = _WaitSeconds(F("decided_at"), F("created_at"))
    return Case(
        When(Q(decided_at__lt=F("created_at") + timedelta(seconds=119.5)), then=seconds),
        When(
            Q(decided_at__lt=F("created_at") + timedelta(seconds=1195)),
            then=(_WaitSeconds(F("decided_at"), F("created_at")) + Value(5)) / Value(10) * Value(10),
        ),
        default=(_WaitSeconds(F("decided_at"), F("created_at")) + Value(30)) / Value(60) * Value(60),
        output_field=IntegerField(),
    )


def _approved() -> Q:
    """The decision was to approve: approved or tokens issued; or, for a request that then expired unredeemed, an
    "approved" audit event (only those rows look one up, through the event's request index)."""
    approved_event = AuditEvent.objects.filter(request=OuterRef("pk"), kind=AuditEvent.Kind.APPROVED)
    return Q(status__in=(Status.APPROVED, Status.CONSUMED)) | Q(Exists(approved_event), status=Status.EXPIRED)


def _flag(condition: Q) -> Case:
    return Case(When(condition, then=Value(True)), default=Value(False), output_field=BooleanField())


def _read(
    ranges: list[tuple[datetime, datetime]], length: timedelta, *, now: datetime, tz: tzinfo
) -> dict[Piece, Tally]:
    """The tallies of the requests created in `ranges` (and not after `now`), by clock hour or by five minutes."""
    if not ranges:
        return {}

    def within(prefix: str = "") -> Q:
        condition = Q()
        for start, end in ranges:
            end = min(end, now + timedelta(microseconds=1))
            condition |= Q(**{f"{prefix}created_at__gte": start, f"{prefix}created_at__lt": end})
        return condition

    requests = ApprovalRequest.objects.filter(within()).order_by()
    trunc = TruncHour if length == HOUR else TruncMinute
    hour = trunc("created_at", tzinfo=tz)
    tallies: dict[Piece, Tally] = {}
    pieces: dict[datetime, Tally] = {}

    def tally(at: datetime) -> Tally:
        if at not in pieces:
            start = _hour_start(at, tz)
            if length == SLICE:
                start += SLICE * ((at - start) // SLICE)
            pieces[at] = tallies.setdefault((start, length), Tally())
        return pieces[at]

    # 1. Status as the agent sees it (ApprovalRequest.effective_status): undecided or unredeemed past its expiry is
    # expired, whether or not the sweep has written it yet. Never delivered: pending or expired, and no provider
    # accepted a prompt (approvals writes prompt_channel when one does), as the request list's channel filter says.
    status = Case(
        When(status__in=_EXPIRABLE, expires_at__lte=now, then=Value(Status.EXPIRED)),
        default=F("status"),
        output_field=CharField(),
    )
    undelivered = _flag(Q(prompt_channel=""))
    status_rows = (
        requests.annotate(h=hour, s=status, u=undelivered)
        .values("h", "s", "u")
        .annotate(n=Count("pk"))
        .values_list("h", "s", "u", "n")
    )
    for at, eff_status, never, n in status_rows:
        counts = tally(at)
        counts.statuses[eff_status] += n
        if never and eff_status in (Status.PENDING, Status.EXPIRED):
            counts.never_delivered += n

    # 2. Decisions, with how long each took.
    decision_rows = (
        requests.filter(decided_via__in=DECIDED_BY_PERSON, decided_at__isnull=False)
        .annotate(h=hour, a=_flag(_approved()), w=_wait_bin())
        .values("h", "a", "w")
        .annotate(n=Count("pk"))
        .values_list("h", "a", "w", "n")
    )
    for at, approved, wait, n in decision_rows:
        counts = tally(at)
        counts.decided += n
        counts.approved += n if approved else 0
        counts.waits[max(0, wait)] += n

    # 3. Prompt delivery attempts, through their request's created_at (indexed).
    delivery_rows = (
        Delivery.objects.filter(within("request__"))
        .order_by()
        .annotate(h=trunc("request__created_at", tzinfo=tz))
        .values("h", "channel", "status")
        .annotate(n=Count("pk"))
        .values_list("h", "channel", "status", "n")
    )
    for at, channel, delivery_status, n in delivery_rows:
        counts_by_channel = tally(at).channels.setdefault(channel, [0, 0, 0])
        counts_by_channel[0] += n
        counts_by_channel[1] += n if delivery_status in ACCEPTED else 0
        counts_by_channel[2] += n if delivery_status in FAILED else 0

    # 4. Requests per agent.
    agent_rows = requests.annotate(h=hour).values("h", "client").annotate(n=Count("pk")).values_list("h", "client", "n")
    for at, client, n in agent_rows:
        tally(at).agents[client] += n
    return tallies
