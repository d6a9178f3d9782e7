"""The admin's approval request list (issue 18): its columns, filters, search and paging, built to stay fast at a
million requests.

- Columns read only the request's row and the rows joined by list_select_related (client, user, decided_by): the
  review columns (decided_by, decided_via, prompt_channel) are written with each transition, so no column queries
  per row.
- Filters that could name thousands of agents or a million people take typed input (a client_id or name, a
  username, e-mail or id) instead of listing every choice; each filter reads its newest rows along one of the
  indexes approvals/migrations/0010_review_fields.py adds.
- Search: an exact auth_req_id (the unique column) or request id; otherwise agents by client_id or name, approvers
  by username or e-mail, and words of the binding message (a trigram index on PostgreSQL). The auth_req_id is the
  agent's secret: found, it leads to the request's page, and no page ever shows it.
- Paging counts at most COUNT_CAP rows: no COUNT(*) over the whole table on each page load.
"""

from __future__ import annotations

import re
import uuid
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin.views.main import PAGE_VAR, ChangeList
from django.contrib.auth import get_user_model
from django.core.paginator import Paginator
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from approvals.conf import approvals_settings
from approvals.display import admin_datetime, admin_duration
from approvals.models import ApprovalRequest
from approvals.services import generate_auth_req_id

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

Status = ApprovalRequest.Status
DecidedVia = ApprovalRequest.DecidedVia

# The most rows the list counts: beyond it the page says "more than" and offers the first pages (filters narrow).
COUNT_CAP = 10_000
# Agents or people one typed filter or search term may stand for: a name fragment common to more is too vague.
MATCH_LIMIT = 100
# What an auth_req_id looks like (approvals.services.generate_auth_req_id): its exact length, URL-safe base64.
_AUTH_REQ_ID = re.compile(rf"[A-Za-z0-9_-]{{{len(generate_auth_req_id())}}}")


def looks_like_auth_req_id(term: str) -> bool:
    return _AUTH_REQ_ID.fullmatch(term) is not None


# --- columns ----------------------------------------------------------------------------------------------------------


def status_label(obj: ApprovalRequest, now: datetime) -> StrOrPromise:
    """The status as the agent sees it: an undecided or unredeemed request past its expiry is expired."""
    return Status(obj.effective_status(now)).label


def decided_how(obj: ApprovalRequest) -> str:
    """By whom or how the request ended: "ada (page)", "ada (link)", "automated", "admin: bob", "agent suspended:
    bob", "agent deleted its registration", "expired"; "" while it has not."""
    who = obj.decided_by.get_username() if obj.decided_by is not None else ""
    via = obj.decided_via
    if via == DecidedVia.PAGE:
        return _("%(who)s (page)") % {"who": who or "?"}
    if via == DecidedVia.LINK:
        return _("%(who)s (link)") % {"who": who or obj.user.get_username()}
    if via == DecidedVia.AUTOMATED:
        return _("automated")
    if via == DecidedVia.ADMIN:
        return _("admin: %(who)s") % {"who": who} if who else _("admin")
    if via == DecidedVia.SUSPENSION:
        return _("agent suspended: %(who)s") % {"who": who} if who else _("agent suspended")
    if via == DecidedVia.DEREGISTRATION:
        return _("agent deleted its registration")
    if via == DecidedVia.EXPIRY:
        return _("expired")
    return who


def decided_at(obj: ApprovalRequest) -> datetime | None:
    """When it ended: the decision, or its expiry for one that expired undecided."""
    if obj.decided_via == DecidedVia.EXPIRY:
        return obj.expires_at
    return obj.decided_at


def decided_cell(obj: ApprovalRequest, now: datetime) -> SafeString | str:
    how = decided_how(obj)
    when = decided_at(obj)
    if when is None and not how:
        # Undecided: expired if the agent would be told so, though the sweep has not marked it yet.
        if obj.effective_status(now) == Status.EXPIRED and obj.status == Status.PENDING:
            return format_html("{}<br>{}", admin_datetime(obj.expires_at), _("expired"))
        return "-"
    return format_html("{}<br>{}", admin_datetime(when), how or "-")


def time_to_decision(obj: ApprovalRequest) -> str:
    if obj.decided_at is None or obj.decided_via == DecidedVia.EXPIRY:
        return "-"
    return admin_duration((obj.decided_at - obj.created_at).total_seconds())


def channel_cell(obj: ApprovalRequest) -> str:
    if obj.prompt_channel:
        return obj.prompt_channel
    if obj.prompt_failed_at is not None:
        return _("none: prompt failed")
    return "-"


def admin_change_url(model: Any, pk: Any) -> str | None:
    """The admin page of a row of another model, if the admin has one (no query: reverse() only)."""
    opts = model._meta
    try:
        return reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[pk])
    except NoReverseMatch:
        return None


def tokens_cell(obj: ApprovalRequest) -> SafeString | str:
    if obj.status != Status.CONSUMED:
        return _("no")
    if obj.access_token_id is None:
        # Revoked, or expired and cleared: the timeline on the request's page says which.
        return _("yes (no longer held)")
    url = admin_change_url(ApprovalRequest._meta.get_field("access_token").related_model, obj.access_token_id)
    return format_html('<a href="{}">{}</a>', url, _("yes")) if url else _("yes")


# --- paging -----------------------------------------------------------------------------------------------------------


class CappedCountPaginator(Paginator):  # type: ignore[type-arg]  # any model's rows
    """Counts at most COUNT_CAP + 1 rows (SELECT COUNT(*) FROM (... LIMIT n)): a filtered million still costs only
    as many rows as the cap. count == COUNT_CAP + 1 means "more than COUNT_CAP"; the template says so."""

    @cached_property
    def count(self) -> int:
        object_list = self.object_list
        if isinstance(object_list, QuerySet):
            # Unordered: the first rows any index yields count as well as the newest.
            return object_list.order_by()[: COUNT_CAP + 1].count()
        return len(object_list)


def _application_model() -> Any:
    # DOT's client model, as the request's foreign key names it (swappable in DOT's settings).
    return ApprovalRequest._meta.get_field("client").related_model


# --- filters ----------------------------------------------------------------------------------------------------------


class InputFilter(admin.ListFilter):
    """A filter with typed input instead of a list of every choice (templates/admin/review/input_filter.html):
    plain GET form, no script. Subclasses name their inputs (`inputs`: parameter, label, HTML input type) and
    filter with the values given."""

    template = "admin/review/input_filter.html"
    inputs: tuple[tuple[str, StrOrPromise, str], ...] = ()

    def __init__(self, request: HttpRequest, params: dict[str, Any], model: Any, model_admin: Any) -> None:
        super().__init__(request, params, model, model_admin)
        for name, _label, _type in self.inputs:
            if name in params:
                value = params.pop(name)
                value = value[-1] if isinstance(value, list) else value
                # PostgreSQL refuses NUL in text: dropped, like the rest of a value it could not mean.
                self.used_parameters[name] = str(value).replace("\x00", "").strip()[:200]

    def values(self) -> dict[str, str]:
        return {name: str(value) for name, value in self.used_parameters.items() if value}

    def has_output(self) -> bool:
        return True

    def expected_parameters(self) -> list[str | None]:
        return [name for name, _label, _type in self.inputs]

    def choices(self, changelist: ChangeList) -> Any:
        mine = {name for name, _label, _type in self.inputs}
        hidden = [
            (name, value)
            for name, values in changelist.params.items()
            if name not in mine and name != PAGE_VAR
            for value in (values if isinstance(values, list) else [values])
        ]
        yield {
            "fields": [
                {"name": name, "label": label, "type": kind, "value": self.used_parameters.get(name, "")}
                for name, label, kind in self.inputs
            ],
            "hidden": hidden,
            "active": bool(self.values()),
            "clear": changelist.get_query_string(remove=[*mine, PAGE_VAR]),
        }

    def warn(self, message: str) -> None:
        # A value that cannot be read filters nothing and says so; never an error page.
        messages.warning(self.request, message)


class AgentFilter(InputFilter):
    title = gettext_lazy("agent")
    inputs = (("agent", gettext_lazy("client_id or name"), "search"),)

    def queryset(self, request: HttpRequest, queryset: QuerySet[ApprovalRequest]) -> QuerySet[ApprovalRequest]:
        value = self.values().get("agent")
        if not value:
            return queryset
        Application = _application_model()
        ids = list(
            Application._default_manager.filter(Q(client_id=value) | Q(name__icontains=value)).values_list(
                "pk", flat=True
            )[: MATCH_LIMIT + 1]
        )
        if len(ids) > MATCH_LIMIT:
            self.warn(_("More than %(n)d agents match; showing their requests only.") % {"n": MATCH_LIMIT})
            ids = ids[:MATCH_LIMIT]
        return queryset.filter(client_id=ids[0]) if len(ids) == 1 else queryset.filter(client_id__in=ids)


class ApproverFilter(InputFilter):
    title = gettext_lazy("approver")
    inputs = (("approver", gettext_lazy("username, e-mail or user id"), "search"),)

    def queryset(self, request: HttpRequest, queryset: QuerySet[ApprovalRequest]) -> QuerySet[ApprovalRequest]:
        value = self.values().get("approver")
        if not value:
            return queryset
        ids = list(approvers_matching(value)[:MATCH_LIMIT])
        return queryset.filter(user_id=ids[0]) if len(ids) == 1 else queryset.filter(user_id__in=ids)


def approvers_matching(value: str) -> QuerySet[Any]:
    """The people a typed value names: by username (exact, its unique index), by e-mail (case-insensitive, when it
    has an @) or by id (digits)."""
    User = get_user_model()
    match = Q(**{User.USERNAME_FIELD: value})
    if "@" in value:
        match |= Q(email__iexact=value)
    # ASCII digits only: str.isdigit() holds for "²", which int() refuses (a 500).
    if value.isascii() and value.isdigit() and len(value) < 19:
        match |= Q(pk=int(value))
    return User._default_manager.filter(match).values_list("pk", flat=True)


class CreatedRangeFilter(InputFilter):
    """Requests created from one day to another (both included), in the server's time zone."""

    title = gettext_lazy("created")
    inputs = (("created_from", gettext_lazy("from"), "date"), ("created_to", gettext_lazy("to"), "date"))

    def queryset(self, request: HttpRequest, queryset: QuerySet[ApprovalRequest]) -> QuerySet[ApprovalRequest]:
        values = self.values()
        if "created_from" in values:
            start = self._moment(values["created_from"], end=False)
            if start is not None:
                queryset = queryset.filter(created_at__gte=start)
        if "created_to" in values:
            end = self._moment(values["created_to"], end=True)
            if end is not None:
                queryset = queryset.filter(created_at__lt=end)
        return queryset

    def _moment(self, value: str, *, end: bool) -> datetime | None:
        """A date (the day's start, or the next day's for `end`) or an ISO 8601 time; None, with a warning, for
        anything else."""
        try:
            day = parse_date(value)
            moment = None if day is not None else parse_datetime(value)
        except ValueError:
            day, moment = None, None
        if day is not None and date(1900, 1, 1) <= day <= date(9998, 12, 31):
            moment = datetime.combine(day + timedelta(days=1) if end else day, time.min)
        if moment is None:
            self.warn(_("Not a date: %(value)s. Use YYYY-MM-DD.") % {"value": value[:40]})
            return None
        return timezone.make_aware(moment) if timezone.is_naive(moment) else moment


class ChannelFilter(admin.SimpleListFilter):
    """The channel whose prompt reached the person; "none" for requests no prompt reached."""

    title = gettext_lazy("channel")
    parameter_name = "channel"
    NONE = "none"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, StrOrPromise]]:
        # The configured channels, not a DISTINCT over a million rows; another name still works in the URL.
        names = approvals_settings.channel_names()
        return [*((name, name) for name in names), (self.NONE, gettext_lazy("none (never reached)"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ApprovalRequest]) -> QuerySet[ApprovalRequest]:
        value = self.value()
        if not value:
            return queryset
        return queryset.filter(prompt_channel="" if value == self.NONE else value[:32])


# --- search -----------------------------------------------------------------------------------------------------------


def search(queryset: QuerySet[ApprovalRequest], term: str) -> QuerySet[ApprovalRequest]:
    """An exact request id, or agents (client_id, name), approvers (username, e-mail) and binding messages that
    match `term`. (An auth_req_id is looked up before, by the admin's changelist_view: it must never be echoed.)"""
    term = term.replace("\x00", "").strip()[:200]
    if not term:
        return queryset
    try:
        return queryset.filter(pk=uuid.UUID(term))
    except ValueError:
        pass
    # The agents and people the term names are read first (two small indexed queries): with their ids as values,
    # PostgreSQL combines the three conditions from their indexes (a bitmap OR) instead of filtering every request.
    Application = _application_model()
    clients = list(
        Application._default_manager.filter(Q(client_id=term) | Q(name__icontains=term)).values_list("pk", flat=True)[
            :MATCH_LIMIT
        ]
    )
    people = list(approvers_matching(term)[:MATCH_LIMIT])
    matches = Q(binding_message__icontains=term)
    if clients:
        matches |= Q(client_id__in=clients)
    if people:
        matches |= Q(user_id__in=people)
    return queryset.filter(matches)
