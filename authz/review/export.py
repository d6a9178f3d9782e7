"""The audit export: every audit event of a date range as CSV or JSON lines, downloaded from the admin's audit event
list (authz.review.admin) by anyone who may view audit events.

Streamed: the rows are read in keyset batches (authz.review.selectors.keyset_batches) and written as they come, so a
million events never sit in memory. Each row is the review API's JSON object for the event (serializers), so a file and
the API say the same. CSV cells that a spreadsheet would run as a formula (starting with =, +, -, @, a tab or a carriage
return; OWASP's CSV injection advice) get a leading apostrophe: an agent's name comes from its own registration.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable, Iterator
from datetime import date, datetime, time, timedelta
from typing import Any

from django import forms
from django.http import StreamingHttpResponse
from django.utils import timezone

from authz.review import selectors
from authz.review.serializers import AuditEventSerializer

logger = logging.getLogger(__name__)

BATCH_SIZE = 2000
CSV_COLUMNS = tuple(AuditEventSerializer().fields)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# Dates whose day, in any time zone, is a datetime PostgreSQL and Python can both hold.
_FIRST_DAY, _LAST_DAY = date(1970, 1, 1), date(9998, 12, 31)


class AuditExportForm(forms.Form):
    FORMATS = (("csv", "CSV"), ("jsonl", "JSON lines"))

    start = forms.DateField(label="From", widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(label="To (inclusive)", widget=forms.DateInput(attrs={"type": "date"}))
    format = forms.ChoiceField(choices=FORMATS, initial="csv", widget=forms.RadioSelect)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        start, end = cleaned.get("start"), cleaned.get("end")
        if start and end:
            if not (_FIRST_DAY <= start <= _LAST_DAY and _FIRST_DAY <= end <= _LAST_DAY):
                raise forms.ValidationError("Choose dates between 1970 and 9998.")
            if end < start:
                raise forms.ValidationError("The end date is before the start date.")
        return cleaned


def day_range(start: date, end: date) -> tuple[datetime, datetime]:
    """From the start of `start` to the end of `end` (exclusive: the next midnight), in the server's time zone."""
    zone = timezone.get_current_timezone()
    return (
        timezone.make_aware(datetime.combine(start, time.min), zone),
        timezone.make_aware(datetime.combine(end + timedelta(days=1), time.min), zone),
    )


def csv_cell(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
    return "'" + text if text.startswith(_FORMULA_START) else text


def event_batches(since: datetime, until: datetime) -> Iterator[list[dict[str, Any]]]:
    """The events at or after `since` and before `until`, as the API's objects, in (at, id) order, a batch at a time."""
    rows = selectors.audit_events({}).filter(at__gte=since, at__lt=until)
    serializer = AuditEventSerializer()
    for batch in selectors.keyset_batches(rows, "at", size=BATCH_SIZE):
        yield [serializer.to_representation(row) for row in batch]


class _Line:
    """What csv.writer writes to: hands back each line instead of keeping it."""

    def write(self, value: str) -> str:
        return value


# One chunk per batch: the server writes a few thousand chunks for a million rows, not a million.
def csv_chunks(batches: Iterable[list[dict[str, Any]]]) -> Iterator[str]:
    writer = csv.writer(_Line())
    yield writer.writerow(CSV_COLUMNS)
    for batch in batches:
        yield "".join(writer.writerow([csv_cell(row[column]) for column in CSV_COLUMNS]) for row in batch)


def jsonl_chunks(batches: Iterable[list[dict[str, Any]]]) -> Iterator[str]:
    for batch in batches:
        yield "".join(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n" for row in batch)


def export_response(*, start: date, end: date, format: str, user: Any) -> StreamingHttpResponse:
    since, until = day_range(start, end)
    # Who took a copy of the trail, and of what: the export leaves the building, so the server says so.
    logger.info("Audit events exported by %s: %s to %s as %s", user, start, end, format)
    batches = event_batches(since, until)
    chunks, content_type = (
        (csv_chunks(batches), "text/csv; charset=utf-8")
        if format == "csv"
        else (jsonl_chunks(batches), "application/x-ndjson; charset=utf-8")
    )
    response = StreamingHttpResponse(chunks, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="audit-events-{start}-to-{end}.{format}"'
    return response
