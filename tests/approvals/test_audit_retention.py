"""Retention of the audit trail: `manage.py purge_audit_events` (approvals.retention) deletes the whole trails of
requests finished before the cutoff, in batches, and says how many; it keeps pending requests' and recent ones'."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from approvals import audit, services
from approvals.models import ApprovalRequest, AuditEvent
from tests import factories

pytestmark = pytest.mark.django_db

DAY = 86400
Kind = AuditEvent.Kind


def purge(*args: str) -> dict[str, Any]:
    output = StringIO()
    call_command("purge_audit_events", *args, stdout=output)
    return json.loads(output.getvalue())


def decided(approver, agent, *, days_ago: int, approve: bool = False) -> ApprovalRequest:
    approval_request = factories.make_approval_request(approver, agent, created_ago=days_ago * DAY)
    services.approval_request_decide(
        approval_request_id=approval_request.pk,
        user=approver.user,
        approve=approve,
        now=approval_request.created_at + timedelta(seconds=10),
    )
    return approval_request


@pytest.fixture
def history(agent, approver) -> dict[str, ApprovalRequest]:
    """Requests of every kind, old (400 days) and recent."""
    old_denied = decided(approver, agent, days_ago=400)
    old_unredeemed = decided(approver, agent, days_ago=400, approve=True)  # approved, never redeemed: expired
    old_cancelled = factories.make_approval_request(approver, agent, created_ago=400 * DAY)
    services.approval_request_cancel(
        approval_request_id=old_cancelled.pk, actor=None, now=old_cancelled.created_at + timedelta(seconds=5)
    )
    # Old, but its tokens were refreshed ten days ago: its trail stays whole.
    old_still_used = decided(approver, agent, days_ago=400, approve=True)
    audit.audit(old_still_used.pk, Kind.REFRESHED, at=timezone.now() - timedelta(days=10), client_id="x")
    # Old and still "pending" in its row (the expiry sweep has not run): kept.
    old_pending = factories.make_approval_request(approver, agent, created_ago=400 * DAY)
    recent = decided(approver, agent, days_ago=10)
    return {
        "old_denied": old_denied,
        "old_unredeemed": old_unredeemed,
        "old_cancelled": old_cancelled,
        "old_still_used": old_still_used,
        "old_pending": old_pending,
        "recent": recent,
    }


def trail(approval_request: ApprovalRequest) -> list[str]:
    return list(AuditEvent.objects.filter(request=approval_request).order_by("at", "pk").values_list("kind", flat=True))


PURGED = ("old_denied", "old_unredeemed", "old_cancelled")
KEPT = ("old_still_used", "old_pending", "recent")


def test_purges_whole_trails_of_finished_old_requests_and_says_how_many(history):
    before = {name: trail(r) for name, r in history.items()}
    expected = sum(len(before[name]) for name in PURGED)
    assert expected == 6  # created + decided, three times

    printed = purge()

    assert printed["deleted"] == expected and printed["dry_run"] is False
    cutoff = timezone.now() - timedelta(days=365)
    assert abs(timezone.datetime.fromisoformat(printed["before"]) - cutoff) < timedelta(minutes=1)
    for name in PURGED:
        assert trail(history[name]) == [], name
        assert ApprovalRequest.objects.filter(pk=history[name].pk).exists()  # the request itself stays
    for name in KEPT:
        assert trail(history[name]) == before[name], name
    assert purge()["deleted"] == 0  # nothing left to purge


def test_a_dry_run_counts_and_deletes_nothing(history):
    total = AuditEvent.objects.count()
    printed = purge("--dry-run")
    assert printed["would_delete"] == 6 and printed["dry_run"] is True and "deleted" not in printed
    assert AuditEvent.objects.count() == total
    assert purge()["deleted"] == 6


def test_small_batches_purge_the_same(history, agent, approver):
    # Many events per request, with equal times, across batch boundaries.
    extra = history["old_denied"]
    for _ in range(7):
        audit.audit(extra.pk, Kind.PROMPTED, at=extra.created_at + timedelta(seconds=1), channel="sms")
    assert purge("--dry-run")["would_delete"] == 13
    assert purge("--batch-size", "2")["deleted"] == 13
    assert all(trail(history[name]) for name in KEPT)


def test_the_setting_decides_the_cutoff(history, settings):
    settings.APPROVALS = {**settings.APPROVALS, "AUDIT_RETENTION_DAYS": 5}
    # Now the ten-day-old request goes too, and the old one refreshed ten days ago.
    assert purge("--dry-run")["would_delete"] == AuditEvent.objects.count() - len(trail(history["old_pending"]))

    settings.APPROVALS = {**settings.APPROVALS, "AUDIT_RETENTION_DAYS": 0}
    total = AuditEvent.objects.count()
    assert purge() == {"deleted": 0, "before": None, "dry_run": False, "retention": "forever"}
    assert AuditEvent.objects.count() == total


def test_before_overrides_the_setting(history, settings):
    settings.APPROVALS = {**settings.APPROVALS, "AUDIT_RETENTION_DAYS": 0}
    day = (timezone.now() - timedelta(days=30)).date().isoformat()
    printed = purge("--before", day)
    assert printed["deleted"] == 6
    assert printed["before"].startswith(day)
    assert trail(history["recent"]) != []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--before", "last year"), "not an ISO 8601"),
        (("--before", "2999-01-01"), "in the future"),
        (("--batch-size", "0"), "at least 1"),
    ],
)
def test_refuses_bad_arguments(args, message):
    with pytest.raises(CommandError, match=message):
        purge(*args)


def test_refuses_a_negative_retention(settings):
    settings.APPROVALS = {**settings.APPROVALS, "AUDIT_RETENTION_DAYS": -1}
    with pytest.raises(CommandError, match="AUDIT_RETENTION_DAYS"):
        purge()
