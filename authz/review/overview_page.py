"""The admin's overview page (issue 18 item 5): /admin/review/overview/, inside the admin site's login, layout and
CSP, for superusers and the viewer and operator roles (whoever may view approval requests), nobody else."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.views.decorators.http import require_safe
from oauth2_provider.models import get_application_model

from approvals.display import admin_datetime
from approvals.models import ApprovalRequest
from authz.review import charts
from authz.review.agents import duration_text as duration
from authz.review.agents import percent_text as percent
from authz.review.overview import STATUSES, Bucket, ChannelFailures, Overview, Window, overview

PERMISSION = "approvals.view_approvalrequest"

# The request list's filters, as its query string names them (approvals/review.py).
STATUS = "status"
AGENT = "agent"
CREATED_FROM = "created_from"
CHANNEL = "channel"
NO_CHANNEL = "none"

# Okabe and Ito's palette, told apart with every common colour-vision deficiency.
STATUS_COLORS: dict[str, str] = {
    ApprovalRequest.Status.PENDING: "#E69F00",
    ApprovalRequest.Status.APPROVED: "#56B4E9",
    ApprovalRequest.Status.CONSUMED: "#009E73",
    ApprovalRequest.Status.DENIED: "#D55E00",
    ApprovalRequest.Status.EXPIRED: "#999999",
    ApprovalRequest.Status.CANCELLED: "#CC79A7",
}


@require_safe
def overview_view(request: HttpRequest) -> TemplateResponse:
    # admin_view (below) has already sent anyone who is not active staff to the admin's sign-in.
    if not request.user.has_perm(PERMISSION):
        raise PermissionDenied
    figures = overview()
    context = {
        **admin.site.each_context(request),
        "title": "Overview",
        "now": admin_datetime(figures.now),
        "windows": [_window(window) for window in figures.windows],
        "summary": _summary(figures),
        "statuses": [_status_row(status, figures) for status in STATUSES],
        "channels": _channel_rows(figures),
        "charts": _charts(figures),
    }
    return TemplateResponse(request, "admin/review/overview.html", context)


urlpatterns = [path("overview/", admin.site.admin_view(overview_view), name="overview")]


# --- What the template shows --------------------------------------------------------------------------------------


def _list_url(window: Window, **params: str) -> str:
    """The request list, filtered to the window's requests (and whatever else `params` says)."""
    query = {CREATED_FROM: _date_param(window.since), **params}
    return reverse("admin:approvals_approvalrequest_changelist") + "?" + urlencode(query)


def _date_param(value: datetime) -> str:
    return timezone.localtime(value).isoformat()


def _window(window: Window) -> dict[str, Any]:
    application = get_application_model()._meta
    change = f"admin:{application.app_label}_{application.model_name}_change"
    return {
        "key": window.key,
        "label": window.label,
        "since": admin_datetime(window.since),
        "total": window.total,
        "never_delivered": window.never_delivered,
        # The list shows requests no prompt reached, by status; the count is of the pending and expired ones.
        "never_delivered_urls": [
            (ApprovalRequest.Status(status).label.lower(), _list_url(window, **{CHANNEL: NO_CHANNEL, STATUS: status}))
            for status in (ApprovalRequest.Status.PENDING, ApprovalRequest.Status.EXPIRED)
        ],
        "agents": [
            {
                "name": agent.name,
                "client_id": agent.client_id,
                "url": reverse(change, args=[agent.application_id]),
                "requests": agent.requests,
                "requests_url": _list_url(window, **{AGENT: agent.client_id}),
                "share": _share(agent.requests, window.total),
            }
            for agent in window.agents
        ],
    }


def _status_row(status: str, figures: Overview) -> dict[str, Any]:
    return {
        "status": status,
        "label": ApprovalRequest.Status(status).label,
        "color": STATUS_COLORS[status],
        "cells": [
            {
                "count": window.statuses.get(status, 0),
                "share": _share(window.statuses.get(status, 0), window.total),
                "url": _list_url(window, **{STATUS: status}),
            }
            for window in figures.windows
        ],
    }


def _share(part: int, whole: int) -> str:
    return percent(part / whole) if whole else "-"


def _summary(figures: Overview) -> list[dict[str, Any]]:
    windows = figures.windows
    return [
        {"label": "Requests", "cells": [f"{w.total:,}" for w in windows]},
        {
            "label": "Decided",
            "help": "approved or denied by the person (signed in or with the prompt's link) or the automated endpoint",
            "cells": [f"{w.decided:,}" for w in windows],
        },
        {
            "label": "Approval rate",
            "help": "approved (tokens issued or not) out of those decided",
            "cells": [
                f"{percent(w.approval_rate)} ({w.approved:,} of {w.decided:,})" if w.decided else "-" for w in windows
            ],
        },
        {"label": "Median time to decision", "cells": [duration(w.median) for w in windows]},
        {"label": "90th percentile time to decision", "cells": [duration(w.p90) for w in windows]},
    ]


def _channel_rows(figures: Overview) -> list[dict[str, Any]]:
    names = sorted({c.channel for w in figures.windows for c in w.channels})
    rows = []
    for name in names:
        cells = []
        for window in figures.windows:
            found = next((c for c in window.channels if c.channel == name), ChannelFailures(channel=name))
            cells.append(found)
        rows.append({"channel": name, "cells": [_channel_cell(c) for c in cells]})
    return rows


def _channel_cell(channel: ChannelFailures) -> dict[str, Any]:
    return {
        "attempts": f"{channel.attempts:,}",
        "failed": f"{channel.failed:,}",
        "unknown": f"{channel.unknown:,}",
        "rate": percent(channel.failure_rate),
    }


def _series() -> list[charts.Series]:
    return [
        charts.Series(key=status, label=str(ApprovalRequest.Status(status).label), color=STATUS_COLORS[status])
        for status in STATUSES
    ]


def _hour_name(bucket: Bucket) -> str:
    start = bucket.start
    assert isinstance(start, datetime)
    end = start + timedelta(hours=1)
    return f"{start:%Y-%m-%d %H:%M}–{end:%H:%M}"


def _hour_label(bucket: Bucket) -> str:
    return f"{bucket.start:%H}"


def _day_name(bucket: Bucket) -> str:
    return f"{bucket.start:%a %Y-%m-%d}"


def _day_label(bucket: Bucket) -> str:
    return f"{bucket.start:%a %d}"


def _charts(figures: Overview) -> list[dict[str, Any]]:
    zone = timezone.get_current_timezone_name()
    return [
        _chart(
            "chart-hours",
            "Requests per hour, last 24 hours",
            f"Requests created in each clock hour ({zone}) of the last 24 hours and in the current hour so far, "
            "stacked by status.",
            [charts.Bar(label=_hour_label(b), name=_hour_name(b), values=b.counts) for b in figures.hours],
            label_every=3,
            first_column="Hour",
        ),
        _chart(
            "chart-days",
            "Requests per day, last 7 days",
            f"Requests created on each day ({zone}) of the last 7 days, stacked by status; the first day counts from "
            "the window's start, the last one up to now.",
            [charts.Bar(label=_day_label(b), name=_day_name(b), values=b.counts) for b in figures.days],
            label_every=1,
            first_column="Day",
        ),
    ]


def _chart(
    chart_id: str, heading: str, description: str, bars: list[charts.Bar], *, label_every: int, first_column: str
) -> dict[str, Any]:
    series = _series()
    peak = max(bars, key=lambda bar: bar.total, default=None)
    summary = f" {sum(bar.total for bar in bars):,} requests in all"
    summary += f"; the most, {peak.total:,}, in {peak.name}." if peak is not None and peak.total else "."
    return {
        "id": chart_id,
        "heading": heading,
        "first_column": first_column,
        "svg": charts.stacked_bars(
            chart_id=chart_id,
            title=heading,
            description=description + summary,
            series=series,
            bars=bars,
            label_every=label_every,
        ),
        "series": series,
        "rows": [
            {"name": bar.name, "values": [bar.values.get(s.key, 0) for s in series], "total": bar.total} for bar in bars
        ],
    }
