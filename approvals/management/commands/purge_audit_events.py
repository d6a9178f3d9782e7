from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from approvals import retention
from approvals.conf import approvals_settings


def _cutoff(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip())
        if timezone.is_naive(value):
            value = timezone.make_aware(value, timezone.get_current_timezone())
        return value
    except (ValueError, OverflowError) as exc:
        raise CommandError(f"--before: {text!r} is not an ISO 8601 date or date-time, e.g. 2026-01-01.") from exc


class Command(BaseCommand):
    help = (
        "Delete the audit trails of requests finished more than APPROVALS_AUDIT_RETENTION_DAYS ago (or before "
        "--before), in batches. Prints how many events went (or would go, with --dry-run) as JSON."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="count what would be deleted; delete nothing")
        parser.add_argument(
            "--before",
            help="ISO 8601 date or date-time, in the server's time zone unless it has an offset; overrides the setting",
        )
        parser.add_argument("--batch-size", type=int, default=5000, help="events read per batch (default 5000)")

    def handle(self, *args: Any, **options: Any) -> None:
        now = timezone.now()
        dry_run = options["dry_run"]
        # The count's name says whether anything was deleted.
        key = "would_delete" if dry_run else "deleted"
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        days = approvals_settings.AUDIT_RETENTION_DAYS
        if options["before"] is not None:
            before = _cutoff(options["before"])
            if before > now:
                raise CommandError("--before must not be in the future.")
        elif isinstance(days, bool) or not isinstance(days, int) or days < 0:
            raise CommandError(f"APPROVALS_AUDIT_RETENTION_DAYS must be a whole number, 0 or more, not {days!r}.")
        elif days == 0:
            self.stdout.write(json.dumps({key: 0, "before": None, "dry_run": dry_run, "retention": "forever"}))
            return
        else:
            before = now - timedelta(days=days)
        if dry_run:
            count = retention.audit_events_purgeable(before=before)
        else:
            count = retention.audit_events_purge(before=before, batch_size=options["batch_size"])
        self.stdout.write(json.dumps({key: count, "before": before.isoformat(), "dry_run": dry_run}))
